"""Bedrock Provisioned Throughput for an approved custom model (the ``bedrock`` fine-tune backend).

``Approved`` creates a Provisioned Throughput for the package's custom model (``modelUnits`` 1, no
commitment by default; a custom Nova Canvas model runs only on Provisioned Throughput), or re-points a
fixed one; ``Rejected`` deletes the package's own throughput. The LoRA packages of the ``sagemaker``
backend deploy to an endpoint instead (:mod:`steps.endpoint_deployment`); :mod:`steps.registry` dispatches.

Limits (Bedrock ``CreateProvisionedModelThroughput``): ``provisionedModelName`` at most 63 characters
``([0-9a-zA-Z][_-]?)+``; ``modelUnits`` at least 1; ``commitmentDuration`` ``OneMonth`` or ``SixMonths``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from steps import io as sio
from steps.errors import InputError
from steps.mlops_config import ProvisionedThroughputConfig

if TYPE_CHECKING:
    from steps.model_registries import ModelRegistry

META_CUSTOM_MODEL_ARN = "CustomModelArn"
META_THROUGHPUT_ARN = "ProvisionedModelArn"
META_THROUGHPUT_NAME = "ProvisionedModelName"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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
