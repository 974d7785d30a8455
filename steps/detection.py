"""Character detection behind one interface.

A detector is built from the reference images of every character and returns, for a sampled frame,
the characters it finds with their bounding boxes in source pixels. Backends:

- ``local`` (:class:`steps.local_detector.LocalDetector`): offline, no downloaded weights.
- ``rekognition`` (:class:`steps.rekognition.RekognitionDetector`): Amazon Rekognition DetectLabels
  boxes, identity by embedding similarity to the references.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from steps.records import Detection, SampledFrame


@runtime_checkable
class CharacterDetector(Protocol):
    """Finds configured characters in frames."""

    name: str

    def detect(self, frame: SampledFrame, min_score: float | None = None) -> list[Detection]:
        """Detections in ``frame`` scoring at least ``min_score`` (default: the configured
        ``detection.min_score``): at most ``max_per_frame`` per character, scores in [0, 1], boxes inside
        ``frame.content_box``; an empty list where no character is found."""
        ...


References = Mapping[str, Sequence[np.ndarray]]
"""Reference images per character name: each an ``(H, W, 3)`` uint8 RGB array."""
