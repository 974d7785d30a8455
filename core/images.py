"""Encode an RGB array as JPEG or PNG bytes that fit an AWS request's image limits.

Every AWS backend that sends pixels has a size limit (DESIGN §5 and the pages cited by each caller):
Rekognition image bytes at most 5 MB, Titan Multimodal Embeddings images planned at most 5 MB, Nova
Converse inline payload at most 25 MB. :func:`encode_image` downscales (and for JPEG lowers the
quality) until the encoded bytes fit, so one oversized frame never fails a request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from core.errors import InputError

ImageFormat = Literal["jpeg", "png"]

_MAX_ROUNDS = 16


@dataclass(frozen=True)
class EncodedImage:
    """Encoded image bytes and the geometry they hold.

    Attributes:
        data: the JPEG or PNG file bytes.
        image_format: ``"jpeg"`` or ``"png"`` (the names the Bedrock Converse API uses).
        width, height: pixel size of the encoded image.
        scale: encoded size / input size (1.0 where the image was not resized).
    """

    data: bytes
    image_format: ImageFormat
    width: int
    height: int
    scale: float


def check_rgb_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Return ``image`` if it is a non-empty ``(H, W, 3)`` uint8 array.

    Raises:
        InputError: naming ``what``, for any other shape or dtype.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
        shape = getattr(image, "shape", None)
        raise InputError(f"{what} must be an (H, W, 3) RGB array, got shape {shape}; decode images to RGB first")
    if image.dtype != np.uint8:
        raise InputError(f"{what} must be uint8 (0..255), got {image.dtype}; "
                         "convert with np.clip(...).astype(np.uint8)")
    return image


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    if abs(scale - 1.0) < 1e-9:
        return image
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_CUBIC
    return cv2.resize(image, size, interpolation=interpolation)


def _encode(image: np.ndarray, image_format: ImageFormat, quality: int) -> bytes:
    bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    if image_format == "jpeg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    else:
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:  # pragma: no cover - OpenCV fails only on invalid arrays, which check_rgb_image rejects
        raise InputError(f"OpenCV could not encode a {image.shape} image as {image_format}")
    return buf.tobytes()


def encode_image(image: np.ndarray, *, max_bytes: int, image_format: ImageFormat = "jpeg",
                 max_side: int | None = None, min_side: int | None = None, jpeg_quality: int = 90,
                 what: str = "image") -> EncodedImage:
    """Encode ``image`` (``(H, W, 3)`` uint8 RGB) as JPEG or PNG of at most ``max_bytes`` bytes.

    Steps: scale so that the longer side is at most ``max_side`` and the shorter side at least
    ``min_side`` (upscaling tiny images; both optional); encode; while the bytes exceed ``max_bytes``,
    first lower the JPEG quality (``jpeg_quality``, 80, 70) and then downscale by the square root of
    the size ratio (at most 16 rounds). The aspect ratio is kept.

    Returns:
        :class:`EncodedImage` with the bytes and the encoded size.

    Raises:
        InputError: ``image`` is not an RGB uint8 array; ``max_side`` and ``min_side`` cannot both hold
            for its aspect ratio; or it cannot fit ``max_bytes`` without going below ``min_side``.
    """
    check_rgb_image(image, what)
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    h, w = image.shape[:2]
    scale = 1.0
    if max_side is not None and max(h, w) > max_side:
        scale = max_side / max(h, w)
    if min_side is not None and min(h, w) * scale < min_side:
        scale = min_side / min(h, w)
        if max_side is not None and max(h, w) * scale > max_side + 0.5:
            raise InputError(f"{what} of {w}x{h} px cannot have its shorter side >= {min_side} and its longer "
                             f"side <= {max_side}; crop it to a less extreme aspect ratio")
    qualities = sorted({q for q in (jpeg_quality, 80, 70) if q <= jpeg_quality}, reverse=True)
    floor = max(1, min_side or 1)
    for _ in range(_MAX_ROUNDS):
        resized = _resize(image, scale)
        rh, rw = resized.shape[:2]
        data = b""
        for quality in qualities if image_format == "jpeg" else [0]:
            data = _encode(resized, image_format, quality)
            if len(data) <= max_bytes:
                return EncodedImage(data, image_format, rw, rh, rw / w)
        factor = min(0.9, max(0.5, math.sqrt(max_bytes / len(data)) * 0.95))
        if min(rh, rw) * factor < floor:
            break
        scale *= factor
    raise InputError(f"{what} of {w}x{h} px does not fit in {max_bytes} bytes as {image_format} without going "
                     f"below {floor} px; use a smaller crop or JPEG")
