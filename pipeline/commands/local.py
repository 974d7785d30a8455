"""`storyboard run --local`: execute the compiled pipeline definition on this machine (DESIGN §6).

:data:`DESCRIPTION` is the command's help (plain text: usage, inputs, the random-weight stand-in base
model and :data:`STAND_IN_PARAMETERS`, progress, the resume policy, exit statuses). The definition is
compiled as ``storyboard compile`` does and run by :class:`pipeline.local_runner.LocalRunner`; every
``--param`` is checked (:func:`pipeline.parameter_values.check_overrides`) before anything is built or run;
``--resume`` keeps the execution's parameters and configuration (:func:`check_resume_config`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from core.errors import InputError

# The local Lambda and callback handlers, loaded by name as Lambda loads a handler string: the command line
# sits below the containers' adapters in the layers and never imports them directly.
LOCAL_HANDLERS_MODULE = "containers.lambda_handlers.local"

log = logging.getLogger(__name__)

EXIT_FAILED, EXIT_FAIL_STEP, EXIT_INTERRUPTED = 1, 3, 130
LOCAL_PATH_PARAMETERS = ("InputVideosS3Uri", "ReferencesS3Uri", "PipelineConfigS3Uri", "EvaluationImagesUri",
                         "BaseModelS3Uri")
# Parameter defaults of a local run on the random-weight stand-in base: its UNet is sized for 64 px images.
STAND_IN_PARAMETERS = {"LoraResolution": 64, "MixedPrecision": "no", "LoraTrainingSteps": 100}
STAND_IN_DIR = ".models/stand-in-sdxl"


DESCRIPTION = """\
Run the pipeline on this machine: the definition is compiled from the configuration exactly as
'storyboard compile' does, and every step runs here. Processing steps run their container entry
points; the review, fine-tune and register steps run local handlers (automatic review, LoRA training
or a dry-run Bedrock fine-tune, a local model registry file).

  storyboard run --local --video clip.mp4 --characters characters/ [--config pipeline.yaml]
                 [--base-model DIR] [--evaluation-images DIR] [--param Name=Value ...] [--runs runs]
  storyboard run --local --resume EXECUTION_ID [--runs runs] [--config pipeline.yaml]

Inputs: --video and --characters set InputVideosS3Uri and ReferencesS3Uri (the same layout as
'storyboard prepare'); local runs also take local paths in every S3 URI parameter. Every --param is
checked (name, type, range) before any step runs; 'storyboard start --help' lists the parameters.

Base model: the LoRA fine-tune needs a diffusers-format base model. Without --base-model, a small
random-weight stand-in of Stable Diffusion XL's architecture is built once under <runs>/.models/ and
the parameters not given default to 64 px, fp32 and 100 steps: the run tests the machinery, not the
quality, and the report and model card say so.

Progress: each step writes progress lines (counts, time left) to <runs>/<id>/<Step>/step.log; the
runner prints one line per step as it starts and ends, and the running step's progress lines.

Resume: --resume runs a failed or interrupted execution again from its failed step, with the
parameters and the configuration it started with. It refuses --param and the input options, and it
refuses a --config whose effective configuration differs from the execution's (the message names
the changed keys): start a new execution to use new settings.

