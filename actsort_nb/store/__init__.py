"""Never lose a label: the append-only label log, several annotators, exports.

- :mod:`~actsort_nb.store.log`: :class:`LabelLog`, a crash-safe, append-only log of
  every human decision (SQLite file, or PostgreSQL through a URL for a team); undo
  appends a retraction; resume replays the log.
- :mod:`~actsort_nb.store.agreement`: consensus labels and inter-annotator
  agreement (balanced accuracy and Cohen's κ vs the consensus of the others).
- :mod:`~actsort_nb.store.export`: labels, P(cell) and provenance to CSV, HDF5,
  Suite2p ``iscell.npy``, CaImAn ``idx_components`` and NWB, and
  :func:`read_labels` to re-import any of them.
"""
from __future__ import annotations

from .agreement import AgreementReport, agreement_report, balanced_accuracy, cohen_kappa, consensus
from .export import (
    FORMATS,
    Written,
    export,
    export_caiman,
    export_csv,
    export_hdf5,
    export_nwb,
    export_suite2p,
    label_table,
    read_labels,
)
from .log import CONSENSUS, Decision, Event, LabelLog

__all__ = [
    "AgreementReport",
    "CONSENSUS",
    "Decision",
    "Event",
    "FORMATS",
    "LabelLog",
    "Written",
    "agreement_report",
    "balanced_accuracy",
    "cohen_kappa",
    "consensus",
    "export",
    "export_caiman",
    "export_csv",
    "export_hdf5",
    "export_nwb",
    "export_suite2p",
    "label_table",
    "read_labels",
]
