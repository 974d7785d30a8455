"""Training data of the LoRA fine-tune: manifest -> records -> a torch ``Dataset``.

The manifest is the HumanReview output's ``train.jsonl`` (or the one ``.jsonl`` there with ``image-ref`` and
``caption``) when a review channel is given, else the CaptionImages ``train.jsonl``: one
``{"image-ref", "caption"}`` object per line. An ``image-ref`` (``s3://`` URI or path) resolves to the path
itself when it exists, else to the file under the train channel with the same trailing ``crops/<name>``,
else with the same file name.

Captions: SDXL's CLIP text encoders read 77 tokens, BOS and EOS included (``CAPTION_TOKEN_LIMIT``). Longer
captions are truncated with a warning (policy ``truncate``) or refused (``refuse``), before any training.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from core.errors import InputError, TooFewRecordsError
from core.lora_settings import CAPTION_TOKEN_LIMIT

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass(frozen=True)
class TrainRecord:
    """One training example: a readable image file and its caption.

    Attributes:
        image: local image file.
        caption: the caption (possibly truncated later by the token policy).
        image_ref: the manifest's ``image-ref`` (for messages).
        character: the character named by the CaptionImages manifest, where known.
        tokens: the caption's CLIP token count (BOS/EOS included, the larger of the two tokenizers); 0 unknown.
    """

    image: Path
    caption: str
    image_ref: str
    character: str | None = None
    tokens: int = 0


def find_manifest(train_dir: str | Path, review_dir: str | Path | None = None) -> Path:
    """The training manifest: the review channel's when it holds one, else ``train_dir/train.jsonl``.

    Raises:
        InputError: the review channel holds several candidate ``.jsonl`` files, or no manifest is found.
    """
    train_dir = Path(train_dir)
    if review_dir is not None and Path(review_dir).is_dir():
        review_dir = Path(review_dir)
        if (review_dir / "train.jsonl").is_file():
            return review_dir / "train.jsonl"
        candidates = [p for p in sorted(review_dir.rglob("*.jsonl")) if _has_training_keys(p)]
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            raise InputError(f"review channel {review_dir}: several training manifests "
                             f"({', '.join(p.name for p in candidates)}); leave one, or name it train.jsonl")
    manifest = train_dir / "train.jsonl"
    if not manifest.is_file():
        raise InputError(f"no training manifest: neither a reviewed manifest in {review_dir} nor {manifest}; "
                         "pass the CaptionImages dataset as the train channel")
    return manifest


def _has_training_keys(path: Path) -> bool:
    """The first non-blank line of ``path`` is an object with ``image-ref`` and ``caption``."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError:
                    return False
                return isinstance(row, dict) and "image-ref" in row and "caption" in row
    return False


def resolve_image(ref: str, train_dir: Path, manifest_dir: Path) -> Path | None:
    """The local file of an ``image-ref`` (see the module docstring), or None."""
    if not ref.startswith("s3://"):
        for path in (Path(ref), manifest_dir / ref, train_dir / ref):
            if path.is_file():
                return path
    parts = ref.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == "crops" and (train_dir / "crops" / parts[-1]).is_file():
        return train_dir / "crops" / parts[-1]
    found = sorted(train_dir.rglob(parts[-1])) if parts[-1] else []
    return found[0] if found else None


def _characters_by_file(*folders: Path) -> dict[str, str]:
    """File name -> character from the labelling manifests (``manifest.jsonl``, ``reviewed_manifest.jsonl``)."""
    from core.io import read_jsonl

    names: dict[str, str] = {}
    for folder in folders:
        for name in ("manifest.jsonl", "reviewed_manifest.jsonl"):
            path = folder / name
            if path.is_file():
                for row in read_jsonl(path):
                    if row.get("image_ref") and row.get("character"):
                        names[str(row["image_ref"]).rsplit("/", 1)[-1]] = str(row["character"])
    return names


def load_records(manifest: str | Path, train_dir: str | Path,
                 review_dir: str | Path | None = None) -> list[TrainRecord]:
    """Read the manifest and resolve every image; checks each image's header (cheap), decodes nothing.

    Raises:
        InputError: a line is not an object with a non-empty ``image-ref`` and ``caption``, or images are
            missing or unreadable (all such records named, up to 10).
    """
    from PIL import Image

    from core.io import read_jsonl

    manifest, train_dir = Path(manifest), Path(train_dir)
    folders = [train_dir] + ([Path(review_dir)] if review_dir and Path(review_dir).is_dir() else [])
    characters = _characters_by_file(*folders)
    records: list[TrainRecord] = []
    bad: list[str] = []
    for lineno, row in enumerate(read_jsonl(manifest), 1):
        ref, caption = row.get("image-ref"), row.get("caption")
        if not isinstance(ref, str) or not ref or not isinstance(caption, str) or not caption.strip():
            raise InputError(f"{manifest}: record {lineno} needs a non-empty 'image-ref' and 'caption' "
                             f"(got keys {sorted(row)})")
        path = resolve_image(ref, train_dir, manifest.parent)
        if path is None:
            bad.append(f"{ref} (no such file here or under {train_dir})")
            continue
        try:
            with Image.open(path) as image:
                image.size  # noqa: B018 - reads the header
        except (OSError, ValueError) as err:
            bad.append(f"{ref} (unreadable image: {err})")
            continue
        records.append(TrainRecord(path, caption.strip(), ref, characters.get(path.name)))
    if bad:
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise InputError(f"{manifest}: {len(bad)} record(s) without a usable image: {'; '.join(bad[:10])}{more}; "
                         "upload the crops with the train channel or fix the image-ref values")
    return records


