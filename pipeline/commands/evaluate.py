"""`storyboard` sub-commands of the Evaluate step: ``evaluate`` (score images) and ``generate`` (make them).

::

    storyboard evaluate --images DIR --references DIR --out DIR
                        [--baseline-images DIR] [--training-crops DIR] [--calibration-crops DIR]
                        [--video VIDEO ...] [--min-character-similarity X] [--min-improvement X]
                        [--max-near-copy-rate X] [--min-calibration-auc X] [--config pipeline.yaml]
    storyboard generate --out DIR (--model-id ID_OR_ARN | --from-folder DIR)
                        [--character NAME ...] [--config pipeline.yaml]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``evaluate`` and ``generate`` to ``subparsers``."""
    ev = subparsers.add_parser(
        "evaluate", help="score generated images against the reference characters (base vs fine-tuned)",
        description="Score images against the reference characters and write evaluation.json and report.html. "
                    "Image folders hold one sub-folder per character: DIR/<character>/*.png (the folder name is "
                    "the intended character).")
    ev.add_argument("--images", required=True, type=Path,
                    help="images to score (the fine-tuned model's): DIR/<character>/")
    ev.add_argument("--references", required=True, type=Path, help="reference images: DIR/<character>/")
    ev.add_argument("--out", required=True, type=Path, help="output folder for evaluation.json and report.html")
    ev.add_argument("--baseline-images", type=Path, help="the base model's images, same layout as --images")
    ev.add_argument("--training-crops", type=Path,
                    help="training crops (crops.jsonl folder, DIR/<character>/ or flat) for memorisation")
    ev.add_argument("--calibration-crops", type=Path,
                    help="held-out real crops DIR/<character>/ and DIR/_background/ for the calibration band")
    ev.add_argument("--video", action="append", dest="videos", type=Path, default=[],
                    help="input video (repeatable; the first is the default video of frame references): "
                         "characters defined by DIR/<character>/references.yaml are cropped from it into "
                         "OUT/references/<character>/ and scored against those crops")
    ev.add_argument("--min-character-similarity", type=float,
                    help="gate: overrides evaluation.min_character_similarity")
    ev.add_argument("--min-improvement", type=float, help="gate: overrides evaluation.min_improvement")
    ev.add_argument("--max-near-copy-rate", type=float, help="gate: overrides evaluation.max_near_copy_rate")
    ev.add_argument("--min-calibration-auc", type=float,
                    help="gate: overrides evaluation.min_calibration_auc (lowest one-vs-rest AUC of the encoder on "
                         "the held-out crops; below it the gate is inconclusive)")
    ev.add_argument("--config", type=Path,
                    help="pipeline.yaml (evaluation and embeddings settings; default: ./pipeline.yaml if present, "
                         "else built-in defaults)")
    ev.set_defaults(func=run_evaluate)

    gen = subparsers.add_parser(
        "generate", help="generate the storyboard prompt set with Nova Canvas (or copy it from a folder)",
        description="Generate every prompt of the evaluation prompt set into DIR/<character>/"
                    "<character>_p<k>_s<seed>_<i>.png and DIR/generation_log.json.")
    gen.add_argument("--out", required=True, type=Path, help="output folder")
    source = gen.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-id", help="Nova Canvas base model ID or a provisioned throughput ARN")
    source.add_argument("--from-folder", type=Path, help="offline: take the images from DIR/<character>/")
    gen.add_argument("--character", action="append", dest="characters",
                     help="character to generate (repeatable); default: the characters of pipeline.yaml")
    gen.add_argument("--config", type=Path,
                     help="pipeline.yaml (evaluation settings, characters, aws; default: ./pipeline.yaml if present, "
                          "else built-in defaults)")
    gen.set_defaults(func=run_generate)


