"""Crops around detections: geometry, size policy and quality filters.

A crop is the detection's box padded on every side, widened or heightened to the configured aspect
ratio, and shifted (not cut) to stay inside the picture (the content box inside letterbox bars). Nova
Canvas fine-tuning accepts images of 512 to 4,096 px a side, at most 12,582,912 pixels, aspect ratio
1:4 to 4:1 (Amazon Nova user guide, "Preparing data for fine-tuning image generation"; DESIGN §5), so a
crop below ``min_side_px`` is upscaled if the factor stays within ``max_upscale``, else dropped as
``too_small``.

Quality filters run on the crop at source resolution: blur as the variance of the Laplacian
(Pech-Pacheco et al. 2000, "Diatom autofocusing in brightfield microscopy"), and mean luma for too
dark or too bright crops.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from core.config import CropConfig
from steps.records import BBox

SHOT_SCALES = (("close-up", 0.7), ("medium shot", 0.4), ("full shot", 0.0))
"""Shot scale by the character box's height as a share of the picture's height: at least 0.7 a close-up
(head and shoulders fill the picture), at least 0.4 a medium shot, below that a full shot."""


def shot_scale(bbox: BBox, bounds: BBox) -> str:
    """``"close-up"``, ``"medium shot"`` or ``"full shot"`` for a character box ``(x, y, w, h)`` in a picture
    ``bounds`` ``(x, y, w, h)``, both in source pixels (:data:`SHOT_SCALES`). A box cut by the picture's bottom
    edge (within 2 px) shows no whole figure, so it is at least a medium shot."""
    share = float(bbox[3]) / max(1.0, float(bounds[3]))
    scale = next(name for name, floor in SHOT_SCALES if share >= floor)
    if scale == "full shot" and float(bbox[1]) + float(bbox[3]) >= float(bounds[1]) + float(bounds[3]) - 2:
        return "medium shot"
    return scale


def crop_box(bbox: BBox, bounds: BBox, aspect_ratio: float = 1.0, padding: float = 0.15,
             keep_top: bool = True) -> BBox:
    """The crop region for a detection, in source pixels.

    Args:
        bbox: detection ``(x, y, w, h)``.
        bounds: the picture ``(x, y, w, h)`` the crop must stay inside (content box).
        aspect_ratio: width / height of the crop, > 0.
        padding: added on each side as a fraction of the box's width and height (>= 0).
        keep_top: where the crop cannot hold the whole padded box vertically (a close-up taller than the
            picture allows at this aspect ratio), keep the box's top, where a character's head is, with a
            margin of ``min(padding * h, 0.1 * crop height)`` above it, instead of its centre.

    Returns:
        ``(x, y, w, h)`` with ``w / h`` equal to ``aspect_ratio`` (to the pixel), inside ``bounds``:
        shifted inwards where it would cross an edge, and shrunk only when it is larger than ``bounds``
        itself (vertically around the box's top with ``keep_top``, else around its centre).

    Raises:
        ValueError: non-positive sizes or aspect ratio.
    """
    x, y, w, h = (float(v) for v in bbox)
    bx, by, bw, bh = (float(v) for v in bounds)
    if w <= 0 or h <= 0 or bw <= 0 or bh <= 0 or aspect_ratio <= 0:
        raise ValueError(f"crop_box needs positive sizes and aspect ratio, got bbox={bbox} bounds={bounds} "
                         f"aspect_ratio={aspect_ratio}")
    cx, cy = x + w / 2, y + h / 2
    pw, ph = w * (1 + 2 * padding), h * (1 + 2 * padding)
    if pw / ph < aspect_ratio:
        pw = ph * aspect_ratio
    else:
        ph = pw / aspect_ratio
    # Shrink to fit the picture, keeping the aspect ratio.
    scale = min(1.0, bw / pw, bh / ph)
    pw, ph = pw * scale, ph * scale
    top = cy - ph / 2
    if keep_top and ph < h * (1 + 2 * padding) - 1e-6:  # the padded box's height does not fit: keep the head
        top = y - min(padding * h, 0.1 * ph)
    left = min(max(cx - pw / 2, bx), bx + bw - pw)
    top = min(max(top, by), by + bh - ph)
    return (int(round(left)), int(round(top)), max(1, int(round(pw))), max(1, int(round(ph))))


def sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image: higher is sharper (0 for a flat image)."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def mean_luma(image: np.ndarray) -> float:
    """Mean luma (ITU-R BT.601 grey) in [0, 255]."""
    return float(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).mean())


@dataclass
class CropResult:
    """A cut crop, resized for Nova Canvas, or the reason it was dropped.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB, or ``None`` where dropped before resizing.
        box: the crop region in source pixels.
        scale: resize factor applied (> 1 upscaled, < 1 downscaled).
        sharpness, mean_luma: measured at source resolution.
        dropped_reason: ``too_small``, ``blurred``, ``too_dark``, ``too_bright`` or ``None``.
        detail: a sentence explaining the drop, with the measured value and the limit.
        shot_scale: ``close-up``, ``medium shot`` or ``full shot`` (:func:`shot_scale`).
    """

    image: np.ndarray | None
    box: BBox
    scale: float
    sharpness: float
    mean_luma: float
    dropped_reason: str | None = None
    detail: str | None = None
    shot_scale: str = ""


def make_crop(frame: np.ndarray, bbox: BBox, bounds: BBox, config: CropConfig) -> CropResult:
    """Cut, check and resize the crop of detection ``bbox`` from ``frame`` (``(H, W, 3)`` uint8 RGB).

    The crop keeps the top of the box (the head) where it cannot hold all of it (:func:`crop_box`). The
    shorter side is brought to at least ``config.min_side_px`` (upscaled with Lanczos by at most
    ``config.max_upscale``) and the longer side to at most ``config.max_side_px`` (area downscaling).
    """
    box = crop_box(bbox, bounds, config.aspect_ratio, config.padding)
    x, y, w, h = box
    crop = np.ascontiguousarray(frame[y:y + h, x:x + w])
    sharp = sharpness(crop)
    luma = mean_luma(crop)
    short, long_ = min(w, h), max(w, h)
    scale = 1.0
    if short < config.min_side_px:
        scale = config.min_side_px / short
    if long_ * scale > config.max_side_px:
        scale = config.max_side_px / long_
    result = CropResult(None, box, scale, sharp, luma, shot_scale=shot_scale(bbox, bounds))
    if scale > config.max_upscale + 1e-9:
        result.dropped_reason = "too_small"
        result.detail = (f"crop is {w}x{h} px; reaching the {config.min_side_px} px minimum side needs x{scale:.2f}, "
                         f"above crops.max_upscale x{config.max_upscale:g}")
        return result
    if sharp < config.min_blur_variance:
        result.dropped_reason = "blurred"
        result.detail = f"variance of the Laplacian {sharp:.1f} < crops.min_blur_variance {config.min_blur_variance:g}"
        return result
    if luma < config.min_mean_luma:
        result.dropped_reason = "too_dark"
        result.detail = f"mean luma {luma:.1f} < crops.min_mean_luma {config.min_mean_luma:g}"
        return result
    if luma > config.max_mean_luma:
        result.dropped_reason = "too_bright"
        result.detail = f"mean luma {luma:.1f} > crops.max_mean_luma {config.max_mean_luma:g}"
        return result
    if abs(scale - 1.0) > 1e-9:
        size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
        interp = cv2.INTER_LANCZOS4 if scale > 1 else cv2.INTER_AREA
        crop = cv2.resize(crop, size, interpolation=interp)
    result.image = crop
    return result
