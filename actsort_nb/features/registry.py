"""The named feature registry: one stable name, group and description per feature.

The order is ActSort's (``get_features.m``), so column ``i`` of an ActSort
``metrics`` table is ``FEATURES[i]``. Names never change once released; the
feature table is always addressed by name (``features.sel(feature="snr")``).
The descriptions say what *this* package computes; where that departs from
ActSort the computing module's docstring says how and why.
"""
from __future__ import annotations

from typing import NamedTuple


class Feature(NamedTuple):
    """One feature: its stable name, its group and a one-line description."""

    name: str
    group: str  # "temporal" | "spatial" | "spatiotemporal"
    description: str


_SCALES = (1, 3, 10, 30, 100, 300)

_T = "temporal"
_S = "spatial"
_ST = "spatiotemporal"

FEATURES: tuple[Feature, ...] = (
    Feature("snr", _T, "max of the median-filtered, baseline-subtracted trace over sqrt(2) x the white-noise s.d."),
    Feature("temporal_corruption", _T, "mean relative deviation of the trace from its median filter where active"),
    Feature("n_bad_peaks", _T, "number of peaks of the normalised trace with prominence < max(0.5 q90, 0.1)"),
    Feature("top_decile_std", _T, "std of z-scored trace values at or above their 90th percentile"),
    Feature("good_peak_spacing", _T, "mean spacing (frames) between high-prominence peaks; trace length if fewer than two"),
    Feature("bad_peak_spacing", _T, "mean spacing (frames) between low-prominence peaks; trace length if fewer than two"),
    Feature("peak_spacing", _T, "mean spacing (frames) between all peaks; trace length if fewer than two"),
    Feature("peak_width_sum", _T, "sum of half-height widths of all peaks (min-max scaled trace)"),
    Feature("good_peak_width_sum", _T, "sum of half-height widths of high-prominence peaks"),
    Feature("peak_width_std", _T, "std of half-height widths of all peaks"),
    Feature("good_peak_width_std", _T, "std of half-height widths of high-prominence peaks"),
    *(
        f
        for s in _SCALES
        for f in (
            Feature(f"event_power_{s}sd", _T, f"fraction of (baseline-subtracted) trace power above {s} noise s.d."),
            Feature(f"event_fraction_{s}sd", _T, f"fraction of frames above {s} noise s.d."),
            Feature(f"event_count_{s}sd", _T, f"number of upward crossings of {s} noise s.d. by the smoothed trace"),
        )
    ),
    Feature("band_power_0_05", _T, "fraction of spectral power in normalised band [0, 0.05]"),
    Feature("band_power_05_95", _T, "fraction of spectral power in normalised band [0.05, 0.95]"),
    Feature("band_power_50_100", _T, "fraction of spectral power in normalised band [0.5, 1]"),
    Feature("band_power_0_50", _T, "fraction of spectral power in normalised band [0, 0.5]"),
    Feature("band_power_95_100", _T, "fraction of spectral power in normalised band [0.95, 1]"),
    Feature("trace_similarity", _T, "fraction of other candidates whose median-filtered trace correlates > 0.7"),
    Feature("spike_fluorescence", _T, "sum of normalised trace values at or above their 99th percentile"),
    Feature("area", _S, "number of footprint pixels with weight > 0.1 (of the peak-normalised footprint)"),
    Feature("multiple_bodies", _S, "1 if the thresholded footprint has more than one connected region"),
    Feature("footprint_sum", _S, "sum of footprint weights (peak-normalised)"),
    Feature("perimeter", _S, "perimeter (pixels) of the footprint support (weight > 1e-3 of peak)"),
    Feature("edge_distance", _S, "distance (pixels, 0 on the border) of the peak pixel to the nearest image edge"),
    Feature("circularity", _S, "4 pi area / perimeter^2 of the largest region with weight > 0.3"),
    Feature("eccentricity", _S, "major / minor axis ratio of the largest region with weight > 0.3"),
    Feature("mean_footprint_value", _S, "mean footprint weight over the field of view"),
    Feature("spatial_corruption", _S, "r/(1+r), r = local (4x4 box) over global normalised variance of the footprint"),
    Feature("footprint_overlap_corr", _S, "max Pearson correlation with any overlapping other footprint"),
    Feature("epsilon_mean", _ST, "mean over snapshot frames of the fraction of footprint pixels with unexplained activity"),
    Feature("epsilon_min", _ST, "min over snapshot frames of the unexplained-activity fraction"),
    Feature("epsilon_p10", _ST, "10th percentile over snapshot frames of the unexplained-activity fraction"),
    Feature("epsilon_p20", _ST, "20th percentile over snapshot frames of the unexplained-activity fraction"),
    Feature("corr_score", _ST, "cosine similarity of the footprint and the trace-projected snapshot map"),
    *(
        Feature(f"{ratio}_q{q:02d}", _ST, f"{q}% quantile over events of the {desc} activity ratio")
        for ratio, desc in (
            ("inside_vs_trace", "inside-footprint vs trace"),
            ("trace_vs_surround", "trace vs surround"),
            ("inside_vs_surround", "inside vs surround"),
        )
        for q in (1, 25, 50, 75, 99)
    ),
    *(
        Feature(f"tqm_{r:02d}", _ST, f"event-weighted mean footprint-frame correlation where trace > {r / 100:.1f} max")
        for r in range(0, 100, 10)
    ),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
FEATURE_GROUPS: tuple[str, ...] = tuple(f.group for f in FEATURES)

assert len(FEATURES) == 76 and len(set(FEATURE_NAMES)) == 76

#: Direction of each feature: +1 if higher values look more like a cell, -1 if less, 0 if
#: unknown. The sign of d' (cells vs false positives) on simulated recordings with ground
#: truth, written by ``benchmarks/feature_directions.py`` (no real recording or human label
#: is used). The ``balanced`` classifiers hold each named feature's weight to this sign.
FEATURE_DIRECTIONS: dict[str, int] = {
    "snr": 1, "temporal_corruption": -1, "n_bad_peaks": 1, "top_decile_std": 1,
    "good_peak_spacing": 1, "bad_peak_spacing": -1, "peak_spacing": -1, "peak_width_sum": -1,
    "good_peak_width_sum": -1, "peak_width_std": -1, "good_peak_width_std": -1, "event_power_1sd": 1,
    "event_fraction_1sd": -1, "event_count_1sd": -1, "event_power_3sd": 1, "event_fraction_3sd": -1,
    "event_count_3sd": -1, "event_power_10sd": 1, "event_fraction_10sd": -1, "event_count_10sd": 1,
    "event_power_30sd": 1, "event_fraction_30sd": -1, "event_count_30sd": -1, "event_power_100sd": 0,
    "event_fraction_100sd": 0, "event_count_100sd": 0, "event_power_300sd": 0, "event_fraction_300sd": 0,
    "event_count_300sd": 0, "band_power_0_05": 1, "band_power_05_95": -1, "band_power_50_100": -1,
    "band_power_0_50": 1, "band_power_95_100": -1, "trace_similarity": -1, "spike_fluorescence": 1,
    "area": -1, "multiple_bodies": 0, "footprint_sum": 1, "perimeter": -1,
    "edge_distance": 1, "circularity": 1, "eccentricity": -1, "mean_footprint_value": 1,
    "spatial_corruption": -1, "footprint_overlap_corr": -1, "epsilon_mean": 1, "epsilon_min": 1,
    "epsilon_p10": 1, "epsilon_p20": 1, "corr_score": 1, "inside_vs_trace_q01": -1,
    "inside_vs_trace_q25": -1, "inside_vs_trace_q50": -1, "inside_vs_trace_q75": -1, "inside_vs_trace_q99": -1,
    "trace_vs_surround_q01": 1, "trace_vs_surround_q25": 1, "trace_vs_surround_q50": 1, "trace_vs_surround_q75": 1,
    "trace_vs_surround_q99": 1, "inside_vs_surround_q01": 1, "inside_vs_surround_q25": 1, "inside_vs_surround_q50": 1,
    "inside_vs_surround_q75": 1, "inside_vs_surround_q99": 1, "tqm_00": 1, "tqm_10": 1,
    "tqm_20": 1, "tqm_30": 1, "tqm_40": 1, "tqm_50": 1,
    "tqm_60": 1, "tqm_70": 1, "tqm_80": 1, "tqm_90": 1,
}
