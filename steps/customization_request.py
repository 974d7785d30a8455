"""The Bedrock fine-tune's request: hyperparameters, job names, inputs, callback tags, the validated
``CreateModelCustomizationJob`` request and the dry run's placeholders.

Facts used (DESIGN §5; Bedrock API reference ``CreateModelCustomizationJob``):
- ``customizationType`` ``FINE_TUNING``; hyperparameters are strings: ``stepCount`` 10 to 20,000,
  ``batchSize`` 8 to 192, ``learningRate`` 1e-7 to 1e-4; no validation data for image generation models.
- ``jobName`` at most 63 characters ``[a-zA-Z0-9](-*[a-zA-Z0-9+\\-.])*``; ``customModelName``
  ``([0-9a-zA-Z][_-]?){1,63}``; ``clientRequestToken`` makes a retried create idempotent.
- Tags: key at most 128 and value at most 256 characters of ``[a-zA-Z0-9\\s._:/=+@-]``. A pipeline
  callback token is exactly 10 characters ``[a-zA-Z0-9]`` (SageMaker API reference,
  ``SendPipelineExecutionStepSuccess.CallbackToken``), so the job carries it as a tag.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from core.errors import InputError
from core.mlops_config import (
    BATCH_SIZE_MAX,
    BATCH_SIZE_MIN,
    LEARNING_RATE_MAX,
    LEARNING_RATE_MIN,
    STEP_COUNT_MAX,
    STEP_COUNT_MIN,
    FineTuneConfig,
    HyperParameters,
)
from steps.bedrock_validation import TrainingManifestReport, check_training_rows
from steps.image_probes import ImageProbe
from steps.request_validation import validate_request

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
