"""``report.html`` of the training set: funnel, score timeline, contact sheets, drops, duplicate groups.

One report wherever the training set is made: ``storyboard prepare`` and the pipeline's CaptionImages
step both write it through :func:`steps.caption.run_caption`.

The page sits next to ``crops/`` and refers to the images by relative path, so the whole output folder
can be opened from disk or synced to S3 as it is. The score timeline is a matplotlib figure embedded as
PNG.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2

from core.io import read_jsonl, write_text
from steps.records import CropRecord
from steps.references import REFERENCES_FOLDER

DROP_REASONS = ("too_small", "blurred", "too_dark", "too_bright", "duplicate")


def _timeline_png(frames_jsonl: Path, min_score: float | None) -> str | None:
    if not frames_jsonl.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_jsonl(frames_jsonl)
    if not rows:
        return None
    videos = sorted({r["video"] for r in rows})
    fig, axes = plt.subplots(len(videos), 1, figsize=(10, 2.4 * len(videos)), squeeze=False)
    for ax, video in zip(axes[:, 0], videos):
        mine = [r for r in rows if r["video"] == video]
        names = sorted({n for r in mine for n in r.get("raw_scores", {})})
        for i, name in enumerate(names):
            t = [r["timestamp_s"] for r in mine]
            raw = [r.get("raw_scores", {}).get(name, 0.0) for r in mine]
            color = f"C{i}"
            ax.plot(t, raw, color=color, alpha=0.45, lw=1, label=f"{name} raw")
            kept_t = [r["timestamp_s"] for r in mine if any(d["character"] == name for d in r["detections"])]
            kept_s = [max(d["score"] for d in r["detections"] if d["character"] == name)
                      for r in mine if any(d["character"] == name for d in r["detections"])]
            ax.scatter(kept_t, kept_s, color=color, s=14, zorder=3, label=f"{name} kept")
        if min_score is not None:
            ax.axhline(min_score, color="#555", ls="--", lw=0.8)
        ax.set_ylim(0, 1)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("score")
        ax.set_title(Path(video).name, fontsize=10)
        ax.legend(fontsize=8, loc="upper right", ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def report_characters(out: Path, summary: dict[str, Any]) -> list[str]:
    """Every character the run looked for, sorted: those with crops (``summary["characters"]``), those the
    detector scored in ``out/frames.jsonl`` and those with reference images in ``out/references/``, so that a
    character never detected still has its (all-zero) row in the funnel."""
    names = set(summary.get("characters", []))
    names.update(summary.get("frames_with_character", {}))
    frames = out / "frames.jsonl"
    if frames.is_file():
        for row in read_jsonl(frames):
            names.update(row.get("raw_scores", {}))
    references = out / REFERENCES_FOLDER
    if references.is_dir():
        names.update(p.name for p in references.iterdir() if p.is_dir() and not p.name.startswith("."))
    return sorted(names)


EMPTY_FUNNEL = {"detected": 0, "dropped": {}, "kept": 0, "upscaled": 0}


def write_prepare_report(out: Path, records: Sequence[CropRecord], labelling: Sequence[dict[str, Any]],
                         summary: dict[str, Any]) -> Path:
    """Render ``out/report.html`` (atomically) and return its path.

    The one training-set report, made by :func:`steps.caption.run_caption` for ``storyboard prepare`` and
    for the pipeline's CaptionImages step alike: the funnel with a row for every character
    (:func:`report_characters`; zeros where nothing was detected), the detection-score chart drawn from
    ``out/frames.jsonl`` (CaptionImages gathers the shards' files there), contact sheets, dropped crops and
    duplicate groups. Every crop on a contact sheet is shown beside the thumbnail of its frame
    (``CropRecord.frame_path``, the detection and crop region drawn) where the record has one.
    """
    names = report_characters(out, summary)
    funnel = {n: summary.get("funnel", {}).get(n, EMPTY_FUNNEL) for n in names}
    by_id = {r.crop_id: r for r in records}
    kept: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for row in labelling:
        rec = by_id[row["crop_id"]]
        kept.setdefault(row["character"], []).append({**row, "path": rec.path, "video_name": Path(rec.video).name,
                                                      "frame_path": rec.frame_path, "shot_scale": rec.shot_scale})
    dropped = {n: [r for r in records if r.character == n and r.dropped_reason and r.dropped_reason != "duplicate"]
               for n in names}
    groups: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for name in names:
        members: dict[str, list[CropRecord]] = {}
        for r in records:
            if r.character == name and r.dropped_reason == "duplicate" and r.duplicate_of:
                members.setdefault(r.duplicate_of, []).append(r)
        for head, dups in sorted(members.items()):
            if head in by_id:
                dups = sorted(dups, key=lambda d: -(d.similarity or 0))
                groups[name].append({"kept": by_id[head], "duplicates": dups})
    reasons = [r for r in DROP_REASONS if any(r in f["dropped"] for f in funnel.values())]
    env = jinja2.Environment(loader=jinja2.PackageLoader("steps", "templates"),
                             autoescape=jinja2.select_autoescape(["html"]))
    html = env.get_template("prepare_report.html").render(
        summary=summary, characters=names, funnel=funnel, kept=kept, dropped=dropped, groups=groups,
        reasons=reasons,
        timeline=_timeline_png(out / "frames.jsonl", summary.get("thresholds", {}).get("detection.min_score")))
    return write_text(out / "report.html", html)
