"""Shared fixtures: paths to the shipped samples and to ../shared/data (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "myntra" / "styles.csv").is_file():
        pytest.skip("../shared/data is not available")
    return SHARED_DATA


@pytest.fixture
def samples() -> Path:
    from pipeline.source_config import samples_dir

    return samples_dir()
