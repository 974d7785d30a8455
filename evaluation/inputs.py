"""Image collection for the Evaluate step: character folders, training crops, decoding and embedding.

Layouts (see :mod:`evaluation.evaluate`): ``ROOT/<character>/*.png|jpg|webp`` per character; ``ROOT/_background/``
for windows with no character where allowed; ``TRAINING/crops.jsonl`` (kept rows) or folders for the training
crops. Folders that are no character (``dropped/``, names starting with ``.`` or ``_``) are skipped with a warning.
Every check here runs before any image is embedded.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.embeddings import ImageEmbedder
from core.errors import InputError
from core.io import read_jsonl
from evaluation.generation import GENERATION_LOG
from evaluation.prompt_set import IMAGE_SUFFIXES, parse_image_name

log = logging.getLogger(__name__)

BACKGROUND_FOLDER = "_background"
NOT_CHARACTER_FOLDERS = frozenset({"dropped"})  # ExtractFrames' crops/dropped/ (crops the filters rejected)
REFERENCES_YAML = "references.yaml"
FOLDER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass
class ImageItem:
    """One image file: its path, the path relative to its set's root, its character (or ``None``)."""

    path: Path
    rel: str
    character: str | None
    meta: dict[str, Any] | None = None



def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def skip_reason(name: str) -> str | None:
    """Why a sub-folder named ``name`` is no character folder, or ``None`` when it may be one."""
    if name.startswith((".", "_")):
        return "names starting with '.' or '_' are not characters"
    if name in NOT_CHARACTER_FOLDERS:
        return "ExtractFrames' rejected crops, not a character"
    return None


def _skipped(folder: Path, what: str, warnings: list[str] | None) -> bool:
    """True when ``folder`` is no character folder (:func:`skip_reason`); the skip is then logged and added
    to ``warnings``."""
    skip = skip_reason(folder.name)
    if skip:
        message = f"{what}: skipped folder {folder} ({skip})"
        log.warning(message)
        if warnings is not None:
            warnings.append(message)
    return skip is not None