def resolve_references(references: Path, out: Path, config: object, videos: list[Path]) -> tuple[Path, list[str]]:
    """The references folder to score against, and warnings.

    Where a character folder of ``references`` holds ``references.yaml`` (regions of video frames,
    :mod:`steps.references`), every character is resolved with :func:`steps.references.load_references` (its
    image files and its frame regions, cropped from the video named in the entry or the first ``videos``) and
    written to ``out/references/<character>/ref_<k>.png``, which is returned. Otherwise ``references`` itself.
    Folders that are no character (``dropped/``, names starting with ``.`` or ``_``) are left out with a warning.

    Raises:
        core.errors.InputError: a frame region names no video and no ``--video`` was given, or another
            reference problem (:func:`steps.references.load_references`).
    """
    import shutil
    import tempfile

    from evaluation.evaluate import REFERENCES_YAML, skip_reason

    if not references.is_dir():
        return references, []
    folders = sorted(p for p in references.iterdir() if p.is_dir())
    if not any((p / REFERENCES_YAML).is_file() for p in folders):
        return references, []
    from steps.references import load_references, write_reference_images

    warnings: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        view = Path(tmp) / "characters"
        view.mkdir()
        for folder in folders:
            skip = skip_reason(folder.name)
            if skip:
                warnings.append(f"references: skipped folder {folder} ({skip})")
                continue
            (view / folder.name).symlink_to(folder.resolve(), target_is_directory=True)
        found = load_references(config.model_copy(update={"characters": []}), view,  # type: ignore[attr-defined]
                                [str(v) for v in videos])
    resolved = out / "references"
    if resolved.exists():
        shutil.rmtree(resolved)
    write_reference_images(found, resolved)
    return resolved, warnings


def run_evaluate(args: argparse.Namespace) -> int:
    """``storyboard evaluate``: returns 0 (the gate's status is in evaluation.json, not the exit code)."""
    from core.config import load_config_or_default
    from evaluation.evaluate import run_evaluation

    config = load_config_or_default(args.config)
    overrides = {key: value for key, value in (("min_character_similarity", args.min_character_similarity),
                                               ("min_improvement", args.min_improvement),
                                               ("max_near_copy_rate", args.max_near_copy_rate),
                                               ("min_calibration_auc", args.min_calibration_auc)) if value is not None}
    if overrides:
        from core.evaluation_config import EvaluationConfig

        evaluation = EvaluationConfig.model_validate({**config.evaluation.model_dump(), **overrides})
        config = config.model_copy(update={"evaluation": evaluation})
    references, notes = resolve_references(args.references, args.out, config, list(args.videos or []))
    result = run_evaluation(args.images, references, args.out, baseline_dir=args.baseline_images,
                            training_crops_dir=args.training_crops, calibration_dir=args.calibration_crops,
                            config=config)
    cs = result.evaluation["metrics"]["character_similarity"]
    summary = {
        "evaluation": str(result.evaluation_path),
        "report": str(result.report_path),
        "character_similarity": {"finetuned": cs["finetuned"]["mean"],
                                 "base": cs["base"]["mean"] if cs["base"] else None,
                                 "improvement": cs["improvement"]},
        "gate_passed": result.passed,
        "gate_status": result.status,
        "gate_summary": result.evaluation["gate"]["summary"],
        "warnings": notes + result.warnings,
    }
    print(json.dumps(summary, indent=2), file=sys.stdout)
    return 0


def run_generate(args: argparse.Namespace) -> int:
    """``storyboard generate``: returns 0, or 1 when no image at all was generated."""
    from core.config import load_config_or_default
    from core.errors import InputError
    from evaluation.generation import generate_prompt_set
    from evaluation.generators import FolderImageGenerator
    from evaluation.nova_canvas import NovaCanvasGenerator
    from evaluation.prompt_set import build_requests

    config = load_config_or_default(args.config)
    characters = [config.character(name) for name in args.characters] if args.characters else config.characters
    if not characters:
        raise InputError("no character to generate: configure `characters` in pipeline.yaml or pass --character")
    requests = build_requests(config.evaluation, characters)
    if args.from_folder:
        generator = FolderImageGenerator(args.from_folder)
    else:
        generator = NovaCanvasGenerator.from_config(config.evaluation, config.aws, args.model_id)
    result = generate_prompt_set(generator, requests, args.out, concurrency=config.evaluation.concurrency)
    print(json.dumps({"log": str(result.path), "requests": len(result.outcomes), "images": result.images,
                      "counts": result.counts}, indent=2))
    return 0 if result.images else 1
