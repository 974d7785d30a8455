"""Validation before anything is paid for: AWS requests against botocore's service models, and Nova
Canvas training data against the dataset limits.

Request validation (:func:`request_problems`) runs botocore's own ``ParamValidator`` (required members,
types, minimum lengths and values: what botocore checks before sending) and then the constraints the
service model declares but botocore does not check client-side: maximum lengths and values, enums and
``pattern`` regular expressions (AWS writes them in Java syntax; those using ``\\p{..}`` classes are
checked with the ``regex`` package when it is installed and skipped otherwise). It works for any
operation of any service botocore knows, with no network access.

Training data validation (:func:`validate_training_rows`) applies the Nova Canvas limits of DESIGN §5
(Amazon Nova user guide, "Preparing data for fine-tuning image generation"): 5 to 10,000 records;
exactly ``{"image-ref", "caption"}`` per line; caption 3 to 1,024 characters; PNG or JPEG; at most
50 MB; width and height 512 to 4,096 px; at most 12,582,912 pixels; aspect ratio 1:4 to 4:1; file
names only letters, digits and ``_ - / .``.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import botocore.session
from botocore.model import OperationModel, Shape
from botocore.validate import ParamValidator

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

log = logging.getLogger(__name__)

TRAINING_KEYS = ("image-ref", "caption")
IMAGE_FORMATS = ("PNG", "JPEG")
# Nova Canvas: "file names only letters, digits, _ - / ." (DESIGN §5). Applied to the S3 key or file name.
IMAGE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_\-/.]+$")
S3_URI_RE = re.compile(r"^s3://(?P<bucket>[a-z0-9][-.a-z0-9]{1,61}[a-z0-9])/(?P<key>.+)$")

_SESSION: botocore.session.Session | None = None


def _operation_model(service: str, operation: str) -> OperationModel:
    global _SESSION
    if _SESSION is None:
        _SESSION = botocore.session.get_session()
    try:
        model = _SESSION.get_service_model(service)
    except Exception as err:  # botocore raises UnknownServiceError
        raise InputError(f"unknown AWS service {service!r} in botocore {botocore.__version__}: {err}") from None
    try:
        return model.operation_model(operation)
    except Exception:
        raise InputError(f"{service} has no operation {operation!r} (botocore {botocore.__version__}); "
                         f"use the API name, for example 'CreateModelCustomizationJob'") from None


# -- request validation ---------------------------------------------------------------------------------


def request_problems(service: str, operation: str, params: Mapping[str, Any]) -> list[str]:
    """Every way ``params`` breaks the service model of ``service.operation``; empty when it is valid.

    Args:
        service: botocore service name, for example ``"bedrock"`` or ``"sagemaker"``.
        operation: API operation name, for example ``"CreateModelCustomizationJob"``.
        params: the request, as passed to the boto3 client method.

    Returns:
        One message per problem, naming the parameter path (``hyperParameters.stepCount``).

    Raises:
        InputError: the service or operation is unknown to the installed botocore.
    """
    op = _operation_model(service, operation)
    problems: list[str] = []
    report = ParamValidator().validate(dict(params), op.input_shape)
    if report.has_errors():
        problems.extend(line.strip() for line in report.generate_report().splitlines() if line.strip())
    _walk(params, op.input_shape, "", problems)
    return problems


def validate_request(service: str, operation: str, params: Mapping[str, Any], what: str = "request") -> None:
    """Raise :class:`InputError` listing every problem of ``params`` (see :func:`request_problems`)."""
    problems = request_problems(service, operation, params)
    if problems:
        listed = "\n  - ".join(problems)
        raise InputError(f"{what} is not a valid {service} {operation} request "
                         f"(botocore {botocore.__version__} service model):\n  - {listed}")


def _walk(value: Any, shape: Shape, path: str, problems: list[str]) -> None:
    """Check the constraints ParamValidator skips: max length/value, enum and pattern."""
    name = path or "request"
    kind = shape.type_name
    meta = shape.metadata
    if kind == "structure" and isinstance(value, Mapping):
        for key, member in shape.members.items():
            if key in value and value[key] is not None:
                _walk(value[key], member, f"{path}.{key}" if path else key, problems)
    elif kind == "list" and isinstance(value, (list, tuple)):
        if "max" in meta and len(value) > meta["max"]:
            problems.append(f"{name}: {len(value)} items, at most {meta['max']} allowed")
        for i, item in enumerate(value):
            _walk(item, shape.member, f"{name}[{i}]", problems)
    elif kind == "map" and isinstance(value, Mapping):
        if "max" in meta and len(value) > meta["max"]:
            problems.append(f"{name}: {len(value)} entries, at most {meta['max']} allowed")
        for key, item in value.items():
            _walk(key, shape.key, f"{name} key {key!r}", problems)
            _walk(item, shape.value, f"{name}.{key}", problems)
    elif kind == "string" and isinstance(value, str):
        if "max" in meta and len(value) > meta["max"]:
            problems.append(f"{name}: {len(value)} characters, at most {meta['max']} allowed")
        enum = getattr(shape, "enum", None)
        if enum and value not in enum:
            problems.append(f"{name}: {value!r} is not one of {list(enum)}")
        pattern = meta.get("pattern")
        if pattern and not _pattern_matches(pattern, value):
            problems.append(f"{name}: {value!r} does not match the pattern {pattern}")
    elif kind in ("integer", "long", "float", "double") and isinstance(value, (int, float)):
        if "max" in meta and value > meta["max"]:
            problems.append(f"{name}: {value} is above the maximum {meta['max']}")


_PATTERN_CACHE: dict[str, Callable[[str], bool] | None] = {}


def _pattern_matches(pattern: str, value: str) -> bool:
    """Whether ``value`` matches the whole AWS (Java-syntax) ``pattern``; unknown syntax counts as a match."""
    if pattern not in _PATTERN_CACHE:
        _PATTERN_CACHE[pattern] = _compile(pattern)
    matcher = _PATTERN_CACHE[pattern]
    return True if matcher is None else matcher(value)


def _compile(pattern: str) -> Callable[[str], bool] | None:
    body = pattern[1:] if pattern.startswith("^") else pattern
    body = body[:-1] if body.endswith("$") and not body.endswith("\\$") else body
    if "\\p{" in body:
        try:
            import regex  # optional: Unicode property classes such as \p{L}
        except ImportError:
            return None
        try:
            compiled = regex.compile(body, regex.DOTALL)
        except regex.error:
            return None
        return lambda v: compiled.fullmatch(v) is not None
    try:
        compiled_re = re.compile(body, re.DOTALL)
    except re.error:
        log.debug("pattern %r is not Python regex syntax; not checked", pattern)
        return None
    return lambda v: compiled_re.fullmatch(v) is not None


# -- images ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageInfo:
    """What the dataset limits need to know about one image.

    Attributes:
        width, height: pixels. format: Pillow's format name (``"PNG"``, ``"JPEG"``, ...).
        size_bytes: the file's size in bytes.
    """

    width: int
    height: int
    format: str
    size_bytes: int


@runtime_checkable
class ImageProbe(Protocol):
    """Reads an image's size and format from a reference (a local path or an ``s3://`` URI)."""

    def probe(self, ref: str) -> ImageInfo:
        """Return the image's :class:`ImageInfo`.

        Raises:
            InputError: the image cannot be found or read as an image.
        """
        ...


