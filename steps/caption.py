"""CaptionImages (pipeline step 2): merge shards, de-duplicate globally, caption, write the manifests.

``run_caption`` reads one or more ExtractFrames outputs (one per processing instance when the step is
sharded), de-duplicates across them with the stored embeddings, captions every kept crop, and writes
into ``out_dir``:

- ``crops/``: the kept crop images (copied from the shards unless ``out_dir`` is the shard itself);
- ``crops.jsonl``: every crop record of every shard, with the final drop reasons;
- ``manifest.jsonl``: the labelling manifest (``image_ref``, ``alt_text`` and metadata);
- ``train.jsonl``: the Bedrock training manifest, exactly ``{"image-ref", "caption"}`` per line;
- ``summary.json``: the funnel per character (detected, dropped by reason, kept), thresholds, caption
  sources and the validation report;
- ``report.html``: contact sheets, dropped crops with reasons, duplicate groups.

The training manifest is validated against every Nova Canvas limit before the step succeeds.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.config import NOVA_CANVAS_MIN_RECORDS, StoryboardConfig
from core.errors import InputError, TooFewRecordsError
from core.io import read_jsonl, write_json, write_jsonl
from steps.background_windows import BACKGROUND_DIR
from steps.bedrock_validation import validate_training_rows
from steps.captioners import make_captioner
from steps.captions import Captioner, CaptionRequest
from steps.crops import shot_scale
from steps.dedup import deduplicate
from steps.extract import load_embeddings, prepare_out_dir
from steps.image_probes import LocalImageProbe
from steps.manifests import image_ref, labelling_row, training_rows
from steps.records import CropRecord
from steps.references import REFERENCES_FOLDER
from steps.report import write_prepare_report

log = logging.getLogger(__name__)

CAPTION_OUTPUTS = ("manifest.jsonl", "train.jsonl", "summary.json", "report.html")


def _scene_words(record: CropRecord, frame_height: int | None) -> str:
    """A few scene words for template captions: the crop's shot scale (``record.shot_scale``, from
    ExtractFrames; for older records without it, :func:`steps.crops.shot_scale` of the box in a picture
    ``frame_height`` px high), and light from the crop's mean luma (< 80 dim, > 170 bright)."""
    words = []
    if record.shot_scale:
        words.append(record.shot_scale)
    elif frame_height:
        words.append(shot_scale(record.bbox, (0, 0, 1, frame_height)))
    if record.mean_luma < 80:
        words.append("in dim light")
    elif record.mean_luma > 170:
        words.append("in bright light")
    return " ".join(words)


def _load_shards(extract_dirs: Sequence[Path]) -> tuple[list[CropRecord], dict[str, Path], dict[str, np.ndarray],
                                                        dict[str, int], list[dict[str, Any]]]:
    records: list[CropRecord] = []
    roots: dict[str, Path] = {}
    vectors: dict[str, np.ndarray] = {}
    heights: dict[str, int] = {}
    summaries = []
    for shard in extract_dirs:
        crops_file = shard / "crops.jsonl"
        if not crops_file.is_file():
            raise InputError(f"{shard} holds no crops.jsonl; run ExtractFrames (storyboard prepare) into it first")
        summary_file = shard / "extract_summary.json"
        if summary_file.is_file():
            summary = json.loads(summary_file.read_text(encoding="utf-8"))
            summaries.append(summary)
            for video in summary.get("videos", []):
                heights[video["path"]] = int(video.get("height") or 0)
        ids, emb = load_embeddings(shard / "embeddings.npz") if (shard / "embeddings.npz").is_file() else ([], None)
        for i, crop_id in enumerate(ids):
            vectors[crop_id] = emb[i]
        for row in read_jsonl(crops_file):
            rec = CropRecord.from_json(row)
            if rec.crop_id in roots:
                raise InputError(f"crop id {rec.crop_id} appears in two shards ({roots[rec.crop_id]} and {shard}); "
                                 f"give the videos distinct file names")
            roots[rec.crop_id] = shard
            records.append(rec)
    return records, roots, vectors, heights, summaries


