"""Deployment of an approved LoRA model package (``finetune.backend: sagemaker``) to a SageMaker
real-time endpoint, and its clean-up on rejection. Plain Python over a boto3 ``sagemaker`` client (no
SageMaker SDK); :class:`PlannedEndpointDeployment` runs the same logic offline.

Serving contract (the model package's container, :func:`serving_container`): the inference image, the
LoRA artifact as ``ModelDataUrl`` (extracted to ``/opt/ml/model``), the base model as the additional model
data source ``base_model`` (an uncompressed S3 prefix, mounted at
``/opt/ml/additional-model-data-sources/base_model/``; ``STORYBOARD_BASE_MODEL_DIR`` names that folder),
``SAGEMAKER_PROGRAM=inference.py``; JSON in, ``image/png`` or JSON out.

Names (deterministic, so a repeated event finds what the first one created): the model and the endpoint
configuration are both ``<group>-v<version>`` (at most 63 characters; SageMaker's model and endpoint
configuration names live in separate namespaces); the endpoint is ``registry.endpoint.name`` or
``<group>-endpoint``.

Approved (:func:`deploy_package`): create the model (the package's container fields, tagged with the
package ARN) and the endpoint configuration (one variant ``AllTraffic``, instance type and count from
``registry.endpoint``) unless they exist, then create the endpoint, or update it to the new configuration
when it serves another package (a later approval replaces the earlier deployment). The replaced model and
configuration are deleted by :func:`cleanup_replaced` once the endpoint is ``InService`` on the new one:
at once when it already is, else on the endpoint's next state-change event. Rejected
(:func:`remove_package`): the endpoint, when it serves this package, then the package's configuration and
model. A package already deployed once and since replaced is not deployed again by a repeated event
(``DeploymentStatus`` ``Deployed`` in its metadata): reject and approve it again to roll back to it.

Limits (SageMaker API reference): names at most 63 characters ``[a-zA-Z0-9](-*[a-zA-Z0-9])*``; tag
values at most 256 characters; ``UpdateEndpoint`` is refused while the endpoint is Creating, Updating,
SystemUpdating, RollingBack or Deleting, and a Failed endpoint must be deleted before it is created again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.errors import InputError
from core.mlops_config import EndpointConfig
from steps.endpoint_backends import (  # noqa: F401  (re-exported: the backends of this module)
    LOCAL_PLACEHOLDER_BUCKET,
    ModelDeployment,
    PlannedEndpointDeployment,
    SageMakerEndpointDeployment,
)

log = logging.getLogger(__name__)

BASE_MODEL_CHANNEL = "base_model"
BASE_MODEL_MOUNT = f"/opt/ml/additional-model-data-sources/{BASE_MODEL_CHANNEL}"
BASE_MODEL_DIR_ENV = "STORYBOARD_BASE_MODEL_DIR"
INFERENCE_PROGRAM = "inference.py"
CONTENT_TYPES = ["application/json"]
RESPONSE_TYPES = ["image/png", "application/json"]
VARIANT_NAME = "AllTraffic"
NAME_MAX = 63
TAG_PACKAGE = "storyboard:model-package-arn"
META_ENDPOINT_NAME = "EndpointName"
META_ENDPOINT_CONFIG = "EndpointConfigName"
META_MODEL_NAME = "SageMakerModelName"
META_DEPLOYMENT_STATUS = "DeploymentStatus"
BUSY_STATUSES = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting", "UpdateRollbackFailed")


class EndpointBusyError(RuntimeError):
    """The endpoint cannot be changed now (it is being created, updated or deleted, or it failed); the
    Lambda fails so the event is retried, and the message says what to do."""


def serving_container(image_uri: str, model_data_url: str, base_model_uri: str) -> dict[str, Any]:
    """The ``ModelPackageContainerDefinition`` of a LoRA package (see the module docstring).

    Args:
        image_uri: the inference image (ECR URI, at most 255 characters).
        model_data_url: the training job's ``model.tar.gz`` (``s3://``; a path in local runs).
        base_model_uri: the diffusers-format base model's S3 prefix (a folder in local runs).
    """
    prefix = base_model_uri if base_model_uri.endswith("/") or not base_model_uri.startswith("s3://") \
        else base_model_uri + "/"
    return {
        "Image": image_uri,
        "ModelDataUrl": model_data_url,
        "AdditionalModelDataSources": [{"ChannelName": BASE_MODEL_CHANNEL, "S3DataSource": {
            "S3Uri": prefix, "S3DataType": "S3Prefix", "CompressionType": "None"}}],
        "Environment": {BASE_MODEL_DIR_ENV: BASE_MODEL_MOUNT, "SAGEMAKER_PROGRAM": INFERENCE_PROGRAM},
    }


def inference_specification(image_uri: str, model_data_url: str, base_model_uri: str,
                            instance_types: list[str]) -> dict[str, Any]:
    """``InferenceSpecification`` of ``create_model_package``: one :func:`serving_container`, the content
    types, and ``SupportedRealtimeInferenceInstanceTypes`` when ``instance_types`` is not empty."""
    spec: dict[str, Any] = {"Containers": [serving_container(image_uri, model_data_url, base_model_uri)],
                            "SupportedContentTypes": list(CONTENT_TYPES),
                            "SupportedResponseMIMETypes": list(RESPONSE_TYPES)}
    if instance_types:
        spec["SupportedRealtimeInferenceInstanceTypes"] = list(instance_types)
    return spec


def _clean_name(text: str) -> str:
    """``text`` as a SageMaker resource name: letters, digits and single hyphens."""
    return re.sub(r"-{2,}", "-", re.sub(r"[^a-zA-Z0-9-]", "-", text)).strip("-") or "model"


@dataclass(frozen=True)
class DeploymentNames:
    """The deployment's resource names: ``endpoint``, ``endpoint_config`` and ``model`` (at most 63 each)."""

    endpoint: str
    endpoint_config: str
    model: str


