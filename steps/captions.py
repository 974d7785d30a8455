"""Captions behind one interface: template captions offline, an Amazon Nova model on Bedrock.

Backends (``captions.backend``, see :func:`make_captioner`): :class:`TemplateCaptioner` (offline default)
and :class:`steps.nova_captioner.NovaCaptioner` (``nova``, formerly ``nova-pro``: a Nova model through the
Converse API, by default Nova 2 Lite ``us.amazon.nova-2-lite-v1:0``; Nova Pro v1 stays an option).

A caption names the character(s) in the crop; Nova Canvas accepts 3 to 1,024 characters (DESIGN §5).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from core.config import CaptionConfig, CharacterConfig


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


TEMPLATE_FIELDS = ("names", "scene", "description")
"""Fields a ``captions.template`` may use."""
DEFAULT_SCENE = "animated film still"
"""``{scene}`` where the request carries no scene words."""


def join_names(names: Sequence[str]) -> str:
    """``"A"``, ``"A and B"``, ``"A, B and C"``: display names as English words.

    Raises:
        ValueError: no names.
    """
    names = [n.strip() for n in names if n and n.strip()]
    if not names:
        raise ValueError("a caption needs at least one character name")
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def truncate_caption(text: str, max_chars: int) -> str:
    """Cut ``text`` to at most ``max_chars`` characters on a word boundary, without trailing punctuation.

    A first word longer than ``max_chars`` is cut inside the word.
    """
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars + 1]
    space = cut.rfind(" ")
    cut = cut[:space] if space > 0 else text[:max_chars]
    return cut.rstrip(" ,;:-")


def validate_requests(requests: Sequence[CaptionRequest]) -> None:
    """Check every request before any work: an id, an RGB image, at least one character name,
    and either no descriptions or one per character.

    Raises:
        InputError: naming the item and the problem.
    """
    from core.errors import InputError

    seen: set[str] = set()
    for i, req in enumerate(requests):
        where = f"caption request {i} ({req.item_id!r})"
        if not req.item_id:
            raise InputError(f"caption request {i} has an empty item_id; use the crop id")
        if req.item_id in seen:
            raise InputError(f"{where}: item_id repeats; every crop needs its own id")
        seen.add(req.item_id)
        if not req.characters or not all(isinstance(c, str) and c.strip() for c in req.characters):
            raise InputError(f"{where} names no character; pass the detected characters' display names")
        if req.descriptions and len(req.descriptions) != len(req.characters):
            raise InputError(f"{where}: {len(req.descriptions)} descriptions for {len(req.characters)} characters; "
                             "give one per character or none")
        image = req.image
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(f"{where}: image must be an (H, W, 3) uint8 RGB array, got "
                             f"{getattr(image, 'shape', None)} {getattr(image, 'dtype', None)}")


class TemplateCaptioner:
    """Offline captions from ``captions.template``: the DreamBooth-style instance prompt naming the character.

    Fields: ``{names}`` (display names, "A and B"), ``{scene}`` (the request's scene words, else
    :data:`DEFAULT_SCENE`) and ``{description}`` (the request's descriptions, else the configured
    characters' descriptions, joined with "; "). Empty fields leave no dangling commas. The result has
    ``min_chars``..``max_chars`` characters (Nova Canvas accepts 3 to 1,024): a longer one is cut on a
    word boundary, a shorter one gets :data:`DEFAULT_SCENE` appended.

    Args:
        config: the ``captions`` settings (``None``: defaults).
        characters: the configured characters (``core.config.CharacterConfig``: ``caption_name``
            and ``description``), used where a request carries no descriptions.

    Raises:
        InputError: the template uses a field other than names, scene and description, or is malformed.
    """

    name = "template"

    def __init__(self, config: CaptionConfig | None = None, characters: Sequence[CharacterConfig] = ()) -> None:
        from string import Formatter

        from core.errors import InputError

        if config is None:
            from core.config import CaptionConfig

            config = CaptionConfig()
        self.config = config
        try:
            fields = {f for _, f, _, _ in Formatter().parse(config.template) if f is not None}
        except ValueError as err:
            raise InputError(f"captions.template {config.template!r} is malformed: {err}") from None
        unknown = sorted(f for f in fields if f not in TEMPLATE_FIELDS)
        if unknown:
            raise InputError(f"captions.template uses unknown field(s) {unknown}; allowed: "
                             + ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS))
        self._descriptions = {c.caption_name: c.description for c in characters}

    def build(self, request: CaptionRequest) -> str:
        """The template caption for one request (``min_chars``..``max_chars`` characters)."""
        descriptions = [d for d in request.descriptions if d and d.strip()] or [
            self._descriptions[c] for c in request.characters if self._descriptions.get(c)]
        text = self.config.template.format(names=join_names(request.characters),
                                           scene=request.scene.strip() or DEFAULT_SCENE,
                                           description="; ".join(d.strip() for d in descriptions))
        text = " ".join(text.split())
        text = re.sub(r"\s*([,;])(\s*[,;])+", r"\1", text)  # ", ," left by an empty field
        text = re.sub(r"\s+([,;.])", r"\1", text).strip(" ,;:-")
        if len(text) < self.config.min_chars:
            text = f"{text}, {DEFAULT_SCENE}" if text else DEFAULT_SCENE
        return truncate_caption(text, self.config.max_chars)

    def caption(self, requests: Sequence[CaptionRequest]) -> list[CaptionResult]:
        """Template captions for ``requests``, in order (``source="template"``, ``attempts=0``).

        Raises:
            InputError: a request without an id, image or character name (checked before any work).
        """
        validate_requests(requests)
        return [CaptionResult(item_id=r.item_id, caption=self.build(r), source="template") for r in requests]
