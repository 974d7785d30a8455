"""Rebuild ``tests/data/eval_crops.json`` from ``../shared/media/boxes.json`` (issue 10).

Rule (also written into the file's ``about``):

- shots come from the project's own cut detection (:func:`steps.video.sample_frames`, one frame per second,
  default ``sampling.shot_threshold``); a shot holding a reference frame (``references/<c>/<c>_tNN.png``: second
  NN of the clip where boxes.json labels ``<c>``) gives no crop at all;
- crops: every second of the other shots where boxes.json has a box of the character whose body box is at least
  ``MIN_SIDE_PX`` on its shorter side (smaller figures carry too few pixels for any descriptor); ``bbox`` is the
  body box, ``head`` the head box (``null`` where not visible), ``labels_json`` the status labels.json gives;
- background frames: seconds where boxes.json shows no character of the film; windows are squares on a fixed
  grid inside the picture (letterbox removed) that overlap no ``others`` creature, and not darker than
  ``MIN_LUMA``. The bunny's clip bbb_30s shows him every second, so his film's backgrounds come from
  ``bbb_10s_nochar_720p.mp4`` (the film's opening; labels.json: no character at any second; not in boxes.json).

Run: ``.venv/bin/python tests/data/build_eval_crops.py`` (needs ../shared/media); it rewrites the JSON file.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from storyboard_testutil import MEDIA  # noqa: E402

OUT = Path(__file__).resolve().parent / "eval_crops.json"
MIN_SIDE_PX = 80
"""Shorter side of a body box below which a second gives no crop (Sintel at 10-12 s is 31 to 66 px wide)."""
WINDOW_SCALES = (0.5, 0.8)
"""Background window sides as shares of the picture height."""
MIN_LUMA = 24.0
"""Windows darker than this mean luma (the film's black opening) are left out, like ExtractFrames' too_dark."""
NO_CHARACTER_CLIPS = {"bunny": "clips/bbb_10s_nochar_720p.mp4"}
"""Extra background clip per character whose boxes.json clip has no second without the character."""


def _shots_and_frames(clip: Path) -> tuple[dict[int, int], dict[int, np.ndarray], list[int]]:
    """Shot number and RGB frame per whole second of ``clip``, and its content box ``[x, y, w, h]``."""
    from core.config import SamplingConfig
    from steps.video import estimate_content_box, probe_video, sample_frames

    config = SamplingConfig(mode="interval", every_s=1.0)
    info = probe_video(clip)
    box = estimate_content_box(str(clip), config) or (0, 0, info.width, info.height)
    shots, frames = {}, {}
    for frame in sample_frames(clip, config, progress=False, info=info, content_box=box):
        t = round(frame.timestamp_s)
        shots[t], frames[t] = frame.shot, frame.image
    return shots, frames, [int(v) for v in box]


def _overlaps(a: list[int], b: list[int]) -> bool:
    return min(a[0] + a[2], b[0] + b[2]) > max(a[0], b[0]) and min(a[1] + a[3], b[1] + b[3]) > max(a[1], b[1])


def _windows(frame: np.ndarray, content: list[int], avoid: list[list[int]]) -> list[list[int]]:
    """Non-overlapping square windows on a fixed grid inside ``content`` (rows at its top and bottom edge for
    the smaller scale, centred for the larger), overlapping no box of ``avoid``, not darker than ``MIN_LUMA``."""
    cx, cy, cw, ch = content
    out = []
    for scale in WINDOW_SCALES:
        side = int(ch * scale)
        ys = [cy, cy + ch - side] if 2 * side <= ch + 1 else [cy + (ch - side) // 2]
        for y in ys:
            for x in range(cx, cx + cw - side + 1, side):
                window = [x, y, side, side]
                if any(_overlaps(window, b) for b in avoid):
                    continue
                luma = frame[y:y + side, x:x + side].astype(np.float32) @ np.array([0.299, 0.587, 0.114])
                if float(luma.mean()) >= MIN_LUMA:
                    out.append(window)
    return out


def build() -> dict:
    """The eval_crops.json document."""
    boxes = json.loads((MEDIA / "boxes.json").read_text())["clips"]
    labels = json.loads((MEDIA / "labels.json").read_text())["clips"]
    crops: dict[str, list[dict]] = {}
    backgrounds: list[dict] = []
    shots_out: dict[str, dict] = {}
    for clip, entry in sorted(boxes.items()):
        frames_boxes = entry["frames"]
        characters = sorted({k for f in frames_boxes.values() for k in f if k != "others"})
        shots, frames, content = _shots_and_frames(MEDIA / clip)
        reference_seconds = sorted(int(m.group(1)) for c in characters
                                   for p in (MEDIA / "references" / c).glob(f"{c}_t*.png")
                                   if (m := re.fullmatch(rf"{c}_t(\d+)\.png", p.name)))
        reference_shots = sorted({shots[t] for t in reference_seconds})
        shots_out[clip] = {"shot_per_second": [shots[t] for t in sorted(shots)], "reference_seconds":
                           reference_seconds, "reference_shots": reference_shots, "content_box": content}
        background_seconds = []
        for t in sorted(shots):
            labelled = frames_boxes.get(str(t), {})
            if not any(c in labelled for c in characters):
                background_seconds.append(t)
                continue
            if shots[t] in reference_shots:
                continue
            for character in characters:
                box = labelled.get(character)
                if box and min(box["body"][2], box["body"][3]) >= MIN_SIDE_PX:
                    crops.setdefault(character, []).append(
                        {"clip": clip, "t": t, "shot": shots[t], "bbox": box["body"], "head": box.get("head"),
                         "visibility": box.get("visibility"), "labels_json": box.get("labels_json")})
        windows = {t: _windows(frames[t], content, [o["body"] for o in frames_boxes.get(str(t), {}).get("others", [])])
                   for t in background_seconds}
        if any(windows.values()):
            backgrounds.append({"clip": clip, "windows": {str(t): w for t, w in windows.items() if w}})
    for clip in sorted(set(NO_CHARACTER_CLIPS.values())):
        assert not any(labels[clip]["characters"][c]["present"] + labels[clip]["characters"][c]["ignore"]
                       for c in labels[clip]["characters"]), f"{clip} is labelled with a character"
        _, frames, content = _shots_and_frames(MEDIA / clip)
        windows = {t: _windows(frames[t], content, []) for t in sorted(frames)}
        backgrounds.append({"clip": clip, "windows": {str(t): w for t, w in windows.items() if w}})
    about = (
        "Real crops and background windows for the evaluation tests, generated by tests/data/build_eval_crops.py "
        "from ../shared/media/boxes.json (do not edit by hand). Shots: the project's cut detection "
        "(steps.video.sample_frames, 1 frame per second, default shot_threshold); every shot holding a reference "
        "frame (references/<c>/<c>_tNN.png, second NN; Sintel 4, 17, 23 of sintel_26s; bunny 3, 14, 28 of bbb_30s) "
        "gives no crop, so no crop shares a shot with a reference (Sintel's 13-18 s is one shot with a push-in to "
        "the close-up of 17). Crops: every second of the other shots where boxes.json boxes the character with a "
        f"body box of at least {MIN_SIDE_PX} px on its shorter side (Sintel at 10-12 s is too small); bbox = "
        "boxes.json body box, head = its head box (null where not visible), labels_json = the status labels.json "
        "gives that second (some crops are 'ignore': blurred, seen from behind). Background: seconds where "
        "boxes.json shows no character (Sintel 5-9, 25, 26; 10 shows her small and hazy and is not one); windows "
        f"are non-overlapping squares of {WINDOW_SCALES} x the picture height on a fixed grid inside the picture "
        f"(letterbox removed) overlapping no 'others' creature (dragons) and of mean luma at least {MIN_LUMA:g}. "
        "bbb_30s shows the bunny every second, so his film's windows come from bbb_10s_nochar_720p.mp4 (the opening; "
        "labels.json: no character). Boxes are [x, y, w, h] in source pixels of frame round(t * fps).")
    return {"about": about, "shots": shots_out, "crops": crops, "background": backgrounds}


def main() -> None:
    """Write the file and print what it holds."""
    doc = build()
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    for character, items in sorted(doc["crops"].items()):
        print(f"{character}: {len(items)} crops at seconds {[i['t'] for i in items]}")
    for bg in doc["background"]:
        print(f"{bg['clip']}: {sum(len(w) for w in bg['windows'].values())} windows at seconds "
              f"{sorted(int(t) for t in bg['windows'])}")


if __name__ == "__main__":
    main()
