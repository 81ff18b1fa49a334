"""The candidate panel's Python side: payloads, map data and traits, without a browser."""
from __future__ import annotations

import re

import numpy as np
import pytest
import traitlets
from _sortset_factory import make_sortset

from actsort_nb import InputError
from actsort_nb.widgets._payload import (
    CandidateSource,
    array_payload,
    fov_map,
    map_state,
)
from actsort_nb.widgets.panel import ACTION_KINDS, CandidatePanel


@pytest.fixture(scope="module")
def sortset():
    return make_sortset(50, shape=(80, 96), n_frames=300, crop=19, seed=1)


@pytest.fixture(scope="module")
def source(sortset):
    return CandidateSource(sortset)


def _arr(p):
    return np.frombuffer(p["data"], dtype=p["dtype"]).reshape(p["shape"])


def test_array_payload_is_little_endian_contiguous_bytes():
    a = np.arange(12, dtype=">i4").reshape(3, 4)[:, ::2]  # big-endian, not contiguous
    p = array_payload(a)
    assert isinstance(p["data"], bytes) and p["dtype"] == "int32" and p["shape"] == [3, 2]
    np.testing.assert_array_equal(_arr(p), a)
    with pytest.raises(InputError, match="float64"):
        array_payload(np.zeros(3))


def test_payload_has_one_candidate_as_bytes_with_the_contract_shapes(sortset, source):
    i = 7
    p = source.payload(i, p_cell=0.25, threshold=0.5, label=-1, labels=-np.ones(50, int))
    buffers = {k: v for k, v in p.items() if isinstance(v, dict)}
    assert set(buffers) == {"summary", "footprint", "neighbors", "snapshots", "trace"}
    assert all(isinstance(v["data"], bytes) for v in buffers.values())
    assert p["snapshots"]["shape"] == [5, 11, 19, 19] and p["snapshots"]["dtype"] == "uint8"
    np.testing.assert_array_equal(_arr(p["snapshots"]), sortset["snapshots"].values[i])
    np.testing.assert_array_equal(_arr(p["trace"]), sortset["traces"].values[i])
    np.testing.assert_array_equal(_arr(p["footprint"]), sortset["crop_footprint"].values[i])
    y0, x0 = sortset["crop_origin"].values[i]
    assert p["origin"] == [int(y0), int(x0)]
    summary = _arr(p["summary"])
    assert summary.shape == (3, 19, 19)
    np.testing.assert_allclose(summary[0], sortset["max_image"].values[y0:y0 + 19, x0:x0 + 19])
    assert p["event_frame"] == sortset["event_frame"].values[i].tolist()
    assert p["id"] == "7" and p["index"] == 7 and p["p_cell"] == 0.25 and p["label"] == -1
    # nothing else of the data set rides along: the payload is a few crops and one trace
    total = sum(len(v["data"]) for v in buffers.values())
    assert total < 5 * 11 * 19 * 19 + 3 * 19 * 19 * 4 + 19 * 19 * 6 + 300 * 4 + 1


def test_neighbours_are_other_candidates_inside_the_crop(sortset, source):
    i = 0
    lab, kept = source.neighbours(i)
    assert i not in kept
    assert lab.shape == (19, 19) and lab.max() == len(kept)
    y0, x0 = sortset["crop_origin"].values[i]
    dense = sortset["footprints"].data.todense()
    for k, j in enumerate(kept, start=1):
        crop = dense[j, y0:y0 + 19, x0:x0 + 19]
        assert crop.max() > 0  # j does reach into the crop
        assert np.all(crop[lab == k] > 0)
    # a candidate whose footprint lies inside the crop is listed
    others = [j for j in range(50) if j != i and dense[j, y0:y0 + 19, x0:x0 + 19].max() >= 0.5 * dense[j].max()]
    assert set(others) <= set(kept)


def test_fov_map_is_a_few_bytes_per_candidate(source):
    m = fov_map(source, n_rays=12)
    assert m["n"] == 50 and m["fov_shape"] == [80, 96]
    cen = _arr(m["centers"])
    rad = _arr(m["radii"])
    assert cen.dtype == np.int16 and cen.shape == (50, 2) and rad.dtype == np.uint8 and rad.shape == (50, 12)
    np.testing.assert_array_equal(cen, np.round(source.centers))
    # cells in the factory are round blobs (sigma 1.8 px): their outline radius is a few pixels
    r = rad / 4.0
    assert np.all(r >= 0.25) and np.median(r) < 8
    assert _arr(m["images"]).shape == (3, 80, 96)
    np.testing.assert_array_equal(_arr(m["ids"]), np.arange(50))


def test_fov_map_downsamples_large_images(source):
    m = fov_map(source, max_side=40)
    assert m["image_factor"] == 3 and _arr(m["images"]).shape == (3, 26, 32)


def test_map_state_codes_labels_and_probabilities():
    s = map_state(np.array([1, 0, -1, -1]), np.array([0.0, 1.0, 0.5, np.nan]), 0.3)
    np.testing.assert_array_equal(_arr(s["labels"]), [1, 0, -1, -1])
    np.testing.assert_array_equal(_arr(s["p"]), [0, 255, 128, 128])
    assert s["has_p"] and s["threshold"] == 0.3
    assert not map_state(np.array([-1]), None, 0.5)["has_p"]


def test_candidate_source_names_a_missing_variable(sortset):
    with pytest.raises(InputError, match="'snapshots'.*preprocess"):
        CandidateSource(sortset.drop_vars("snapshots"))


def test_index_of_finds_ids_and_explains_unknown_ones(source):
    assert source.index_of("12") == 12 and source.index_of(12) == 12
    with pytest.raises(InputError, match="no candidate has id '999'"):
        source.index_of(999)


def test_panel_traits_and_files():
    p = CandidatePanel()
    assert p.color_by == "label" and p.image == "max" and p.contrast == [0.0, 1.0] and p.ack == 0
    assert "export default" in p._esm and "data-lm-suppress-shortcuts" in p._esm
    assert ".actsort-panel" in p._css
    assert set(ACTION_KINDS) == {"label", "skip", "undo", "prev", "next", "goto"}
    for kind in ACTION_KINDS:  # the ES module sends every action kind the app understands
        assert f'"{kind}"' in p._esm
    with pytest.raises(traitlets.TraitError):
        p.color_by = "rainbow"
    # every trait the ES module listens to exists
    js = p._esm
    listened = set(re.findall(r'"change:(\w+)"', js))
    assert listened <= set(p.trait_names(sync=True))


def test_panel_state_round_trips_through_the_widget_protocol(source):
    """What anywidget sends: nested bytes become binary buffers, not base64 or JSON lists."""
    from ipywidgets.widgets.widget import _remove_buffers

    p = CandidatePanel()
    p.current = source.payload(3, p_cell=0.5, threshold=0.5, label=1)
    _, paths, buffers = _remove_buffers(p.get_state(["current"]))
    assert ["current", "snapshots", "data"] in paths and ["current", "trace", "data"] in paths
    assert all(isinstance(b, (bytes, memoryview)) for b in buffers)
    assert sum(len(b) for b in buffers) == sum(len(v["data"]) for v in p.current.values() if isinstance(v, dict))
