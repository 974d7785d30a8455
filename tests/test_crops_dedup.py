"""Crop geometry and size policy, near-duplicate removal, temporal rescoring."""

from __future__ import annotations

import numpy as np
import pytest

from core.config import CropConfig
from steps.caption import _scene_words
from steps.crops import crop_box, make_crop, shot_scale
from steps.dedup import deduplicate
from steps.records import CropRecord, Detection, SampledFrame
from steps.temporal import Scored, smooth_in_shots


@pytest.mark.parametrize("bbox, bounds, aspect", [
    ((10, 10, 50, 100), (0, 0, 640, 360), 1.0),      # near the top-left corner: shifted, not cut
    ((600, 300, 40, 60), (0, 0, 640, 360), 1.0),     # bottom-right corner
    ((100, 70, 200, 100), (0, 58, 848, 363), 0.75),  # inside letterbox bars
    ((0, 0, 600, 350), (0, 0, 640, 360), 1.0),       # larger than the picture allows: shrunk
])
def test_crop_box_keeps_aspect_and_stays_inside(bbox, bounds, aspect):
    x, y, w, h = crop_box(bbox, bounds, aspect, padding=0.15)
    bx, by, bw, bh = bounds
    assert bx <= x and by <= y and x + w <= bx + bw and y + h <= by + bh
    assert abs(w / h - aspect) < 0.02


def test_crop_box_contains_the_padded_detection_when_there_is_room():
    x, y, w, h = crop_box((300, 100, 80, 120), (0, 0, 1280, 720), 1.0, padding=0.15)
    assert x <= 300 - 12 and y <= 100 - 18 and x + w >= 380 + 12 and y + h >= 220 + 18


def test_a_figure_taller_than_the_crop_can_be_keeps_its_head():
    # A standing figure in a portrait (vertical) 720x1280 picture, square crops: the padded box (1,430 px a
    # side) does not fit the 720 px width, so the crop is shrunk to 720x720. Keeping the box's centre would
    # cut the head (y 100..250) off; the policy keeps the top, with 0.1 of the crop height above the head.
    bbox, bounds = (160, 100, 400, 1100), (0, 0, 720, 1280)
    assert crop_box(bbox, bounds, 1.0, padding=0.15) == (0, 28, 720, 720)
    x, y, w, h = crop_box(bbox, bounds, 1.0, padding=0.15, keep_top=False)
    assert (w, h) == (720, 720) and y > 250  # centred: the head is outside
    # Where the padded box fits, the policy changes nothing (centred, as before).
    assert crop_box((300, 100, 80, 120), (0, 0, 1280, 720), 1.0, 0.15) == \
        crop_box((300, 100, 80, 120), (0, 0, 1280, 720), 1.0, 0.15, keep_top=False)


@pytest.mark.parametrize("bbox, bounds, expected", [
    ((300, 58, 300, 340), (0, 58, 848, 363), "close-up"),      # 94% of the picture's height
    ((300, 100, 150, 200), (0, 58, 848, 363), "medium shot"),  # 55%
    ((300, 100, 60, 100), (0, 58, 848, 363), "full shot"),     # 28%, whole figure inside
    ((300, 321, 60, 100), (0, 58, 848, 363), "medium shot"),   # 28% but cut by the bottom edge
])
def test_shot_scale_from_the_box_height_in_the_picture(bbox, bounds, expected):
    assert shot_scale(bbox, bounds) == expected


def test_template_captions_say_the_recorded_shot_scale_never_wide_shot_for_a_close_up():
    def record(bbox, scale=None):
        return CropRecord(crop_id="c", video="v.mp4", frame_index=0, timestamp_s=0.0, character="sintel",
                          bbox=list(bbox), crop_box=list(bbox), score=0.9, mean_luma=120.0, shot_scale=scale)
    assert _scene_words(record((0, 0, 100, 100), "close-up"), 480) == "close-up"
    # Older records (no shot_scale) fall back to the same rule on the frame height.
    assert _scene_words(record((300, 10, 300, 400)), 480) == "close-up"
    assert _scene_words(record((300, 10, 60, 100)), 480) == "full shot"
    frame = _textured(480, 848)
    res = make_crop(frame, (300, 40, 300, 420), (0, 0, 848, 480), CropConfig())
    assert res.shot_scale == "close-up"


