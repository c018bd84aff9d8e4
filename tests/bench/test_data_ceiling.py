"""The data-ceiling bench's noise level (``bench/data_ceiling.py``): the counts per unit of projected
intensity it reads from a session's frames are the Poisson level the frames were drawn at."""

from __future__ import annotations

import numpy as np
import pytest

from bench.data_ceiling import counts_per_unit


@pytest.mark.parametrize("n_counts", [5.0, 20.0, 200.0])
def test_counts_per_unit_recovers_the_poisson_level(n_counts: float) -> None:
    rng = np.random.default_rng(0)
    expected = rng.uniform(0.0, 30.0, size=(50, 32, 32))
    frames = rng.poisson(expected * n_counts) / n_counts
    assert counts_per_unit(frames, expected) == pytest.approx(n_counts, rel=0.02)


def test_counts_per_unit_refuses_noise_free_frames() -> None:
    expected = np.ones((4, 8, 8))
    with pytest.raises(ValueError, match="no noise"):
        counts_per_unit(expected.copy(), expected)
