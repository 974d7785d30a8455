"""Step 7, RegisterModel, and the approval that follows: the SageMaker Model Registry and Bedrock
Provisioned Throughput.

Registration (:func:`register_model`) creates one model package per pipeline execution in a model
package group, ``PendingManualApproval``, carrying the Bedrock job and custom model ARNs, the base
model and the evaluation metrics. It is idempotent: a package whose ``MetadataProperties.GeneratedBy``
is the execution ARN is found and returned instead of creating another (the ``ClientToken``, a UUID
derived from the execution ARN, asks SageMaker for the same, but not every implementation honours
it). A dry run, or a run with no custom model, registers nothing and says so.

Approval (:func:`on_package_status_change`): ``Approved`` creates a Provisioned Throughput for the
custom model (``modelUnits`` 1, no commitment by default; a custom Nova Canvas model runs only on
Provisioned Throughput), or re-points a fixed one; ``Rejected`` deletes the package's own throughput.

Limits (SageMaker API reference ``CreateModelPackage``; Bedrock ``CreateProvisionedModelThroughput``):
``CustomerMetadataProperties`` at most 50 entries, keys at most 128 and values at most 256 characters;
``ClientToken`` at most 36 characters ``[a-zA-Z0-9-]``; ``MetadataProperties.GeneratedBy`` at most
1,024; ``provisionedModelName`` at most 63 characters ``([0-9a-zA-Z][_-]?)+``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from steps import io as sio
from steps.bedrock_validation import validate_request
from steps.errors import InputError
from steps.mlops_config import MODEL_PACKAGE_GROUP_PATTERN, ProvisionedThroughputConfig

log = logging.getLogger(__name__)

METADATA_MAX_ENTRIES = 50
METADATA_KEY_MAX = 128
METADATA_VALUE_MAX = 256
METADATA_KEY_RE = re.compile(r"^[\w.:/=+\-@ ]{1,128}$")
EVENT_KEYS = ("ModelPackageGroupName", "EvaluationUri", "EvaluationReportUri", "CustomModelArn", "JobArn", "DryRun",
              "PipelineExecutionArn", "BaseModelId", "ModelApprovalStatus", "ClientToken", "ReviewedManifestUri")
APPROVAL_STATUSES = ("PendingManualApproval", "Approved", "Rejected")
CLIENT_TOKEN_RE = re.compile(r"^[a-zA-Z0-9-]{1,36}$")
META_JOB_ARN = "BedrockJobArn"
META_CUSTOM_MODEL_ARN = "CustomModelArn"
META_BASE_MODEL = "BaseModelId"
META_THROUGHPUT_ARN = "ProvisionedModelArn"
META_THROUGHPUT_NAME = "ProvisionedModelName"
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
        custom_model_arn: the fine-tuned model; empty after a dry run.
        job_arn: the Bedrock customization job (``dry-run:<name>`` after a dry run).
        dry_run: the FineTune step was a dry run.
        execution_arn: the pipeline execution (``MetadataProperties.GeneratedBy``).
        base_model_id: the base model, where given.
        metrics: every other event key whose value is a number (evaluation figures), by name.
        approval_status: ``ModelApprovalStatus`` from the event, where given and valid.
        client_token: ``ClientToken`` from the event, where given and valid (else derived).
        reviewed_manifest_uri: the reviewed training manifest, kept as metadata when it fits.
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

    @classmethod
    def from_event(cls, event: Mapping[str, Any], default_group: str) -> RegistrationRequest:
        """Parse the LambdaStep event.

        Accepts ``EvaluationUri`` or ``EvaluationReportUri``. Keys that are not known and whose value is
        not a number are ignored (logged).

        Raises:
            InputError: PipelineExecutionArn or EvaluationUri is missing, the group name or the approval
                status is invalid.
        """
        group = str(event.get("ModelPackageGroupName") or default_group).strip()
        if not re.match(MODEL_PACKAGE_GROUP_PATTERN, group):
            raise InputError(f"ModelPackageGroupName {group!r} is invalid: 1 to 63 letters, digits and single "
                             f"hyphens")
        execution = str(event.get("PipelineExecutionArn") or "").strip()
        if not execution:
            raise InputError("RegisterModel needs PipelineExecutionArn (Execution.PipelineExecutionArn): it makes "
                             "registration idempotent")
        evaluation = str(event.get("EvaluationUri") or event.get("EvaluationReportUri") or "").strip()
        if not evaluation:
            raise InputError("RegisterModel needs EvaluationUri (or EvaluationReportUri): the evaluation.json "
                             "written by Evaluate")
        metrics = {}
        for key, value in event.items():
            if key in EVENT_KEYS or isinstance(value, bool):
                continue
            if _is_number(value):
                metrics[str(key)] = str(value).strip()
            else:
                log.info("RegisterModel ignores argument %s (not a number)", key)
        status = str(event.get("ModelApprovalStatus") or "").strip() or None
        if status is not None and status not in APPROVAL_STATUSES:
            raise InputError(f"ModelApprovalStatus must be one of {list(APPROVAL_STATUSES)}, got {status!r}")
        token = str(event.get("ClientToken") or "").strip()
        return cls(group, evaluation, str(event.get("CustomModelArn") or "").strip(),
                   str(event.get("JobArn") or "").strip(), _truthy(event.get("DryRun")), execution,
                   str(event.get("BaseModelId") or "").strip(), metrics, status,
                   token if CLIENT_TOKEN_RE.match(token) else None,
                   str(event.get("ReviewedManifestUri") or "").strip())


def skip_reason(request: RegistrationRequest) -> str | None:
    """Why nothing may be registered (a dry run, or no custom model), else ``None``.

    The pipeline must never report a registered model that was not trained.
    """
    if request.dry_run:
        return (f"not registered: the FineTune step was a dry run ({request.job_arn or 'no job'}); no model was "
                f"trained. Set DryRun=false to train and register")
    if not request.custom_model_arn:
        return "not registered: no CustomModelArn; the FineTune step produced no model"
    return None


def client_token(execution_arn: str) -> str:
    """``ClientToken`` for ``create_model_package``: a UUID (36 characters) derived from the execution ARN."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, execution_arn))


