"""ExtractFrames entry point: ``python3 -m containers.processing.extract_frames [options]``.

Processing layout (``<root>`` is ``/opt/ml/processing`` unless moved, see :mod:`containers.processing`):

- ``<root>/input/config/pipeline.json``: the configuration (``PipelineConfigS3Uri``);
- ``<root>/input/videos/``: this instance's videos (``InputVideosS3Uri``, sharded by S3 key);
- ``<root>/input/references/<character>/``: reference images (``ReferencesS3Uri``);
- ``<root>/output/extract/<host>/``: ``frames.jsonl``, ``crops/``, ``crops.jsonl``,
  ``extract_summary.json`` from :func:`steps.extract.run_extract`. Each instance writes under its own host
  name, so the shards of several instances meet in one S3 prefix without overwriting each other.

An instance whose shard holds no video (more instances than videos) writes ``shard.json`` only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from containers.processing.common import (
    base_parser,
    current_host,
    load_step_config,
    optional,
    processing_root,
    run_main,
    to_json,
)

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".mts", ".mxf", ".wmv")


def find_videos(folder: Path) -> list[Path]:
    """Video files under ``folder`` (recursively, by suffix), sorted; hidden files are skipped."""
    if not folder.exists():
        return []
    if folder.is_file():
        return [folder] if folder.suffix.lower() in VIDEO_SUFFIXES else []
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run :func:`steps.extract.run_extract` on this instance's videos; 0 on success."""
    parser = base_parser("Sample frames, find the characters, crop and de-duplicate (one shard of the videos).")
    parser.add_argument("--sampling-mode", default=None, help="interval | keyframes | shots (sampling.mode)")
    parser.add_argument("--sampling-interval", type=float, default=None, help="seconds (sampling.every_s)")
    parser.add_argument("--dedup-threshold", type=float, default=None, help="cosine threshold (dedup.threshold)")
    parser.add_argument("--embedding-model-id", default=None, help="Titan model ID (embeddings.titan_model_id)")
    args = parser.parse_args(argv)

    root = processing_root(args.processing_root)
    config = load_step_config(root / "input" / "config", {
        "sampling.mode": optional(args.sampling_mode),
        "sampling.every_s": args.sampling_interval,
        "dedup.threshold": args.dedup_threshold,
        "embeddings.titan_model_id": optional(args.embedding_model_id),
    })
    from steps.model_lifecycle import check_configured_models

    check_configured_models(config)  # a LEGACY or end-of-life Bedrock model fails here, before any work
    host, hosts = current_host()
    out_dir = root / "output" / "extract" / host
    videos = find_videos(root / "input" / "videos")
    if not videos:
        if len(hosts) > 1:
            from core.io import write_json

            write_json(out_dir / "shard.json", {"host": host, "hosts": hosts, "videos": []})
            print(f"{host}: no video in this shard ({len(hosts)} instances); nothing to do")
            return 0
        from core.errors import InputError

        raise InputError(f"no video under {root / 'input' / 'videos'} (suffixes: {', '.join(VIDEO_SUFFIXES)}); "
                         "check InputVideosS3Uri")
    references = root / "input" / "references"
    characters_dir = references if references.is_dir() and any(p.is_dir() for p in references.iterdir()) else None

    from steps.extract import run_extract

    print(f"{host}: {len(videos)} video(s): {', '.join(v.name for v in videos)}")
    result = run_extract(videos, characters_dir, out_dir, config, overwrite=True, progress=False)
    print(json.dumps(to_json(result), indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
