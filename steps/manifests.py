"""The two manifests of the data preparation, and their validation.

- Labelling manifest (``manifest.jsonl``), the blog's format plus our metadata: ``{"image_ref",
  "alt_text", "crop_id", "character", ...}``. Human review reads and edits it.
- Bedrock training manifest (``train.jsonl``): exactly ``{"image-ref": "s3://...", "caption": "..."}``
  per line, the only format ``create_model_customization_job`` accepts for Nova Canvas (Amazon Nova user
  guide, "Preparing data for fine-tuning image generation"; DESIGN §4). It is not the labelling format.

Validation of every Nova Canvas limit (record count, caption length, image format, bytes, sides,
pixels, aspect ratio, file-name characters) lives in :mod:`steps.bedrock_validation`, shared with the
FineTune step; :func:`validate_training_manifest` applies it to a file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from core.io import read_jsonl
from steps.bedrock_validation import (
    TrainingManifestReport,
    check_training_rows,
    validate_training_rows,
)
from steps.image_probes import ImageProbe, LocalImageProbe
from steps.records import CropRecord


def image_ref(path: str, image_uri_prefix: str | None) -> str:
    """The reference written into the manifests for a crop at ``path`` (relative to the output folder).

    With ``image_uri_prefix`` (for example ``s3://bucket/run/crops/``) the reference is the prefix plus
    the file name; without, it stays the relative path, resolved against the manifest's folder.
    """
    if not image_uri_prefix:
        return path
    return image_uri_prefix.rstrip("/") + "/" + Path(path).name


def labelling_row(record: CropRecord, caption: str, ref: str, *, caption_source: str, needs_review: bool,
                  note: str | None, display_name: str) -> dict[str, Any]:
    """One ``manifest.jsonl`` line: ``image_ref`` and ``alt_text`` (the blog's keys) plus metadata."""
    return {
        "image_ref": ref,
        "alt_text": caption,
        "crop_id": record.crop_id,
        "character": record.character,
        "characters": [display_name],
        "video": record.video,
        "frame_index": record.frame_index,
        "timestamp_s": record.timestamp_s,
        "bbox": record.bbox,
        "width": record.width,
        "height": record.height,
        "upscaled": record.upscaled,
        "detection_score": record.score,
        "caption_source": caption_source,
        "needs_review": needs_review,
        "review_note": note,
    }


def training_row(labelling: Mapping[str, Any]) -> dict[str, str]:
    """The Bedrock training line of a labelling line: exactly ``{"image-ref", "caption"}``."""
    return {"image-ref": str(labelling["image_ref"]), "caption": str(labelling["alt_text"])}


def validate_training_manifest(path: str | Path, probe: ImageProbe | None = None,
                               raise_on_error: bool = False) -> TrainingManifestReport:
    """Check every line of a Bedrock training manifest against the Nova Canvas limits.

    Args:
        path: a ``train.jsonl`` file.
        probe: reads each image (default: local files, relative references resolved against the
            manifest's folder; ``s3://`` references need :class:`steps.image_probes.S3ImageProbe`).
        raise_on_error: raise instead of returning a report with errors.

    Returns:
        A report listing each violation as ``"line N: ..."`` with the limit it breaks.

    Raises:
        InputError / TooFewRecordsError: only with ``raise_on_error``; also when the file is not JSON Lines.
    """
    path = Path(path)
    try:
        rows = read_jsonl(path)
    except ValueError as err:
        from core.errors import InputError

        raise InputError(str(err)) from None
    probe = probe or LocalImageProbe(path.parent)
    if raise_on_error:
        return check_training_rows(rows, probe, source=str(path))
    return validate_training_rows(rows, probe, source=str(path))


def training_rows(labelling_rows: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Training lines for the labelling lines, in order."""
    return [training_row(r) for r in labelling_rows]
