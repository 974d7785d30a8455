"""Evaluate entry point: ``python3 -m containers.processing.evaluate [options]``.

Processing layout (``<root>`` is ``/opt/ml/processing`` unless moved):

- ``<root>/input/config/pipeline.json``: the configuration;
- ``<root>/input/references/<character>/``: reference images (``ReferencesS3Uri``);
- ``<root>/input/dataset/``: the CaptionImages output (``crops.jsonl`` and ``crops/``: the training crops,
  for memorisation and calibration);
- ``<root>/output/evaluation/``: ``evaluation.json`` (the pipeline's PropertyFile) and ``report.html``;
- ``<root>/work/``: scratch space for generated or downloaded images.

Where the images come from:

1. ``--evaluation-images=DIR`` (``EvaluationImagesUri``; a local folder, or an S3 prefix that is
   downloaded): ``DIR/finetuned/<character>/`` and ``DIR/base/<character>/``, or, for a dry run only,
   simply ``DIR/<character>/`` (scored as the fine-tuned model's, with no baseline: the quality gate
   needs the base model's figures, so a trained model's folder must have ``base/``);
2. otherwise they are generated from the evaluation prompt set with Nova Canvas: the base model
   (``--base-model-id``) and the fine-tuned model, which runs only on Provisioned Throughput
   (``evaluation.custom_model_id``: its provisioned model ARN; DESIGN §5).

A dry-run fine-tune (``--dry-run true``) trained nothing: without a folder of images there is nothing
to score, and the step writes an ``evaluation.json`` whose ``status`` is ``skipped`` (no metrics); the
pipeline's CheckModelTrained gate stops before any figure is read. With a folder, the images are scored
as usual, for the report only: the gate still refuses to register a dry run.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from containers.processing.common import base_parser, load_step_config, optional, processing_root, run_main

log = logging.getLogger("containers.processing.evaluate")


def download_prefix(uri: str, dest: Path, region: str | None = None) -> Path:
    """Copy every object under the S3 prefix ``uri`` into ``dest`` (keys relative to the prefix); return ``dest``.

    Raises:
        steps.errors.InputError: no object under the prefix.
    """
    from steps.aws import make_client
    from steps.errors import InputError

    bucket, _, prefix = uri[len("s3://"):].partition("/")
    s3 = make_client("s3", region=region)
    count = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            rel = key[len(prefix):].lstrip("/")
            if not rel or key.endswith("/"):
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, key, str(target))
            count += 1
    if not count:
        raise InputError(f"EvaluationImagesUri {uri} holds no object")
    return dest


def image_folders(folder: Path) -> tuple[Path, Path | None]:
    """``(fine-tuned images, base images or None)`` of an images folder (see the module docstring)."""
    if (folder / "finetuned").is_dir():
        base = folder / "base"
        return folder / "finetuned", base if base.is_dir() else None
    return folder, None


def skipped_document(reason: str, **inputs: Any) -> dict[str, Any]:
    """The ``evaluation.json`` of an evaluation that could not score anything (a dry run without images)."""
    from datetime import datetime, timezone

    return {"status": "skipped", "reason": reason, "created_at": datetime.now(timezone.utc).isoformat(),
            "inputs": inputs, "metrics": None,
            "gate": {"passed": False, "reason": reason}}


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, find or generate the images, run :func:`evaluation.evaluate.run_evaluation`."""
    parser = base_parser("Score generated storyboard images against the reference characters.")
    parser.add_argument("--custom-model-arn", default=None, help="FineTune's CustomModelArn (empty on a dry run)")
    parser.add_argument("--dry-run", default="false", help="FineTune's DryRun output: true or false")
    parser.add_argument("--base-model-id", default=None, help="Nova Canvas base model (evaluation.base_model_id)")
    parser.add_argument("--embedding-model-id", default=None, help="Titan model ID (embeddings.titan_model_id)")
    parser.add_argument("--reviewed-manifest-uri", default=None, help="HumanReview's ReviewedManifestUri (logged)")
    parser.add_argument("--evaluation-images", default=None, help="folder or S3 prefix of generated images")
    args = parser.parse_args(argv)

    from steps.errors import InputError
    from steps.io import write_json, write_text

    root = processing_root(args.processing_root)
    config = load_step_config(root / "input" / "config", {
        "embeddings.titan_model_id": optional(args.embedding_model_id),
        "evaluation.base_model_id": optional(args.base_model_id),
    })
    out_dir = root / "output" / "evaluation"
    references = root / "input" / "references"
    dataset = root / "input" / "dataset"
    work = root / "work"
    dry_run = str(args.dry_run).strip().lower() == "true"
    images = optional(args.evaluation_images)
    log.info("custom model %s, dry run %s, reviewed manifest %s", optional(args.custom_model_arn), dry_run,
             optional(args.reviewed_manifest_uri))

    if images:
        folder = download_prefix(images, work / "images", config.aws.region) if images.startswith("s3://") \
            else Path(images)
        if not folder.is_dir():
            raise InputError(f"EvaluationImagesUri {images} is not a folder")
        finetuned_dir, base_dir = image_folders(folder)
        if base_dir is None and not dry_run:
            raise InputError(f"EvaluationImagesUri {images} has no base/ folder: the quality gate compares the "
                             "fine-tuned model with the base model; give DIR/finetuned/<character>/ and "
                             "DIR/base/<character>/")
    elif dry_run:
        reason = ("FineTune ran as a dry run, so no model was trained and there are no fine-tuned images to score; "
                  "give EvaluationImagesUri to score a folder of images")
        write_json(out_dir / "evaluation.json", skipped_document(reason, references=str(references),
                                                                 dataset=str(dataset)))
        write_text(out_dir / "report.html", f"<!doctype html><meta charset='utf-8'><title>Evaluation skipped</title>"
                                            f"<h1>Evaluation skipped</h1><p>{reason}.</p>\n")
        print(f"evaluation skipped: {reason}")
        return 0
    else:
        finetuned_dir, base_dir = generate_images(config, references, work, optional(args.custom_model_arn))

    from evaluation.evaluate import run_evaluation

    training = dataset if (dataset / "crops.jsonl").is_file() else None
    result = run_evaluation(finetuned_dir, references, out_dir, baseline_dir=base_dir, training_crops_dir=training,
                            config=config)
    cs = result.evaluation["metrics"]["character_similarity"]
    print(json.dumps({"evaluation": str(result.evaluation_path), "finetuned": cs["finetuned"]["mean"],
                      "base": (cs.get("base") or {}).get("mean"), "improvement": cs.get("improvement"),
                      "warnings": result.warnings}, indent=1, default=str))
    return 0


