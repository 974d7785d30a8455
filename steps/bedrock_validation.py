"""Nova Canvas training data against the dataset limits, before a customization job is paid for.

:func:`validate_training_rows` applies the Nova Canvas limits of DESIGN §5 (Amazon Nova user guide,
"Preparing data for fine-tuning image generation"): 5 to 10,000 records; exactly ``{"image-ref", "caption"}``
per line; caption 3 to 1,024 characters; PNG or JPEG; at most 50 MB; width and height 512 to 4,096 px; at
most 12,582,912 pixels; aspect ratio 1:4 to 4:1; file names only letters, digits and ``_ - / .``. The
per-record checks (:func:`image_problems`, :func:`image_ref_problems`, :func:`caption_problems`) are shared
with the review step. Images are read by the probes of :mod:`steps.image_probes`; AWS requests are checked
against botocore's service models in :mod:`steps.request_validation`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import (
    NOVA_CANVAS_CAPTION_MAX_CHARS,
    NOVA_CANVAS_CAPTION_MIN_CHARS,
    NOVA_CANVAS_MAX_ASPECT,
    NOVA_CANVAS_MAX_IMAGE_BYTES,
    NOVA_CANVAS_MAX_PIXELS,
    NOVA_CANVAS_MAX_RECORDS,
    NOVA_CANVAS_MAX_SIDE_PX,
    NOVA_CANVAS_MIN_RECORDS,
    NOVA_CANVAS_MIN_SIDE_PX,
)
from core.errors import InputError, TooFewRecordsError
from steps.image_probes import S3_URI_RE, ImageInfo, ImageProbe

TRAINING_KEYS = ("image-ref", "caption")
IMAGE_FORMATS = ("PNG", "JPEG")
# Nova Canvas: "file names only letters, digits, _ - / ." (DESIGN §5). Applied to the S3 key or file name.
IMAGE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_\-/.]+$")


def image_problems(info: ImageInfo) -> list[str]:
    """Nova Canvas limits broken by an image: format, bytes, side lengths, pixels, aspect ratio."""
    problems = []
    if info.size_bytes > NOVA_CANVAS_MAX_IMAGE_BYTES:
        problems.append(f"{info.size_bytes} bytes, above the 50 MB limit ({NOVA_CANVAS_MAX_IMAGE_BYTES} bytes)")
        return problems
    if info.format.upper() not in IMAGE_FORMATS:
        problems.append(f"format {info.format or 'unknown'}, Nova Canvas takes PNG or JPEG")
    w, h = info.width, info.height
    if not (NOVA_CANVAS_MIN_SIDE_PX <= w <= NOVA_CANVAS_MAX_SIDE_PX and
            NOVA_CANVAS_MIN_SIDE_PX <= h <= NOVA_CANVAS_MAX_SIDE_PX):
        problems.append(f"{w}x{h} px, width and height must be {NOVA_CANVAS_MIN_SIDE_PX} to "
                        f"{NOVA_CANVAS_MAX_SIDE_PX} px")
    if w * h > NOVA_CANVAS_MAX_PIXELS:
        problems.append(f"{w * h} pixels, at most {NOVA_CANVAS_MAX_PIXELS}")
    if w > 0 and h > 0 and max(w / h, h / w) > NOVA_CANVAS_MAX_ASPECT:
        problems.append(f"aspect ratio {w}:{h} is outside 1:4 to 4:1")
    return problems


def image_ref_problems(ref: Any) -> list[str]:
    """Problems with the form of an image reference: type, ``s3://`` shape, allowed file-name characters.

    The name rule applies to the S3 key, or to the file name of a local path (local folders may hold
    any character; the S3 key they are uploaded to is what Bedrock reads).
    """
    if not isinstance(ref, str) or not ref.strip():
        return ["image reference is missing or not a string"]
    if ref.startswith("s3://"):
        match = S3_URI_RE.match(ref)
        if not match:
            return [f"{ref!r} is not an s3://bucket/key URI"]
        name = match["key"]
    else:
        name = Path(ref[7:] if ref.startswith("file://") else ref).name
    if not IMAGE_NAME_PATTERN.match(name):
        bad = sorted({c for c in name if not re.match(r"[A-Za-z0-9_\-/.]", c)})
        return [f"{ref!r}: file names may hold only letters, digits and _ - / . (found {''.join(bad)!r})"]
    if Path(name).suffix.lower() not in (".png", ".jpg", ".jpeg"):
        return [f"{ref!r}: extension must be .png, .jpg or .jpeg"]
    return []


def caption_problems(caption: Any) -> list[str]:
    """Nova Canvas caption limits: a string of 3 to 1,024 characters, not only whitespace."""
    if not isinstance(caption, str):
        return ["caption is missing or not a string"]
    if not caption.strip():
        return ["caption is empty"]
    n = len(caption)
    if n < NOVA_CANVAS_CAPTION_MIN_CHARS or n > NOVA_CANVAS_CAPTION_MAX_CHARS:
        return [f"caption has {n} characters; Nova Canvas takes {NOVA_CANVAS_CAPTION_MIN_CHARS} to "
                f"{NOVA_CANVAS_CAPTION_MAX_CHARS}"]
    return []


# -- training manifest ----------------------------------------------------------------------------------


@dataclass
class TrainingManifestReport:
    """The result of checking a Bedrock training manifest.

    Attributes:
        records: number of lines checked.
        errors: ``"line N: message"`` strings, in line order.
        images_checked: images opened (0 when images were not probed).
        widths, heights: pixel sizes of the images checked.
    """

    records: int = 0
    errors: list[str] = field(default_factory=list)
    images_checked: int = 0
    widths: list[int] = field(default_factory=list)
    heights: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No errors were found."""
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        """A JSON summary: counts, size ranges, and the first 100 errors."""
        return {
            "records": self.records,
            "ok": self.ok,
            "error_count": len(self.errors),
            "errors": self.errors[:100],
            "images_checked": self.images_checked,
            "width_px": [min(self.widths), max(self.widths)] if self.widths else None,
            "height_px": [min(self.heights), max(self.heights)] if self.heights else None,
        }


