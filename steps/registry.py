"""Step 7, RegisterModel, and the approval that follows: the SageMaker Model Registry, then a SageMaker
endpoint (LoRA packages) or Bedrock Provisioned Throughput (Bedrock custom models).

Registration (:func:`register_model`) creates one model package per pipeline execution in a model
package group, ``PendingManualApproval``, carrying the evaluation metrics and, by fine-tune backend
(event key ``FineTuneBackend``, default ``bedrock``):

- ``sagemaker`` (the LoRA of the TrainingStep): a deployable package, whose ``InferenceSpecification``
  holds the inference image, the LoRA ``model.tar.gz`` as ``ModelDataUrl``, the base model as the
  additional model data source ``base_model`` (:func:`steps.endpoint_deployment.inference_specification`),
  the content types and the real-time instance types; the training job, base model and role in the
  customer metadata.
- ``bedrock``: the Bedrock job and custom model ARNs and the base model in the customer metadata.

It is idempotent: a package whose ``MetadataProperties.GeneratedBy`` is the execution ARN is found and
returned instead of creating another (the ``ClientToken``, a UUID derived from the execution ARN, asks
SageMaker for the same, but not every implementation honours it). A dry run, or a run with no model
(no ``ModelDataUrl``, no ``CustomModelArn``), registers nothing and says so.

Approval (:func:`on_status_change`) dispatches on the package's backend (metadata ``FineTuneBackend``):
:func:`steps.endpoint_deployment.on_endpoint_package_status_change` deploys, replaces or deletes an
endpoint; :func:`steps.provisioned_throughput.on_package_status_change` (re-exported here as
:func:`on_package_status_change`) creates, re-points or deletes a Provisioned Throughput.

Limits (SageMaker API reference ``CreateModelPackage``): ``CustomerMetadataProperties`` at most 50
entries, keys at most 128 and values at most 256 characters; ``ClientToken`` at most 36 characters
``[a-zA-Z0-9-]``; ``MetadataProperties.GeneratedBy`` at most 1,024; container ``Image`` at most 255.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.errors import InputError
from core.mlops_config import MODEL_PACKAGE_GROUP_PATTERN, RegistryConfig
from steps.endpoint_deployment import (
    DeploymentAction,
    ModelDeployment,
    inference_specification,
    on_endpoint_package_status_change,
)
from steps.model_registries import (  # noqa: F401  (re-exported: the registries lived here)
    LocalModelRegistry,
    ModelRegistry,
    SageMakerModelRegistry,
)
from steps.provisioned_throughput import (  # noqa: F401  (re-exported: the Bedrock approval lived here)
    META_CUSTOM_MODEL_ARN,
    META_THROUGHPUT_ARN,
    META_THROUGHPUT_NAME,
    ApprovalAction,
    BedrockProvisionedThroughputs,
    PlannedProvisionedThroughputs,
    ProvisionedThroughputs,
    ThroughputBusyError,
    on_package_status_change,
    throughput_name,
    throughput_request,
)

log = logging.getLogger(__name__)

METADATA_MAX_ENTRIES = 50
METADATA_KEY_MAX = 128
METADATA_VALUE_MAX = 256
METADATA_KEY_RE = re.compile(r"^[\w.:/=+\-@ ]{1,128}$")
EVENT_KEYS = ("ModelPackageGroupName", "EvaluationUri", "EvaluationReportUri", "CustomModelArn", "JobArn", "DryRun",
              "PipelineExecutionArn", "BaseModelId", "ModelApprovalStatus", "ClientToken", "ReviewedManifestUri",
              "FineTuneBackend", "ModelDataUrl", "TrainingJobName", "BaseModelS3Uri", "InferenceImageUri",
              "InferenceInstanceTypes", "ExecutionRoleArn")
BACKENDS = ("sagemaker", "bedrock")
APPROVAL_STATUSES = ("PendingManualApproval", "Approved", "Rejected")
CLIENT_TOKEN_RE = re.compile(r"^[a-zA-Z0-9-]{1,36}$")
META_BACKEND = "FineTuneBackend"
META_JOB_ARN = "BedrockJobArn"
META_BASE_MODEL = "BaseModelId"
META_TRAINING_JOB = "TrainingJobName"
META_BASE_MODEL_URI = "BaseModelS3Uri"
META_MODEL_DATA_URL = "ModelDataUrl"
META_ROLE = "ExecutionRoleArn"
METRIC_PREFIX = "metric:"


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def _is_number(value: Any) -> bool:
    try:
        float(str(value).strip())
        return True
    except ValueError:
        return False


@dataclass
class RegistrationRequest:
    """What the RegisterModel Lambda receives (flat strings from the pipeline).

    Attributes:
        model_package_group_name: the group (created if missing).
        evaluation_uri: ``evaluation.json`` (``s3://`` on AWS; a path locally).
        custom_model_arn: the fine-tuned Bedrock model; empty after a dry run (``bedrock``).
        job_arn: the Bedrock customization job (``dry-run:<name>`` after a dry run) (``bedrock``).
        dry_run: the FineTune step was a dry run.
        execution_arn: the pipeline execution (``MetadataProperties.GeneratedBy``).
        base_model_id: the base model's name, where given.
        metrics: every other event key whose value is a number (evaluation figures), by name.
        approval_status: ``ModelApprovalStatus`` from the event, where given and valid.
        client_token: ``ClientToken`` from the event, where given and valid (else derived).
        reviewed_manifest_uri: the reviewed training manifest, kept as metadata when it fits.
        backend: ``FineTuneBackend``: ``sagemaker`` (LoRA, deployable package) or ``bedrock`` (default).
        model_data_url: the LoRA ``model.tar.gz`` (``sagemaker``).
        training_job_name: the training job (``sagemaker``).
        base_model_s3_uri: the diffusers-format base model's S3 prefix (``sagemaker``).
        inference_image_uri: the serving image (``sagemaker``).
        inference_instance_types: ``InferenceInstanceTypes`` split on commas (``sagemaker``).
        execution_role_arn: ``ExecutionRoleArn``, the model's execution role for the deployment, if given.
    """

    model_package_group_name: str
    evaluation_uri: str
    custom_model_arn: str
    job_arn: str
    dry_run: bool
    execution_arn: str
    base_model_id: str = ""
    metrics: dict[str, str] = field(default_factory=dict)
    approval_status: str | None = None
    client_token: str | None = None
    reviewed_manifest_uri: str = ""
    backend: str = "bedrock"
    model_data_url: str = ""
    training_job_name: str = ""
    base_model_s3_uri: str = ""
    inference_image_uri: str = ""
    inference_instance_types: list[str] = field(default_factory=list)
    execution_role_arn: str = ""

    @classmethod
    def from_event(cls, event: Mapping[str, Any], default_group: str) -> RegistrationRequest:
        """Parse the LambdaStep event.

        Accepts ``EvaluationUri`` or ``EvaluationReportUri``. Keys that are not known and whose value is
        not a number are ignored (logged).

        Raises:
            InputError: PipelineExecutionArn or EvaluationUri is missing, the group name, the approval
                status or the backend is invalid.
        """
        def text(key: str) -> str:
            return str(event.get(key) or "").strip()

        group = text("ModelPackageGroupName") or default_group.strip()
        if not re.match(MODEL_PACKAGE_GROUP_PATTERN, group):
            raise InputError(f"ModelPackageGroupName {group!r} is invalid: 1 to 63 letters, digits and single "
                             f"hyphens")
        execution = text("PipelineExecutionArn")
        if not execution:
            raise InputError("RegisterModel needs PipelineExecutionArn (Execution.PipelineExecutionArn): it makes "
                             "registration idempotent")
        evaluation = text("EvaluationUri") or text("EvaluationReportUri")
        if not evaluation:
            raise InputError("RegisterModel needs EvaluationUri (or EvaluationReportUri): the evaluation.json "
                             "written by Evaluate")
        backend = text("FineTuneBackend").lower() or "bedrock"
        if backend not in BACKENDS:
            raise InputError(f"FineTuneBackend must be one of {list(BACKENDS)}, got {backend!r}")
        metrics = {}
        for key, value in event.items():
            if key in EVENT_KEYS or isinstance(value, bool):
                continue
            if _is_number(value):
                metrics[str(key)] = str(value).strip()
            else:
                log.info("RegisterModel ignores argument %s (not a number)", key)
        status = text("ModelApprovalStatus") or None
        if status is not None and status not in APPROVAL_STATUSES:
            raise InputError(f"ModelApprovalStatus must be one of {list(APPROVAL_STATUSES)}, got {status!r}")
        token = text("ClientToken")
        types = [t.strip() for t in text("InferenceInstanceTypes").split(",") if t.strip()]
        return cls(group, evaluation, text("CustomModelArn"), text("JobArn"), _truthy(event.get("DryRun")), execution,
                   text("BaseModelId"), metrics, status, token if CLIENT_TOKEN_RE.match(token) else None,
                   text("ReviewedManifestUri"), backend, text("ModelDataUrl"), text("TrainingJobName"),
                   text("BaseModelS3Uri"), text("InferenceImageUri"), types, text("ExecutionRoleArn"))


def skip_reason(request: RegistrationRequest) -> str | None:
    """Why nothing may be registered (a dry run, or no model), else ``None``.

    The pipeline must never report a registered model that was not trained.
    """
    if request.dry_run:
        return (f"not registered: the FineTune step was a dry run ({request.job_arn or 'no job'}); no model was "
                f"trained. Set DryRun=false to train and register")
    if request.backend == "sagemaker" and not request.model_data_url:
        return ("not registered: no ModelDataUrl; the FineTune training job produced no model artifact "
                "(model.tar.gz)")
    if request.backend == "bedrock" and not request.custom_model_arn:
        return "not registered: no CustomModelArn; the FineTune step produced no model"
    return None


def client_token(execution_arn: str) -> str:
    """``ClientToken`` for ``create_model_package``: a UUID (36 characters) derived from the execution ARN."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, execution_arn))


def customer_metadata(request: RegistrationRequest) -> dict[str, str]:
    """``CustomerMetadataProperties``: ``FineTuneBackend``, the backend's identifiers (Bedrock job and model
    ARNs; or training job, base model URI, model data URL, execution role), base model, execution,
    reviewed manifest and ``metric:<name>``. Optional URIs over 256 characters are left out (they are in
    the InferenceSpecification); identifiers are never cut.

    Raises:
        InputError: more than 50 entries, a key that is not allowed, or a value over 256 characters
            (values are never truncated: a cut ARN would point at nothing).
    """
    data = {META_BACKEND: request.backend}
    if request.backend == "bedrock":
        data.update({META_JOB_ARN: request.job_arn, META_CUSTOM_MODEL_ARN: request.custom_model_arn})
    else:
        data.update({META_TRAINING_JOB: request.training_job_name, META_ROLE: request.execution_role_arn})
        for key, value in ((META_BASE_MODEL_URI, request.base_model_s3_uri),
                           (META_MODEL_DATA_URL, request.model_data_url)):
            if len(value) <= METADATA_VALUE_MAX:
                data[key] = value
    if request.base_model_id:
        data[META_BASE_MODEL] = request.base_model_id
    if len(request.execution_arn) <= METADATA_VALUE_MAX:
        data["PipelineExecutionArn"] = request.execution_arn
    if request.reviewed_manifest_uri and len(request.reviewed_manifest_uri) <= METADATA_VALUE_MAX:
        data["ReviewedManifestUri"] = request.reviewed_manifest_uri
    for name, value in request.metrics.items():
        data[f"{METRIC_PREFIX}{name}"] = value
    data = {k: v for k, v in data.items() if v != ""}
    if len(data) > METADATA_MAX_ENTRIES:
        raise InputError(f"{len(data)} customer metadata entries (ARNs plus {len(request.metrics)} metrics); the "
                         f"Model Registry allows at most {METADATA_MAX_ENTRIES}: pass fewer metrics")
    for key, value in data.items():
        if not METADATA_KEY_RE.match(key):
            raise InputError(f"metadata key {key!r} is not allowed (at most {METADATA_KEY_MAX} letters, digits and "
                             f"_ . : / = + - @)")
        if len(value) > METADATA_VALUE_MAX:
            raise InputError(f"metadata {key} is {len(value)} characters; the Model Registry allows at most "
                             f"{METADATA_VALUE_MAX}")
    return data


def description_for(request: RegistrationRequest) -> str:
    """The package description; it names the execution, so a listing can find the package again."""
    model = "LoRA (SageMaker training job)" if request.backend == "sagemaker" else "Nova Canvas"
    return f"{model} fine-tuned by pipeline execution {request.execution_arn}"[:1024]


def _check_deployable(request: RegistrationRequest) -> None:
    """The ``sagemaker`` keys a deployable package needs.

    Raises:
        InputError: ``InferenceImageUri`` or ``BaseModelS3Uri`` is missing.
    """
    for key, value, fix in (("InferenceImageUri", request.inference_image_uri, "sagemaker.inference_image_uri"),
                            ("BaseModelS3Uri", request.base_model_s3_uri, "finetune.lora.base_model_s3_uri")):
        if not value:
            raise InputError(f"RegisterModel (FineTuneBackend=sagemaker) needs {key} to build a deployable model "
                             f"package; set {fix} (the pipeline passes it)")


def model_package_request(request: RegistrationRequest, approval_status: str) -> dict[str, Any]:
    """The ``create_model_package`` request (see the module docstring).

    Raises:
        InputError: see :func:`customer_metadata`; for ``sagemaker``, a missing image or base model.
    """
    create: dict[str, Any] = {
        "ModelPackageGroupName": request.model_package_group_name,
        "ModelPackageDescription": description_for(request),
        "ModelApprovalStatus": request.approval_status or approval_status,
        "CustomerMetadataProperties": customer_metadata(request),
        "ModelMetrics": {"ModelQuality": {"Statistics": {"ContentType": "application/json",
                                                         "S3Uri": request.evaluation_uri}}},
        "MetadataProperties": {"GeneratedBy": request.execution_arn[:1024]},
        "ClientToken": request.client_token or client_token(request.execution_arn),
    }
    if request.backend == "sagemaker":
        _check_deployable(request)
        create["InferenceSpecification"] = inference_specification(
            request.inference_image_uri, request.model_data_url, request.base_model_s3_uri,
            request.inference_instance_types)
    return create


@dataclass(frozen=True)
class RegistrationResult:
    """The LambdaStep's answer: the package ARN (empty when none), whether a model is registered, why."""

    model_package_arn: str
    registered: bool
    reason: str

    def outputs(self) -> dict[str, str]:
        """``{ModelPackageArn, Registered ("true"/"false"), Reason}`` (flat strings)."""
        return {"ModelPackageArn": self.model_package_arn, "Registered": "true" if self.registered else "false",
                "Reason": self.reason}


def register_model(request: RegistrationRequest, registry: ModelRegistry,
                   approval_status: str = "PendingManualApproval") -> RegistrationResult:
    """Register the fine-tuned model once per pipeline execution.

    Returns:
        ``registered=False`` with the reason for a dry run or a missing model (nothing is created);
        the existing package for a repeated delivery; else the new package.

    Raises:
        InputError: the request breaks the Model Registry's limits, or a ``sagemaker`` request lacks its
            image or base model (checked before anything is created).
    """
    reason = skip_reason(request)
    if reason:
        return RegistrationResult("", False, reason)
    create = model_package_request(request, approval_status)
    what = "LoRA models" if request.backend == "sagemaker" else "Nova Canvas models"
    registry.ensure_group(request.model_package_group_name,
                          f"{what} fine-tuned on a film's characters (storyboard pipeline)")
    existing = registry.find_package(request.model_package_group_name, request.execution_arn)
    if existing:
        return RegistrationResult(existing, True, f"already registered as {existing} by this pipeline execution; "
                                                  f"nothing new created")
    arn = registry.create_package(create)
    return RegistrationResult(arn, True, f"registered as {arn} ({create['ModelApprovalStatus']})")


def package_backend(package: Mapping[str, Any]) -> str:
    """The package's fine-tune backend: its ``FineTuneBackend`` metadata; else ``bedrock`` when it names a
    custom model, ``sagemaker`` when it has an inference container; else ``unknown``."""
    metadata = package.get("CustomerMetadataProperties") or {}
    if metadata.get(META_BACKEND) in BACKENDS:
        return str(metadata[META_BACKEND])
    if metadata.get(META_CUSTOM_MODEL_ARN):
        return "bedrock"
    if (package.get("InferenceSpecification") or {}).get("Containers"):
        return "sagemaker"
    return "unknown"


def on_status_change(package: Mapping[str, Any], config: RegistryConfig, endpoint: str, *,
                     deployment: ModelDeployment | None = None, throughputs: ProvisionedThroughputs | None = None,
                     registry: ModelRegistry | None = None, role_arn: str | None = None
                     ) -> DeploymentAction | ApprovalAction:
    """React to a package's approval status by its backend (:func:`package_backend`).

    Args:
        package: the package as ``describe_model_package`` returns it.
        config: the ``registry`` section (``endpoint`` and ``provisioned_throughput``).
        endpoint: the endpoint name (:func:`core.mlops_config.endpoint_name`).
        deployment: the endpoint backend (needed for LoRA packages).
        throughputs: the throughput backend (needed for Bedrock packages).
        registry: where the outcome is recorded on the package, if given.
        role_arn: the model's execution role (:func:`steps.endpoint_deployment.execution_role`).

    Raises:
        InputError: the backend the package needs was not given; see also the two approval functions.
    """
    backend = package_backend(package)
    if backend == "sagemaker":
        if deployment is None:
            raise InputError(f"{package.get('ModelPackageArn')} is a LoRA package: its approval needs an endpoint "
                             f"deployment backend")
        return on_endpoint_package_status_change(package, config.endpoint, endpoint, deployment, registry, role_arn)
    if backend == "bedrock":
        if throughputs is None:
            raise InputError(f"{package.get('ModelPackageArn')} is a Bedrock package: its approval needs a "
                             f"Provisioned Throughput backend")
        return on_package_status_change(package, config.provisioned_throughput, throughputs, registry)
    return DeploymentAction("none", f"package {package.get('ModelPackageArn')} names neither a custom model nor an "
                                    f"inference container: nothing to deploy or clean up")
