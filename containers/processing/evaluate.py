"""Evaluate entry point: ``python3 -m containers.processing.evaluate [options]``.

Processing layout (``<root>`` is ``/opt/ml/processing`` unless moved):

- ``<root>/input/config/pipeline.json``: the configuration;
- ``<root>/input/references/<character>/``: reference images (``ReferencesS3Uri``); where the dataset holds
  ``references/<character>/`` (the reference images ExtractFrames resolved, frame regions of
  ``references.yaml`` included), those are used;
- ``<root>/input/dataset/``: the CaptionImages output (``crops.jsonl`` and ``crops/``: the training crops,
  for memorisation and, those that are no near-copy of a reference, for the calibration AUC; where the dataset
  has ``calibration/<character>/`` and ``calibration/_background/`` (held-out crops and windows of frames with no
  character), those are the calibration set instead);
- ``<root>/input/model/`` (``--finetune-backend sagemaker``): the training step's ``model.tar.gz``
  (``ModelArtifacts.S3ModelArtifacts``), or its extracted folder (``pytorch_lora_weights.safetensors``,
  ``training_log.jsonl``, ``training_config.json``);
- ``<root>/input/base_model/`` (``--finetune-backend sagemaker``): the diffusers Stable Diffusion XL folder the
  LoRA was trained on (the same S3 prefix as the training job's ``base_model`` channel);
- ``<root>/output/evaluation/``: ``evaluation.json`` (the pipeline's PropertyFile; CheckQuality reads
  ``gate.status``, decided here with the thresholds ``--min-character-similarity``, ``--min-improvement`` and
  ``--max-near-copy-rate``: the pipeline parameters), ``report.html`` and, for
  the ``sagemaker`` backend, ``loss_curve.png``;
- ``<root>/work/``: scratch space for generated or downloaded images and the extracted model.

Where the images come from:

1. ``--evaluation-images=DIR`` (``EvaluationImagesUri``; a local folder, or an S3 prefix that is
   downloaded): ``DIR/finetuned/<character>/`` and ``DIR/base/<character>/``, or, for a dry run only,
   simply ``DIR/<character>/`` (scored as the fine-tuned model's, with no baseline: the quality gate
   needs the base model's figures, so a trained model's folder must have ``base/``);
2. otherwise, with ``--finetune-backend sagemaker``, they are generated in this job from the evaluation prompt
   set with Stable Diffusion XL: the base model alone into ``work/base`` and base+LoRA into ``work/finetuned``,
   same prompts and seeds, at the ``evaluation.diffusers`` settings, on ``--device`` (``auto``: the GPU when
   there is one). Every input is checked (model archive, LoRA weights, base model folder, prompt set) before
   anything is generated. The training log and whether the base is the random-weight stand-in go to the
   report;
3. otherwise (``--finetune-backend bedrock``, the default) they are generated with Nova Canvas: the base model
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
        core.errors.InputError: no object under the prefix.
    """
    from core.aws import make_client
    from core.errors import InputError

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
            "gate": {"status": "inconclusive", "passed": False, "reason": reason, "reasons": [reason],
                     "summary": f"Quality gate inconclusive: nothing was scored ({reason}).", "criteria": []}}


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, find or generate the images, run :func:`evaluation.evaluate.run_evaluation`."""
    parser = base_parser("Score generated storyboard images against the reference characters.")
    parser.add_argument("--custom-model-arn", default=None, help="FineTune's CustomModelArn (empty on a dry run)")
    parser.add_argument("--dry-run", default="false", help="FineTune's DryRun output: true or false")
    parser.add_argument("--base-model-id", default=None, help="Nova Canvas base model (evaluation.base_model_id)")
    parser.add_argument("--embedding-model-id", default=None, help="Titan model ID (embeddings.titan_model_id)")
    parser.add_argument("--reviewed-manifest-uri", default=None, help="HumanReview's ReviewedManifestUri (logged)")
    parser.add_argument("--evaluation-images", default=None, help="folder or S3 prefix of generated images")
    parser.add_argument("--finetune-backend", default="bedrock", choices=("sagemaker", "bedrock"),
                        help="finetune.backend: sagemaker (SDXL + LoRA from <root>/input/model and "
                             "<root>/input/base_model, generated here) or bedrock (Nova Canvas; the default)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="sagemaker backend: where to generate (auto: cuda when available)")
    parser.add_argument("--min-character-similarity", default=None,
                        help="gate threshold (the MinCharacterSimilarity parameter); overrides "
                             "evaluation.min_character_similarity")
    parser.add_argument("--min-improvement", default=None,
                        help="gate threshold (MinImprovementOverBase); overrides evaluation.min_improvement")
    parser.add_argument("--max-near-copy-rate", default=None,
                        help="gate threshold (MaxNearCopyRate); overrides evaluation.max_near_copy_rate")
    parser.add_argument("--model-data-url", default=None,
                        help="sagemaker backend: the model.tar.gz URI (ModelArtifacts.S3ModelArtifacts), recorded in "
                             "evaluation.json")
    parser.add_argument("--provisioned-model-arn", default=None,
                        help="bedrock backend: this run's evaluation throughput (ProvisionEvaluationModel's "
                             "ProvisionedModelArn); overrides evaluation.custom_model_id")
    args = parser.parse_args(argv)

    from core.errors import InputError
    from core.io import write_json, write_text

    root = processing_root(args.processing_root)
    config = load_step_config(root / "input" / "config", {
        "embeddings.titan_model_id": optional(args.embedding_model_id),
        "evaluation.base_model_id": optional(args.base_model_id),
        "evaluation.custom_model_id": optional(args.provisioned_model_arn),
        "evaluation.min_character_similarity": optional(args.min_character_similarity),
        "evaluation.min_improvement": optional(args.min_improvement),
        "evaluation.max_near_copy_rate": optional(args.max_near_copy_rate),
    })
    out_dir = root / "output" / "evaluation"
    references = root / "input" / "references"
    dataset = root / "input" / "dataset"
    resolved = dataset / "references"  # written by ExtractFrames: image files and references.yaml regions alike
    if resolved.is_dir() and any(p.is_dir() for p in resolved.iterdir()):
        log.info("references: %s (the images that defined each character in ExtractFrames)", resolved)
        references = resolved
    work = root / "work"
    dry_run = str(args.dry_run).strip().lower() == "true"
    images = optional(args.evaluation_images)
    log.info("backend %s, custom model %s, dry run %s, reviewed manifest %s", args.finetune_backend,
             optional(args.custom_model_arn), dry_run, optional(args.reviewed_manifest_uri))
    evaluated_model: dict[str, Any] | None = None
    training_log: list[dict[str, Any]] | None = None

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
    elif args.finetune_backend == "sagemaker":
        finetuned_dir, base_dir, evaluated_model, training_log = generate_with_lora(
            config, references, root, args.device, optional(args.model_data_url))
    else:
        from evaluation.diffusers_generator import describe_model

        finetuned_dir, base_dir = generate_images(config, references, work, optional(args.custom_model_arn))
        evaluated_model = describe_model("bedrock", base_model_id=config.evaluation.base_model_id,
                                         finetuned_model_id=config.evaluation.custom_model_id)

    from evaluation.evaluate import run_evaluation

    training = dataset if (dataset / "crops.jsonl").is_file() else None
    calibration = dataset / "calibration" if (dataset / "calibration").is_dir() else None  # held-out crops, if any
    result = run_evaluation(finetuned_dir, references, out_dir, baseline_dir=base_dir, training_crops_dir=training,
                            calibration_dir=calibration, config=config, evaluated_model=evaluated_model,
                            training_log=training_log)
    cs = result.evaluation["metrics"]["character_similarity"]
    model = result.evaluation.get("model") or {}
    print(json.dumps({"evaluation": str(result.evaluation_path), "finetuned": cs["finetuned"]["mean"],
                      "base": (cs.get("base") or {}).get("mean"), "improvement": cs.get("improvement"),
                      "gate": result.status, "calibration_auc": result.evaluation["calibration"]["auc"],
                      "gate_summary": result.evaluation["gate"]["summary"],
                      "stand_in": model.get("stand_in"), "warnings": result.warnings}, indent=1, default=str))
    return 0


def _character_names(config: Any, references: Path) -> list[str]:
    """The configured characters, else the reference folders' names.

    Raises:
        core.errors.InputError: neither gives a character.
    """
    from core.errors import InputError

    names = [c.name for c in config.characters]
    if not names and references.is_dir():
        names = sorted(p.name for p in references.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    if not names:
        raise InputError(f"no character to evaluate: configure characters or put reference folders in {references}")
    return names


def generate_with_lora(config: Any, references: Path, root: Path, device: str, model_data_url: str | None
                       ) -> tuple[Path, Path, dict[str, Any], list[dict[str, Any]]]:
    """The ``sagemaker`` backend: generate the prompt set with the SDXL base and with base+LoRA, same seeds.

    Checks first, before any image is generated: the prompt set (``evaluation.diffusers`` limits), the base
    model folder ``<root>/input/base_model`` (:func:`steps.lora.model.check_base_model`), the device, and the
    model input ``<root>/input/model`` (a ``model.tar.gz`` holding ``pytorch_lora_weights.safetensors``,
    unpacked into ``<root>/work/model``). Then the base model generates into ``<root>/work/base`` and is
    released, and base+LoRA generates into ``<root>/work/finetuned``.

    Returns:
        ``(finetuned images, base images, the model block, the training log rows)``.

    Raises:
        core.errors.InputError: a missing or unusable input (the message names it and the fix).
    """
    from core.errors import InputError
    from evaluation.diffusers_generator import DiffusersGenerator, describe_model
    from evaluation.generation import generate_prompt_set
    from evaluation.prompt_set import build_requests
    from steps.lora.artifacts import TRAINING_CONFIG, read_training_log, unpack_model_artifacts
    from steps.lora.model import check_base_model

    work = root / "work"
    model_in, base_in = root / "input" / "model", root / "input" / "base_model"
    names = _character_names(config, references)
    build_requests(config.evaluation, [config.character(n) for n in names], backend="diffusers")  # checked first
    if not base_in.is_dir():
        raise InputError(f"no base model input {base_in}: the sagemaker backend needs the diffusers Stable Diffusion "
                         "XL folder the LoRA was trained on as the processing input 'base_model'")
    base = check_base_model(base_in)
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InputError("--device cuda, but torch sees no CUDA device; run on a GPU instance or pass --device "
                             "auto or cpu")
    if not model_in.exists():
        raise InputError(f"no model input {model_in}: the sagemaker backend needs the training step's model.tar.gz "
                         "(ModelArtifacts.S3ModelArtifacts) as the processing input 'model'")
    lora_dir = unpack_model_artifacts(model_in, work / "model")
    try:
        training_log = read_training_log(lora_dir)
    except InputError as err:
        log.warning("no training log: %s", err)
        training_log = []
    training_config = None
    if (lora_dir / TRAINING_CONFIG).is_file():
        try:
            training_config = json.loads((lora_dir / TRAINING_CONFIG).read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            log.warning("%s is not valid JSON (%s); the training summary has no hyperparameters",
                        lora_dir / TRAINING_CONFIG, err)
    resolution = _training_resolution(training_config)
    settings = config.evaluation.diffusers.sized(resolution)
    evaluation = config.evaluation.model_copy(update={"diffusers": settings})
    requests = build_requests(evaluation, [config.character(n) for n in names], backend="diffusers")
    log.info("generating %d requests at %d x %d px, %d steps (%s)", len(requests), settings.width, settings.height,
             settings.num_inference_steps, "the LoRA's training resolution" if resolution and
             config.evaluation.diffusers.width is None else "evaluation.diffusers")
    base_dir, finetuned_dir = work / "base", work / "finetuned"
    for lora, folder in ((None, base_dir), (lora_dir, finetuned_dir)):
        generator = DiffusersGenerator(base.path, lora, device=device, dtype=settings.dtype)
        generated = generate_prompt_set(generator, requests, folder, progress=True)
        generator.close()
        log.info("%s: %d images (%s)", generator.model_id, generated.images, generated.counts)
    artifact = model_data_url or str(model_in / "model.tar.gz" if (model_in / "model.tar.gz").is_file() else model_in)
    evaluated = describe_model("sagemaker", base=base, lora_artifact=artifact, lora_dir=lora_dir,
                               training_log=training_log, training_config=training_config)
    return finetuned_dir, base_dir, evaluated, training_log


def _training_resolution(training_config: dict[str, Any] | None) -> int | None:
    """The resolution (px) the LoRA was trained at, from its ``training_config.json``, or ``None``."""
    hyperparameters = (training_config or {}).get("hyperparameters")  # as steps.lora.export writes it
    resolution = hyperparameters.get("resolution") if isinstance(hyperparameters, dict) else None
    return resolution if isinstance(resolution, int) else None


def generate_images(config: Any, references: Path, work: Path, custom_model_arn: str | None) -> tuple[Path, Path]:
    """Generate the prompt set with the base and the fine-tuned model into ``work/base`` and ``work/finetuned``.

    Raises:
        core.errors.InputError: no provisioned throughput for the fine-tuned model is configured, or no
            character to generate (checked before any request is sent).
    """
    from core.errors import InputError
    from evaluation.generation import generate_prompt_set
    from evaluation.nova_canvas import NovaCanvasGenerator
    from evaluation.prompt_set import build_requests

    model = config.evaluation.custom_model_id
    if not model:
        raise InputError(
            f"the fine-tuned model ({custom_model_arn or 'no ARN'}) runs only on Provisioned Throughput: set "
            "evaluation.custom_model_id to its provisioned model ARN, or give EvaluationImagesUri (a folder of "
            "images generated with it)")
    names = _character_names(config, references)
    requests = build_requests(config.evaluation, [config.character(n) for n in names])
    base_dir, finetuned_dir = work / "base", work / "finetuned"
    for model_id, folder in ((config.evaluation.base_model_id, base_dir), (model, finetuned_dir)):
        generator = NovaCanvasGenerator.from_config(config.evaluation, config.aws, model_id)
        generated = generate_prompt_set(generator, requests, folder, concurrency=config.evaluation.concurrency)
        log.info("%s: %d images (%s)", model_id, generated.images, generated.counts)
    return finetuned_dir, base_dir


if __name__ == "__main__":
    sys.exit(run_main(main))