def _info_from_bytes(data: bytes, ref: str) -> ImageInfo:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return ImageInfo(int(image.width), int(image.height), str(image.format or ""), len(data))
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"image {ref} cannot be read as an image ({err})") from None


class LocalImageProbe:
    """Probe images on the local file system; relative references resolve against ``base_dir``."""

    def __init__(self, base_dir: str | Path | None = None) -> None:
        self.base_dir = Path(base_dir) if base_dir is not None else None

    def resolve(self, ref: str) -> Path:
        """The local path of ``ref`` (``file://`` prefixes removed, relative paths joined to ``base_dir``)."""
        if ref.startswith("s3://"):
            raise InputError(f"image {ref} is in S3; the local backend reads local files only "
                             f"(run on AWS, or point image_ref at local files)")
        path = Path(ref[7:] if ref.startswith("file://") else ref)
        if not path.is_absolute() and self.base_dir is not None:
            path = self.base_dir / path
        return path

    def probe(self, ref: str) -> ImageInfo:
        """Open the file header with Pillow (pixels are not decoded)."""
        from PIL import Image, UnidentifiedImageError

        path = self.resolve(ref)
        if not path.is_file():
            raise InputError(f"image {ref} does not exist (looked at {path})")
        try:
            with Image.open(path) as image:
                return ImageInfo(int(image.width), int(image.height), str(image.format or ""), path.stat().st_size)
        except (UnidentifiedImageError, OSError) as err:
            raise InputError(f"image {ref} cannot be read as an image ({err})") from None


class S3ImageProbe:
    """Probe images in S3: ``head_object`` for the size, then the object's bytes for the header.

    Objects larger than the Nova Canvas limit (50 MB) are reported without being downloaded.
    """

    def __init__(self, s3_client: Any, max_bytes: int = NOVA_CANVAS_MAX_IMAGE_BYTES) -> None:
        self.s3 = s3_client
        self.max_bytes = max_bytes

    def probe(self, ref: str) -> ImageInfo:
        """Read ``s3://bucket/key``; raises :class:`InputError` when the object is missing or unreadable."""
        from botocore.exceptions import ClientError

        match = S3_URI_RE.match(ref)
        if not match:
            raise InputError(f"image reference {ref!r} is not an s3://bucket/key URI")
        bucket, key = match["bucket"], match["key"]
        try:
            head = self.s3.head_object(Bucket=bucket, Key=key)
            size = int(head["ContentLength"])
            if size > self.max_bytes:
                return ImageInfo(0, 0, "", size)
            data = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as err:
            raise InputError(f"image {ref} cannot be read from S3 ({err.response['Error'].get('Code')})") from None
        return _info_from_bytes(data, ref)


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