def version_prefix(group: str) -> str:
    """``<group>-v``, shortened so that ``<prefix><version>`` stays within 63 characters up to version 99,999."""
    return f"{_clean_name(group)[:NAME_MAX - 7].rstrip('-')}-v"


def deployment_names(package: Mapping[str, Any], endpoint: str) -> DeploymentNames:
    """Names for ``package`` (``describe_model_package``'s shape) deployed to ``endpoint``.

    Raises:
        InputError: the package has no group or version (not a versioned package of a group).
    """
    group, version = package.get("ModelPackageGroupName"), package.get("ModelPackageVersion")
    if not group or not version:
        raise InputError(f"model package {package.get('ModelPackageArn')} has no group and version; only "
                         f"versioned packages of a model package group are deployed")
    name = f"{version_prefix(str(group))}{int(version)}"
    return DeploymentNames(endpoint, name, name)


def package_container(package: Mapping[str, Any]) -> dict[str, Any]:
    """The package's first inference container.

    Raises:
        InputError: the package has no ``InferenceSpecification`` container with an image and model data.
    """
    containers = (package.get("InferenceSpecification") or {}).get("Containers") or []
    if not containers or not containers[0].get("Image") or not containers[0].get("ModelDataUrl"):
        raise InputError(f"model package {package.get('ModelPackageArn')} has no InferenceSpecification container "
                         f"with Image and ModelDataUrl; register it with FineTuneBackend=sagemaker")
    return dict(containers[0])


def execution_role(settings: EndpointConfig, package: Mapping[str, Any], *fallbacks: str | None) -> str | None:
    """The model's execution role: ``registry.endpoint.role_arn``, the package's ``ExecutionRoleArn``
    metadata, then the first non-empty fallback (for example ``sagemaker.role_arn``); ``None`` when none."""
    recorded = (package.get("CustomerMetadataProperties") or {}).get("ExecutionRoleArn")
    for role in (settings.role_arn, recorded, *fallbacks):
        if role:
            return str(role)
    return None


def model_request(package: Mapping[str, Any], name: str, role_arn: str) -> dict[str, Any]:
    """The ``create_model`` request: the package's container fields (image, model data, base model
    channel, environment), tagged with the package ARN (tag values at most 256 characters)."""
    source = package_container(package)
    container = {k: source[k] for k in ("Image", "ModelDataUrl", "AdditionalModelDataSources", "Environment")
                 if source.get(k)}
    request: dict[str, Any] = {"ModelName": name, "ExecutionRoleArn": role_arn, "PrimaryContainer": container}
    arn = str(package.get("ModelPackageArn") or "")
    if 0 < len(arn) <= 256:
        request["Tags"] = [{"Key": TAG_PACKAGE, "Value": arn}]
    return request


