"""Temporal rescoring of detections inside shots.

A character's presence is coherent in time within a shot, while false detections on background texture
tend to flicker. Each frame's best score per character is replaced by the median of its own score and
its neighbours' in the same shot (a window of 3 sampled frames), in the spirit of Seq-NMS rescoring
(Han et al. 2016, "Seq-NMS for Video Object Detection"), which averages scores along linked detections.
At a shot's edge, where a frame has one neighbour, the window is padded with the lower of the two
scores, so an edge frame needs its neighbour's confirmation; a frame alone in its shot keeps its own
score. A character followed from frame to frame (its boxes in neighbouring sampled frames of the shot
overlapping by IoU :data:`LINK_IOU` or more) keeps at least the mean of the scores along that link, as Seq-NMS
rescores a linked sequence, so a true detection between two weaker ones of the same character is not cut by the
median. And where a frame's most likely location fails but another location that passes the detector's tests on
its own (an *alternative*, :attr:`Scored.alternatives`) continues a character kept in the neighbouring frame (IoU
:data:`LINK_IOU` or more), that location is kept: the track, not the single frame, says where the character is (a
statue beside Sintel at 19 s of ``sintel_26s.mp4`` outranks her in that frame, while her box links to the next
second's). The stream is processed with a look-ahead of ``window - 1`` frames.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from steps.boxes import iou
from steps.records import Detection, SampledFrame

LINK_IOU = 0.3
"""Boxes of one character in neighbouring sampled frames of a shot that overlap at least this much (IoU) are the
same character followed through the shot."""


@dataclass
class Scored:
    """A sampled frame with its candidate detections (any score) and its shot number."""

    frame: SampledFrame
    candidates: list[Detection]
    shot: int
    alternatives: list[Detection] = field(default_factory=list)
    """Further locations of a character that passed the detector's tests in this frame after its most likely one
    (``LocalDetector.last_alternatives``); kept only where they continue a neighbouring frame's kept detection."""


def _best(candidates: list[Detection]) -> dict[str, float]:
    best: dict[str, float] = {}
    for d in candidates:
        best[d.character] = max(best.get(d.character, 0.0), float(d.score))
    return best


def _linked_scores(item: Scored, neighbours: list[Scored], name: str, min_iou: float = LINK_IOU) -> list[float]:
    """Scores of ``name``'s candidates in the other ``neighbours`` (same shot) whose box overlaps the best candidate
    of ``item`` by at least ``min_iou`` (the best such candidate per neighbour): the character followed from
    frame to frame."""
    best = max((d for d in item.candidates if d.character == name), key=lambda d: d.score, default=None)
    if best is None:
        return []
    out = []
    for n in neighbours:
        if n is item:
            continue
        scores = [float(d.score) for d in n.candidates if d.character == name and iou(best.bbox, d.bbox) >= min_iou]
        if scores:
            out.append(max(scores))
    return out


def smooth_in_shots(items: Iterable[Scored], min_score: float,
                    window: int = 3) -> Iterator[tuple[SampledFrame, list[Detection], dict[str, float]]]:
    """Rescore each frame's detections with the median of the best scores of ``window`` neighbouring
    sampled frames of the same shot (or, where the character's boxes link to neighbours' by IoU
    :data:`LINK_IOU`, the mean along the link if higher), and keep those at or above ``min_score``.

    A character with no kept detection in a frame is kept at one of the frame's :attr:`Scored.alternatives` that
    scores at least ``min_score`` itself and links (IoU :data:`LINK_IOU` or more) to that character's kept
    detection in the previous or the next sampled frame of the shot; its score is the mean of the two (Seq-NMS
    rescoring along the link).

    Yields, in input order, ``(frame, kept detections, raw best score per character)``; a kept
    detection's ``score`` is the smoothed score of its character (the best one) or, for further
    detections of the same character, its own score capped by the smoothed one. The raw scores are those of
    ``candidates`` only.

    Raises:
        ValueError: ``window`` is not an odd number >= 1.
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be an odd number >= 1, got {window}")
    half = window // 2
    buffer: list[Scored] = []  # items from global index `offset` on
    offset = 0
    next_out = 0
    smoothed_cache: dict[int, list[Detection]] = {}  # global index -> detections kept by smoothing alone
    previous: tuple[int, list[Detection]] | None = None  # shot of the last frame yielded, and what it kept

    def smoothed(g: int) -> list[Detection]:
        if g in smoothed_cache:
            return smoothed_cache[g]
        i = g - offset
        item = buffer[i]
        raw = _best(item.candidates)
        neighbours = [buffer[j] for j in range(max(0, i - half), min(len(buffer), i + half + 1))
                      if buffer[j].shot == item.shot]
        kept: list[Detection] = []
        for name, own in raw.items():
            values = [_best(n.candidates).get(name, 0.0) for n in neighbours]
            if 1 < len(values) < window:  # at a shot edge: pad with the lowest value (precision first)
                values += [min(values)] * (window - len(values))
            score = float(np.median(values)) if len(values) > 1 else own
            linked = _linked_scores(item, neighbours, name)
            if linked:  # followed through the shot: the mean along the track (Seq-NMS rescoring)
                score = max(score, float(np.mean([own] + linked)))
            for d in sorted((d for d in item.candidates if d.character == name), key=lambda d: -d.score):
                capped = score if d.score == own else min(float(d.score), score)
                if capped >= min_score:
                    kept.append(replace(d, score=round(capped, 4)))
        smoothed_cache[g] = kept
        return kept

    def continued(item: Scored, kept: list[Detection], tracks: list[Detection]) -> list[Detection]:
        """Alternatives of ``item`` that continue ``tracks`` (neighbours' kept detections) for characters ``kept``
        lacks."""
        out: list[Detection] = []
        have = {d.character for d in kept}
        for alt in sorted(item.alternatives, key=lambda d: -d.score):
            if alt.character in have or alt.score < min_score:
                continue
            links = [t for t in tracks if t.character == alt.character and iou(t.bbox, alt.bbox) >= LINK_IOU]
            if links:
                best = max(links, key=lambda t: t.score)
                out.append(replace(alt, score=round((float(alt.score) + float(best.score)) / 2, 4)))
                have.add(alt.character)
        return out

    def finish(g: int) -> tuple[SampledFrame, list[Detection], dict[str, float]]:
        nonlocal previous
        item = buffer[g - offset]
        kept = list(smoothed(g))
        if item.alternatives:
            tracks = list(previous[1]) if previous is not None and previous[0] == item.shot else []
            if g + 1 - offset < len(buffer) and buffer[g + 1 - offset].shot == item.shot:
                tracks += smoothed(g + 1)
            kept += continued(item, kept, tracks)
        previous = (item.shot, kept)
        smoothed_cache.pop(g, None)
        return item.frame, kept, _best(item.candidates)

    lookahead = 2 * half  # frame g+1's smoothing needs g+1+half
    for item in items:
        buffer.append(item)
        last = offset + len(buffer) - 1
        while next_out + lookahead <= last:
            yield finish(next_out)
            next_out += 1
            drop = (next_out - half) - offset
            if drop > 0:
                del buffer[:drop]
                offset += drop
    while next_out < offset + len(buffer):
        yield finish(next_out)
        next_out += 1