Exit status: 0 the execution succeeded; 1 a step failed (resume it with --resume); 2 bad input;
3 the execution ended in a Fail step (no model registered, for the reason printed); 130 interrupted
(resumable).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``run`` to ``subparsers``."""
    parser = subparsers.add_parser(
        "run", help="run the whole pipeline on this machine (--local), or resume a local execution",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--local", action="store_true", required=True,
                        help="run locally (required; SageMaker executions start with 'storyboard start')")
    parser.add_argument("--config", type=Path, default=None,
                        help="pipeline.yaml (default: ./pipeline.yaml if present, else built-in defaults); with "
                             "--resume it must match the execution's configuration")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="override a pipeline parameter (repeatable; checked before any step runs)")
    parser.add_argument("--video", action="append", default=[], type=Path, metavar="PATH",
                        help="input video (repeatable); sets InputVideosS3Uri")
    parser.add_argument("--characters", type=Path, default=None, metavar="DIR",
                        help="reference images, DIR/<character>/*; sets ReferencesS3Uri")
    parser.add_argument("--base-model", type=Path, default=None, metavar="DIR",
                        help="diffusers-format base model folder for the LoRA fine-tune; sets BaseModelS3Uri "
                             "(default: a small random-weight stand-in of Stable Diffusion XL's architecture)")
    parser.add_argument("--evaluation-images", type=Path, default=None, metavar="DIR",
                        help="already generated images for Evaluate; sets EvaluationImagesUri")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="folder of run folders (default: runs)")
    parser.add_argument("--resume", default=None, metavar="EXECUTION_ID",
                        help="resume a failed or interrupted execution from its failed step, with its own "
                             "parameters and configuration (a changed --config or any --param is refused)")
    parser.add_argument("--execution-id", default=None, help="ID of a new execution (default: generated)")
    parser.add_argument("--review-page", action="store_true",
                        help="review every crop and caption in the browser: HumanReview serves a page on 127.0.0.1 "
                             "(prints its URL; review.local_review_port) and waits for the answers (sets "
                             "ReviewMode=a2i and review.local_review_page)")
    parser.set_defaults(func=run_local)


REGISTER_HANDLER = "storyboard-register-model"


def load_local_handlers(register_function_arn: str | None = None) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """``(CALLBACK_HANDLERS, LAMBDA_HANDLERS, import error)`` of ``containers.lambda_handlers.local``.

    The Lambda handlers are keyed by function name; the configured RegisterModel function
    (``register_function_arn``, whose name follows the project name) is mapped to the register handler.
    """
    try:
        handlers = importlib.import_module(LOCAL_HANDLERS_MODULE)
    except ImportError as err:
        return {}, {}, f"{type(err).__name__}: {err}"
    lambdas = dict(handlers.LAMBDA_HANDLERS)
    if register_function_arn and REGISTER_HANDLER in lambdas:
        name = register_function_arn.split(":function:", 1)[-1].split(":", 1)[0]
        lambdas.setdefault(name, lambdas[REGISTER_HANDLER])
    return dict(handlers.CALLBACK_HANDLERS), lambdas, None


def _load_config(path: Path | None) -> Any:
    from core.config import load_config_or_default

    return load_config_or_default(path)


def local_config_document(config: Any) -> dict[str, Any]:
    """The configuration the local containers read: all of it (local reference paths are valid here)
    except the ``sagemaker`` section."""
    data = config.model_dump(mode="json")
    data.pop("sagemaker", None)
    return data


def _input_overrides(args: argparse.Namespace, run_dir: Path) -> dict[str, str]:
    overrides: dict[str, str] = {}
    if args.video:
        videos = [p.expanduser().resolve() for p in args.video]
        missing = [str(p) for p in videos if not p.is_file()]
        if missing:
            raise InputError(f"--video: {', '.join(missing)} does not exist")
        if len(videos) == 1:
            overrides["InputVideosS3Uri"] = str(videos[0])
        else:
            folder = run_dir / "inputs" / "videos"
            folder.mkdir(parents=True, exist_ok=True)
            for index, video in enumerate(videos):
                link = folder / f"{index:03d}_{video.name}"
                if not link.exists():
                    os.symlink(video, link)
            overrides["InputVideosS3Uri"] = str(folder)
    if args.characters is not None:
        characters = args.characters.expanduser().resolve()
        if not characters.is_dir():
            raise InputError(f"--characters {args.characters}: not a folder (expected DIR/<character>/ images)")
        overrides["ReferencesS3Uri"] = str(characters)
    if args.base_model is not None:
        base = args.base_model.expanduser().resolve()
        if not (base / "model_index.json").is_file():
            raise InputError(f"--base-model {args.base_model}: not a diffusers model folder (no model_index.json); "
                             "save one with DiffusionPipeline.save_pretrained(DIR)")
        overrides["BaseModelS3Uri"] = str(base)
    if args.evaluation_images is not None:
        images = args.evaluation_images.expanduser().resolve()
        if not images.is_dir():
            raise InputError(f"--evaluation-images {args.evaluation_images}: not a folder")
        overrides["EvaluationImagesUri"] = str(images)
    return overrides


def base_model_overrides(definition: dict[str, Any], overrides: dict[str, Any], runs_dir: Path) -> dict[str, Any]:
    """For a LoRA pipeline run locally: the base model parameter and the stand-in defaults.

    When ``BaseModelS3Uri`` is not a local folder (not given, or an ``s3://`` default), the random-weight
    stand-in (:func:`steps.lora.model.build_tiny_sdxl`) is built under ``runs_dir`` and used, and the
    parameters of :data:`STAND_IN_PARAMETERS` not given in ``overrides`` take their stand-in values. On a
    machine without CUDA, ``MixedPrecision`` defaults to ``no``. Returns the overrides to add.
    """
    names = {p["Name"] for p in definition.get("Parameters", [])}
    if "BaseModelS3Uri" not in names:
        return {}
    added: dict[str, Any] = {}
    if "://" in str(overrides.get("BaseModelS3Uri", "s3://")):
        from steps.lora.model import build_tiny_sdxl

        folder = build_tiny_sdxl(runs_dir / STAND_IN_DIR)
        log.warning("no local base model (--base-model DIR): the LoRA is trained on an untrained stand-in with "
                    "random weights and Stable Diffusion XL's architecture (%s); its figures test the machinery, "
                    "not the quality", folder)
        print(f"base model: untrained random-weight stand-in of Stable Diffusion XL's architecture ({folder}); "
              "give --base-model DIR for a real one")
        added["BaseModelS3Uri"] = str(folder)
        added.update({k: v for k, v in STAND_IN_PARAMETERS.items() if k not in overrides})
    if "MixedPrecision" not in overrides and "MixedPrecision" not in added:
        import torch

        if not torch.cuda.is_available():
            added["MixedPrecision"] = "no"
    return added


def check_ranges(values: dict[str, Any]) -> None:
    """Check every parameter value against its range and allowed values (``pipeline.parameters``), before
    any step runs: a value SageMaker would accept but a step would refuse hours later is refused now.

    Raises:
        core.errors.InputError: naming the parameter and its range.
    """
    from pipeline.parameter_values import coerce_value
    from pipeline.parameters import SPECS_BY_NAME

    for name, value in values.items():
        if name in SPECS_BY_NAME:
            coerce_value(SPECS_BY_NAME[name], value, source="--param")


def _check_local_inputs(values: dict[str, Any]) -> None:
    for name in ("InputVideosS3Uri", "ReferencesS3Uri", "BaseModelS3Uri"):
        if name not in values:
            continue
        value = str(values.get(name, ""))
        if value.startswith("s3://"):
            flag = {"InputVideosS3Uri": "--video PATH", "ReferencesS3Uri": "--characters DIR"}.get(name,
                                                                                               "--base-model DIR")
            raise InputError(f"{name} is {value}; a local run reads local files: give {flag} or "
                             f"--param {name}=<local path>")
        if value and not Path(value).expanduser().exists():
            raise InputError(f"{name}: {value} does not exist")


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON-like documents, sorted (a key in only one counts)."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys: list[str] = []
        for key in sorted(set(old) | set(new)):
            keys.extend(changed_keys(old.get(key), new.get(key), f"{prefix}{key}."))
        return keys
    return [] if old == new else [prefix.rstrip(".") or "(the whole document)"]


def check_resume_config(config_path: Path | None, stored: dict[str, Any], execution_id: str) -> None:
    """The resume policy for the configuration: an execution resumes with the configuration it started with.

    A ``--config`` whose effective configuration differs from the stored one is refused (the message
    names the changed keys and says to start a new execution); an equal one is accepted; without
    ``--config`` the stored configuration is used.

    Raises:
        core.errors.InputError: ``--config`` differs from the execution's configuration.
        core.config.ConfigError: ``--config`` is not a valid configuration.
    """
    if config_path is None:
        return
    from core.config import load_config

    changed = changed_keys(stored, local_config_document(load_config(config_path)))
    if not changed:
        return
    shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
    raise InputError(f"--config {config_path} differs from the configuration execution {execution_id} started with "
                     f"({shown}); a resumed execution keeps its configuration and parameters. Resume without "
                     f"--config, or start a new execution with this configuration: storyboard run --local "
                     f"--config {config_path} ...")


def with_review_page(config: Any, overrides: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``--review-page``: the configuration with ``review.local_review_page`` on and ``ReviewMode=a2i``.

    Raises:
        core.errors.InputError: ``--param ReviewMode`` names another mode.
    """
    mode = str(overrides.get("ReviewMode", "a2i")).strip().lower()
    if mode != "a2i":
        raise InputError(f"--review-page reviews in the browser (ReviewMode=a2i) but --param ReviewMode={mode}; "
                         f"give one of them")
    review = config.review.model_copy(update={"local_review_page": True})
    return config.model_copy(update={"review": review}), {**overrides, "ReviewMode": "a2i"}


def run_local(args: argparse.Namespace) -> int:
    """Run (or resume) a local execution and print its step summary; returns the exit status."""
    from pipeline.local_definition import resolve_parameters
    from pipeline.local_runner import LocalRunner, new_execution_id
    from pipeline.parameter_values import check_overrides, parse_assignments

    runs_dir = args.runs.expanduser().resolve()
    if args.resume and getattr(args, "review_page", False):
        raise InputError("--review-page applies to a new execution; a resumed one keeps its ReviewMode and "
                         "configuration (one started with --review-page opens the page again for the records left)")
    if args.resume:
        if args.param or args.video or args.characters or args.evaluation_images or args.execution_id or \
                args.base_model:
            raise InputError("--resume runs an execution again with the parameters it started with; do not combine "
                             "it with --param, --video, --characters, --base-model, --evaluation-images or "
                             "--execution-id (start a new execution to change them)")
        from core.config import parse_config

        run_dir = runs_dir / args.resume
        config_file = run_dir / "inputs" / "config" / "pipeline.json"
        if not config_file.is_file():
            raise InputError(f"{run_dir} holds no local execution; check --runs and the execution ID")
        stored = json.loads(config_file.read_text(encoding="utf-8"))
        check_resume_config(args.config, stored, args.resume)
        config = parse_config(stored, source=str(config_file))
        definition = json.loads((run_dir / "definition.json").read_text(encoding="utf-8"))
        runner = LocalRunner.resume(run_dir, config=config, **_handlers(_register_arn(definition)))
        print(f"resuming {runner.execution_id} in {run_dir}")
    else:
        from core.io import write_json
        from core.sagemaker_config import resolve_settings
        from pipeline.compile import compile_definition

        config = _load_config(args.config)
        settings = resolve_settings(config)
        overrides: dict[str, Any] = parse_assignments(args.param)
        if getattr(args, "review_page", False):
            config, overrides = with_review_page(config, overrides)
        definition = compile_definition(config, settings)
        # Every --param before anything else is built: name (with a close-match suggestion), type, range.
        check_overrides(overrides, known={p["Name"]: p.get("Type", "String") for p in definition.get("Parameters", [])})
        execution_id = args.execution_id or new_execution_id()
        run_dir = runs_dir / execution_id
        if (run_dir / "execution.json").exists():
            raise InputError(f"{run_dir} already holds an execution; resume it with --resume {execution_id}")
        shorthand = _input_overrides(args, run_dir)
        clash = sorted(set(shorthand) & set(overrides))
        if clash:
            raise InputError(f"{', '.join(clash)} given both as --param and by a shorthand option; give it once")
        overrides.update(shorthand)
        for name in LOCAL_PATH_PARAMETERS:  # local paths made absolute: entry points run in another folder
            value = str(overrides.get(name, ""))
            if value and "://" not in value:
                overrides[name] = str(Path(value).expanduser().resolve())
        overrides.update(base_model_overrides(definition, overrides, runs_dir))
        config_dir = run_dir / "inputs" / "config"
        overrides.setdefault("PipelineConfigS3Uri", str(config_dir))
        values = resolve_parameters(definition, overrides)
        check_ranges(values)
        _check_local_inputs(values)
        write_json(config_dir / "pipeline.json", local_config_document(config))
        execution_prefix = f"{settings.base_uri}/{settings.pipeline_name}/{execution_id}"
        runner = LocalRunner.create(definition, runs_dir, pipeline_name=settings.pipeline_name, parameters=values,
                                    execution_id=execution_id, region=settings.region, account=settings.account,
                                    s3_prefixes={execution_prefix: run_dir}, config=config,
                                    **_handlers(settings.register_function_arn))
        print(f"local execution {execution_id}: {run_dir}")
    try:
        result = runner.run()
    except KeyboardInterrupt:
        print(f"\ninterrupted; resume with: storyboard run --local --resume {runner.execution_id} "
              f"--runs {args.runs}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(format_summary(result))
    note = stand_in_note(runner.execution.get("Parameters", {}))
    if note:
        print(note)
    if result.status == "Succeeded":
        return 0
    if result.failed_step_type == "Fail":
        return EXIT_FAIL_STEP
    print(f"resume with: storyboard run --local --resume {result.execution_id} --runs {args.runs}", file=sys.stderr)
    return EXIT_FAILED


def stand_in_note(parameters: dict[str, Any]) -> str | None:
    """A line for the run summary when the LoRA was trained on the random-weight stand-in, else ``None``."""
    base = str(parameters.get("BaseModelS3Uri", ""))
    if not base or "://" in base:
        return None
    from steps.lora.model import is_stand_in

    if not is_stand_in(base):
        return None
    return ("note: the base model was the untrained random-weight stand-in of Stable Diffusion XL's architecture: "
            "the training, evaluation and gate above test the machinery, not the quality (give --base-model DIR "
            "for a real base)")


def _handlers(register_function_arn: str | None) -> dict[str, Any]:
    callbacks, lambdas, import_error = load_local_handlers(register_function_arn)
    return dict(callback_handlers=callbacks, lambda_handlers=lambdas, handler_import_error=import_error,
                echo=_echo)


def _echo(line: str) -> None:
    """Print a running step's progress line on the console (standard error, beside the runner's log)."""
    print(f"  {line}", file=sys.stderr, flush=True)


def _register_arn(definition: dict[str, Any]) -> str | None:
    """The FunctionArn of the RegisterModel step in a compiled definition (searched through branches)."""
    from pipeline.local_definition import flatten_steps
    from pipeline.step_names import REGISTER

    info = flatten_steps(definition).get(REGISTER)
    return info.spec.get("FunctionArn") if info else None


def format_summary(result: Any) -> str:
    """A plain-text table of the steps (status, duration, outputs) and the execution's outcome."""
    lines = [f"{'step':<20} {'type':<11} {'status':<12} outputs / failure reason"]
    for record in result.steps:
        detail = record.FailureReason or ", ".join(f"{k}={v}" for k, v in sorted(record.Outputs.items()))
        lines.append(f"{record.StepName:<20} {record.StepType:<11} {record.StepStatus:<12} {detail}")
    lines.append("")
    lines.append(f"execution {result.execution_id}: {result.status}")
    if result.failure_reason:
        lines.append(f"reason: {result.failure_reason}")
    lines.append(f"run folder: {result.run_dir} (status.json, <step>/step.log, <step>/output/)")
    return "\n".join(lines)
