"""Bounding-box geometry shared by the detectors: intersection over union, non-maximum suppression, clipping.

Boxes are ``(x, y, w, h)`` in pixels with ``(x, y)`` the top-left corner (:data:`steps.records.BBox`).
"""

from __future__ import annotations

from collections.abc import Sequence

from steps.records import BBox, Detection


def iou(a: BBox, b: BBox) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes: a float in [0, 1].

    Boxes with zero or negative width or height have no area; their IoU with anything is 0.
    """
    ax, ay, aw, ah = (float(v) for v in a)
    bx, by, bw, bh = (float(v) for v in b)
    if aw <= 0 or ah <= 0 or bw <= 0 or bh <= 0:
        return 0.0
    ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def nms(detections: Sequence[Detection], iou_threshold: float, max_keep: int | None = None) -> list[Detection]:
    """Greedy non-maximum suppression, done separately for each character.

    Within one character, detections are visited from the highest score down; a detection is dropped
    when its IoU with an already kept detection of the same character is above ``iou_threshold``.
    At most ``max_keep`` detections are kept per character (``None``: no limit). Boxes of different
    characters never suppress each other.

    Args:
        detections: candidate detections, any order.
        iou_threshold: in [0, 1]; 0 keeps only non-overlapping boxes, 1 suppresses nothing.
        max_keep: positive limit per character, or ``None``.

    Returns:
        The kept detections sorted by score, highest first (ties: character name, then box), so the
        result is deterministic for a given input set.

    Raises:
        ValueError: ``iou_threshold`` outside [0, 1] or ``max_keep`` below 1.
    """
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    if max_keep is not None and max_keep < 1:
        raise ValueError(f"max_keep must be at least 1 (or None), got {max_keep}")
    ordered = sorted(detections, key=lambda d: (-float(d.score), d.character, tuple(d.bbox)))
    kept: list[Detection] = []
    per_character: dict[str, list[Detection]] = {}
    for det in ordered:
        same = per_character.setdefault(det.character, [])
        if max_keep is not None and len(same) >= max_keep:
            continue
        if any(iou(det.bbox, k.bbox) > iou_threshold for k in same):
            continue
        same.append(det)
        kept.append(det)
    return kept


def clip_box(box: BBox, bounds: BBox) -> BBox | None:
    """Intersect ``box`` with ``bounds`` (both ``(x, y, w, h)``); ``None`` where nothing is left."""
    x0 = max(int(box[0]), int(bounds[0]))
    y0 = max(int(box[1]), int(bounds[1]))
    x1 = min(int(box[0]) + int(box[2]), int(bounds[0]) + int(bounds[2]))
    y1 = min(int(box[1]) + int(box[3]), int(bounds[1]) + int(bounds[3]))
    if x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1 - x0, y1 - y0)


def neighbourhood(box: BBox, bounds: BBox, grow_x: float, grow_y: float) -> tuple[int, int, int, int]:
    """Corners ``(x0, y0, x1, y1)`` of ``box`` ``(x, y, w, h)`` grown by ``grow_x`` x its width on the left and right
    and ``grow_y`` x its height above and below, inside ``bounds`` ``(x, y, w, h)``; all in pixels."""
    x, y, w, h = (int(v) for v in box)
    bx, by, bw, bh = (int(v) for v in bounds)
    return (max(bx, int(x - grow_x * w)), max(by, int(y - grow_y * h)),
            min(bx + bw, int(x + w + grow_x * w)), min(by + bh, int(y + h + grow_y * h)))


def ratio_box_to_pixels(left: float, top: float, width: float, height: float, region: BBox) -> BBox | None:
    """Convert a box given as ratios of ``region`` (the AWS ``BoundingBox`` convention) to pixels.

    ``left``/``width`` are fractions of the region's width and ``top``/``height`` of its height
    (Rekognition ``BoundingBox``: ``Left``, ``Top``, ``Width``, ``Height``; values can fall slightly
    outside [0, 1] for objects cut by the image edge). The result is offset by the region's top-left
    corner and clipped to the region; ``None`` where the clipped box is empty.
    """
    rx, ry, rw, rh = (int(v) for v in region)
    x0 = rx + round(float(left) * rw)
    y0 = ry + round(float(top) * rh)
    x1 = rx + round((float(left) + float(width)) * rw)
    y1 = ry + round((float(top) + float(height)) * rh)
    return clip_box((x0, y0, x1 - x0, y1 - y0), (rx, ry, rw, rh))