def scan_character_folders(root: str | Path | None, what: str, option: str, *,
                           min_images: int = 1, allow_background: bool = False,
                           generation: dict[str, Any] | None = None,
                           warnings: list[str] | None = None) -> dict[str, list[ImageItem]]:
    """Images of ``root/<character>/`` for every character folder, in sorted order.

    Folders that are no character (names starting with ``.`` or ``_`` except ``_background`` where allowed,
    ``dropped/``) are skipped with a warning appended to ``warnings``.

    Args:
        root: the folder; ``what`` and ``option`` name it in messages (``"images"``, ``"--images"``).
        min_images: fewest images a character folder must hold.
        allow_background: also read ``root/_background/`` (character ``None`` in the items, key
            ``"_background"`` in the result).
        generation: the folder's generation log, to say in an error which prompts were blocked.

    Raises:
        InputError: ``root`` is missing or holds no character folder with images; a folder name is not
            a character name; a character has fewer than ``min_images`` images; a references folder holds
            only ``references.yaml`` (frame regions, which need the video: the message says how to resolve them).
    """
    if root is None:
        raise InputError(f"{option} is required")
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{what} folder {root} ({option}) does not exist; give a folder with one sub-folder "
                         "of images per character (DIR/<character>/*.png)")
    result: dict[str, list[ImageItem]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        name = folder.name
        if name == BACKGROUND_FOLDER and allow_background:
            result[name] = [ImageItem(p, f"{name}/{p.name}", None) for p in _image_files(folder)]
            continue
        if _skipped(folder, what, warnings):
            continue
        if not FOLDER_NAME.match(name):
            raise InputError(f"{what} folder {folder} ({option}) is not a character name (lower-case letters, "
                             "digits, '_' or '-'); rename it to the character's name from pipeline.yaml")
        files = _image_files(folder)
        if not files and (folder / REFERENCES_YAML).is_file():
            raise InputError(
                f"{what} folder {folder} ({option}) defines {name!r} only by {REFERENCES_YAML} (regions of video "
                "frames), which this command cannot crop without the video: run `storyboard evaluate --video "
                "VIDEO` (the regions are resolved with steps.references.load_references), or pass the dataset's "
                "resolved references (<dataset>/references/, written by ExtractFrames) as --references")
        if len(files) < min_images:
            blocked = ""
            if generation:
                rows = [r for r in generation["records"] if r.get("character") == name and r.get("status") != "ok"]
                if rows:
                    blocked = (f"; {len(rows)} request(s) for {name!r} were blocked or failed (see "
                               f"{root / GENERATION_LOG})")
            raise InputError(
                f"{what} folder {folder} ({option}) has {len(files)} image(s); at least {min_images} are needed "
                f"per character" + (" (a mean and a confidence interval over fewer images are meaningless)"
                                    if min_images > 1 else "") + blocked)
        result[name] = [ImageItem(p, f"{name}/{p.name}", name, parse_image_name(p.name)) for p in files]
    if not any(v for k, v in result.items() if k != BACKGROUND_FOLDER or allow_background):
        loose = _image_files(root)
        hint = (f" ({len(loose)} image(s) lie directly in it: move them into {root}/<character>/)"
                if loose else "")
        raise InputError(f"{what} folder {root} ({option}) is empty: it has no <character>/ sub-folder with "
                         f"images{hint}")
    return result


def scan_training_crops(root: str | Path, warnings: list[str] | None = None) -> list[ImageItem]:
    """Training crops for memorisation and (where their character is known) calibration.

    Layouts, tried in order: ``root/crops.jsonl`` (kept rows; ``path`` relative to ``root``),
    ``root/<character>/*``, or images directly in ``root`` (character unknown). In the folder layouts,
    folders that are no character (``dropped/``: the crops ExtractFrames rejected; names starting with ``.``
    or ``_``) are skipped with a warning.

    Raises:
        InputError: ``root`` is missing, a manifest row points to a missing file, or no image is found.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"training crops folder {root} (--training-crops) does not exist")
    manifest = root / "crops.jsonl"
    items: list[ImageItem] = []
    if manifest.is_file():
        try:
            rows = read_jsonl(manifest)
        except ValueError as err:
            raise InputError(str(err)) from None
        for row in rows:
            if row.get("dropped_reason") or not row.get("path"):
                continue
            path = root / row["path"]
            if not path.is_file():
                raise InputError(f"{manifest}: crop {row.get('crop_id')} points to {path}, which does not exist")
            items.append(ImageItem(path, str(row["path"]), row.get("character")))
    else:
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            if _skipped(folder, "training crops", warnings):
                continue
            character = folder.name if FOLDER_NAME.match(folder.name) else None
            items += [ImageItem(p, f"{folder.name}/{p.name}", character) for p in _image_files(folder)]
        items += [ImageItem(p, p.name, None) for p in _image_files(root)]
    if not items:
        raise InputError(f"training crops folder {root} (--training-crops) has no image (and no crops.jsonl "
                         "with kept crops)")
    return items


def load_rgb(path: Path) -> np.ndarray:
    """Decode an image file to an ``(H, W, 3)`` uint8 RGB array.

    Raises:
        InputError: the file cannot be read or decoded; the message names it.
    """
    try:
        with Image.open(path) as img:
            img.load()
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise InputError(f"cannot read image {path}: {err}. Replace or remove the file") from None


def embed_items(embedder: ImageEmbedder, items: Sequence[ImageItem], what: str) -> np.ndarray:
    """Embed the image files of ``items`` into an ``(N, D)`` float32 array (``(0, D)`` for none).

    Raises:
        InputError: an image cannot be read, or the backend returns another shape than ``(N, D)``.
    """
    images = [load_rgb(item.path) for item in items]
    if not images:
        return np.zeros((0, int(embedder.dimension)), dtype=np.float32)
    emb = np.asarray(embedder.embed_images(images), dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(items):
        raise InputError(f"embedding backend {embedder.name} returned shape {emb.shape} for {len(items)} {what}")
    return emb


def check_dimensions(sets: Mapping[str, np.ndarray]) -> int:
    """The common embedding length D of named ``(N, D)`` arrays.

    Raises:
        InputError: the arrays have different lengths (embedded by different backends).
    """
    dims = {name: int(arr.shape[1]) for name, arr in sets.items() if arr.size or arr.ndim == 2}
    distinct = sorted(set(dims.values()))
    if len(distinct) > 1:
        detail = ", ".join(f"{k}: {v}" for k, v in dims.items())
        raise InputError(f"mismatched embedding dimensions ({detail}); embed every image set with the same "
                         "embeddings backend and output length")
    return distinct[0]
