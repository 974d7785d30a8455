"""The crop scorer of tests/crop_scoring.py on hand-made boxes (no media needed)."""

from __future__ import annotations

import json

from crop_scoring import score_crops, verdict

FRAMES = {
    "1": {"sintel": {"body": [100, 100, 100, 300], "head": [130, 100, 40, 50]},
          "others": [{"what": "dragon", "body": [400, 100, 100, 100]}]},
    "2": {"sintel": {"body": [100, 100, 300, 300], "head": None}},
}


def _row(second: int, box: list[int], character: str = "sintel", dropped: str | None = None) -> dict:
    return {"frame_index": second * 25, "character": character, "crop_box": box, "dropped_reason": dropped}


def test_verdicts_follow_the_issue_rule():
    assert verdict(_row(1, [90, 90, 120, 120]), FRAMES, 25.0) == "correct"  # holds all the head
    assert verdict(_row(1, [140, 90, 120, 120]), FRAMES, 25.0) == "head_cut"  # 75% of the head only
    assert verdict(_row(1, [100, 200, 100, 100]), FRAMES, 25.0) == "head_cut"  # body, no head
    assert verdict(_row(1, [390, 90, 120, 120]), FRAMES, 25.0) == "wrong_character"  # the dragon
    assert verdict(_row(1, [600, 300, 100, 100]), FRAMES, 25.0) == "background"
    assert verdict(_row(3, [90, 90, 120, 120]), FRAMES, 25.0) == "background"  # nobody labelled that second
    assert verdict(_row(1, [90, 90, 120, 120], "bunny"), FRAMES, 25.0) == "wrong_character"  # Sintel, named bunny
    assert verdict(_row(2, [150, 150, 200, 200]), FRAMES, 25.0) == "correct"  # no head: body covers the crop
    assert verdict(_row(2, [350, 350, 200, 200]), FRAMES, 25.0) == "background"  # body covers 1/16 of it
    assert verdict({**_row(1, [90, 90, 120, 120]), "frame_index": 37}, FRAMES, 25.0) == "unlabelled"


def test_scores_count_kept_crops_only(tmp_path):
    rows = [_row(1, [90, 90, 120, 120]), _row(1, [390, 90, 120, 120]), _row(1, [90, 90, 120, 120], dropped="blurred")]
    (tmp_path / "crops.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    scores = score_crops(tmp_path / "crops.jsonl", {"clips": {"c.mp4": {"fps": 25, "frames": FRAMES}}}, "c.mp4")
    s = scores["sintel"]
    assert (s["correct"], s["wrong_character"], s["kept"], s["precision"]) == (1, 1, 2, 0.5)
