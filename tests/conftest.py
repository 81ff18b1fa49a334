"""Shared fixtures.

Real data lives in ``../shared/data/real`` beside the repository (never copied in).
Where it is absent (a user's clone) the tests that need it skip with the reason;
with ``ACTSORT_REQUIRE_REAL_DATA=1`` (set by ``.ci/run``) a missing file fails instead.
The same holds for the browser tests with ``ACTSORT_REQUIRE_BROWSER=1``.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ACTSORT_SHARED", REPO.parent / "shared"))
REAL = SHARED / "data" / "real"


def _missing(what: str, env: str) -> None:
    if os.environ.get(env) == "1":
        pytest.fail(f"{what} is required here ({env}=1) but is missing", pytrace=False)
    pytest.skip(f"{what} is missing (set {env}=1 to make this a failure)")


def real_path(*parts: str) -> Path:
    """Path of a file under ../shared/data/real, or skip (fail in CI) if absent."""
    path = REAL.joinpath(*parts)
    if not path.exists():
        _missing(f"real data file {path}", "ACTSORT_REQUIRE_REAL_DATA")
    return path


def chromium_path() -> str:
    """Path of Debian's Chromium, or skip (fail in CI) if absent."""
    for cand in (os.environ.get("ACTSORT_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if cand and Path(cand).exists():
            return cand
    _missing("Chromium (apt-get install chromium)", "ACTSORT_REQUIRE_BROWSER")
    return ""


@pytest.fixture
def real():
    """Callable returning a path under ../shared/data/real (skips where absent)."""
    return real_path
