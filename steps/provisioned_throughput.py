"""Bedrock Provisioned Throughput for an approved custom model (the ``bedrock`` fine-tune backend).

One throughput per model package group (named ``registry.provisioned_throughput.name`` or after the group,
:func:`throughput_name`): ``Approved`` creates it (``modelUnits`` 1, no commitment by default; a custom Nova Canvas
model runs only on Provisioned Throughput) or re-points it to the package's custom model
(``update_provisioned_model_throughput`` with ``desiredModelId``; same base model), so the previously approved
model is released; throughputs left by the former one-per-version naming (``<name>-v<N>``) are deleted.
``Rejected`` deletes the throughput if it serves the rejected model, then the rejected custom model itself
(``delete_custom_model``) once no throughput serves it. The LoRA packages of the ``sagemaker`` backend deploy to an
endpoint instead (:mod:`steps.endpoint_deployment`); :mod:`steps.registry` dispatches.

Limits (Bedrock ``CreateProvisionedModelThroughput``): ``provisionedModelName`` at most 63 characters
``([0-9a-zA-Z][_-]?)+``; ``modelUnits`` at least 1; ``commitmentDuration`` ``OneMonth`` or ``SixMonths``.
``UpdateProvisionedModelThroughput`` needs the throughput InService; ``DeleteCustomModel`` fails while a throughput
serves the model.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from core import io as sio
from core.mlops_config import ProvisionedThroughputConfig

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

    def list_names(self, name_contains: str) -> list[dict[str, Any]]:
        """Summaries of the throughputs whose name contains ``name_contains``."""
        ...

    def serving(self, model_arn: str) -> list[str]:
        """Names of the throughputs that serve ``model_arn``."""
        ...

    def delete_model(self, model_arn: str) -> bool:
        """Delete the custom model; ``False`` when it no longer exists."""
        ...


class BedrockProvisionedThroughputs:
    """The AWS backend: the ``bedrock`` client."""

    def __init__(self, bedrock_client: Any) -> None:
        self.bedrock = bedrock_client

    def _list(self, **filters: str) -> list[dict[str, Any]]:
        out, token = [], None
        while True:
            kwargs: dict[str, Any] = {**filters, "maxResults": 100}
            if token:
                kwargs["nextToken"] = token
            page = self.bedrock.list_provisioned_model_throughputs(**kwargs)
            out += [dict(s) for s in page.get("provisionedModelSummaries") or []]
            token = page.get("nextToken")
            if not token:
                return out

    def find(self, name: str) -> dict[str, Any] | None:
        """``list_provisioned_model_throughputs(nameContains=name)``, exact name match."""
        return next((s for s in self._list(nameContains=name) if s.get("provisionedModelName") == name), None)

    def list_names(self, name_contains: str) -> list[dict[str, Any]]:
        """``list_provisioned_model_throughputs(nameContains=...)`` (all pages)."""
        return self._list(nameContains=name_contains)

    def serving(self, model_arn: str) -> list[str]:
        """``list_provisioned_model_throughputs(modelArnEquals=...)``: the names."""
        return [str(s.get("provisionedModelName")) for s in self._list(modelArnEquals=model_arn)]

    def delete_model(self, model_arn: str) -> bool:
        """``delete_custom_model``; ``False`` on ResourceNotFoundException."""
        from botocore.exceptions import ClientError

        try:
            self.bedrock.delete_custom_model(modelIdentifier=model_arn)
            return True
        except ClientError as err:
            if err.response["Error"].get("Code") == "ResourceNotFoundException":
                return False
            raise

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

    def _current(self) -> dict[str, dict[str, Any]]:
        state: dict[str, dict[str, Any]] = {}
        for row in self._rows():
            name = row.get("provisionedModelName")
            if row["action"] == "delete":
                state.pop(name, None)
            elif row["action"] in ("create", "repoint") and name:
                state[name] = {**state.get(name, {}), **row}
        return state

    def list_names(self, name_contains: str) -> list[dict[str, Any]]:
        """The planned throughputs whose name contains ``name_contains``."""
        return [row for name, row in self._current().items() if name_contains in name]

    def serving(self, model_arn: str) -> list[str]:
        """The planned throughputs serving ``model_arn``."""
        return [name for name, row in self._current().items() if row.get("modelArn") == model_arn]

    def delete_model(self, model_arn: str) -> bool:
        """Record a custom-model delete."""
        self._append({"action": "delete_custom_model", "modelArn": model_arn})
        return True


def throughput_name(package: Mapping[str, Any], config: ProvisionedThroughputConfig) -> str:
    """The group's throughput: ``config.name``, or the package's group name cleaned to
    ``([0-9a-zA-Z][_-]?)+`` and cut to 63 characters."""
    if config.name:
        return config.name
    clean = re.sub(r"[^0-9a-zA-Z_-]", "-", str(package.get("ModelPackageGroupName") or "model"))
    clean = re.sub(r"[_-]{2,}", "-", clean).strip("-_")
    return clean[:63].rstrip("-_") or "model"


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


class ThroughputBusyError(RuntimeError):
    """The throughput is not InService (Creating or Updating): it cannot be re-pointed yet; try again later (the
    approval is recorded as failed on the package and the reconciler retries it)."""


def _approve(package: Mapping[str, Any], model_arn: str, name: str, config: ProvisionedThroughputConfig,
             throughputs: ProvisionedThroughputs) -> ApprovalAction:
    arn = str(package.get("ModelPackageArn") or "")
    existing = throughputs.find(name)
    if existing is None:
        pt_arn = throughputs.create(throughput_request(name, model_arn, arn, config))
        action = ApprovalAction("created", f"throughput {name} created for {model_arn} ({config.model_units} model "
                                           f"unit(s), commitment {config.commitment})", name, pt_arn)
    else:
        pt_arn = str(existing.get("provisionedModelArn") or "")
        previous = str(existing.get("modelArn") or "")
        if model_arn in (existing.get("modelArn"), existing.get("desiredModelArn")):
            action = ApprovalAction("exists", f"throughput {name} already serves {model_arn}", name, pt_arn)
        elif existing.get("status") not in ("InService", "Planned"):
            raise ThroughputBusyError(f"throughput {name} is {existing.get('status')}; it can be re-pointed to "
                                      f"{model_arn} once InService")
        else:
            throughputs.repoint(pt_arn or name, model_arn)
            action = ApprovalAction("repointed", f"throughput {name} re-pointed from {previous or 'no model'} to "
                                                 f"{model_arn}; the previous model is no longer served", name, pt_arn)
    legacy = [str(t.get("provisionedModelName")) for t in throughputs.list_names(f"{name}-v")
              if re.fullmatch(rf"{re.escape(name)}-v\d+", str(t.get("provisionedModelName")))]
    for old in legacy:  # the former one-throughput-per-version naming: the group now has one
        throughputs.delete(old)
    if legacy:
        action = ApprovalAction(action.action, f"{action.reason}; deleted the previous throughput(s) "
                                               f"{', '.join(legacy)}", name, action.throughput_arn)
    return action


def _reject(model_arn: str, name: str, config: ProvisionedThroughputConfig,
            throughputs: ProvisionedThroughputs) -> ApprovalAction:
    existing = throughputs.find(name)
    done: list[str] = []
    pt_arn = str((existing or {}).get("provisionedModelArn") or "")
    if existing and model_arn in (existing.get("modelArn"), existing.get("desiredModelArn")):
        if not config.delete_on_reject:
            return ApprovalAction("none", f"throughput {name} serves the rejected model and "
                                          f"registry.provisioned_throughput.delete_on_reject is false: kept", name,
                                  pt_arn)
        throughputs.delete(pt_arn or name)
        done.append(f"throughput {name} deleted")
    if config.delete_model_on_reject:
        serving = [n for n in throughputs.serving(model_arn) if not (done and n == name)]
        if serving:
            done.append(f"custom model kept: served by {', '.join(serving)}")
        elif throughputs.delete_model(model_arn):
            done.append(f"custom model {model_arn} deleted")
    if not done:
        return ApprovalAction("none", f"nothing serves {model_arn} and registry.provisioned_throughput."
                                      f"delete_model_on_reject is false", name)
    return ApprovalAction("deleted", "; ".join(done), name, pt_arn)


def on_package_status_change(package: Mapping[str, Any], config: ProvisionedThroughputConfig,
                             throughputs: ProvisionedThroughputs, registry: ModelRegistry | None = None
                             ) -> ApprovalAction:
    """React to a package's approval status (the ``SageMaker Model Package State Change`` event); idempotent.

    Args:
        package: the package as ``describe_model_package`` returns it.
        config: ``registry.provisioned_throughput``.
        throughputs: the throughput backend.
        registry: where to record the throughput on the package (metadata), if given.

    Returns:
        The :class:`ApprovalAction` taken (see the module docstring). Approved with no custom model (a dry run)
        does nothing.

    Raises:
        ThroughputBusyError: the group's throughput is Creating or Updating and cannot be re-pointed yet.
    """
    status = package.get("ModelApprovalStatus")
    arn = str(package.get("ModelPackageArn") or "")
    model_arn = (package.get("CustomerMetadataProperties") or {}).get(META_CUSTOM_MODEL_ARN, "")
    if status not in ("Approved", "Rejected"):
        return ApprovalAction("none", f"status {status}: nothing to do")
    if not model_arn:
        return ApprovalAction("none", f"package {arn} has no {META_CUSTOM_MODEL_ARN}: no model to deploy or clean up")
    name = throughput_name(package, config)
    if status == "Rejected":
        return _reject(model_arn, name, config, throughputs)
    if not config.enabled:
        return ApprovalAction("none", "registry.provisioned_throughput.enabled is false")
    action = _approve(package, model_arn, name, config, throughputs)
    if registry is not None and arn:
        registry.update_metadata(arn, {META_THROUGHPUT_NAME: name, META_THROUGHPUT_ARN: action.throughput_arn})
    return action
