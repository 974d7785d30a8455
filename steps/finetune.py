"""Step 4, FineTune: a Bedrock model customization job on Nova Canvas, or its dry run.

The step never waits for the job: the callback consumer starts it (:class:`BedrockModelCustomization`)
and the Bedrock job-state event (or the reconciler) answers the pipeline. Before anything is paid for,
:func:`prepare_job` validates the training data against the Nova Canvas limits and the request against
botocore's ``bedrock`` service model; the dry run (:class:`DryRunModelCustomization`) stops there and
writes the exact request to ``request.json``.

Facts used (DESIGN §5; Bedrock API reference ``CreateModelCustomizationJob``):
- ``customizationType`` ``FINE_TUNING``; hyperparameters are strings: ``stepCount`` 10 to 20,000,
  ``batchSize`` 8 to 192, ``learningRate`` 1e-7 to 1e-4; no validation data for image generation models.
- ``jobName`` at most 63 characters ``[a-zA-Z0-9](-*[a-zA-Z0-9+\\-.])*``; ``customModelName``
  ``([0-9a-zA-Z][_-]?){1,63}``; ``clientRequestToken`` makes a retried create idempotent.
- Job statuses: InProgress, Completed, Failed, Stopping, Stopped.
- ``get_foundation_model(...)["modelDetails"]["modelLifecycle"]["status"]`` is ACTIVE or LEGACY.
- Tags: key at most 128 and value at most 256 characters of ``[a-zA-Z0-9\\s._:/=+@-]``. A pipeline
  callback token is exactly 10 characters ``[a-zA-Z0-9]`` (SageMaker API reference,
  ``SendPipelineExecutionStepSuccess.CallbackToken``), so the job carries it as a tag.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import ValidationError

from steps import io as sio
from steps.bedrock_validation import (
    ImageProbe,
    TrainingManifestReport,
    check_training_rows,
    validate_request,
)
from steps.errors import InputError
from steps.mlops_config import (
    BATCH_SIZE_MAX,
    BATCH_SIZE_MIN,
    LEARNING_RATE_MAX,
    LEARNING_RATE_MIN,
    STEP_COUNT_MAX,
    STEP_COUNT_MIN,
    FineTuneConfig,
    HyperParameters,
)

log = logging.getLogger(__name__)

TAG_CALLBACK_TOKEN = "storyboard:callback-token"
TAG_EXECUTION = "storyboard:pipeline-execution"
TAG_ANSWERED = "storyboard:callback-answered"
TAG_VALUE_RE = re.compile(r"^[a-zA-Z0-9\s._:/=+@-]{0,256}$")
TERMINAL_JOB_STATUSES = ("Completed", "Failed", "Stopped")
DRY_RUN_PREFIX = "dry-run:"


def _true(value: Any) -> bool | None:
    """``"true"``/``"false"`` (any case, also 1/0, yes/no) as a bool; ``None`` for empty."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise InputError(f"DryRun must be 'true' or 'false', got {value!r}")


def parse_hyperparameters(step_count: Any = None, batch_size: Any = None, learning_rate: Any = None,
                          default: HyperParameters | None = None) -> HyperParameters:
    """Hyperparameters from pipeline parameters (strings); empty values take ``default``.

    Raises:
        InputError: a value is not a number or is outside Bedrock's bounds (stepCount 10 to 20,000,
            batchSize 8 to 192, learningRate 1e-7 to 1e-4); the message names the parameter.
    """
    base = default or HyperParameters()
    values: dict[str, Any] = base.model_dump()
    spec = (("StepCount", "step_count", step_count, int, STEP_COUNT_MIN, STEP_COUNT_MAX),
            ("BatchSize", "batch_size", batch_size, int, BATCH_SIZE_MIN, BATCH_SIZE_MAX),
            ("LearningRate", "learning_rate", learning_rate, float, LEARNING_RATE_MIN, LEARNING_RATE_MAX))
    for label, key, raw, kind, low, high in spec:
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue
        try:
            number = float(raw)
            if kind is int:
                if number != int(number):
                    raise ValueError
                number = int(number)
        except (TypeError, ValueError):
            raise InputError(f"{label} must be a{'n integer' if kind is int else ' number'} from {low:g} to "
                             f"{high:g}, got {raw!r}") from None
        if not low <= number <= high:
            raise InputError(f"{label} = {raw} is outside Bedrock's range for Nova Canvas: {low:g} to {high:g}")
        values[key] = number
    try:
        return HyperParameters(**values)
    except ValidationError as err:  # pragma: no cover - the bounds above are the model's bounds
        raise InputError(str(err)) from None