def customer_metadata(request: RegistrationRequest) -> dict[str, str]:
    """``CustomerMetadataProperties``: the Bedrock job and model ARNs, base model and ``metric:<name>``.

    Raises:
        InputError: more than 50 entries, a key that is not allowed, or a value over 256 characters
            (values are never truncated: a cut ARN would point at nothing).
    """
    data = {META_JOB_ARN: request.job_arn, META_CUSTOM_MODEL_ARN: request.custom_model_arn}
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
    return f"Nova Canvas fine-tuned by pipeline execution {request.execution_arn}"[:1024]


def model_package_request(request: RegistrationRequest, approval_status: str) -> dict[str, Any]:
    """The ``create_model_package`` request (see the module docstring)."""
    return {
        "ModelPackageGroupName": request.model_package_group_name,
        "ModelPackageDescription": description_for(request),
        "ModelApprovalStatus": request.approval_status or approval_status,
        "CustomerMetadataProperties": customer_metadata(request),
        "ModelMetrics": {"ModelQuality": {"Statistics": {"ContentType": "application/json",
                                                         "S3Uri": request.evaluation_uri}}},
        "MetadataProperties": {"GeneratedBy": request.execution_arn[:1024]},
        "ClientToken": request.client_token or client_token(request.execution_arn),
    }


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


@runtime_checkable
class ModelRegistry(Protocol):
    """A model registry: groups of versioned model packages."""

    def ensure_group(self, name: str, description: str) -> None:
        """Create the group unless it exists."""
        ...

    def find_package(self, group: str, execution_arn: str) -> str | None:
        """The ARN of the group's package generated by ``execution_arn``, if any."""
        ...

    def create_package(self, request: Mapping[str, Any]) -> str:
        """Create a package from a ``create_model_package`` request; return its ARN."""
        ...

    def describe_package(self, arn: str) -> dict[str, Any]:
        """The package, in ``describe_model_package``'s shape."""
        ...

    def update_metadata(self, arn: str, properties: Mapping[str, str]) -> None:
        """Add or replace customer metadata properties."""
        ...


