"""Image generators: the interface every backend implements, and the offline one that reads a folder.

:class:`ImageGenerator` turns one :class:`~evaluation.prompt_set.TextImageRequest` into a
:class:`GenerationOutcome`; a blocked prompt or output is an outcome, never an exception, and
:class:`GenerationError` stops a run that cannot go on. Backends: :class:`FolderImageGenerator` (offline;
images already in ``DIR/<character>/``), ``evaluation.nova_canvas.NovaCanvasGenerator`` (Amazon Nova Canvas
through Bedrock) and ``evaluation.diffusers_generator.DiffusersGenerator`` (Stable Diffusion XL in process).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from PIL import Image, UnidentifiedImageError

from core.errors import InputError
from evaluation.prompt_set import IMAGE_SUFFIXES, TextImageRequest

Status = Literal["ok", "partly_blocked", "blocked_output", "blocked_prompt", "failed"]


class GenerationError(RuntimeError):
    """Generation cannot go on (no access to the model, unknown model ID or ARN); the message says why."""


@dataclass
class GenerationOutcome:
    """What one request produced.

    Attributes:
        request: the request.
        status: ``ok`` (all images), ``partly_blocked`` (HTTP 200 with an ``error`` field and fewer
            images), ``blocked_output`` (an ``error`` field and no image), ``blocked_prompt``
            (``ValidationException`` with the content filter's message: the input was blocked), ``failed``
            (throttling or a transient error after every attempt, or an unusable answer).
        images: PNG bytes of each returned image (not written to the log).
        error: the service's message for any status other than ``ok``.
        attempts: requests sent (1 plus retries).
        files: paths of the written images relative to the output folder.
    """

    request: TextImageRequest
    status: Status
    images: list[bytes] = field(default_factory=list, repr=False)
    error: str | None = None
    attempts: int = 1
    files: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The generation-log record: the request, status, returned count, error, attempts, files."""
        return {**self.request.to_json(), "status": self.status, "requested": self.request.number_of_images,
                "returned": len(self.files) if self.files else len(self.images), "error": self.error,
                "attempts": self.attempts, "files": list(self.files)}


@runtime_checkable
class ImageGenerator(Protocol):
    """Generates the images of one :class:`TextImageRequest`.

    Attributes:
        name: backend identifier (``nova-canvas``, ``folder`` or ``diffusers``).
        model_id: the model ID or ARN (or folder) the images come from, written to the log.
    """

    name: str
    model_id: str

    def generate(self, request: TextImageRequest) -> GenerationOutcome:
        """Return the request's outcome; blocked prompts and outputs are outcomes, not exceptions."""
        ...


def _as_png(data: bytes, source: str) -> bytes:
    """Return ``data`` unchanged if it is a PNG, else re-encoded as PNG.

    Raises:
        ValueError: the bytes are not an image.
    """
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return data
    try:
        with Image.open(io.BytesIO(data)) as img:
            buffer = io.BytesIO()
            img.convert("RGB").save(buffer, format="PNG")
            return buffer.getvalue()
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{source} is not a readable image: {err}") from None


class FolderImageGenerator:
    """Offline generator: images already in ``root/<character>/`` (for example from an earlier run).

    For a request it returns the files named as :func:`image_file_name` would name them where they
    exist; otherwise the folder's images in sorted order, starting at ``ordinal * number_of_images``
    and wrapping around, so a prompt set of any size gets a deterministic answer.

    Raises (from :meth:`generate`):
        InputError: the character has no folder or no image under ``root``; an image cannot be read.
    """

    name = "folder"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"image folder {self.root} does not exist; give a folder with <character>/ "
                             "sub-folders of images")
        self.model_id = f"folder:{self.root}"

    def _files(self, character: str) -> list[Path]:
        folder = self.root / character
        files = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()) \
            if folder.is_dir() else []
        if not files:
            raise InputError(f"{folder} has no images (png, jpg, webp); the folder generator needs "
                             f"{self.root}/{character}/ with images")
        return files

    def generate(self, request: TextImageRequest) -> GenerationOutcome:
        """Return the request's images from the folder (always status ``ok``)."""
        files = self._files(request.character)
        by_name = {p.name: p for p in files}
        chosen: list[Path] = []
        for i, name in enumerate(request.file_names()):
            if name in by_name:
                chosen.append(by_name[name])
            else:
                chosen.append(files[(request.ordinal * request.number_of_images + i) % len(files)])
        try:
            images = [_as_png(p.read_bytes(), str(p)) for p in chosen]
        except ValueError as err:
            raise InputError(str(err)) from None
        return GenerationOutcome(request, "ok", images=images)



__all__ = ["FolderImageGenerator", "GenerationError", "GenerationOutcome", "ImageGenerator", "Status"]
