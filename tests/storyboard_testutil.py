"""Paths and small helpers shared by the tests (imported by basename: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO.parent / "shared" / "media"


def characters_dir(tmp: Path, media: Path, *names: str) -> Path:
    """A ``--characters`` folder holding copies of the shared references of ``names``."""
    root = tmp / "characters"
    for name in names:
        shutil.copytree(media / "references" / name, root / name)
    return root