def register_model(request: RegistrationRequest, registry: ModelRegistry,
                   approval_status: str = "PendingManualApproval") -> RegistrationResult:
    """Register the fine-tuned model once per pipeline execution.

    Returns:
        ``registered=False`` with the reason for a dry run or a missing model (nothing is created);
        the existing package for a repeated delivery; else the new package.

    Raises:
        InputError: the request breaks the Model Registry's limits (checked before anything is created).
    """
    reason = skip_reason(request)
    if reason:
        return RegistrationResult("", False, reason)
    create = model_package_request(request, approval_status)
    registry.ensure_group(request.model_package_group_name,
                          "Nova Canvas models fine-tuned on a film's characters (storyboard pipeline)")
    existing = registry.find_package(request.model_package_group_name, request.execution_arn)
    if existing:
        return RegistrationResult(existing, True, f"already registered as {existing} by this pipeline execution; "
                                                  f"nothing new created")
    arn = registry.create_package(create)
    return RegistrationResult(arn, True, f"registered as {arn} ({create['ModelApprovalStatus']})")


class SageMakerModelRegistry:
    """The AWS backend: the SageMaker Model Registry.

    Args:
        sagemaker_client: a boto3 ``sagemaker`` client.
        scan_limit: how many of the group's newest packages :meth:`find_package` inspects.
    """

    def __init__(self, sagemaker_client: Any, scan_limit: int = 200) -> None:
        self.sm = sagemaker_client
        self.scan_limit = scan_limit

    def ensure_group(self, name: str, description: str) -> None:
        """``describe_model_package_group``, then ``create_model_package_group`` when it is missing."""
        from botocore.exceptions import ClientError

        try:
            self.sm.describe_model_package_group(ModelPackageGroupName=name)
            return
        except ClientError as err:
            if err.response["Error"].get("Code") not in ("ValidationException", "ResourceNotFound"):
                raise
        try:
            self.sm.create_model_package_group(ModelPackageGroupName=name, ModelPackageGroupDescription=description)
            log.info("created model package group %s", name)
        except ClientError as err:
            if "already exists" not in err.response["Error"].get("Message", "").lower():
                raise

    def find_package(self, group: str, execution_arn: str) -> str | None:
        """Scan the group's newest packages (descending creation time) for ``GeneratedBy == execution_arn``.

        A summary whose description does not name the execution is skipped without a describe call.
        """
        seen, token = 0, None
        while seen < self.scan_limit:
            kwargs: dict[str, Any] = {"ModelPackageGroupName": group, "SortBy": "CreationTime",
                                      "SortOrder": "Descending", "MaxResults": 100}
            if token:
                kwargs["NextToken"] = token
            page = self.sm.list_model_packages(**kwargs)
            for summary in page.get("ModelPackageSummaryList") or []:
                seen += 1
                description = summary.get("ModelPackageDescription")
                if description is not None and execution_arn not in description:
                    continue
                described = self.sm.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
                if (described.get("MetadataProperties") or {}).get("GeneratedBy") == execution_arn:
                    return summary["ModelPackageArn"]
            token = page.get("NextToken")
            if not token:
                break
        return None

    def create_package(self, request: Mapping[str, Any]) -> str:
        """``create_model_package``, after validating the request against the service model.

        Raises:
            InputError: the request breaks the API's limits (nothing is sent).
        """
        validate_request("sagemaker", "CreateModelPackage", request, what="the RegisterModel request")
        return self.sm.create_model_package(**request)["ModelPackageArn"]

    def describe_package(self, arn: str) -> dict[str, Any]:
        """``describe_model_package``."""
        return self.sm.describe_model_package(ModelPackageName=arn)

    def update_metadata(self, arn: str, properties: Mapping[str, str]) -> None:
        """``update_model_package`` with the merged properties (at most 50)."""
        current = dict(self.describe_package(arn).get("CustomerMetadataProperties") or {})
        current.update(properties)
        if len(current) > METADATA_MAX_ENTRIES:
            raise InputError(f"model package {arn} would have {len(current)} metadata entries (at most 50)")
        self.sm.update_model_package(ModelPackageArn=arn, CustomerMetadataProperties=current)


