"""Allen croissant ROIs: one CandidateSet per image shape, labels kept as source_label."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse

from actsort_nb import InputError
from actsort_nb.io import croissant, guess_format, open_candidates

pytestmark = pytest.mark.realdata


@pytest.mark.parametrize("fname,n,cells", [("dev_train_rois.json", 70, 35), ("dev_test_rois.json", 30, 14)])
def test_real_rois(real, fname, n, cells):
    path = real("allen_croissant", fname)
    assert guess_format(path) == "croissant"
    sets = croissant.read(path)
    assert sum(ds.sizes["candidate"] for ds in sets) == n
    assert sum(int(ds.source_label.sum()) for ds in sets) == cells
    rois = {r["roi_id"]: r for r in json.loads(path.read_text())}
    for ds in sets:
        assert ds.sizes["time"] == 200
        assert (ds.sizes["y"], ds.sizes["x"]) == tuple(ds.attrs["image_shape"])
        # exact footprint and trace of the first ROI of each set, against the README's own recipe
        r = rois[int(ds.candidate[0])]
        dense = scipy.sparse.coo_matrix((r["coo_data"], (r["coo_rows"], r["coo_cols"])), shape=r["image_shape"]).toarray()
        first = ds.actsort.footprints_csr()[0].toarray().reshape(dense.shape)
        np.testing.assert_allclose(first, dense.astype(np.float32))
        np.testing.assert_allclose(ds.traces.values[0], np.float32(r["trace"]))
        assert int(ds.source_label[0]) == r["label"]


def test_open_candidates_picks_one_shape(real):
    path = real("allen_croissant", "dev_test_rois.json")
    with pytest.raises(InputError, match="image_shape=\\(H, W\\)"):
        open_candidates(path)
    ds = open_candidates(path, image_shape=(512, 512))
    assert ds.sizes["candidate"] == 23 and ds.attrs["source_format"] == "croissant"
    with pytest.raises(InputError, match="no ROI has image_shape"):
        open_candidates(path, image_shape=(100, 100))
