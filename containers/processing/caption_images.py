"""CaptionImages entry point: ``python3 -m containers.processing.caption_images [options]``.

Processing layout (``<root>`` is ``/opt/ml/processing`` unless moved):

- ``<root>/input/config/pipeline.json``: the configuration;
- ``<root>/input/extract/<host>/``: the ExtractFrames shards (every folder holding ``crops.jsonl``);
- ``<root>/output/dataset/``: ``crops/``, ``crops.jsonl``, ``manifest.jsonl`` (labelling),
  ``train.jsonl`` (Bedrock), ``summary.json`` and ``report.html`` from :func:`steps.caption.run_caption`.

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
        from steps.errors import InputError

        raise InputError(f"no ExtractFrames shard (a folder with crops.jsonl) under {root / 'input' / 'extract'}")
    prefix = optional(args.image_uri_prefix)
    if prefix and not prefix.endswith("/"):
        prefix += "/"

    from steps.caption import run_caption

    print(f"{len(shards)} shard(s): {', '.join(str(s.relative_to(root)) for s in shards)}")
    result = run_caption(shards, root / "output" / "dataset", config, image_uri_prefix=prefix, overwrite=True,
                         progress=False)
    print(json.dumps(to_json(result), indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
