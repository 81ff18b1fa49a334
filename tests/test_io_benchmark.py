"""ActSort benchmark files: real files in place (6691 x 76 and 5276 x 76, 4 annotators each)."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from actsort_nb import InputError
from actsort_nb.features.registry import FEATURE_NAMES
from actsort_nb.io import guess_format, open_candidates, read_actsort_benchmark

pytestmark = pytest.mark.realdata


@pytest.mark.parametrize(
    "fname,n,annotators",
    [
        ("ebrahimi_reanalysis.mat", 6691, ["cheetah", "dragon", "guinea_pig", "lion"]),
        ("twophoton_motion.mat", 5276, ["cheetah", "dragon", "koala", "panda"]),
    ],
)
def test_real_benchmark_files(real, fname, n, annotators):
    path = real("actsort_benchmark", fname)
    assert guess_format(path) == "actsort-benchmark"
    fs = read_actsort_benchmark(path)
    assert dict(fs.sizes) == {"candidate": n, "feature": 76, "annotator": 4}
    assert list(fs.feature.values) == list(FEATURE_NAMES)
    assert list(fs.annotator.values) == annotators
    # independent read, as the data README does it
    with h5py.File(path, "r") as h:
        X = h["metrics"][()]
        votes = np.stack([h[f"{a}_choices"][()].ravel() for a in annotators])
    np.testing.assert_array_equal(fs.features.values, X)
    np.testing.assert_array_equal(fs.annotations.values, (votes > 0).astype(np.int8))
    assert fs.features.sel(feature="snr").shape == (n,)


def test_cell_counts_match_readme(real):
    fs = read_actsort_benchmark(real("actsort_benchmark", "ebrahimi_reanalysis.mat"))
    counts = dict(zip(fs.annotator.values, (fs.annotations == 1).sum("candidate").values.tolist()))
    assert counts == {"cheetah": 4194, "dragon": 4530, "guinea_pig": 5224, "lion": 3388}


def test_open_candidates_points_to_the_right_reader(real):
    with pytest.raises(InputError, match="read_actsort_benchmark"):
        open_candidates(real("actsort_benchmark", "twophoton_motion.mat"))


def test_zero_choice_means_unlabelled(tmp_path):
    p = tmp_path / "b.mat"
    with h5py.File(p, "w") as f:
        f["metrics"] = np.ones((4, 76), np.float32)
        f["a_choices"] = np.array([[1], [-1], [0], [np.nan]], np.float32)
    np.testing.assert_array_equal(read_actsort_benchmark(p).annotations.values, [[1, 0, -1, -1]])
