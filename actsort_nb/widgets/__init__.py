"""The labelling panel in JupyterLab: candidate view and map (anywidget), live plots (bqplot).

- :class:`~actsort_nb.widgets.panel.CandidatePanel` -- one candidate at a time as binary
  buffers, decision buttons and keys, the field-of-view map (``panel.js``, ``panel.css``);
- :class:`~actsort_nb.widgets.plots.LivePlots` -- accuracy estimate, P(cell) histogram,
  counts, strategy / DCAL weight / threshold controls;
- :class:`~actsort_nb.widgets.app.SortingApp` and :func:`sort` -- both wired to an
  :class:`~actsort_nb.learn.ActiveLearner` and a :class:`~actsort_nb.store.LabelLog`.
"""
from __future__ import annotations

from .app import SortingApp, sort
from .panel import CandidatePanel
from .plots import LivePlots

__all__ = ["CandidatePanel", "LivePlots", "SortingApp", "sort"]
