"""CaptionImages entry point: ``python3 -m containers.processing.caption_images [options]``.

Processing layout (``<root>`` is ``/opt/ml/processing`` unless moved):

- ``<root>/input/config/pipeline.json``: the configuration;
- ``<root>/input/extract/<host>/``: the ExtractFrames shards (every folder holding ``crops.jsonl``);
- ``<root>/output/dataset/``: ``crops/``, ``crops.jsonl``, ``manifest.jsonl`` (labelling),
  ``train.jsonl`` (Bedrock), ``summary.json`` and ``report.html`` from :func:`steps.caption.run_caption`,
  and ``frames.jsonl`` (the shards' per-frame detection scores, for the report's chart).

Progress: a ``progress:`` line per stage (:mod:`steps.progress`) and a final one with the counts.

``--image-uri-prefix`` is where ``output/dataset/crops/`` ends up (the step's S3 output URI plus
``crops/``; a local folder in local runs); manifests name each image by it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from containers.processing.common import base_parser, load_step_config, optional, processing_root, run_main, to_json


def find_shards(folder: Path) -> list[Path]:
    """Folders under ``folder`` (itself included, two levels deep) that hold ``crops.jsonl``, sorted."""
    candidates = [folder, *folder.glob("*"), *folder.glob("*/*")] if folder.is_dir() else []
    return sorted({p for p in candidates if p.is_dir() and (p / "crops.jsonl").is_file()})


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run :func:`steps.caption.run_caption` over every shard; 0 on success."""
    parser = base_parser("Merge the ExtractFrames shards, de-duplicate globally, caption, write the manifests.")
    parser.add_argument("--caption-model-id", default=None, help="Bedrock model or profile (captions.model_id)")
    parser.add_argument("--dedup-threshold", type=float, default=None, help="cosine threshold (dedup.threshold)")
    parser.add_argument("--embedding-model-id", default=None, help="Titan model ID (embeddings.titan_model_id)")
    parser.add_argument("--image-uri-prefix", default=None, help="URI prefix of output/dataset/crops/")
    args = parser.parse_args(argv)

    root = processing_root(args.processing_root)
    config = load_step_config(root / "input" / "config", {
        "captions.model_id": optional(args.caption_model_id),
        "dedup.threshold": args.dedup_threshold,
        "embeddings.titan_model_id": optional(args.embedding_model_id),
    })
    shards = find_shards(root / "input" / "extract")
    if not shards:
        from core.errors import InputError

        raise InputError(f"no ExtractFrames shard (a folder with crops.jsonl) under {root / 'input' / 'extract'}")
    prefix = optional(args.image_uri_prefix)
    if prefix and not prefix.endswith("/"):
        prefix += "/"

    import time

    from steps.caption import run_caption
    from steps.progress import format_duration, stage

    started = time.monotonic()
    out = root / "output" / "dataset"
    crops = sum(_count_lines(shard / "crops.jsonl") for shard in shards)
    stage(STEP_LABEL, 1, 2, f"merging {len(shards)} ExtractFrames shard(s) with {crops} crop record(s): "
          f"{', '.join(str(s.relative_to(root)) for s in shards)}", write=print)
    merge_frame_logs(shards, out / "frames.jsonl")
    stage(STEP_LABEL, 2, 2, f"de-duplicating, captioning the kept crops ({config.captions.backend}), validating "
          "and writing the manifests and the report", write=print)
    result = run_caption(shards, out, config, image_uri_prefix=prefix, overwrite=True, progress=False)
    print(f"progress: {STEP_LABEL}: done, {result.get('records')} training record(s) for "
          f"{', '.join(result.get('characters', [])) or 'no character'} in "
          f"{format_duration(time.monotonic() - started)}", flush=True)
    print(json.dumps(to_json(result), indent=1, default=str))
    return 0


STEP_LABEL = "CaptionImages"


def _count_lines(path: Path) -> int:
    with open(path, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def merge_frame_logs(shards: list[Path], target: Path) -> int:
    """Concatenate the shards' ``frames.jsonl`` (each sampled frame's raw detection scores) into ``target``,
    atomically, so the training-set report draws the detection-score chart as ``storyboard prepare``'s does.
    Returns the number of frames; writes nothing when no shard has the file."""
    from core.io import atomic_open

    sources = [shard / "frames.jsonl" for shard in shards if (shard / "frames.jsonl").is_file()]
    if not sources:
        return 0
    count = 0
    with atomic_open(target, "w") as handle:
        for source in sources:
            with open(source, encoding="utf-8") as rows:
                for line in rows:
                    if line.strip():
                        handle.write(line if line.endswith("\n") else line + "\n")
                        count += 1
    return count


if __name__ == "__main__":
    sys.exit(run_main(main))
