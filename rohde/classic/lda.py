"""Linear discriminant analysis with a shrunk pooled covariance (numpy only).

The classic EMG baseline: features are standardised with the training mean and standard deviation,
every class shares one within-class covariance, shrunk towards a scaled identity
`(1 - alpha) * S + alpha * (trace(S) / p) * I`, which keeps the solve stable when features outnumber
samples per class or are nearly collinear (neighbouring HD-EMG channels). `shrinkage="auto"` picks
alpha with the Ledoit-Wolf formula.
"""

from __future__ import annotations

import numpy as np

from rohde.core.errors import ConfigError

_STD_FLOOR = 1e-12  # a constant feature keeps unit scale instead of dividing by zero


def ledoit_wolf_shrinkage(centered: np.ndarray) -> float:
    """Ledoit-Wolf optimal shrinkage in [0, 1] for the covariance of centred `(n_samples, p)` data."""
    n, p = centered.shape
    cov = centered.T @ centered / n
    mu = np.trace(cov) / p
    delta = np.sum((cov - mu * np.eye(p)) ** 2) / p
    if delta <= 0:
        return 0.0
    x2 = centered**2
    beta = (np.sum(x2.T @ x2) / n - np.sum(cov**2)) / (n * p)
    return float(np.clip(beta / delta, 0.0, 1.0))


class LDA:
    """Shrinkage LDA: `fit(X, y)`, `predict(X)`, `predict_proba(X)` on `(n_samples, n_features)`."""

    def __init__(self, *, shrinkage: float | str = "auto", priors: str = "empirical") -> None:
        if isinstance(shrinkage, str):
            if shrinkage != "auto":
                raise ConfigError(f"shrinkage must be 'auto' or a number in [0, 1], got {shrinkage!r}.")
        elif not 0.0 <= float(shrinkage) <= 1.0:
            raise ConfigError(f"shrinkage must be in [0, 1], got {shrinkage}.")
        if priors not in ("empirical", "uniform"):
            raise ConfigError(f"priors must be 'empirical' or 'uniform', got {priors!r}.")
        self.shrinkage = shrinkage
        self.priors = priors
        self.classes_: np.ndarray | None = None
        self.shrinkage_: float | None = None
        self._mean: np.ndarray | None = None
        self._std: np.ndarray | None = None
        self._coef: np.ndarray | None = None  # (p, n_classes)
        self._intercept: np.ndarray | None = None  # (n_classes,)

    def fit(self, X: np.ndarray, y: np.ndarray) -> LDA:
        """Fit on features `(n_samples, n_features)` and integer labels `(n_samples,)`."""
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        if X.ndim != 2 or y.shape != (X.shape[0],):
            raise ConfigError(f"fit needs X (n_samples, n_features) and y (n_samples,), got {X.shape} and {y.shape}.")
        if not np.all(np.isfinite(X)):
            raise ConfigError("fit got non-finite features (NaN or inf); clean the windows first.")
        classes = np.unique(y)
        if len(classes) < 2:
            raise ConfigError(f"LDA needs at least two classes in y, got {classes.tolist()}.")
        self._mean = X.mean(axis=0)
        self._std = np.maximum(X.std(axis=0), _STD_FLOOR)
        Z = (X - self._mean) / self._std
        means = np.stack([Z[y == c].mean(axis=0) for c in classes])  # (K, p)
        centered = Z - means[np.searchsorted(classes, y)]
        n, p = centered.shape
        cov = centered.T @ centered / max(n - len(classes), 1)
        alpha = ledoit_wolf_shrinkage(centered) if self.shrinkage == "auto" else float(self.shrinkage)
        target = np.trace(cov) / p
        shrunk = (1.0 - alpha) * cov + alpha * target * np.eye(p)
        if self.priors == "empirical":
            priors = np.array([np.mean(y == c) for c in classes])
        else:
            priors = np.full(len(classes), 1.0 / len(classes))
        coef = np.linalg.solve(shrunk, means.T)  # (p, K)
        self._coef = coef
        self._intercept = -0.5 * np.sum(means.T * coef, axis=0) + np.log(priors)
        self.classes_ = classes
        self.shrinkage_ = alpha
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Discriminant scores `(n_samples, n_classes)`."""
        if self._coef is None or self._mean is None or self._std is None or self._intercept is None:
            raise ConfigError("LDA is not fitted; call fit(X, y) first.")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self._mean.size:
            raise ConfigError(f"X must have shape (n_samples, {self._mean.size}), got {X.shape}.")
        return ((X - self._mean) / self._std) @ self._coef + self._intercept

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities `(n_samples, n_classes)` in the order of `classes_`."""
        scores = self.decision_function(X)
        scores -= scores.max(axis=1, keepdims=True)
        prob = np.exp(scores)
        return prob / prob.sum(axis=1, keepdims=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Most probable class label per sample `(n_samples,)`."""
        classes = self.classes_
        if classes is None:
            raise ConfigError("LDA is not fitted; call fit(X, y) first.")
        return classes[np.argmax(self.decision_function(X), axis=1)]

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """Accuracy on `(X, y)`."""
        return float(np.mean(self.predict(X) == np.asarray(y)))
