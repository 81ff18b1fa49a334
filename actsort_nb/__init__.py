"""actsort_nb: active-learning cell sorting for calcium imaging, native to JupyterLab.

The path of the data is the architecture::

    io (readers) -> CandidateSet -> preprocess -> SortSet -> learn <-> widgets
                                                                 \\-> store (label log, exports)
"""
from . import accessor as _accessor  # noqa: F401  (registers ds.actsort)
from ._validation import InputError
from .candidates import candidate_set, feature_set

__version__ = "0.1.0"

__all__ = ["InputError", "candidate_set", "feature_set", "sort", "__version__"]


def __getattr__(name: str):  # lazy: ``sort`` imports the widgets (anywidget, bqplot) only when used
    if name == "sort":
        from .widgets.app import sort

        return sort
    raise AttributeError(f"module 'actsort_nb' has no attribute {name!r}")
