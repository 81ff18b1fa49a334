"""Live plots beside the panel (bqplot), updated in place inside ``hold_sync()``.

* estimated accuracy against the number of human labels (the learner's estimate);
* histogram of P(cell) over all candidates, with the decision threshold;
* counts: human-labelled cells / not cells, and the model's cells / not cells among the rest;
* controls: query strategy, DCAL weight, decision threshold.

The marks are created once; :meth:`LivePlots.update` only assigns new data to them,
so the browser never rebuilds a figure.
"""
from __future__ import annotations

from collections.abc import Sequence

import bqplot as bq
import ipywidgets as W
import numpy as np

__all__ = ["STRATEGIES", "LivePlots"]

#: Strategies offered in the selector: (shown name, the learner's name). "ours" is the
#: learner's ``explore`` strategy (see :mod:`actsort_nb.learn.queries`).
STRATEGIES: tuple[tuple[str, str], ...] = (
    ("ours (explore)", "explore"),
    ("DCAL", "dcal"),
    ("CAL", "cal"),
    ("DAL", "dal"),
    ("random", "random"),
    ("explore-robust (candidate)", "explore-robust"),
)
COUNT_NAMES = ["you ✓", "you ✗", "model ✓", "model ✗"]
_N_BINS = 20
_FIG = {
    "fig_margin": {"top": 28, "bottom": 38, "left": 48, "right": 12},
    "layout": W.Layout(width="300px", height="220px"),
    "title_style": {"font-size": "12px"},
}


def _figure(title: str, marks, x_label: str, y_label: str, xs, ys, x_kw=None) -> bq.Figure:
    ax_x = bq.Axis(scale=xs, label=x_label, **(x_kw or {}))
    ax_y = bq.Axis(scale=ys, side="left", label=y_label, tick_format=".2~f" if y_label == "accuracy" else "d")
    return bq.Figure(marks=marks, axes=[ax_x, ax_y], title=title, **_FIG)


class LivePlots(W.VBox):
    """Accuracy, P(cell) histogram and counts, with strategy / DCAL weight / threshold controls.

    Parameters
    ----------
    strategy : str
        Initial strategy (learner name, e.g. ``"dcal"``).
    dcal_weight : float
        Initial DCAL weight.
    threshold : float
        Initial decision threshold on P(cell).

    Examples
    --------
    >>> import numpy as np
    >>> plots = LivePlots()
    >>> plots.update(n_labels=[1, 2], accuracy=[0.5, 0.75], p_cell=np.array([0.1, 0.9, 0.6]),
    ...              labels=np.array([1, -1, -1]), threshold=0.5)
    >>> plots.counts.y.tolist()
    [1, 0, 2, 0]
    """

    def __init__(self, *, strategy: str = "explore", dcal_weight: float = 0.5, threshold: float = 0.5):
        # accuracy vs labels
        xs, ys = bq.LinearScale(min=0), bq.LinearScale(min=0.0, max=1.0)
        self.accuracy = bq.Lines(x=np.zeros(0), y=np.zeros(0), scales={"x": xs, "y": ys}, colors=["#0ea5e9"],
                                 marker="circle", marker_size=16, stroke_width=2)
        self.fig_accuracy = _figure("Estimated accuracy", [self.accuracy], "human labels", "accuracy", xs, ys)
        # P(cell) histogram + threshold
        hx, hy = bq.LinearScale(min=0.0, max=1.0), bq.LinearScale(min=0)
        edges = np.linspace(0, 1, _N_BINS + 1)
        self._edges = edges
        self.histogram = bq.Bars(x=0.5 * (edges[:-1] + edges[1:]), y=np.zeros(_N_BINS), scales={"x": hx, "y": hy},
                                 colors=["#94a3b8"], padding=0.05)
        self.threshold_line = bq.Lines(x=[threshold, threshold], y=[0, 1], scales={"x": hx, "y": bq.LinearScale(min=0, max=1)},
                                       colors=["#be185d"], stroke_width=2, line_style="dashed")
        self.fig_histogram = _figure("P(cell) of all candidates", [self.histogram, self.threshold_line], "P(cell)",
                                     "candidates", hx, hy, {"tick_format": ".1f"})
        # counts
        cx, cy = bq.OrdinalScale(domain=COUNT_NAMES), bq.LinearScale(min=0)
        self.counts = bq.Bars(x=COUNT_NAMES, y=np.zeros(4, int), scales={"x": cx, "y": cy},
                              colors=["#22c55e", "#f43f5e", "#86efac", "#fda4af"], color_mode="group", padding=0.25)
        self.fig_counts = _figure("Counts (✓ cell, ✗ not a cell)", [self.counts], "", "candidates", cx, cy)
        # controls
        names = {v: k for k, v in STRATEGIES}
        self.strategy = W.Dropdown(options=[(k, v) for k, v in STRATEGIES],
                                   value=strategy if strategy in names else STRATEGIES[0][1],
                                   description="strategy", layout=W.Layout(width="200px"))
        self.dcal_weight = W.FloatSlider(value=float(dcal_weight), min=0.0, max=1.0, step=0.05,
                                         description="DCAL weight", continuous_update=False,
                                         style={"description_width": "90px"}, layout=W.Layout(width="300px"))
        self.threshold = W.FloatSlider(value=float(threshold), min=0.001, max=0.999, step=0.001, readout_format=".3f",
                                       description="threshold", continuous_update=False,
                                       style={"description_width": "70px"}, layout=W.Layout(width="300px"))
        controls = W.HBox([self.strategy, self.dcal_weight, self.threshold])
        super().__init__([W.HBox([self.fig_accuracy, self.fig_histogram, self.fig_counts]), controls])
        self.add_class("actsort-plots")

    def update(
        self,
        *,
        n_labels: Sequence[float],
        accuracy: Sequence[float],
        p_cell: np.ndarray | None,
        labels: np.ndarray,
        threshold: float,
    ) -> None:
        """Assign new data to the marks (one message per mark, none re-created).

        Parameters
        ----------
        n_labels, accuracy : sequence of float
            The accuracy curve: estimate after each number of labels.
        p_cell : numpy.ndarray or None
            ``(n,)`` P(cell) of every candidate, or None before the first model.
        labels : numpy.ndarray
            ``(n,)`` human labels (1, 0, -1).
        threshold : float
            Decision threshold.
        """
        labels = np.asarray(labels)
        x = np.asarray(n_labels, dtype=float)
        y = np.asarray(accuracy, dtype=float)
        keep = np.isfinite(y)
        with self.accuracy.hold_sync():
            self.accuracy.x, self.accuracy.y = x[keep], y[keep]
        title = "Estimated accuracy" if keep.any() else "Estimated accuracy (after the first model)"
        if self.fig_accuracy.title != title:
            self.fig_accuracy.title = title
        unl = labels < 0
        if p_cell is not None:
            p = np.asarray(p_cell, dtype=float)
            hist = np.histogram(p[np.isfinite(p)], bins=self._edges)[0]
            model_cells = int(np.sum(p[unl] >= threshold))
            model_not = int(np.sum(unl)) - model_cells
        else:
            hist = np.zeros(_N_BINS, int)
            model_cells = model_not = 0
        with self.histogram.hold_sync():
            self.histogram.y = hist
        with self.threshold_line.hold_sync():
            self.threshold_line.x = [threshold, threshold]
        with self.counts.hold_sync():
            self.counts.y = np.array([int(np.sum(labels == 1)), int(np.sum(labels == 0)), model_cells, model_not])
