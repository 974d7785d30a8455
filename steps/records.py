"""Typed records passed between the data-preparation stages, and their JSON Lines forms (DESIGN §4).

Coordinates: a bounding box is ``(x, y, w, h)`` in pixels of the *source* frame (before letterbox
removal), with ``(x, y)`` the top-left corner; ``w`` and ``h`` are positive.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

BBox = tuple[int, int, int, int]


@dataclass(frozen=True)
class SampledFrame:
    """One decoded frame kept by the sampler.

    Attributes:
        video: path or URI of the source video, as given by the user.
        frame_index: 0-based index of the frame in decode order.
        timestamp_s: presentation time in seconds from the start of the stream.
        image: ``(H, W, 3)`` uint8 RGB pixels of the whole source frame.
        content_box: ``(x, y, w, h)`` of the picture inside letterbox bars (the whole frame if none).
        keyframe: whether the frame is a keyframe (I-frame).
        shot: 0-based shot number within the video (a cut starts a new shot).
    """

    video: str
    frame_index: int
    timestamp_s: float
    image: np.ndarray = field(repr=False, compare=False)
    content_box: BBox
    keyframe: bool = False
    shot: int = 0


@dataclass(frozen=True)
class Detection:
    """A character found in a frame: ``bbox`` in source pixels, ``score`` in [0, 1]."""

    character: str
    bbox: BBox
    score: float

    def to_json(self) -> dict[str, Any]:
        """``{"character", "bbox": [x, y, w, h], "score"}`` as written in ``frames.jsonl``."""
        return {"character": self.character, "bbox": [int(v) for v in self.bbox], "score": round(float(self.score), 4)}


def frame_log_row(frame: SampledFrame, detections: list[Detection]) -> dict[str, Any]:
    """One ``frames.jsonl`` line: video, frame index, timestamp (s), content box and every detection."""
    return {
        "video": frame.video,
        "frame_index": frame.frame_index,
        "timestamp_s": round(frame.timestamp_s, 4),
        "keyframe": frame.keyframe,
        "shot": frame.shot,
        "content_box": [int(v) for v in frame.content_box],
        "detections": [d.to_json() for d in detections],
    }


@dataclass
class CropRecord:
    """One crop, kept or dropped: a line of ``crops.jsonl`` (DESIGN §4).

    Attributes:
        crop_id: deterministic id ``<character>_<video-stem>_f<frame-index>_<n>``; also the file stem.
        video, frame_index, timestamp_s: where the crop comes from.
        character: the detected character's name.
        bbox: the detection's box ``[x, y, w, h]`` in source pixels; ``crop_box`` the padded crop region.
        score: detection score in [0, 1].
        path: crop image path relative to the output folder (``crops/<crop_id>.jpg``), or ``None``
            where the crop was dropped before being written.
        width, height: pixel size of the written crop (after any resize).
        upscaled: the crop was enlarged by ``scale`` (> 1) to reach the minimum side.
        sharpness: variance of the Laplacian of the crop; mean_luma: mean luma in [0, 255].
        dedup_group: id of the near-duplicate group (the kept crop's id), or ``None``.
        shot_scale: ``close-up``, ``medium shot`` or ``full shot``, from the box's height in the picture
            (``steps.crops.shot_scale``); ``None`` in records written before it was recorded.
        frame_path: thumbnail of the whole frame with the crop region (yellow) and the detection (red)
            drawn, relative to the output folder (``crops/frames/<crop_id>.jpg``), for the report.
        dropped_reason: why the crop was dropped (``too_small``, ``blurred``, ``too_dark``,
            ``too_bright``, ``duplicate``), or ``None`` for a kept crop.
    """

    crop_id: str
    video: str
    frame_index: int
    timestamp_s: float
    character: str
    bbox: list[int]
    crop_box: list[int]
    score: float
    path: str | None = None
    width: int = 0
    height: int = 0
    upscaled: bool = False
    scale: float = 1.0
    sharpness: float = 0.0
    mean_luma: float = 0.0
    dedup_group: str | None = None
    duplicate_of: str | None = None
    similarity: float | None = None
    shot_scale: str | None = None
    frame_path: str | None = None
    dropped_reason: str | None = None
    detail: str | None = None

    @property
    def kept(self) -> bool:
        """Whether the crop is in the training set."""
        return self.dropped_reason is None

    def to_json(self) -> dict[str, Any]:
        """The ``crops.jsonl`` line."""
        return asdict(self)

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> CropRecord:
        """Rebuild a record from a ``crops.jsonl`` line (unknown keys are an error)."""
        return cls(**row)
