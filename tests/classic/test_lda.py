"""Shrinkage LDA: separable classes, probabilities, shrinkage and refusals."""

from __future__ import annotations

import numpy as np
import pytest

from rohde.classic.lda import LDA, ledoit_wolf_shrinkage
from rohde.core.errors import ConfigError


def _blobs(
    n_per_class: int, n_features: int, *, seed: int = 0, draw: int = 0, labels: tuple[int, ...] = (3, 7, 11)
) -> tuple[np.ndarray, np.ndarray]:
    """Classes from the model fixed by `seed`; `draw` picks an independent sample of it."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 3.0, (len(labels), n_features))
    # Correlated, unequally scaled features as neighbouring EMG channels give.
    mixing = np.eye(n_features) + 0.5 * rng.normal(size=(n_features, n_features)) / np.sqrt(n_features)
    scale = rng.uniform(0.1, 100.0, n_features)
    noise = np.random.default_rng([seed, draw])
    X = np.concatenate([(noise.normal(size=(n_per_class, n_features)) @ mixing + c) * scale for c in centres])
    y = np.repeat(np.asarray(labels), n_per_class)
    return X, y


def test_separates_gaussian_classes_and_keeps_labels() -> None:
    X, y = _blobs(300, 10)
    Xt, yt = _blobs(100, 10, draw=1)
    model = LDA().fit(X, y)
    assert model.classes_ is not None and model.classes_.tolist() == [3, 7, 11]
    assert model.score(Xt, yt) > 0.95
    prob = model.predict_proba(Xt)
    assert prob.shape == (300, 3)
    np.testing.assert_allclose(prob.sum(axis=1), 1.0)
    np.testing.assert_array_equal(model.predict(Xt), model.classes_[prob.argmax(axis=1)])
    assert model.shrinkage_ is not None and 0.0 <= model.shrinkage_ <= 1.0


def test_more_features_than_samples_needs_shrinkage() -> None:
    X, y = _blobs(20, 100, seed=2)
    model = LDA(shrinkage="auto").fit(X, y)
    assert model.shrinkage_ is not None and model.shrinkage_ > 0.0
    assert np.isfinite(model.predict_proba(X)).all()
    assert model.score(X, y) > 0.9
    fixed = LDA(shrinkage=0.5, priors="uniform").fit(X, y)
    assert fixed.shrinkage_ == 0.5


def test_ledoit_wolf_is_small_for_plenty_of_data_on_a_non_spherical_covariance() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(5000, 5)) * np.array([1.0, 2.0, 5.0, 10.0, 20.0])
    alpha = ledoit_wolf_shrinkage(X - X.mean(axis=0))
    assert 0.0 <= alpha < 0.05


def test_constant_feature_and_refusals() -> None:
    X, y = _blobs(50, 4)
    X[:, 2] = 7.0
    model = LDA().fit(X, y)
    assert np.isfinite(model.decision_function(X)).all()
    with pytest.raises(ConfigError, match="not fitted"):
        LDA().predict(X)
    with pytest.raises(ConfigError, match="two classes"):
        LDA().fit(X, np.zeros(len(X)))
    with pytest.raises(ConfigError, match="n_samples"):
        model.predict(X[:, :3])
    with pytest.raises(ConfigError, match="non-finite"):
        LDA().fit(np.full_like(X, np.nan), y)
    with pytest.raises(ConfigError, match="shrinkage"):
        LDA(shrinkage=1.5)
    with pytest.raises(ConfigError, match="priors"):
        LDA(priors="flat")
