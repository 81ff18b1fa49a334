"""Active learning: classifier, query strategies, the ActiveLearner, simulated annotators.

``ActiveLearner(features, strategy=..., seed=0)`` is the public entry point
(see ``../shared/DESIGN.md``); :mod:`.simulate` replays strategies against
human annotations.
"""
from .classifier import CLASSIFIERS, fit_logistic, predict_proba, prior_proba, standardize
from .learner import ActiveLearner, HistoryEntry
from .queries import DEFAULT_CLASSIFIER, STRATEGIES

__all__ = [
    "ActiveLearner",
    "HistoryEntry",
    "CLASSIFIERS",
    "DEFAULT_CLASSIFIER",
    "STRATEGIES",
    "fit_logistic",
    "predict_proba",
    "prior_proba",
    "standardize",
]