def endpoint_config_request(name: str, model_name: str, settings: EndpointConfig) -> dict[str, Any]:
    """The ``create_endpoint_config`` request: one variant with all the traffic."""
    return {"EndpointConfigName": name,
            "ProductionVariants": [{"VariantName": VARIANT_NAME, "ModelName": model_name,
                                    "InstanceType": settings.instance_type,
                                    "InitialInstanceCount": settings.initial_instance_count,
                                    "InitialVariantWeight": 1.0}]}


@dataclass(frozen=True)
class DeploymentAction:
    """What the approval did: ``action`` (created, updated, exists, superseded, deleted, none), why, the
    names involved and what was cleaned up (deleted replaced models and configurations)."""

    action: str
    reason: str
    endpoint_name: str = ""
    endpoint_config_name: str = ""
    model_name: str = ""
    cleaned: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        """Plain dict for logs and the Lambda's return value."""
        return {"action": self.action, "reason": self.reason, "endpointName": self.endpoint_name,
                "endpointConfigName": self.endpoint_config_name, "modelName": self.model_name,
                "cleanedUp": list(self.cleaned)}


class MetadataSink(Protocol):
    """The part of a model registry the approval writes to."""

    def update_metadata(self, arn: str, properties: Mapping[str, str]) -> None:
        """Add or replace customer metadata properties."""
        ...


def deploy_package(package: Mapping[str, Any], settings: EndpointConfig, endpoint: str,
                   deployment: ModelDeployment, role_arn: str | None) -> DeploymentAction:
    """Deploy an approved package (see the module docstring); idempotent.

    Raises:
        InputError: no execution role, no serving container, or ``settings.instance_type`` is not one of
            the package's ``SupportedRealtimeInferenceInstanceTypes`` (all before anything is created).
        EndpointBusyError: the endpoint serves another package and cannot be updated now.
    """
    names = deployment_names(package, endpoint)
    supported = (package.get("InferenceSpecification") or {}).get("SupportedRealtimeInferenceInstanceTypes") or []
    if supported and settings.instance_type not in supported:
        raise InputError(f"registry.endpoint.instance_type {settings.instance_type} is not among the package's "
                         f"SupportedRealtimeInferenceInstanceTypes {supported}; change one of them")
    if not role_arn:
        raise InputError("deploying a model needs a SageMaker execution role: set registry.endpoint.role_arn or "
                         "sagemaker.role_arn (or pass ExecutionRoleArn at registration)")
    create_model = model_request(package, names.model, role_arn)
    live = deployment.describe_endpoint(names.endpoint)
    if not deployment.model_exists(names.model):
        deployment.create_model(create_model)
    if not deployment.endpoint_config_exists(names.endpoint_config):
        deployment.create_endpoint_config(endpoint_config_request(names.endpoint_config, names.model, settings))
    tags = create_model.get("Tags")
    if live is None:
        deployment.create_endpoint({"EndpointName": names.endpoint, "EndpointConfigName": names.endpoint_config,
                                    **({"Tags": tags} if tags else {})})
        return _action("created", f"endpoint {names.endpoint} created with {names.endpoint_config} "
                                  f"({settings.initial_instance_count} x {settings.instance_type})", names)
    status, current = live.get("EndpointStatus"), live.get("EndpointConfigName")
    if current == names.endpoint_config:
        return _action("exists", f"endpoint {names.endpoint} already serves {names.endpoint_config} ({status})", names)
    if status in BUSY_STATUSES or status == "Failed":
        hint = "delete it, then approve again" if status == "Failed" else "the event is retried"
        raise EndpointBusyError(f"endpoint {names.endpoint} is {status} (serving {current}); it cannot be updated "
                                f"to {names.endpoint_config} now: {hint}")
    deployment.update_endpoint(names.endpoint, names.endpoint_config)
    return _action("updated", f"endpoint {names.endpoint} updated from {current} to {names.endpoint_config}; "
                              f"{current} is deleted once the endpoint is InService", names)


def remove_package(package: Mapping[str, Any], endpoint: str, deployment: ModelDeployment) -> DeploymentAction:
    """Delete what the package's deployment created: the endpoint when it serves this package, then the
    package's endpoint configuration and model. Absent resources are skipped (idempotent)."""
    names = deployment_names(package, endpoint)
    deleted = []
    live = deployment.describe_endpoint(names.endpoint)
    if live is not None and live.get("EndpointConfigName") == names.endpoint_config \
            and live.get("EndpointStatus") != "Deleting":
        deployment.delete_endpoint(names.endpoint)
        deleted.append(f"endpoint {names.endpoint}")
    if deployment.endpoint_config_exists(names.endpoint_config):
        deployment.delete_endpoint_config(names.endpoint_config)
        deleted.append(f"endpoint config {names.endpoint_config}")
    if deployment.model_exists(names.model):
        deployment.delete_model(names.model)
        deleted.append(f"model {names.model}")
    if not deleted:
        return _action("none", f"nothing of {names.model} to delete", names)
    return _action("deleted", "deleted " + ", ".join(deleted), names)