@dataclass(frozen=True)
class JobNames:
    """Deterministic names for one attempt of the step: ``job_name`` (also the custom model's name)
    and ``client_request_token``, from a seed (execution ARN and callback token, or the request's
    content in a local dry run)."""

    job_name: str
    custom_model_name: str
    client_request_token: str


def job_names(prefix: str, seed: str, job_name: str | None = None) -> JobNames:
    """Names for the job and its custom model, and a 42-character request token, all from ``seed``.

    Without ``job_name``: ``<prefix>-<16 hex of seed>`` (at most 47 characters). With ``job_name`` (the
    pipeline's ``JobName`` argument, for example ``<project>-canvas-<execution id>``):
    ``<job_name>-<8 hex of seed>``, so a retried step (same execution, new callback token) gets a new
    job instead of colliding with the failed one. Names keep to ``([0-9a-zA-Z][_-]?){1,63}``.
    """
    digest = hashlib.sha256(seed.encode("utf-8")).hexdigest()
    if job_name:
        base = re.sub(r"[^0-9a-zA-Z-]+", "-", job_name)
        base = re.sub(r"-{2,}", "-", base).strip("-")[:54].rstrip("-")
        name = f"{base}-{digest[:8]}" if base else f"{prefix}-{digest[:16]}"
    else:
        name = f"{prefix}-{digest[:16]}"
    return JobNames(name, name, f"sb{digest[:40]}")


@dataclass
class FineTuneInputs:
    """The FineTune step's inputs, resolved and validated.

    Attributes:
        training_manifest_uri: the Bedrock training manifest (``s3://`` on AWS; a path locally).
        base_model_id: the model to customize (default ``amazon.nova-canvas-v1:0``).
        hyperparameters: validated :class:`HyperParameters`.
        output_s3_uri, role_arn: where Bedrock writes the job output, and its service role.
        dry_run: validate and write the request only.
        kms_key_id: optional ``customModelKmsKeyId``.
    """

    training_manifest_uri: str
    base_model_id: str
    hyperparameters: HyperParameters
    output_s3_uri: str | None
    role_arn: str | None
    dry_run: bool
    kms_key_id: str | None = None

    @classmethod
    def from_arguments(cls, args: Mapping[str, Any], config: FineTuneConfig) -> FineTuneInputs:
        """Read the callback arguments; empty values fall back to ``config``.

        Arguments (either spelling): ``TrainingManifestUri`` or ``ReviewedManifestUri`` (the reviewed
        ``train.jsonl``), ``BaseModelId``, ``StepCount``/``stepCount``, ``BatchSize``/``batchSize``,
        ``LearningRate``/``learningRate``, ``OutputS3Uri``/``OutputUri``, ``RoleArn``, ``DryRun``.

        Raises:
            InputError: no training manifest, or a hyperparameter or DryRun is invalid.
        """
        manifest = str(_arg(args, "TrainingManifestUri", "ReviewedManifestUri") or "").strip()
        if not manifest:
            raise InputError("FineTune needs TrainingManifestUri (or ReviewedManifestUri): the reviewed train.jsonl "
                             "written by HumanReview")
        dry = _true(args.get("DryRun"))
        return cls(
            training_manifest_uri=manifest,
            base_model_id=str(args.get("BaseModelId") or config.base_model_id).strip(),
            hyperparameters=parse_hyperparameters(_arg(args, "StepCount", "stepCount"),
                                                  _arg(args, "BatchSize", "batchSize"),
                                                  _arg(args, "LearningRate", "learningRate"), config.hyperparameters),
            output_s3_uri=str(_arg(args, "OutputS3Uri", "OutputUri") or config.output_s3_uri or "").strip() or None,
            role_arn=str(args.get("RoleArn") or config.role_arn or "").strip() or None,
            dry_run=config.dry_run if dry is None else dry,
            kms_key_id=config.kms_key_id,
        )


