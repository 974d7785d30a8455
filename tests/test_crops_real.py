"""Crops, not seconds: `storyboard prepare` on the two dev clips with *both* characters' references
(``--every 1``, examples/shared_media/pipeline.yaml), scored against the hand-labelled boxes of
../shared/media/boxes.json (rules in tests/crop_scoring.py), and per-second recall scored outside the shots the
reference images come from (a frame of the same shot looks almost like the reference and proves little).

The detector runs as shipped: with the pretrained feature backbone (``make feature-model``), which widens the
bunny's boxes in his shaded close-ups; these tests need it (skipped without it here, failing in CI).

The figures are printed. The floors below are the figures measured with the local detector (README, "How
characters are found offline"): they catch a regression, and must be raised with the README when the detector
improves. Issue 8's targets are checked as the issue states them, by tests of their own.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from crop_scoring import score_crops, summary_line
from storyboard_testutil import REPO, characters_dir

from pipeline.commands.cli import main

SINTEL, BBB = "clips/sintel_26s.mp4", "clips/bbb_30s.mp4"
CHARACTER = {SINTEL: "sintel", BBB: "bunny"}
REFERENCE_SECONDS = {SINTEL: [4, 17, 23], BBB: [3, 14, 28]}
"""Where the shared references were cut (media README)."""
FPS = 25.0

# Measured with the local detector (README); floors, not equalities.
MIN_PRECISION = {SINTEL: 1.0, BBB: 1.0}
MIN_CORRECT = {SINTEL: 8, BBB: 9}
MAX_WRONG_CHARACTER = {SINTEL: 0, BBB: 0}  # issue 8's target, met: no crop names the wrong character
MIN_RECALL_OUTSIDE_REFERENCES = {SINTEL: 1.0, BBB: 0.83}

# Issue 8's targets.
TARGET_PRECISION, TARGET_CORRECT, TARGET_RECALL = 0.9, {SINTEL: 5, BBB: 8}, 0.8


@pytest.fixture(scope="module")
def prepared(media: Path, feature_model: Path, tmp_path_factory) -> dict[str, Path]:
    """``storyboard prepare`` output folder per dev clip: one run each (60-80 s), shared by the tests below."""
    root = tmp_path_factory.mktemp("crops_real")
    chars = characters_dir(root, media, "sintel", "bunny")
    out = {}
    for clip in (SINTEL, BBB):
        folder = root / Path(clip).stem
        main(["prepare", "--video", str(media / clip), "--characters", str(chars), "--out", str(folder),
              "--config", str(REPO / "examples" / "shared_media" / "pipeline.yaml"),
              "--sampling", "interval", "--every", "1", "--no-progress"])
        assert (folder / "crops.jsonl").is_file() and (folder / "frames.jsonl").is_file()
        out[clip] = folder
    return out


@pytest.fixture(scope="module")
def crop_scores(prepared, boxes) -> dict[str, dict]:
    """:func:`crop_scoring.score_crops` per clip."""
    return {clip: score_crops(folder / "crops.jsonl", boxes, clip) for clip, folder in prepared.items()}


def _recall_outside_references(folder: Path, clip: str, labels: dict) -> tuple[float, list[int], list[int]]:
    """Share of the ``present`` seconds of ``labels.json`` outside the reference shots where frames.jsonl has a
    detection of the clip's character; with the seconds scored and the seconds missed."""
    character = CHARACTER[clip]
    rows = [json.loads(line) for line in (folder / "frames.jsonl").read_text().splitlines()]
    shots = {round(r["frame_index"] / FPS): r["shot"] for r in rows
             if r["frame_index"] == round(round(r["frame_index"] / FPS) * FPS)}
    ref_shots = {shots[t] for t in REFERENCE_SECONDS[clip] if t in shots}
    scored = [t for t in labels[clip]["characters"][character]["present"] if t in shots and shots[t] not in ref_shots]
    found = {round(r["frame_index"] / FPS) for r in rows if any(d["character"] == character for d in r["detections"])}
    missed = sorted(set(scored) - found)
    return (len(scored) - len(missed)) / max(1, len(scored)), scored, missed


def _mine(scores: dict, clip: str) -> dict:
    return scores[clip].get(CHARACTER[clip], {"precision": 0.0, "correct": 0, "wrong_character": 0, "kept": 0})


@pytest.mark.parametrize("clip", [SINTEL, BBB])
def test_kept_crops_show_the_named_character_with_its_head(crop_scores, capsys, clip):
    with capsys.disabled():
        for name, s in sorted(crop_scores[clip].items()):
            print(f"\n[crops] {clip} / {summary_line(name, s)}")
    mine = _mine(crop_scores, clip)
    assert mine["precision"] >= MIN_PRECISION[clip], mine
    assert mine["correct"] >= MIN_CORRECT[clip], mine
    assert sum(s["wrong_character"] for s in crop_scores[clip].values()) <= MAX_WRONG_CHARACTER[clip], \
        crop_scores[clip]


@pytest.mark.parametrize("clip", [SINTEL, BBB])
def test_per_second_recall_outside_the_reference_shots(prepared, labels, capsys, clip):
    recall, scored, missed = _recall_outside_references(prepared[clip], clip, labels)
    with capsys.disabled():
        print(f"\n[recall outside reference shots] {clip} / {CHARACTER[clip]}: {recall:.2f} over {len(scored)} "
              f"seconds {scored}; missed {missed}")
    assert scored, "every present second lies in a reference shot: nothing to score"
    assert recall >= MIN_RECALL_OUTSIDE_REFERENCES[clip]


def test_every_kept_crop_records_its_shot_scale(prepared):
    for folder in prepared.values():
        for row in (json.loads(line) for line in (folder / "crops.jsonl").read_text().splitlines()):
            assert row["shot_scale"] in ("close-up", "medium shot", "full shot"), row


# ----- issue 8's targets ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("clip", [SINTEL, BBB])
def test_target_crop_precision_and_count(crop_scores, clip):
    mine = _mine(crop_scores, clip)
    assert mine["precision"] >= TARGET_PRECISION and mine["correct"] >= TARGET_CORRECT[clip], mine


@pytest.mark.parametrize("clip", [SINTEL, BBB])
def test_target_recall_outside_the_reference_shots(prepared, labels, clip):
    recall, _, missed = _recall_outside_references(prepared[clip], clip, labels)
    assert recall >= TARGET_RECALL, missed


def test_target_a_character_absent_from_the_film_yields_no_crop(prepared):
    rows = [json.loads(line) for line in (prepared[BBB] / "crops.jsonl").read_text().splitlines()]
    sintel = [r["crop_id"] for r in rows if r["character"] == "sintel" and r["dropped_reason"] is None]
    assert not sintel, f"Sintel crops kept from Big Buck Bunny: {sintel}"