def cleanup_replaced(group: str, endpoint: str, deployment: ModelDeployment) -> list[str]:
    """Delete the group's models and endpoint configurations (``<group>-v<n>``) that the endpoint no longer
    uses, once it is ``InService``; returns the deleted names (none while it is changing or absent).

    A model created by an approval that has not yet updated the endpoint counts as replaced too: two
    approvals of the same group seconds apart can delete each other's new model (approve again then)."""
    live = deployment.describe_endpoint(endpoint)
    if live is None or live.get("EndpointStatus") != "InService":
        return []
    keep, prefix = live.get("EndpointConfigName"), version_prefix(group)
    pattern = re.compile(rf"^{re.escape(prefix)}\d+$")
    deleted = []
    for kind, delete in (("endpoint_config", deployment.delete_endpoint_config), ("model", deployment.delete_model)):
        for name in deployment.list_names(kind, prefix):
            if pattern.match(name) and name != keep:
                delete(name)
                deleted.append(f"{kind} {name}")
    return deleted


def on_endpoint_package_status_change(package: Mapping[str, Any], settings: EndpointConfig, endpoint: str,
                                      deployment: ModelDeployment, registry: MetadataSink | None = None,
                                      role_arn: str | None = None) -> DeploymentAction:
    """React to a LoRA package's approval status (see the module docstring).

    Args:
        package: the package as ``describe_model_package`` returns it.
        settings: ``registry.endpoint``.
        endpoint: the endpoint name (:func:`core.mlops_config.endpoint_name`).
        deployment: the backend.
        registry: where to record ``EndpointName``, ``EndpointConfigName``, ``SageMakerModelName`` and
            ``DeploymentStatus`` (``Deployed`` or ``Removed``) on the package, if given.
        role_arn: the execution role of the model (:func:`execution_role`).

    Returns:
        The :class:`DeploymentAction`; ``none`` for another status or a disabled setting.

    Raises:
        InputError, EndpointBusyError: see :func:`deploy_package`.
    """
    status, arn = package.get("ModelApprovalStatus"), str(package.get("ModelPackageArn") or "")
    metadata = package.get("CustomerMetadataProperties") or {}
    if status not in ("Approved", "Rejected"):
        return DeploymentAction("none", f"status {status}: nothing to do")
    names = deployment_names(package, endpoint)
    if status == "Approved":
        if not settings.enabled:
            return DeploymentAction("none", "registry.endpoint.enabled is false")
        if metadata.get(META_DEPLOYMENT_STATUS) == "Deployed" and \
                (deployment.describe_endpoint(names.endpoint) or {}).get("EndpointConfigName") != names.endpoint_config:
            return _action("superseded", f"{arn} was deployed before and has since been replaced or removed; a "
                                         f"repeated event changes nothing (reject and approve it to roll back)", names)
        action = deploy_package(package, settings, endpoint, deployment, role_arn)
        cleaned = tuple(cleanup_replaced(str(package["ModelPackageGroupName"]), endpoint, deployment))
        action = DeploymentAction(action.action, action.reason, action.endpoint_name, action.endpoint_config_name,
                                  action.model_name, cleaned)
        log.info("%s: %s%s", arn, action.reason, f"; cleaned up {', '.join(cleaned)}" if cleaned else "")
        if registry is not None and arn:
            registry.update_metadata(arn, {META_ENDPOINT_NAME: names.endpoint,
                                           META_ENDPOINT_CONFIG: names.endpoint_config,
                                           META_MODEL_NAME: names.model, META_DEPLOYMENT_STATUS: "Deployed"})
        return action
    if not settings.delete_on_reject:
        return _action("none", "registry.endpoint.delete_on_reject is false", names)
    action = remove_package(package, endpoint, deployment)
    if registry is not None and arn and (action.action == "deleted" or META_DEPLOYMENT_STATUS in metadata):
        registry.update_metadata(arn, {META_DEPLOYMENT_STATUS: "Removed"})
    return action


def _action(action: str, reason: str, names: DeploymentNames) -> DeploymentAction:
    return DeploymentAction(action, reason, names.endpoint, names.endpoint_config, names.model)
