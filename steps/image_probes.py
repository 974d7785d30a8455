"""Reading an image's size and format (what the Nova Canvas dataset limits check) from a local path or S3.

:class:`ImageProbe` is the protocol; :class:`LocalImageProbe` opens local files, :class:`S3ImageProbe` reads
objects from S3 (objects above the 50 MB limit are reported without being downloaded). Only the header is
read with Pillow; pixels are not decoded.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from core.config import NOVA_CANVAS_MAX_IMAGE_BYTES
from core.errors import InputError

S3_URI_RE = re.compile(r"^s3://(?P<bucket>[a-z0-9][-.a-z0-9]{1,61}[a-z0-9])/(?P<key>.+)$")


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
