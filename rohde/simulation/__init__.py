"""The embedded HD-EMG simulator and the disturbance models (contact artifact, loose contact, ...).

Numpy and scipy only: the simulated amplifier (`rohde simulate`) and training both use it.
"""
