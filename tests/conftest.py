"""Shared fixtures: the real media beside the project (skipped where absent, except in CI)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from storyboard_testutil import MEDIA


def media_required() -> bool:
    """Whether missing media is a failure: under ``STORYBOARD_REQUIRE_MEDIA=1`` (``.ci/run``) or ``CI=true``."""
    return os.environ.get("STORYBOARD_REQUIRE_MEDIA") == "1" or os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def media() -> Path:
    """``../shared/media``, the one media fixture. Where it is absent, tests that use it are skipped on a
    developer's machine and fail in CI (:func:`media_required`), so CI cannot pass without running them."""
    if not (MEDIA / "labels.json").is_file():
        if media_required():
            pytest.fail(f"{MEDIA} is absent and STORYBOARD_REQUIRE_MEDIA=1 or CI=true: the real-media tests "
                        f"must run in CI", pytrace=False)
        pytest.skip("../shared/media is absent")
    return MEDIA


@pytest.fixture(scope="session")
def feature_model() -> Path:
    """The fetched pretrained backbone (``make feature-model``; :mod:`core.feature_backbone`), checked against its
    SHA-256. Where it is absent, tests that use it are skipped on a developer's machine and fail in CI, like
    :func:`media` (``.ci/run`` fetches it through ``make test``)."""
    from core.feature_backbone import default_model_dir, model_present, verify_model

    folder = default_model_dir()
    if not model_present(folder):
        if media_required():
            pytest.fail(f"{folder} holds no feature backbone and STORYBOARD_REQUIRE_MEDIA=1 or CI=true: run "
                        f"`make feature-model`", pytrace=False)
        pytest.skip(f"no feature backbone in {folder} (make feature-model)")
    verify_model(folder)
    return folder


@pytest.fixture(scope="session")
def boxes(media: Path) -> dict:
    """``boxes.json``: hand-labelled character boxes (``[x, y, w, h]`` source pixels) per labelled second."""
    return json.loads((media / "boxes.json").read_text())


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


@pytest.fixture(scope="session")
def moto_url():
    """A moto server on a free port of 127.0.0.1 for the whole session (tests reset it before use)."""
    server_module = pytest.importorskip("moto.server")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