def run_caption(extract_dirs: Sequence[str | Path], out_dir: str | Path, config: StoryboardConfig,
                image_uri_prefix: str | None = None, overwrite: bool = False, progress: bool = True,
                captioner: Captioner | None = None) -> dict[str, Any]:
    """Run CaptionImages on the outputs of ExtractFrames.

    Args:
        extract_dirs: ExtractFrames output folders (one per shard); ``out_dir`` may be one of them.
        out_dir: output folder.
        config: validated configuration (captions, dedup, characters).
        image_uri_prefix: where the crops will live for Bedrock (``s3://bucket/prefix/crops/``); without
            it the manifests hold paths relative to ``out_dir``.
        overwrite: replace this step's outputs in a non-empty ``out_dir``.
        progress: show progress bars.
        captioner: injected captioner (tests); by default built from ``config.captions``.

    Returns:
        The ``summary.json`` document.

    Raises:
        InputError: a shard is missing its outputs; the training manifest breaks a Nova Canvas limit.
        TooFewRecordsError: fewer than 5 records remain; the message names each filter's toll.
    """
    started = time.monotonic()
    shards = [Path(d) for d in extract_dirs]
    if not shards:
        raise InputError("CaptionImages needs at least one ExtractFrames output folder")
    out = Path(out_dir)
    records, roots, vectors, heights, shard_summaries = _load_shards(shards)
    in_place = len(shards) == 1 and shards[0].resolve() == out.resolve()
    prepare_out_dir(out, overwrite or in_place, CAPTION_OUTPUTS if in_place else CAPTION_OUTPUTS + (
        "crops", "crops.jsonl", REFERENCES_FOLDER, BACKGROUND_DIR.parts[0]))
    if not in_place:  # the references that defined the characters, for Evaluate (every shard has the same)
        first = next((s / REFERENCES_FOLDER for s in shards if (s / REFERENCES_FOLDER).is_dir()), None)
        if first is not None:
            shutil.copytree(first, out / REFERENCES_FOLDER)
        for shard in shards:  # every shard's background windows, for Evaluate's calibration
            if (shard / BACKGROUND_DIR).is_dir():
                shutil.copytree(shard / BACKGROUND_DIR, out / BACKGROUND_DIR, dirs_exist_ok=True)

    # Global de-duplication across shards (a no-op for one shard, where ExtractFrames already did it).
    candidates = [r for r in records if r.kept and r.crop_id in vectors]
    if len(shards) > 1 and candidates:
        result = deduplicate(np.stack([vectors[r.crop_id] for r in candidates]), [r.sharpness for r in candidates],
                             [r.character for r in candidates], config.dedup.threshold, config.dedup.block_size)
        for i, rec in enumerate(candidates):
            if not result.keep[i]:
                first = candidates[int(result.duplicate_of[i])]
                rec.dropped_reason, rec.duplicate_of, rec.dedup_group = "duplicate", first.crop_id, first.crop_id
                rec.similarity = round(float(result.similarity[i]), 4)
                rec.detail = (f"cosine similarity {rec.similarity:.3f} >= dedup.threshold {config.dedup.threshold:g} "
                              f"with the sharper {first.crop_id} (across shards)")
    kept = [r for r in records if r.kept and r.path]
    if not in_place:
        for rec in records:
            for rel in (rec.path, rec.frame_path):  # the crop, and its frame thumbnail for the report
                if rel and (roots[rec.crop_id] / rel).is_file():
                    target = out / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(roots[rec.crop_id] / rel, target)

    names = sorted({r.character for r in records})
    funnel = _funnel(records, names)
    if len(kept) < NOVA_CANVAS_MIN_RECORDS:
        write_jsonl(out / "crops.jsonl", (r.to_json() for r in records))
        tolls = "; ".join(f"{name}: {f['detected']} detected, " +
                          ", ".join(f"{n} {reason}" for reason, n in f["dropped"].items()) + f", {f['kept']} kept"
                          for name, f in funnel.items())
        raise TooFewRecordsError(
            f"only {len(kept)} training record(s) remain; Bedrock's Nova Canvas fine-tuning needs at least "
            f"{NOVA_CANVAS_MIN_RECORDS}. Per character: {tolls or 'nothing detected'}. Thresholds: crops.min_side_px="
            f"{config.crops.min_side_px}, crops.max_upscale={config.crops.max_upscale:g}, crops.min_blur_variance="
            f"{config.crops.min_blur_variance:g}, dedup.threshold={config.dedup.threshold:g}. Add footage, sample "
            f"more densely, raise crops.max_upscale for low-resolution video, or raise dedup.threshold.")

    characters = {c.name: c for c in (config.character(n) for n in names)}
    requests = []
    for rec in kept:
        with Image.open(out / rec.path) as img:
            pixels = np.asarray(img.convert("RGB"))
        char = characters[rec.character]
        requests.append(CaptionRequest(rec.crop_id, pixels, (char.caption_name,), (char.description,),
                                       _scene_words(rec, heights.get(rec.video))))
    captioner = captioner or make_captioner(config.captions, list(characters.values()), config.aws)
    log.info("captioning %d crops with %s", len(requests), captioner.name)
    results = captioner.caption(requests)

    labelling = []
    for rec, res in zip(kept, results):
        labelling.append(labelling_row(rec, res.caption, image_ref(rec.path, image_uri_prefix),
                                       caption_source=res.source, needs_review=res.needs_review, note=res.note,
                                       display_name=characters[rec.character].caption_name))
    train = training_rows(labelling)
    # Validate before anything is published: images against the local copies, references as written.
    local_rows = [{"image-ref": rec.path, "caption": row["caption"]} for rec, row in zip(kept, train)]
    report = validate_training_rows(local_rows, LocalImageProbe(out), source="train.jsonl")
    if image_uri_prefix:
        ref_report = validate_training_rows(train, None, source="train.jsonl")
        report.errors.extend(e for e in ref_report.errors if e not in report.errors)
    if report.errors:
        shown = "\n  - ".join(report.errors[:20])
        raise InputError(f"train.jsonl would break the Nova Canvas dataset limits ({len(report.errors)} problems):"
                         f"\n  - {shown}")
    write_jsonl(out / "crops.jsonl", (r.to_json() for r in records))
    write_jsonl(out / "manifest.jsonl", labelling)
    write_jsonl(out / "train.jsonl", train)

    summary = {
        "characters": names,
        "records": len(train),
        "funnel": funnel,
        "frames_sampled": sum(s.get("frames_sampled", 0) for s in shard_summaries),
        "frames_with_character": dict(sum((Counter(s.get("frames_with_character", {})) for s in shard_summaries),
                                          Counter())),
        "videos": [v for s in shard_summaries for v in s.get("videos", [])],
        "shards": len(shards),
        "detector": sorted({s.get("detector", "") for s in shard_summaries}),
        "embedder": sorted({s.get("embedder", "") for s in shard_summaries}),
        "thresholds": {**(shard_summaries[0].get("thresholds", {}) if shard_summaries else {}),
                       "captions.backend": config.captions.backend},
        "captions": {
            "captioner": captioner.name,
            "sources": dict(Counter(r.source for r in results)),
            "needs_review": sum(1 for r in results if r.needs_review),
        },
        "validation": report.to_json(),
        "image_uri_prefix": image_uri_prefix,
        "elapsed_s": round(time.monotonic() - started, 2),
    }
    write_json(out / "summary.json", summary)
    write_prepare_report(out, records, labelling, summary)
    log.info("CaptionImages: %d training records for %s; wrote %s", len(train), ", ".join(names), out)
    return summary


def _funnel(records: Sequence[CropRecord], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    funnel = {}
    for name in names:
        mine = [r for r in records if r.character == name]
        funnel[name] = {
            "detected": len(mine),
            "dropped": dict(sorted(Counter(r.dropped_reason for r in mine if r.dropped_reason).items())),
            "kept": sum(1 for r in mine if r.kept),
            "upscaled": sum(1 for r in mine if r.kept and r.upscaled),
        }
    return funnel
