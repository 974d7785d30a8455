"""The offline handlers the local runner calls in process, in place of SQS, Bedrock, A2I and Lambda.

Contract with the runner (``pipeline/``):

- :data:`CALLBACK_HANDLERS` ``[Task](arguments, run_dir, config) -> outputs`` for the CallbackSteps
  (``Task`` is the callback argument): ``HumanReview`` -> ``{ReviewedManifestUri, ApprovedCount,
  EditedCount, RejectedCount}``; ``FineTune`` -> ``{JobArn, CustomModelArn, DryRun}``;
  ``ProvisionEvaluationModel`` -> ``{ProvisionedModelArn, ProvisionedModelName}``; ``ReleaseEvaluationModel``
  -> ``{Released}``.
- :data:`LAMBDA_HANDLERS` ``[function name](event, run_dir, config) -> outputs`` for the LambdaSteps:
  ``storyboard-register-model`` -> ``{ModelPackageArn, Registered, Reason}``.

Arguments and outputs are flat strings; URIs are local paths. Every output file is written into
``run_dir`` atomically. The local registry is ``<runs>/registry.json`` (every local execution registers
into it); :func:`approve` (``storyboard approve --local``) approves or rejects one of its packages and plans
the deployment in ``<runs>/deployments/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from core import io as sio
from core.config import StoryboardConfig
from core.errors import InputError
from core.mlops_config import endpoint_name, model_package_group_name
from core.sagemaker_config import ROLE_ARN_ENV
from steps.a2i_loops import build_loop_input, execution_key, loop_name
from steps.auto_review import AutoReviewPolicy, character_aliases
from steps.endpoint_deployment import DeploymentAction, PlannedEndpointDeployment, execution_role
from steps.finetune import (
    DryRunModelCustomization,
    FineTuneInputs,
    dry_run_outputs,
    dry_run_report,
    job_names,
    prepare_job,
    with_dry_run_placeholders,
)
from steps.image_probes import LocalImageProbe
from steps.registry import (
    ApprovalAction,
    LocalModelRegistry,
    PlannedProvisionedThroughputs,
    RegistrationRequest,
    on_status_change,
    package_backend,
    register_model,
)
from steps.review import (
    apply_decisions,
    check_labelling_rows,
    check_training_count,
    item_id_of,
    meta,
    write_review_outputs,
)
from steps.review_state import ReviewState, decisions_from_loops

log = logging.getLogger(__name__)

LOCAL_ROLE_PLACEHOLDER = "arn:aws:iam::000000000000:role/storyboard-endpoint-role-placeholder"

CallbackHandler = Callable[[dict[str, str], Path, StoryboardConfig], dict[str, str]]
LambdaHandler = Callable[[dict, Path, StoryboardConfig], dict]


def _local_path(uri: str, what: str) -> Path:
    if uri.startswith("s3://"):
        raise InputError(f"{what} {uri} is in S3; a local run reads local files (run on SageMaker for S3 inputs)")
    path = Path(uri[7:] if uri.startswith("file://") else uri)
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist")
    return path


def _absolute_refs(rows: list[dict[str, Any]], base: Path) -> list[dict[str, Any]]:
    """Rows whose relative local ``image_ref`` values are made absolute (outputs move to the run folder)."""
    out = []
    for row in rows:
        ref = row.get("image_ref")
        if isinstance(ref, str) and ref and "://" not in ref and not Path(ref).is_absolute():
            row = {**row, "image_ref": str((base / ref).resolve())}
        out.append(row)
    return out


def human_review(args: Mapping[str, str], run_dir: Path, config: StoryboardConfig) -> dict[str, str]:
    """HumanReview offline.

    ``ReviewMode=auto``: the automatic policy (``review.auto``). ``ReviewMode=a2i``: with
    ``review.local_review_page`` (``storyboard run --local --review-page``) a review page on 127.0.0.1
    (``review.local_review_port``; :mod:`steps.local_review`) showing each crop beside the references of the
    dataset's ``references/`` folder, and the run waits for every answer (kept in ``run_dir/human_loops/``, so
    a resumed run asks only for the rest); otherwise an :class:`InputError` explains that A2I needs AWS.

    Writes ``reviewed_manifest.jsonl``, ``train.jsonl`` (the Bedrock training manifest, whose URI is
    ``ReviewedManifestUri``) and ``review_report.json`` into ``run_dir``.

    Raises:
        InputError: missing or malformed manifest, unknown mode, A2I without the local page, or fewer
            than 5 records kept (TooFewRecordsError, after the outputs are written).
    """
    manifest = _local_path(str(args.get("ManifestUri") or ""), "ManifestUri") if args.get("ManifestUri") else None
    if manifest is None:
        raise InputError("HumanReview needs ManifestUri: the labelling manifest written by CaptionImages")
    mode = str(args.get("ReviewMode") or config.review.mode).strip().lower()
    if mode not in ("auto", "a2i"):
        raise InputError(f"ReviewMode must be 'auto' or 'a2i', got {mode!r}")
    try:
        rows = sio.read_jsonl(manifest)
    except ValueError as err:
        raise InputError(str(err)) from None
    check_labelling_rows(rows, str(manifest))
    rows = _absolute_refs(rows, manifest.parent)
    run_dir = Path(run_dir)
    if mode == "auto":
        policy = AutoReviewPolicy(config.review.auto, LocalImageProbe(manifest.parent),
                                  character_aliases(config.characters))
        decisions = policy.review(rows)
    else:
        if not config.review.local_review_page:
            raise InputError("ReviewMode 'a2i' needs Amazon A2I (an AWS account, a workteam and a flow definition). "
                             "Locally, run with ReviewMode=auto, or set review.local_review_page: true to review in "
                             "a browser on 127.0.0.1")
        decisions = _review_in_browser(rows, manifest, run_dir, config)
    result = apply_decisions(rows, decisions)
    paths = write_review_outputs(run_dir, result, mode)
    check_training_count(result)
    return result.outputs(str(paths["train"]))


def _review_in_browser(rows: list[dict[str, Any]], manifest: Path, run_dir: Path, config: StoryboardConfig) -> list:
    # imported here: the page needs Flask (the `cli` extra), which the Lambda image does not install
    from steps.local_review import LocalHumanLoops, serve_local_review
    from steps.references import REFERENCES_FOLDER  # PyAV, also outside the Lambda image

    loops = LocalHumanLoops(run_dir / "human_loops")
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
    key = execution_key(f"local:{manifest.resolve()}", digest[:10])
    state = ReviewState("local", "local", key, str(manifest), "local", str(run_dir),
                        [{"name": loop_name(config.project, key, i), "item_id": item_id_of(r, i), "index": i}
                         for i, r in enumerate(rows)])
    for row, loop in zip(rows, state.loops, strict=True):
        character = meta(row, "character")
        display = config.character(character).caption_name if isinstance(character, str) and character else None
        loops.start(loop["name"], build_loop_input(row, loop["item_id"], loop["index"], "local", "local", display))
    names = [loop["name"] for loop in state.loops]
    probe = LocalImageProbe(manifest.parent)
    serve_local_review(loops, names, probe.resolve, port=config.review.local_review_port,
                       timeout_s=config.review.local_review_timeout_s,
                       references_dir=manifest.parent / REFERENCES_FOLDER)
    statuses = {n: loops.status(n) for n in names}
    outputs = {n: json.loads(Path(s.output_uri).read_text(encoding="utf-8"))
               for n, s in statuses.items() if s.status == "Completed" and s.output_uri}
    return decisions_from_loops(rows, state, statuses, outputs)


def fine_tune(args: Mapping[str, str], run_dir: Path, config: StoryboardConfig) -> dict[str, str]:
    """FineTune offline: always a dry run.

    Validates every training-manifest line and image against the Nova Canvas limits and the
    ``create_model_customization_job`` request against botocore's ``bedrock`` service model (local
    paths and a missing role are replaced by marked placeholders), then writes ``request.json`` (the
    exact request) and ``dry_run_report.json`` into ``run_dir``. The job name is ``JobName`` (when
    given) plus a hash of ``PipelineExecutionArn``, or of the manifest's content and the
    hyperparameters.

    Returns:
        ``{"JobArn": "dry-run:<job name>", "CustomModelArn": "", "DryRun": "true"}``.

    Raises:
        InputError / TooFewRecordsError: the data or the request is invalid (before anything is written).
    """
    inputs = FineTuneInputs.from_arguments(args, config.finetune)
    manifest = _local_path(inputs.training_manifest_uri, "TrainingManifestUri")
    try:
        rows = sio.read_jsonl(manifest)
    except ValueError as err:
        raise InputError(str(err)) from None
    data = manifest.read_bytes()
    hyper = json.dumps(inputs.hyperparameters.to_request(), sort_keys=True)
    seed = str(args.get("PipelineExecutionArn") or "") or "|".join(
        (hashlib.sha256(data).hexdigest(), inputs.base_model_id, hyper))
    names = job_names(config.finetune.job_name_prefix, seed, args.get("JobName"))
    notes = []
    if not inputs.dry_run:
        notes.append("DryRun=false was requested, but the local backend cannot start a Bedrock job: this is a dry "
                     "run and no model was trained")
    checked, placeholders = with_dry_run_placeholders(inputs, names)
    prepared = prepare_job(checked, names, rows, LocalImageProbe(manifest.parent))
    run_dir = Path(run_dir)
    DryRunModelCustomization(run_dir).start_job(prepared.request)
    if any(not str(r.get("image-ref", "")).startswith("s3://") for r in rows):
        notes.append("image-ref values are local paths: upload the images and the manifest to S3 (and rewrite "
                     "image-ref to s3:// URIs) before a real job")
    report = dry_run_report(inputs, prepared, "UNKNOWN (not checked offline; the AWS backend checks it)")
    report["placeholders"] = placeholders
    report["notes"] = report["notes"] + notes
    report["job_name"] = names.job_name
    sio.write_json(run_dir / "dry_run_report.json", report)
    return dry_run_outputs(names)


def runs_folder(step_dir: Path) -> Path:
    """The folder of run folders (``runs``) of a step's run folder ``runs/<execution-id>/<Step>``."""
    return Path(step_dir).parent.parent