def generate_images(config: Any, references: Path, work: Path, custom_model_arn: str | None) -> tuple[Path, Path]:
    """Generate the prompt set with the base and the fine-tuned model into ``work/base`` and ``work/finetuned``.

    Raises:
        steps.errors.InputError: no provisioned throughput for the fine-tuned model is configured, or no
            character to generate (checked before any request is sent).
    """
    from evaluation.generation import NovaCanvasGenerator, build_requests, generate_prompt_set
    from steps.errors import InputError

    model = config.evaluation.custom_model_id
    if not model:
        raise InputError(
            f"the fine-tuned model ({custom_model_arn or 'no ARN'}) runs only on Provisioned Throughput: set "
            "evaluation.custom_model_id to its provisioned model ARN, or give EvaluationImagesUri (a folder of "
            "images generated with it)")
    names = [c.name for c in config.characters] or sorted(
        p.name for p in references.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    if not names:
        raise InputError(f"no character to evaluate: configure characters or put reference folders in {references}")
    requests = build_requests(config.evaluation, [config.character(n) for n in names])
    base_dir, finetuned_dir = work / "base", work / "finetuned"
    for model_id, folder in ((config.evaluation.base_model_id, base_dir), (model, finetuned_dir)):
        generator = NovaCanvasGenerator.from_config(config.evaluation, config.aws, model_id)
        generated = generate_prompt_set(generator, requests, folder, concurrency=config.evaluation.concurrency)
        log.info("%s: %d images (%s)", model_id, generated.images, generated.counts)
    return finetuned_dir, base_dir


if __name__ == "__main__":
    sys.exit(run_main(main))