def _arg(args: Mapping[str, Any], *names: str) -> Any:
    """The first non-empty argument among ``names``."""
    for name in names:
        value = args.get(name)
        if value is not None and str(value).strip() != "":
            return value
    return None


def callback_tags(callback_token: str | None, execution_arn: str | None) -> list[dict[str, str]]:
    """``jobTags`` that let the job-state event find the pipeline callback.

    The token (10 characters) always fits a tag value; the execution ARN is added when it fits
    (at most 256 characters of the tag alphabet).

    Raises:
        InputError: the token does not fit a tag value (it would then be lost).
    """
    tags = []
    if callback_token:
        if not TAG_VALUE_RE.match(callback_token):
            raise InputError(f"callback token {callback_token[:20]!r}... cannot be stored as a Bedrock tag "
                             f"(at most 256 characters of [a-zA-Z0-9 ._:/=+@-])")
        tags.append({"key": TAG_CALLBACK_TOKEN, "value": callback_token})
    if execution_arn and TAG_VALUE_RE.match(execution_arn):
        tags.append({"key": TAG_EXECUTION, "value": execution_arn})
    return tags


def build_customization_request(inputs: FineTuneInputs, names: JobNames,
                                tags: Sequence[Mapping[str, str]] = ()) -> dict[str, Any]:
    """The ``create_model_customization_job`` request (FINE_TUNING, string hyperparameters).

    Raises:
        InputError: ``role_arn`` or ``output_s3_uri`` is missing.
    """
    missing = [label for label, value in (("RoleArn (finetune.role_arn)", inputs.role_arn),
                                          ("OutputS3Uri (finetune.output_s3_uri)", inputs.output_s3_uri))
               if not value]
    if missing:
        raise InputError(f"FineTune needs {' and '.join(missing)}: the Bedrock service role and the job's output "
                         f"prefix")
    request: dict[str, Any] = {
        "jobName": names.job_name,
        "customModelName": names.custom_model_name,
        "roleArn": inputs.role_arn,
        "clientRequestToken": names.client_request_token,
        "baseModelIdentifier": inputs.base_model_id,
        "customizationType": "FINE_TUNING",
        "hyperParameters": inputs.hyperparameters.to_request(),
        "trainingDataConfig": {"s3Uri": inputs.training_manifest_uri},
        "outputDataConfig": {"s3Uri": inputs.output_s3_uri},
    }
    if inputs.kms_key_id:
        request["customModelKmsKeyId"] = inputs.kms_key_id
    if tags:
        request["jobTags"] = [dict(t) for t in tags]
    return request


@dataclass
class PreparedJob:
    """A validated request and the data report behind it."""

    request: dict[str, Any]
    data_report: TrainingManifestReport
    notes: list[str] = field(default_factory=list)


def prepare_job(inputs: FineTuneInputs, names: JobNames, rows: Sequence[Mapping[str, Any]],
                probe: ImageProbe | None, tags: Sequence[Mapping[str, str]] = ()) -> PreparedJob:
    """Validate the training data and the request, before any money is spent.

    Args:
        inputs: the step's inputs.
        names: deterministic names (:func:`job_names`).
        rows: the training manifest's rows.
        probe: reads the images (``None`` checks only their references).
        tags: ``jobTags``.

    Raises:
        InputError / TooFewRecordsError: the data or the request is invalid; the message lists why.
    """
    report = check_training_rows(list(rows), probe, source=inputs.training_manifest_uri)
    notes: list[str] = []
    request = build_customization_request(inputs, names, tags)
    validate_request("bedrock", "CreateModelCustomizationJob", request, what="the FineTune request")
    return PreparedJob(request, report, notes)


# -- job state ------------------------------------------------------------------------------------------


