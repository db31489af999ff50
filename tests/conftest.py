"""Shared test helpers: locations of the real data and the original's fixtures, skipping when absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("TOOLKIT_SHARED", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"
SOF_FIXTURES = SHARED / "fixtures" / "sof"
OFLOW_FIXTURES = SHARED / "fixtures" / "oflow"


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (it sits beside the checkout as ../shared; set TOOLKIT_SHARED)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require(SHARED_DATA, "real reference data ../shared/data")


@pytest.fixture(scope="session")
def sof_fixtures() -> Path:
    return _require(SOF_FIXTURES, "original-implementation SOF fixtures")


@pytest.fixture(scope="session")
def oflow_fixtures() -> Path:
    return _require(OFLOW_FIXTURES, "original-implementation Occupancy Flow fixtures")