class LocalModelRegistry:
    """The local backend: a JSON file (``registry.json``), written atomically after each change.

    Layout: ``{"groups": {name: {"description", "created"}}, "packages": [describe_model_package-like
    dicts]}``. Package ARNs look like ``arn:aws:sagemaker:local:000000000000:model-package/<group>/<n>``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"groups": {}, "packages": []}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise InputError(f"local registry {self.path} is not valid JSON ({err.msg}); move it away to start a "
                             f"new one") from None
        data.setdefault("groups", {})
        data.setdefault("packages", [])
        return data

    def _save(self, data: Mapping[str, Any]) -> None:
        sio.write_json(self.path, data)

    def ensure_group(self, name: str, description: str) -> None:
        """Add the group unless present."""
        data = self._load()
        if name not in data["groups"]:
            data["groups"][name] = {"description": description, "created": _now()}
            self._save(data)

    def find_package(self, group: str, execution_arn: str) -> str | None:
        """The package of ``group`` generated by ``execution_arn``."""
        for pkg in self._load()["packages"]:
            if pkg["ModelPackageGroupName"] == group and \
                    (pkg.get("MetadataProperties") or {}).get("GeneratedBy") == execution_arn:
                return pkg["ModelPackageArn"]
        return None

    def create_package(self, request: Mapping[str, Any]) -> str:
        """Append a package version; a ClientToken seen before returns the earlier package (idempotent).

        Raises:
            InputError: the group does not exist.
        """
        data = self._load()
        group = request["ModelPackageGroupName"]
        if group not in data["groups"]:
            raise InputError(f"model package group {group} does not exist in {self.path}")
        for pkg in data["packages"]:
            if request.get("ClientToken") and pkg.get("ClientToken") == request.get("ClientToken"):
                return pkg["ModelPackageArn"]
        version = 1 + sum(1 for p in data["packages"] if p["ModelPackageGroupName"] == group)
        arn = f"arn:aws:sagemaker:local:000000000000:model-package/{group.lower()}/{version}"
        pkg = {**dict(request), "ModelPackageArn": arn, "ModelPackageVersion": version,
               "ModelPackageStatus": "Completed", "CreationTime": _now()}
        data["packages"].append(pkg)
        self._save(data)
        return arn

    def describe_package(self, arn: str) -> dict[str, Any]:
        """The stored package.

        Raises:
            InputError: no package has that ARN.
        """
        for pkg in self._load()["packages"]:
            if pkg["ModelPackageArn"] == arn:
                return pkg
        raise InputError(f"no model package {arn} in {self.path}")

    def update_metadata(self, arn: str, properties: Mapping[str, str]) -> None:
        """Merge ``properties`` into the package's customer metadata."""
        self._update(arn, lambda pkg: pkg.setdefault("CustomerMetadataProperties", {}).update(properties))

    def set_status(self, arn: str, status: str) -> dict[str, Any]:
        """Approve or reject a package locally (what the Studio UI does on AWS); returns the package."""
        if status not in ("Approved", "Rejected", "PendingManualApproval"):
            raise InputError(f"approval status must be Approved, Rejected or PendingManualApproval, not {status!r}")
        self._update(arn, lambda pkg: pkg.update(ModelApprovalStatus=status, LastModifiedTime=_now()))
        return self.describe_package(arn)

    def _update(self, arn: str, change: Any) -> None:
        data = self._load()
        for pkg in data["packages"]:
            if pkg["ModelPackageArn"] == arn:
                change(pkg)
                self._save(data)
                return
        raise InputError(f"no model package {arn} in {self.path}")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- approval: provisioned throughput -------------------------------------------------------------------


@runtime_checkable
class ProvisionedThroughputs(Protocol):
    """Bedrock Provisioned Throughput."""

    def find(self, name: str) -> dict[str, Any] | None:
        """``{"provisionedModelName", "provisionedModelArn", "modelArn", "desiredModelArn", "status"}``
        of the throughput called ``name``, or ``None``."""
        ...

    def create(self, request: Mapping[str, Any]) -> str:
        """Create from a ``create_provisioned_model_throughput`` request; return its ARN."""
        ...

    def repoint(self, provisioned_model_id: str, model_id: str) -> None:
        """Serve ``model_id`` (same base model) from an existing throughput."""
        ...

    def delete(self, provisioned_model_id: str) -> None:
        """Delete the throughput."""
        ...


