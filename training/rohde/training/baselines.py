"""The field's reference classifier and the catalogue of compared models.

Every CNN variant shares the architecture, the splits and the trainer; they differ only in the
training windows (see `VARIANTS`). The LDA on classic time-domain features (MAV, WL, ZC, SSC per
channel, Hudgins' set) trained on the clean training windows is the standard reference.
"""

from __future__ import annotations

import numpy as np

from rohde.classic.lda import LDA
from rohde.core.errors import ConfigError
from rohde.training.windows_dataset import WindowSet

# Name in the report -> what the model was trained on.
VARIANTS: dict[str, str] = {
    "clean": "(a) CNN, clean training trials only",
    "seen_disturbed": "(b) CNN, clean trials plus the same few real disturbed trials the GAN saw",
    "generic": "(c) CNN, generic augmentation (gain, Gaussian noise, channel dropout, random spikes)",
    "oracle": "(c') CNN, ORACLE: augmented with the disturbance models that also made the test disturbances",
    "rohde": "(d) RoHDE: CNN with GAN-made disturbances spliced into the affected channels",
    "lda": "LDA on time-domain features (MAV, WL, ZC, SSC), clean training trials",
}


class FullLDA:
    """An LDA whose `predict_proba` always has one column per class, even for classes unseen in training."""

    def __init__(self, lda: LDA, n_classes: int) -> None:
        self.lda = lda
        self.n_classes = n_classes

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        probs = self.lda.predict_proba(features)
        out = np.zeros((len(features), self.n_classes), dtype=np.float64)
        classes = self.lda.classes_ if self.lda.classes_ is not None else np.arange(probs.shape[1])
        out[:, classes.astype(int)] = probs
        return out


def fit_lda(train: WindowSet, *, n_classes: int | None = None) -> FullLDA:
    """Shrinkage LDA on the valid windows' time-domain features."""
    if train.td is None:
        raise ConfigError("fit_lda needs a WindowSet built with time-domain features (with_td=True).")
    keep = train.valid
    lda = LDA().fit(train.td[keep], train.labels[keep])
    return FullLDA(lda, n_classes if n_classes is not None else int(train.labels[keep].max()) + 1)
