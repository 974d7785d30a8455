"""Captions behind one interface: template captions offline, Amazon Nova Pro on Bedrock.

A caption names the character(s) in the crop; Nova Canvas accepts 3 to 1,024 characters (DESIGN §5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class CaptionRequest:
    """What a captioner needs for one crop.

    Attributes:
        item_id: the crop id (stable across re-runs).
        image: ``(H, W, 3)`` uint8 RGB crop.
        characters: display names of the characters in the crop (at least one).
        descriptions: short visual description per character, same order as ``characters``.
        scene: a few words on the scene where known (for example "close-up, bright daylight").
    """

    item_id: str
    image: np.ndarray
    characters: tuple[str, ...]
    descriptions: tuple[str, ...] = ()
    scene: str = ""


@dataclass(frozen=True)
class CaptionResult:
    """A caption and how it was made.

    Attributes:
        item_id: the request's id.
        caption: the caption text (3 to 1,024 characters).
        source: ``"template"`` or the model ID that wrote it.
        attempts: model calls made (0 for a template caption).
        needs_review: the model's answer was unusable and the template caption replaced it.
        note: why it needs review, if it does.
    """

    item_id: str
    caption: str
    source: str
    attempts: int = 0
    needs_review: bool = False
    note: str | None = None


@runtime_checkable
class Captioner(Protocol):
    """Writes one caption per crop."""

    name: str

    def caption(self, requests: Sequence[CaptionRequest]) -> list[CaptionResult]:
        """Caption every request; results in the same order. Never raises for one bad answer:
        an unusable answer falls back to the template caption with ``needs_review=True``."""
        ...