class BedrockProvisionedThroughputs:
    """The AWS backend: the ``bedrock`` client."""

    def __init__(self, bedrock_client: Any) -> None:
        self.bedrock = bedrock_client

    def find(self, name: str) -> dict[str, Any] | None:
        """``list_provisioned_model_throughputs(nameContains=name)``, exact name match."""
        token = None
        while True:
            kwargs: dict[str, Any] = {"nameContains": name, "maxResults": 100}
            if token:
                kwargs["nextToken"] = token
            page = self.bedrock.list_provisioned_model_throughputs(**kwargs)
            for s in page.get("provisionedModelSummaries") or []:
                if s.get("provisionedModelName") == name:
                    return dict(s)
            token = page.get("nextToken")
            if not token:
                return None

    def create(self, request: Mapping[str, Any]) -> str:
        """``create_provisioned_model_throughput``."""
        return self.bedrock.create_provisioned_model_throughput(**request)["provisionedModelArn"]

    def repoint(self, provisioned_model_id: str, model_id: str) -> None:
        """``update_provisioned_model_throughput(desiredModelId=...)``."""
        self.bedrock.update_provisioned_model_throughput(provisionedModelId=provisioned_model_id,
                                                         desiredModelId=model_id)

    def delete(self, provisioned_model_id: str) -> None:
        """``delete_provisioned_model_throughput``."""
        self.bedrock.delete_provisioned_model_throughput(provisionedModelId=provisioned_model_id)


class PlannedProvisionedThroughputs:
    """The local backend: nothing can be provisioned offline, so each request is written to
    ``<folder>/throughput_requests.jsonl`` and :meth:`find` reports what was planned (status
    ``Planned``)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / "throughput_requests.jsonl"

    def _rows(self) -> list[dict[str, Any]]:
        return sio.read_jsonl(self.path) if self.path.exists() else []

    def _append(self, row: dict[str, Any]) -> None:
        sio.write_jsonl(self.path, [*self._rows(), {**row, "time": _now()}])

    def find(self, name: str) -> dict[str, Any] | None:
        """The last plan for ``name`` that was not deleted."""
        found = None
        for row in self._rows():
            if row.get("provisionedModelName") == name:
                found = None if row["action"] == "delete" else row
        return found

    def create(self, request: Mapping[str, Any]) -> str:
        """Record the create request; returns a ``planned:`` ARN."""
        arn = f"planned:{request['provisionedModelName']}"
        self._append({"action": "create", "provisionedModelName": request["provisionedModelName"],
                      "provisionedModelArn": arn, "modelArn": request["modelId"], "status": "Planned",
                      "request": dict(request)})
        return arn

    def repoint(self, provisioned_model_id: str, model_id: str) -> None:
        """Record a re-point."""
        name = provisioned_model_id.removeprefix("planned:")
        self._append({"action": "repoint", "provisionedModelName": name, "provisionedModelArn": provisioned_model_id,
                      "modelArn": model_id, "status": "Planned"})

    def delete(self, provisioned_model_id: str) -> None:
        """Record a delete."""
        self._append({"action": "delete", "provisionedModelName": provisioned_model_id.removeprefix("planned:"),
                      "provisionedModelArn": provisioned_model_id})


def throughput_name(package: Mapping[str, Any], config: ProvisionedThroughputConfig) -> str:
    """The throughput's name: ``config.name``, or ``<group>-v<version>`` (pattern ``([0-9a-zA-Z][_-]?)+``)."""
    if config.name:
        return config.name
    base = f"{package.get('ModelPackageGroupName') or 'model'}-v{package.get('ModelPackageVersion') or 0}"
    clean = re.sub(r"[^0-9a-zA-Z_-]", "-", base)
    clean = re.sub(r"[_-]{2,}", "-", clean).strip("-_")
    suffix = f"-v{package.get('ModelPackageVersion') or 0}"
    return clean if len(clean) <= 63 else clean[:63 - len(suffix)].rstrip("-_") + suffix