@dataclass
class JobState:
    """A customization job as the handlers need it.

    Attributes:
        job_arn, job_name: identity. status: InProgress, Completed, Failed, Stopping or Stopped.
        output_model_arn: the custom model (Completed). failure_message: why it failed.
        creation_time: when it was created (UTC), where known. tags: the job's tags.
    """

    job_arn: str
    job_name: str
    status: str
    output_model_arn: str | None = None
    failure_message: str | None = None
    creation_time: datetime | None = None
    tags: dict[str, str] = field(default_factory=dict)


def normalise_status(status: str | None) -> str:
    """Bedrock job status in the API's casing (events have been seen in other casings)."""
    lookup = {s.lower(): s for s in ("InProgress", "Completed", "Failed", "Stopping", "Stopped")}
    return lookup.get(str(status or "").replace("_", "").lower(), str(status or ""))


def job_outputs(job_arn: str, custom_model_arn: str, dry_run: bool) -> dict[str, str]:
    """The FineTune step's output parameters (flat strings): JobArn, CustomModelArn, DryRun."""
    return {"JobArn": job_arn, "CustomModelArn": custom_model_arn, "DryRun": "true" if dry_run else "false"}


def dry_run_outputs(names: JobNames) -> dict[str, str]:
    """Outputs of a dry run: ``JobArn`` ``dry-run:<job name>``, no custom model, ``DryRun`` ``"true"``."""
    return job_outputs(DRY_RUN_PREFIX + names.job_name, "", True)


@dataclass(frozen=True)
class JobOutcome:
    """How to answer the pipeline for a finished job: ``success`` with ``outputs``, or a failure ``reason``."""

    success: bool
    outputs: dict[str, str] = field(default_factory=dict)
    reason: str = ""


def outcome_of(state: JobState) -> JobOutcome | None:
    """The answer a job in ``state`` calls for; ``None`` while it is still running.

    Completed without an output model ARN is answered as a failure: the pipeline must never report
    a model that does not exist.
    """
    status = normalise_status(state.status)
    if status == "Completed":
        if not state.output_model_arn:
            return JobOutcome(False, reason=f"Bedrock job {state.job_name} Completed without an outputModelArn")
        return JobOutcome(True, job_outputs(state.job_arn, state.output_model_arn, False))
    if status == "Failed":
        return JobOutcome(False, reason=f"Bedrock job {state.job_name} Failed: {state.failure_message or 'no reason'}")
    if status == "Stopped":
        return JobOutcome(False, reason=f"Bedrock job {state.job_name} was Stopped"
                                        + (f": {state.failure_message}" if state.failure_message else ""))
    return None


@runtime_checkable
class ModelCustomization(Protocol):
    """Bedrock model customization: start, describe, stop and tag jobs."""

    def base_model_status(self, model_id: str) -> str:
        """The base model's lifecycle status (``ACTIVE``, ``LEGACY``) or ``UNKNOWN``."""
        ...

    def start_job(self, request: Mapping[str, Any]) -> str:
        """Start the job (idempotent for the same names); return its ARN."""
        ...

    def describe_job(self, job_id: str) -> JobState:
        """The job's :class:`JobState` by name or ARN."""
        ...

    def stop_job(self, job_id: str) -> None:
        """Stop a running job; a finished one is left alone."""
        ...

    def tag_job(self, job_arn: str, tags: Mapping[str, str]) -> None:
        """Add tags to the job."""
        ...

    def list_jobs(self, created_after: datetime, name_contains: str | None = None) -> list[JobState]:
        """Jobs created after ``created_after`` (whose name contains ``name_contains``), with tags."""
        ...


def check_base_model_active(service: ModelCustomization, model_id: str) -> str:
    """Fail before hours of work when the base model is not ACTIVE.

    Returns:
        The status (``ACTIVE``).

    Raises:
        InputError: the status is anything else (Nova Canvas v1 is reported to become LEGACY on
            2026-03-30, end of life 2026-09-30; DESIGN §5).
    """
    status = service.base_model_status(model_id)
    if status != "ACTIVE":
        raise InputError(f"base model {model_id} has lifecycle status {status}, not ACTIVE: Bedrock may no longer "
                         f"fine-tune it. Set the BaseModelId parameter (finetune.base_model_id) to an ACTIVE model, "
                         f"or finetune.require_active_base_model: false to try anyway")
    return status


