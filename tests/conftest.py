"""Shared fixtures: the real media beside the project (skipped where absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from storyboard_testutil import MEDIA


@pytest.fixture(scope="session")
def media() -> Path:
    """``../shared/media``; tests that use it are skipped where it is absent."""
    if not (MEDIA / "labels.json").is_file():
        pytest.skip("../shared/media is absent")
    return MEDIA


@pytest.fixture(scope="session")
def labels(media: Path) -> dict:
    """``labels.json``: per-second presence labels of each clip."""
    return json.loads((media / "labels.json").read_text())["clips"]
