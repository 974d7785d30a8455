"""Background windows for the encoder's calibration: square windows of sampled frames in which no character
was detected, written by ExtractFrames to ``calibration/_background/`` and carried by CaptionImages into the
dataset, so that Evaluate measures how well the encoder tells each character from its film's backgrounds
(issue 10's per-character one-vs-rest AUC) even in a single-character run.

A frame gives windows only when every character's raw detection score is below ``max_raw_score`` (half the
detection threshold by default: clearly no character, not a missed one) and the picture is not flat (black
frames, fades: pixel standard deviation below ``MIN_PIXEL_STD``). At most one frame per shot is used, so the
windows spread over the film, and at most ``max_frames`` frames in all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.images import encode_image
from core.io import write_bytes
from steps.records import SampledFrame

BACKGROUND_DIR = Path("calibration") / "_background"
MIN_PIXEL_STD = 12.0  # 8-bit RGB; flat pictures (black, fades) hold nothing to calibrate against


@dataclass
class BackgroundWindows:
    """Collects background windows from the frames of one ExtractFrames run.

    Args:
        out_dir: the ExtractFrames output folder; windows go to ``out_dir/calibration/_background/``.
        max_raw_score: a frame qualifies only when every character's raw score is below this (0..1).
        max_frames: frames used at most (0 disables); ``windows_per_frame`` windows each.
        side_fraction: window side as a fraction of the content's shorter side (0.2..1).
    """

    out_dir: Path
    max_raw_score: float
    max_frames: int = 12
    windows_per_frame: int = 2
    side_fraction: float = 0.45
    _shots: set[tuple[str, int]] = field(default_factory=set)

    def offer(self, frame: SampledFrame, raw_scores: dict[str, float]) -> int:
        """Cut windows from ``frame`` if it qualifies; returns how many were written."""
        if len(self._shots) >= self.max_frames or (frame.video, frame.shot) in self._shots:
            return 0
        if raw_scores and max(raw_scores.values()) >= self.max_raw_score:
            return 0
        x, y, w, h = (int(v) for v in frame.content_box)
        content = frame.image[y:y + h, x:x + w]
        if content.size == 0 or float(content.std()) < MIN_PIXEL_STD:
            return 0
        self._shots.add((frame.video, frame.shot))
        side = max(16, int(min(w, h) * self.side_fraction))
        rng = np.random.default_rng(frame.frame_index)
        folder = Path(self.out_dir) / BACKGROUND_DIR
        count = 0
        for k in range(self.windows_per_frame):
            wx = int(rng.integers(0, max(1, w - side + 1)))
            wy = int(rng.integers(0, max(1, h - side + 1)))
            window = np.ascontiguousarray(content[wy:wy + side, wx:wx + side])
            name = f"{Path(frame.video).stem}_f{frame.frame_index:06d}_{k}.png"
            write_bytes(folder / name, encode_image(window, max_bytes=8_000_000, image_format="png").data)
            count += 1
        return count