class BedrockModelCustomization:
    """The AWS backend: the ``bedrock`` control-plane client."""

    def __init__(self, bedrock_client: Any) -> None:
        self.bedrock = bedrock_client

    def base_model_status(self, model_id: str) -> str:
        """``get_foundation_model(...)["modelDetails"]["modelLifecycle"]["status"]``."""
        details = self.bedrock.get_foundation_model(modelIdentifier=model_id)["modelDetails"]
        return str((details.get("modelLifecycle") or {}).get("status") or "UNKNOWN")

    def start_job(self, request: Mapping[str, Any]) -> str:
        """``create_model_customization_job``; a job of the same name that already exists (a re-delivered
        message) is returned when it carries the same callback token.

        Raises:
            InputError: a job of that name exists for a different callback.
        """
        from botocore.exceptions import ClientError

        try:
            return self.bedrock.create_model_customization_job(**request)["jobArn"]
        except ClientError as err:
            code = err.response["Error"].get("Code", "")
            if code not in ("ResourceInUseException", "ConflictException", "ValidationException"):
                raise
            try:
                existing = self.describe_job(request["jobName"])
            except ClientError:
                raise err from None
            wanted = {t["key"]: t["value"] for t in request.get("jobTags") or []}.get(TAG_CALLBACK_TOKEN)
            if wanted and existing.tags.get(TAG_CALLBACK_TOKEN) not in (None, wanted):
                raise InputError(f"a Bedrock job named {request['jobName']} already exists for another callback") \
                    from None
            log.info("customization job %s already exists (%s)", existing.job_name, existing.status)
            return existing.job_arn

    def _tags(self, job_arn: str) -> dict[str, str]:
        return {t["key"]: t["value"] for t in self.bedrock.list_tags_for_resource(resourceARN=job_arn)["tags"]}

    def describe_job(self, job_id: str) -> JobState:
        """``get_model_customization_job`` plus ``list_tags_for_resource``."""
        out = self.bedrock.get_model_customization_job(jobIdentifier=job_id)
        created = out.get("creationTime")
        return JobState(out["jobArn"], out["jobName"], normalise_status(out.get("status")),
                        out.get("outputModelArn"), out.get("failureMessage"),
                        created if isinstance(created, datetime) else None, self._tags(out["jobArn"]))

    def stop_job(self, job_id: str) -> None:
        """``stop_model_customization_job``; a job that is not running is left alone."""
        from botocore.exceptions import ClientError

        try:
            self.bedrock.stop_model_customization_job(jobIdentifier=job_id)
        except ClientError as err:
            if err.response["Error"].get("Code") in ("ValidationException", "ConflictException",
                                                     "ResourceNotFoundException"):
                log.info("job %s not stopped: %s", job_id, err.response["Error"].get("Message"))
                return
            raise

    def tag_job(self, job_arn: str, tags: Mapping[str, str]) -> None:
        """``tag_resource``."""
        self.bedrock.tag_resource(resourceARN=job_arn, tags=[{"key": k, "value": v} for k, v in tags.items()])

    def list_jobs(self, created_after: datetime, name_contains: str | None = None) -> list[JobState]:
        """``list_model_customization_jobs`` (all pages) with each job's tags."""
        jobs, token = [], None
        while True:
            kwargs: dict[str, Any] = {"creationTimeAfter": created_after, "maxResults": 100}
            if name_contains:
                kwargs["nameContains"] = name_contains
            if token:
                kwargs["nextToken"] = token
            page = self.bedrock.list_model_customization_jobs(**kwargs)
            for s in page.get("modelCustomizationJobSummaries") or []:
                created = s.get("creationTime")
                jobs.append(JobState(s["jobArn"], s["jobName"], normalise_status(s.get("status")),
                                     s.get("customModelArn"), None,
                                     created if isinstance(created, datetime) else None, self._tags(s["jobArn"])))
            token = page.get("nextToken")
            if not token:
                return jobs


