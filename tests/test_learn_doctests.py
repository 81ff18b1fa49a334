"""Every public docstring Example in actsort_nb.learn runs and gives the shown output."""
from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["classifier", "queries", "learner", "estimate", "simulate"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"actsort_nb.learn.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 0
