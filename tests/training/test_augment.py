from __future__ import annotations

import numpy as np
import pytest

from rohde.core.errors import ConfigError
from rohde.training.augment import generic_augment, mix_windows, oracle_augment
from rohde.training.config import AugmentConfig
from rohde.training.windows_dataset import WindowSet
from tests.training.conftest import small_recordings


def test_generic_augment_keeps_shape_labels_and_is_seeded() -> None:
    rec = small_recordings()[0]
    a = generic_augment(rec, config=AugmentConfig(), rng=np.random.default_rng(5))
    b = generic_augment(rec, config=AugmentConfig(), rng=np.random.default_rng(5))
    assert a.samples.shape == rec.samples.shape and a.samples.dtype == np.float32
    np.testing.assert_array_equal(a.labels, rec.labels)
    np.testing.assert_array_equal(a.samples, b.samples)
    assert not np.allclose(a.samples, rec.samples)
    assert a.condition == "generic"


def test_oracle_augment_uses_the_disturbance_models() -> None:
    rec = small_recordings()[0]
    out = oracle_augment(rec, "LC", seed=1)
    assert out.condition == "LC"
    assert out.disturbance_mask is not None and out.disturbance_mask.any()
    np.testing.assert_array_equal(out.labels, rec.labels)


def _set(value: float, n: int = 10) -> WindowSet:
    return WindowSet(
        features=np.full((n, 2), value, dtype=np.float32),
        td=None,
        labels=np.arange(n) % 3,
        valid=np.arange(n) != 4,
        recording_ids=np.zeros(n, dtype=np.int64),
        conditions=["clean"],
    )


@pytest.mark.parametrize(("fraction", "expected"), [(0.0, 0), (0.5, 4), (1.0, 9)])
def test_mix_windows_replaces_the_requested_fraction(fraction: float, expected: int) -> None:
    x, y = mix_windows(_set(0.0), [_set(1.0), _set(2.0)], fraction=fraction, rng=np.random.default_rng(0))
    assert len(x) == 9 and len(y) == 9
    assert int((x[:, 0] > 0).sum()) in (expected, expected + 1)


def test_mix_windows_rejects_misaligned_variants() -> None:
    with pytest.raises(ConfigError, match="line up"):
        mix_windows(_set(0.0), [_set(1.0, n=8)], fraction=0.5, rng=np.random.default_rng(0))