def throughput_request(name: str, model_arn: str, package_arn: str,
                       config: ProvisionedThroughputConfig) -> dict[str, Any]:
    """The ``create_provisioned_model_throughput`` request; the client token is derived from the package
    and the name, so a repeated approval event creates nothing new."""
    token = "pt" + hashlib.sha256(f"{package_arn}|{name}".encode()).hexdigest()[:40]
    request: dict[str, Any] = {"clientRequestToken": token, "modelUnits": config.model_units,
                               "provisionedModelName": name, "modelId": model_arn}
    if config.commitment != "none":
        request["commitmentDuration"] = config.commitment
    return request


@dataclass(frozen=True)
class ApprovalAction:
    """What the approval handler did: ``action`` (created, repointed, exists, deleted, none), the
    throughput's name and ARN where there is one, and why."""

    action: str
    reason: str
    throughput_name: str = ""
    throughput_arn: str = ""

    def to_json(self) -> dict[str, str]:
        """Plain dict for logs and the Lambda's return value."""
        return {"action": self.action, "reason": self.reason, "throughputName": self.throughput_name,
                "throughputArn": self.throughput_arn}


def on_package_status_change(package: Mapping[str, Any], config: ProvisionedThroughputConfig,
                             throughputs: ProvisionedThroughputs, registry: ModelRegistry | None = None
                             ) -> ApprovalAction:
    """React to a package's approval status (the ``SageMaker Model Package State Change`` event).

    Args:
        package: the package as ``describe_model_package`` returns it.
        config: ``registry.provisioned_throughput``.
        throughputs: the throughput backend.
        registry: where to record the throughput on the package (metadata), if given.

    Returns:
        The :class:`ApprovalAction` taken. Approved with no custom model (a dry run) does nothing.
    """
    status = package.get("ModelApprovalStatus")
    arn = str(package.get("ModelPackageArn") or "")
    model_arn = (package.get("CustomerMetadataProperties") or {}).get(META_CUSTOM_MODEL_ARN, "")
    if status not in ("Approved", "Rejected"):
        return ApprovalAction("none", f"status {status}: nothing to do")
    if not model_arn:
        return ApprovalAction("none", f"package {arn} has no {META_CUSTOM_MODEL_ARN}: no model to deploy or clean up")
    name = throughput_name(package, config)
    existing = throughputs.find(name)
    if status == "Approved":
        if not config.enabled:
            return ApprovalAction("none", "registry.provisioned_throughput.enabled is false")
        if existing:
            serving = {existing.get("modelArn"), existing.get("desiredModelArn")}
            pt_arn = str(existing.get("provisionedModelArn") or "")
            if model_arn in serving:
                action = ApprovalAction("exists", f"throughput {name} already serves {model_arn}", name, pt_arn)
            elif config.name:
                throughputs.repoint(pt_arn or name, model_arn)
                action = ApprovalAction("repointed", f"throughput {name} re-pointed to {model_arn}", name, pt_arn)
            else:
                raise InputError(f"throughput {name} exists and serves {existing.get('modelArn')}, not {model_arn}; "
                                 f"delete it or set registry.provisioned_throughput.name")
        else:
            pt_arn = throughputs.create(throughput_request(name, model_arn, arn, config))
            action = ApprovalAction("created", f"throughput {name} created for {model_arn} ({config.model_units} "
                                               f"model unit(s), commitment {config.commitment})", name, pt_arn)
        if registry is not None and arn:
            registry.update_metadata(arn, {META_THROUGHPUT_NAME: name, META_THROUGHPUT_ARN: action.throughput_arn})
        return action
    # Rejected
    if not existing:
        return ApprovalAction("none", f"no throughput {name} to clean up")
    if config.name:
        return ApprovalAction("none", f"throughput {name} is shared (registry.provisioned_throughput.name); it is "
                                      f"kept: approve another package to re-point it", name,
                              str(existing.get("provisionedModelArn") or ""))
    if not config.delete_on_reject:
        return ApprovalAction("none", "registry.provisioned_throughput.delete_on_reject is false", name)
    if existing.get("modelArn") != model_arn:
        return ApprovalAction("none", f"throughput {name} serves another model; kept", name)
    pt_arn = str(existing.get("provisionedModelArn") or name)
    throughputs.delete(pt_arn)
    return ApprovalAction("deleted", f"throughput {name} of the rejected model deleted", name, pt_arn)