def check_min_records(records: Sequence[TrainRecord], min_records: int, manifest: str | Path) -> None:
    """Raises TooFewRecordsError (an InputError) when fewer than ``min_records`` records remain."""
    if len(records) < min_records:
        raise TooFewRecordsError(f"{manifest}: {len(records)} training record(s), fewer than min_records="
                                 f"{min_records}; approve more records in the review or lower min_records")


def apply_caption_policy(records: Sequence[TrainRecord], tokenizers: Sequence[Any], policy: str,
                         limit: int = CAPTION_TOKEN_LIMIT) -> tuple[list[TrainRecord], list[str]]:
    """Count each caption's tokens (BOS/EOS included, the larger over ``tokenizers``); apply the policy.

    ``truncate``: over-long captions are kept (the tokenizers cut them at ``limit`` later), a warning names
    them, and their ``image-ref`` values are returned. ``refuse``: raise.

    Raises:
        InputError: policy ``refuse`` and a caption over ``limit`` tokens (the records named, with counts).
    """
    counted = [replace(r, tokens=max(len(t(r.caption, truncation=False).input_ids) for t in tokenizers))
               for r in records]
    long = [r for r in counted if r.tokens > limit]
    if long and policy == "refuse":
        named = "; ".join(f"{r.image_ref} ({r.tokens} tokens)" for r in long[:10])
        raise InputError(f"caption_token_policy=refuse: {len(long)} caption(s) longer than {limit} CLIP tokens "
                         f"(BOS/EOS included): {named}; shorten them in the review or set "
                         "caption_token_policy=truncate")
    for r in long:
        log.warning("caption of %s has %d CLIP tokens; truncated to %d", r.image_ref, r.tokens, limit)
    return counted, [r.image_ref for r in long]


def tokenize(captions: Sequence[str], tokenizer: Any, limit: int = CAPTION_TOKEN_LIMIT) -> Any:
    """``(N, limit)`` int64 token ids, padded to ``limit`` and truncated at it (EOS kept)."""
    return tokenizer(list(captions), padding="max_length", max_length=limit, truncation=True,
                     return_tensors="pt").input_ids


def records_digest(records: Sequence[TrainRecord]) -> str:
    """SHA-256 over the records' image refs, image bytes and captions, in order (ties a checkpoint to its data)."""
    digest = hashlib.sha256()
    for r in records:
        digest.update(f"{r.image_ref}\n{r.caption}\n".encode())
        digest.update(hashlib.sha256(r.image.read_bytes()).digest())
    return digest.hexdigest()


def dataset_summary(records: Sequence[TrainRecord], manifest: Path, truncated: Sequence[str]) -> dict[str, Any]:
    """``records``, ``characters`` (sorted, those known), ``truncated_captions``, ``truncated_refs`` (up to
    20), ``manifest``, ``max_caption_tokens``, ``digest``."""
    return {"records": len(records), "characters": sorted({r.character for r in records if r.character}),
            "truncated_captions": len(truncated), "truncated_refs": list(truncated[:20]), "manifest": str(manifest),
            "max_caption_tokens": max((r.tokens for r in records), default=0), "digest": records_digest(records)}


def load_image(path: Path, resolution: int) -> tuple[Any, tuple[int, int], tuple[int, int]]:
    """Resize the shorter side to ``resolution`` (bilinear) and center-crop a square.

    Returns ``(pixels, original_size, crop_top_left)``: ``(3, R, R)`` float32 tensor in [-1, 1], the
    source ``(height, width)`` and the crop's ``(top, left)`` in the resized image (SDXL's size conditioning).
    """
    import numpy as np
    import torch
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
    width, height = image.size
    scale = resolution / min(width, height)
    new_w, new_h = max(resolution, round(width * scale)), max(resolution, round(height * scale))
    image = image.resize((new_w, new_h), Image.BILINEAR)
    top, left = (new_h - resolution) // 2, (new_w - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous(), (height, width), (top, left)


class ImageCaptionDataset:
    """A map-style torch dataset over records: item ``i`` is ``{"pixel_values": (3, R, R) float32 in [-1, 1],
    "original_size": (h, w), "crop_top_left": (top, left), "index": i}``; captions are embedded once per
    record by the training loop, so items carry the index."""

    def __init__(self, records: Sequence[TrainRecord], resolution: int) -> None:
        self.records = list(records)
        self.resolution = resolution

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        pixels, original, crop = load_image(self.records[index].image, self.resolution)
        return {"pixel_values": pixels, "original_size": original, "crop_top_left": crop, "index": index}