class DryRunModelCustomization:
    """The local backend: starts nothing, writes the exact request to ``<folder>/request.json``.

    ``describe_job`` of a dry-run job reports status ``DryRun``; the base model status is ``UNKNOWN``
    (it cannot be checked offline).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def base_model_status(self, model_id: str) -> str:
        """``UNKNOWN``: Bedrock cannot be asked offline."""
        return "UNKNOWN"

    def start_job(self, request: Mapping[str, Any]) -> str:
        """Write ``request.json`` and return ``dry-run:<job name>``."""
        sio.write_json(self.folder / "request.json", dict(request))
        return DRY_RUN_PREFIX + request["jobName"]

    def describe_job(self, job_id: str) -> JobState:
        """The dry-run job from ``request.json``.

        Raises:
            InputError: no dry run was written for that job.
        """
        path = self.folder / "request.json"
        name = job_id.removeprefix(DRY_RUN_PREFIX)
        if not path.exists() or json.loads(path.read_text(encoding="utf-8")).get("jobName") != name:
            raise InputError(f"no dry-run request for job {job_id} in {self.folder}")
        return JobState(DRY_RUN_PREFIX + name, name, "DryRun")

    def stop_job(self, job_id: str) -> None:
        """Nothing runs, so nothing stops."""

    def tag_job(self, job_arn: str, tags: Mapping[str, str]) -> None:
        """Tags of a dry run are kept in ``tags.json``."""
        path = self.folder / "tags.json"
        current = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        current.update(tags)
        sio.write_json(path, current)

    def list_jobs(self, created_after: datetime, name_contains: str | None = None) -> list[JobState]:
        """No jobs run locally."""
        return []


def dry_run_report(inputs: FineTuneInputs, prepared: PreparedJob, base_model_status: str) -> dict[str, Any]:
    """``dry_run_report.json``: the inputs, data checks, base model status and notes."""
    return {
        "dry_run": True,
        "inputs": {**asdict(inputs), "hyperparameters": inputs.hyperparameters.to_request()},
        "training_data": prepared.data_report.to_json(),
        "request_valid": True,
        "base_model_status": base_model_status,
        "notes": prepared.notes,
    }


PLACEHOLDER_BUCKET = "storyboard-dry-run-placeholder"
PLACEHOLDER_ROLE_ARN = "arn:aws:iam::000000000000:role/storyboard-bedrock-placeholder"


def with_dry_run_placeholders(inputs: FineTuneInputs, names: JobNames) -> tuple[FineTuneInputs, dict[str, str]]:
    """Inputs whose local paths and missing AWS values are replaced by marked placeholders.

    A local dry run validates the request that would be sent once the data is in S3: a local training
    manifest becomes ``s3://storyboard-dry-run-placeholder/<job>/train.jsonl`` (or sits under an
    ``s3://`` OutputS3Uri), a missing role a placeholder role. Every replacement is returned, so the
    report can say exactly what to change before a real run.
    """
    placeholders: dict[str, str] = {}
    manifest, output, role = inputs.training_manifest_uri, inputs.output_s3_uri, inputs.role_arn
    if not (output or "").startswith("s3://"):
        new = f"s3://{PLACEHOLDER_BUCKET}/{names.job_name}/output/"
        placeholders["outputDataConfig.s3Uri"] = f"{new} (was {output or 'not set'})"
        output = new
    if not manifest.startswith("s3://"):
        new = f"{output.rstrip('/').removesuffix('/output')}/train.jsonl"
        placeholders["trainingDataConfig.s3Uri"] = f"{new} (local manifest {manifest})"
        manifest = new
    if not role:
        placeholders["roleArn"] = f"{PLACEHOLDER_ROLE_ARN} (finetune.role_arn not set)"
        role = PLACEHOLDER_ROLE_ARN
    replaced = FineTuneInputs(manifest, inputs.base_model_id, inputs.hyperparameters, output, role, True,
                              inputs.kms_key_id)
    return replaced, placeholders
