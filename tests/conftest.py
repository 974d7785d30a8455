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


@pytest.fixture
def aws_env(monkeypatch):
    """Dummy credentials and region, so boto3 clients build offline; no profile is read."""
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SECURITY_TOKEN": "testing", "AWS_SESSION_TOKEN": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