def local_registry_path(runs_dir: Path, config: StoryboardConfig) -> Path:
    """``registry.local_registry_path``, else ``<runs>/registry.json``: one registry for every local execution,
    as a model package group collects the versions of every execution on AWS."""
    return Path(config.registry.local_registry_path) if config.registry.local_registry_path \
        else Path(runs_dir) / "registry.json"


def registry_path(run_dir: Path, config: StoryboardConfig) -> Path:
    """The local registry of the step run folder ``run_dir`` (:func:`local_registry_path` of its runs folder)."""
    return local_registry_path(runs_folder(run_dir), config)


def deployments_folder(runs_dir: Path) -> Path:
    """``<runs>/deployments``: the planned endpoint (``deployment_requests.jsonl``, ``deployment_state.json``)
    and throughput (``throughput_requests.jsonl``) requests of local approvals."""
    return Path(runs_dir) / "deployments"


def register(event: Mapping[str, Any], run_dir: Path, config: StoryboardConfig) -> dict[str, str]:
    """RegisterModel offline against the local registry file (see :class:`~steps.registry.LocalModelRegistry`).

    Both backends: ``FineTuneBackend=sagemaker`` registers a deployable LoRA package (its ``ModelDataUrl`` and
    base model are local paths), ``bedrock`` the custom model's ARNs. A dry run, or no model (no
    ``ModelDataUrl`` / ``CustomModelArn``), registers nothing: ``Registered`` ``"false"`` with the reason.
    The result is also written to ``registration.json`` in ``run_dir``.
    """
    request = RegistrationRequest.from_event(event, model_package_group_name(config.registry, config.project))
    path = registry_path(run_dir, config)
    result = register_model(request, LocalModelRegistry(path), config.registry.approval_status)
    sio.write_json(Path(run_dir) / "registration.json", {**result.outputs(), "registry": str(path)})
    return result.outputs()