def _textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(40, 220, size=(h, w, 3), dtype=np.uint8)


def test_small_crops_are_upscaled_within_the_limit_or_dropped():
    frame = _textured(720, 1280)
    ok = make_crop(frame, (100, 100, 260, 260), (0, 0, 1280, 720), CropConfig(padding=0.0, max_upscale=2.0))
    assert ok.dropped_reason is None and ok.image.shape[:2] == (512, 512) and ok.scale == pytest.approx(512 / 260)
    small = make_crop(frame, (100, 100, 100, 100), (0, 0, 1280, 720), CropConfig(padding=0.0, max_upscale=2.0))
    assert small.dropped_reason == "too_small" and small.image is None and "max_upscale" in small.detail


def test_quality_filters_name_the_measured_value():
    cfg = CropConfig(padding=0.0)
    flat = np.full((720, 1280, 3), 128, np.uint8)
    assert make_crop(flat, (0, 0, 600, 600), (0, 0, 1280, 720), cfg).dropped_reason == "blurred"
    dark = (_textured(720, 1280) // 10).astype(np.uint8)
    res = make_crop(dark, (0, 0, 600, 600), (0, 0, 1280, 720), CropConfig(padding=0.0, min_blur_variance=0.0))
    assert res.dropped_reason == "too_dark" and "mean luma" in res.detail
    bright = np.clip(_textured(720, 1280).astype(int) + 200, 0, 255).astype(np.uint8)
    res = make_crop(bright, (0, 0, 600, 600), (0, 0, 1280, 720), CropConfig(padding=0.0, min_blur_variance=0.0))
    assert res.dropped_reason == "too_bright"


def test_dedup_keeps_the_sharpest_of_each_group_and_blocks_do_not_change_the_result():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(6, 32))
    emb, sharp, groups, truth = [], [], [], []
    for c in range(6):
        for _ in range(5):
            emb.append(centres[c] + rng.normal(scale=0.02, size=32))
            sharp.append(float(rng.uniform(0, 100)))
            groups.append("a" if c < 3 else "b")
            truth.append(c)
    emb = np.asarray(emb)
    full = deduplicate(emb, sharp, groups, threshold=0.95, block_size=1000)
    blocked = deduplicate(emb, sharp, groups, threshold=0.95, block_size=64)
    small_blocks = deduplicate(emb, sharp, groups, threshold=0.95, block_size=2)
    assert full.kept_count == 6
    assert (full.keep == blocked.keep).all() and (full.keep == small_blocks.keep).all()
    for c in range(6):
        members = [i for i, t in enumerate(truth) if t == c]
        sharpest = max(members, key=lambda i: sharp[i])
        assert full.keep[sharpest] and all(full.duplicate_of[i] == sharpest for i in members if i != sharpest)


def test_dedup_never_merges_across_groups():
    emb = np.ones((4, 8))
    res = deduplicate(emb, [1, 2, 3, 4], ["a", "b", "c", "d"], threshold=0.9)
    assert res.keep.all()


def _scored(scores, shots):
    for i, (s, shot) in enumerate(zip(scores, shots)):
        frame = SampledFrame("v.mp4", i, float(i), np.zeros((2, 2, 3), np.uint8), (0, 0, 2, 2), shot=shot)
        yield Scored(frame, [Detection("hero", (0, 0, 1, 1), s)] if s else [], shot)


def test_temporal_rescoring_removes_flicker_and_respects_shots():
    scores = [0.2, 0.9, 0.2, 0.8, 0.75, 0.7, 0.9, 0.3]
    shots = [0, 0, 0, 1, 1, 1, 2, 3]
    out = list(smooth_in_shots(_scored(scores, shots), min_score=0.5))
    assert [f.frame_index for f, _, _ in out] == list(range(8))
    kept = {f.frame_index: [d.score for d in dets] for f, dets, _ in out}
    assert kept[1] == []  # an isolated spike inside a shot
    assert kept[3] and kept[4] and kept[5]  # a steady shot survives
    assert kept[6] == [0.9]  # alone in its shot: its own score
    assert kept[7] == []
    assert out[1][2] == {"hero": 0.9}  # the raw score is reported too
