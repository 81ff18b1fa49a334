"""The registry: 76 stable, unique names in ActSort's order, and the groups' modules agree with it."""
from __future__ import annotations

import re

from actsort_nb.features import describe_features
from actsort_nb.features.registry import FEATURE_GROUPS, FEATURE_NAMES, FEATURES
from actsort_nb.features.spatial import SPATIAL_NAMES
from actsort_nb.features.spatiotemporal import SPATIOTEMPORAL_NAMES
from actsort_nb.features.temporal import TEMPORAL_NAMES


def test_76_unique_snake_case_names():
    assert len(FEATURE_NAMES) == 76 == len(set(FEATURE_NAMES))
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", n) for n in FEATURE_NAMES)


def test_groups_are_contiguous_in_actsort_order():
    assert FEATURE_GROUPS == ("temporal",) * 36 + ("spatial",) * 10 + ("spatiotemporal",) * 30
    assert TEMPORAL_NAMES + SPATIAL_NAMES + SPATIOTEMPORAL_NAMES == FEATURE_NAMES


def test_actsort_anchor_columns():
    # 1-based ActSort numbers from get_features.m
    anchors = {1: "snr", 3: "n_bad_peaks", 4: "top_decile_std", 12: "event_power_1sd", 29: "event_count_300sd",
               30: "band_power_0_05", 35: "trace_similarity", 36: "spike_fluorescence", 37: "area",
               46: "footprint_overlap_corr", 47: "epsilon_mean", 51: "corr_score", 52: "inside_vs_trace_q01",
               66: "inside_vs_surround_q99", 67: "tqm_00", 76: "tqm_90"}
    for k, name in anchors.items():
        assert FEATURE_NAMES[k - 1] == name


def test_every_feature_is_described():
    assert all(len(f.description) > 10 for f in FEATURES)
    table = describe_features()
    assert list(table.columns) == ["name", "group", "description"]
    assert table.index.tolist() == list(range(1, 77))
    assert table["name"].tolist() == list(FEATURE_NAMES)
    assert describe_features("spatiotemporal")["name"].tolist() == list(SPATIOTEMPORAL_NAMES)


def test_docstring_examples_run():
    import doctest

    import actsort_nb.features as pkg
    from actsort_nb.features import registry, spatial, spatiotemporal, temporal

    for mod in (pkg, registry, temporal, spatial, spatiotemporal):
        res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
        assert res.failed == 0, mod.__name__
    assert res.attempted > 0


def test_every_feature_has_a_direction_from_the_simulations():
    from actsort_nb.features.registry import FEATURE_DIRECTIONS, FEATURE_NAMES

    assert list(FEATURE_DIRECTIONS) == list(FEATURE_NAMES)
    assert set(FEATURE_DIRECTIONS.values()) <= {-1, 0, 1}
    # what a cell looks like: a clean transient, a compact body away from the edge
    assert FEATURE_DIRECTIONS["snr"] == 1 and FEATURE_DIRECTIONS["temporal_corruption"] == -1
    assert FEATURE_DIRECTIONS["edge_distance"] == 1 and FEATURE_DIRECTIONS["circularity"] == 1
