"""``storyboard prepare``: from videos and reference images to a validated Nova Canvas training set."""

from __future__ import annotations

import argparse
import json

from core.config import load_config_or_default
from steps.extract import sampling_for


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``prepare`` to ``subparsers``."""
    p = subparsers.add_parser(
        "prepare", help="extract, crop, de-duplicate and caption character images from videos",
        description="Sample frames, find each character by its reference images, crop, drop near-duplicates, "
                    "caption, and write the labelling manifest, the Bedrock training manifest and a report.")
    p.add_argument("--video", action="append", required=True, metavar="PATH",
                   help="input video (repeat for several)")
    p.add_argument("--characters", metavar="DIR",
                   help="folder with one sub-folder of reference images per character (DIR/<name>/)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (must be empty unless --overwrite)")
    p.add_argument("--config", metavar="YAML",
                   help="pipeline.yaml (default: ./pipeline.yaml if present, else built-in defaults)")
    p.add_argument("--sampling", choices=["interval", "keyframes", "shots"], help="frame sampling mode")
    p.add_argument("--every", type=float, metavar="SECONDS", help="seconds between sampled frames")
    p.add_argument("--image-uri-prefix", metavar="S3_URI",
                   help="where the crops will be uploaded (s3://bucket/prefix/crops/), written into the manifests")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs in a non-empty --out")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the data preparation; print where the outputs are."""
    from steps.prepare import run_prepare

    config = load_config_or_default(args.config)
    config.sampling = sampling_for(config, args.sampling, args.every)
    summary = run_prepare(args.video, args.characters, args.out, config, overwrite=args.overwrite,
                          image_uri_prefix=args.image_uri_prefix, progress=not args.no_progress)
    print(json.dumps({"records": summary["records"], "funnel": summary["funnel"]}, indent=2))
    print(f"training manifest: {args.out}/train.jsonl\nreport: {args.out}/report.html")
    return 0
