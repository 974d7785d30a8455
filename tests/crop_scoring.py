"""Score kept crops against the hand-labelled boxes of ``../shared/media/boxes.json`` (issue 8's rule).

Boxes are ``[x, y, w, h]`` in source pixels of frame ``round(t * fps)`` for whole seconds ``t``. A kept crop
(a ``crops.jsonl`` row with no ``dropped_reason``), judged on its ``crop_box``, is:

- ``correct`` when its second is labelled with the named character and the crop holds at least 80% of that
  character's head box (or, where no head is visible, the character's body box covers at least half the crop);
- ``wrong_character`` otherwise, when it holds another character (the same test on that character's boxes) or
  another creature of ``others`` (its body box covering at least half of the smaller of the two boxes);
- ``head_cut`` otherwise, when it shows the named character without (80% of) the head: it holds part of the
  head, or the body covers at least half the crop;
- ``background`` otherwise: it holds no character;
- ``unlabelled`` when the crop's frame is more than a quarter second from a labelled frame (not counted).

Crop precision is ``correct / (correct + wrong_character + head_cut + background)``.

Usable as a script while tuning: ``python tests/crop_scoring.py OUT_DIR clips/bbb_30s.mp4``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

VERDICTS = ("correct", "wrong_character", "head_cut", "background", "unlabelled")
HEAD_SHARE = 0.8
"""Share of the head box a correct crop holds."""
BODY_SHARE = 0.5
"""Share of the crop a headless character's body box covers."""


def _inter(a: list[int], b: list[int]) -> float:
    """Area in px² of the intersection of two ``[x, y, w, h]`` boxes."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return float(ix * iy)


def holds(crop: list[int], entry: dict) -> bool:
    """Whether ``crop`` ``[x, y, w, h]`` holds a labelled figure ``{"body": box, "head": box or None}``: 80% of
    its head box, or with no head its body box covering half the crop."""
    head = entry.get("head")
    if head:
        return _inter(crop, head) >= HEAD_SHARE * head[2] * head[3]
    return _inter(crop, entry["body"]) >= BODY_SHARE * crop[2] * crop[3]


def verdict(row: dict, frames: dict, fps: float) -> str:
    """One of :data:`VERDICTS` for a ``crops.jsonl`` row, given the clip's ``boxes.json`` ``frames`` (keys: whole
    seconds as strings; a second with no key shows no character) and its frame rate."""
    t = round(row["frame_index"] / fps)
    if abs(row["frame_index"] - t * fps) > fps / 4:
        return "unlabelled"
    entry = frames.get(str(t), {})
    crop = row["crop_box"]
    own = entry.get(row["character"])
    if own and holds(crop, own):
        return "correct"
    for name, other in entry.items():
        if name == "others":
            if any(_inter(crop, o["body"]) >= BODY_SHARE * min(crop[2] * crop[3], o["body"][2] * o["body"][3])
                   for o in other):
                return "wrong_character"
        elif name != row["character"] and holds(crop, other):
            return "wrong_character"
    if own and ((own.get("head") and _inter(crop, own["head"]) > 0)
                or _inter(crop, own["body"]) >= BODY_SHARE * crop[2] * crop[3]):
        return "head_cut"
    return "background"


def score_crops(crops_jsonl: Path, boxes: dict, clip: str) -> dict[str, dict]:
    """Per-character counts of kept-crop verdicts for ``clip`` (a key of ``boxes["clips"]``):
    ``{character: {verdict: count for each of VERDICTS, "kept": scored crops (unlabelled left out),
    "precision": correct / kept (0 where none), "verdicts": [(second, verdict, crop_box, shot_scale)]}}``."""
    labelled = boxes["clips"][clip]
    fps = float(labelled["fps"])
    out: dict[str, dict] = {}
    for line in Path(crops_jsonl).read_text().splitlines():
        row = json.loads(line)
        if row["dropped_reason"] is not None:
            continue
        v = verdict(row, labelled["frames"], fps)
        s = out.setdefault(row["character"], {**{k: 0 for k in VERDICTS}, "verdicts": []})
        s[v] += 1
        s["verdicts"].append((round(row["frame_index"] / fps, 2), v, row["crop_box"], row.get("shot_scale")))
    for s in out.values():
        s["kept"] = sum(s[k] for k in VERDICTS if k != "unlabelled")
        s["precision"] = s["correct"] / s["kept"] if s["kept"] else 0.0
    return out


def summary_line(name: str, s: dict) -> str:
    """One printable line of a character's scores from :func:`score_crops`."""
    return (f"{name}: crop precision {s['precision']:.2f} ({s['correct']} correct of {s['kept']} kept: "
            f"{s['wrong_character']} wrong character, {s['head_cut']} head cut, {s['background']} background)")


if __name__ == "__main__":
    from storyboard_testutil import MEDIA

    result = score_crops(Path(sys.argv[1]) / "crops.jsonl", json.loads((MEDIA / "boxes.json").read_text()),
                         sys.argv[2])
    for character, scores in sorted(result.items()):
        print(summary_line(character, scores))
        for v in scores["verdicts"]:
            print("   ", *v)