def approve(model_package_arn: str, status: str, runs_dir: Path,
            config: StoryboardConfig) -> DeploymentAction | ApprovalAction:
    """Approve or reject a package of the local registry (:func:`local_registry_path`), then run the approval
    logic offline: a LoRA package plans its endpoint (:class:`~steps.endpoint_deployment.PlannedEndpointDeployment`),
    a Bedrock package its throughput, both into :func:`deployments_folder`. Without a configured role the
    planned ``create_model`` names :data:`LOCAL_ROLE_PLACEHOLDER` (logged).

    Raises:
        InputError: no such package, an invalid status, or a planned request the service model refuses.
    """
    registry = LocalModelRegistry(local_registry_path(runs_dir, config))
    package = registry.set_status(model_package_arn, status)
    folder = deployments_folder(runs_dir)
    role = execution_role(config.registry.endpoint, package, os.environ.get(ROLE_ARN_ENV), config.sagemaker.role_arn)
    if role is None and status == "Approved" and package_backend(package) == "sagemaker":
        log.warning("no execution role configured (registry.endpoint.role_arn, sagemaker.role_arn): the planned "
                    "create_model names the placeholder %s", LOCAL_ROLE_PLACEHOLDER)
        role = LOCAL_ROLE_PLACEHOLDER
    return on_status_change(package, config.registry, endpoint_name(config.registry, config.project),
                            deployment=PlannedEndpointDeployment(folder),
                            throughputs=PlannedProvisionedThroughputs(folder), registry=registry, role_arn=role)


def provision_evaluation_model(args: Mapping[str, str], run_dir: Path, config: StoryboardConfig) -> dict[str, str]:
    """``ProvisionEvaluationModel`` offline: nothing can be provisioned, so the planned request is written to
    ``run_dir/evaluation_throughput_request.json`` and ``evaluation.custom_model_id`` (if set) is passed on."""
    from steps.evaluation_throughput import create_request, evaluation_throughput_name

    model = str(args.get("CustomModelArn") or "")
    if model and str(args.get("DryRun") or "").lower() != "true":
        execution = str(args.get("PipelineExecutionArn") or "local")
        name = evaluation_throughput_name(config.project, execution)
        sio.write_json(run_dir / "evaluation_throughput_request.json",
                       create_request(name, model, execution, "local"))
    return {"ProvisionedModelArn": config.evaluation.custom_model_id or "", "ProvisionedModelName": ""}


def release_evaluation_model(args: Mapping[str, str], run_dir: Path, config: StoryboardConfig) -> dict[str, str]:
    """``ReleaseEvaluationModel`` offline: nothing was provisioned, nothing to release."""
    return {"Released": "false"}


CALLBACK_HANDLERS: dict[str, CallbackHandler] = {
    "HumanReview": human_review,
    "FineTune": fine_tune,
    "ProvisionEvaluationModel": provision_evaluation_model,
    "ReleaseEvaluationModel": release_evaluation_model,
}

LAMBDA_HANDLERS: dict[str, LambdaHandler] = {
    "storyboard-register-model": register,
}