def validate_training_rows(rows: Iterable[Mapping[str, Any]], probe: ImageProbe | None = None,
                           source: str = "training manifest") -> TrainingManifestReport:
    """Check Bedrock training-manifest rows against the Nova Canvas limits (module docstring).

    Args:
        rows: parsed JSON Lines rows, in file order.
        probe: reads each image to check format, size and aspect; ``None`` checks references only.
        source: name used in messages.

    Returns:
        A :class:`TrainingManifestReport`; it never raises for a bad record, so every problem is listed.
    """
    report = TrainingManifestReport()
    seen: dict[str, int] = {}
    for lineno, row in enumerate(rows, 1):
        report.records += 1
        keys = set(row)
        if keys != set(TRAINING_KEYS):
            hint = " (this is the labelling manifest format: use the reviewed train.jsonl)" \
                if {"image_ref", "alt_text"} <= keys else ""
            report.errors.append(f"line {lineno}: keys {sorted(keys)}, expected exactly {list(TRAINING_KEYS)}{hint}")
            continue
        ref, caption = row["image-ref"], row["caption"]
        ref_problems = image_ref_problems(ref)
        for problem in ref_problems + caption_problems(caption):
            report.errors.append(f"line {lineno}: {problem}")
        if isinstance(ref, str):
            if ref in seen:
                report.errors.append(f"line {lineno}: image {ref} repeats line {seen[ref]}")
            seen.setdefault(ref, lineno)
        if probe is not None and not ref_problems:
            try:
                info = probe.probe(ref)
            except InputError as err:
                report.errors.append(f"line {lineno}: {err}")
                continue
            report.images_checked += 1
            report.widths.append(info.width)
            report.heights.append(info.height)
            for problem in image_problems(info):
                report.errors.append(f"line {lineno}: {ref}: {problem}")
    if report.records < NOVA_CANVAS_MIN_RECORDS or report.records > NOVA_CANVAS_MAX_RECORDS:
        report.errors.append(f"{source}: {report.records} records; Nova Canvas fine-tuning takes "
                             f"{NOVA_CANVAS_MIN_RECORDS} to {NOVA_CANVAS_MAX_RECORDS}")
    return report


def check_training_rows(rows: list[Mapping[str, Any]], probe: ImageProbe | None = None,
                        source: str = "training manifest") -> TrainingManifestReport:
    """:func:`validate_training_rows`, raising when anything is wrong.

    Raises:
        TooFewRecordsError: fewer than 5 records (the Nova Canvas minimum).
        InputError: any other problem; the message lists the first 20.
    """
    report = validate_training_rows(rows, probe, source)
    if report.records < NOVA_CANVAS_MIN_RECORDS:
        raise TooFewRecordsError(f"{source} has {report.records} records; Nova Canvas fine-tuning needs at least "
                                 f"{NOVA_CANVAS_MIN_RECORDS} (approve more records in the review, or add footage)")
    if report.errors:
        shown = "\n  - ".join(report.errors[:20])
        more = f"\n  ... and {len(report.errors) - 20} more" if len(report.errors) > 20 else ""
        raise InputError(f"{source} breaks the Nova Canvas dataset limits ({len(report.errors)} problems):"
                         f"\n  - {shown}{more}")
    return report
