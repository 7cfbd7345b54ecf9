"""RoHDE: robust real-time gesture recognition from high-density surface EMG.

`rohde.core` holds what training and serving share (electrode layouts, causal preprocessing,
windows, the recording format, the simulator, the model-package schema); `rohde.training`
(PyTorch) builds models; `rohde.server` (no PyTorch) serves them.
"""

__version__ = "0.1.0"
