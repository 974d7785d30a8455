"""Model package approval and the endpoint's clean-up, both from EventBridge (source ``aws.sagemaker``).

- ``SageMaker Model Package State Change`` (``detail.ModelPackageArn``, ``detail.ModelPackageGroupName``):
  the package is described (the event may lag; the package is the truth) and handled by its backend
  (:func:`steps.registry.on_status_change`). A LoRA package (``FineTuneBackend`` ``sagemaker``):
  ``Approved`` creates the model, endpoint configuration and endpoint (``registry.endpoint``), or updates
  the endpoint to it; ``Rejected`` deletes what its deployment created. A Bedrock package: a Provisioned
  Throughput is created, re-pointed or deleted. The outcome is recorded in the package's metadata.
- ``SageMaker Endpoint State Change`` (``detail.EndpointName``, ``detail.EndpointStatus``): when the
  configured endpoint is ``InService``, the models and endpoint configurations it replaced are deleted
  (:func:`steps.endpoint_deployment.cleanup_replaced`).

Every update of a package raises the state-change event again, including the metadata this handler writes, so
what was handled is recorded on the package (:mod:`steps.approval_state`): an event whose status was already
handled changes nothing, and a failed deployment is recorded (``DeploymentError``) and retried by the scheduled
reconciler (:func:`retry_unhandled`), which also covers lost events.

Events for other groups or endpoints than the configured ones are ignored. The model's execution role is
``registry.endpoint.role_arn``, else the package's ``ExecutionRoleArn`` metadata, else
``$STORYBOARD_ROLE_ARN`` or ``sagemaker.role_arn``. An endpoint that is busy (being created or updated)
raises :class:`~steps.endpoint_deployment.EndpointBusyError`, so the asynchronous invocation is retried.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from containers.lambda_handlers.runtime import Runtime, default_runtime
from core.mlops_config import endpoint_name, model_package_group_name
from core.sagemaker_config import ROLE_ARN_ENV
from steps import approval_state
from steps.endpoint_deployment import (
    EndpointBusyError,
    SageMakerEndpointDeployment,
    cleanup_replaced,
    execution_role,
)
from steps.provisioned_throughput import ThroughputBusyError
from steps.registry import (
    BedrockProvisionedThroughputs,
    SageMakerModelRegistry,
    on_status_change,
    package_backend,
)
from steps.retry_policy import describe_error, is_retryable

log = logging.getLogger(__name__)

DETAIL_TYPE = "SageMaker Model Package State Change"
ENDPOINT_DETAIL_TYPE = "SageMaker Endpoint State Change"


def handle(event: Mapping[str, Any], runtime: Runtime) -> dict[str, Any]:
    """React to one state-change event; returns the action taken (``action``, ``reason``, names)."""
    detail = event.get("detail") or {}
    config = runtime.config
    group = model_package_group_name(config.registry, config.project)
    endpoint = endpoint_name(config.registry, config.project)
    if event.get("detail-type") == ENDPOINT_DETAIL_TYPE:
        return handle_endpoint_state(detail, group, endpoint, runtime)
    if detail.get("ModelPackageGroupName") not in (None, group):
        return {"action": "none", "reason": f"group {detail.get('ModelPackageGroupName')} is not {group}"}
    arn = detail.get("ModelPackageArn")
    if not arn:
        return {"action": "none", "reason": "event without ModelPackageArn"}
    registry = SageMakerModelRegistry(runtime.client("sagemaker"))
    package = registry.describe_package(arn)
    skip = approval_state.skip_event_reason(package)
    if skip:
        log.info("approval %s: %s", arn, skip)
        return {"action": "none", "reason": skip}
    return handle_package(package, runtime, registry)


def handle_package(package: Mapping[str, Any], runtime: Runtime, registry: SageMakerModelRegistry) -> dict[str, Any]:
    """Deploy or clean up ``package`` by its backend and record the outcome on it.

    Raises:
        Exception: a retryable AWS error, or a busy endpoint or throughput, after recording it (the asynchronous
            invocation retries; the reconciler too). Other failures are recorded and returned as ``failed``.
    """
    config = runtime.config
    arn = str(package["ModelPackageArn"])
    endpoint = endpoint_name(config.registry, config.project)
    try:
        if package_backend(package) == "sagemaker":
            role = execution_role(config.registry.endpoint, package, os.environ.get(ROLE_ARN_ENV),
                                  config.sagemaker.role_arn)
            action = on_status_change(package, config.registry, endpoint, registry=registry, role_arn=role,
                                      deployment=SageMakerEndpointDeployment(runtime.client("sagemaker")))
        else:
            action = on_status_change(package, config.registry, endpoint, registry=registry,
                                      throughputs=BedrockProvisionedThroughputs(runtime.client("bedrock")))
    except Exception as err:  # noqa: BLE001 - recorded on the package, then re-raised when a retry may help
        log.warning("approval %s failed: %s", arn, describe_error(err))
        approval_state.record_failure(registry, registry.describe_package(arn), describe_error(err))
        if is_retryable(err) or isinstance(err, (EndpointBusyError, ThroughputBusyError)):
            raise
        return {"action": "failed", "reason": describe_error(err)}
    approval_state.record_success(registry, package)
    log.info("approval %s: %s", arn, action.reason)
    return action.to_json()


def retry_unhandled(runtime: Runtime) -> list[dict[str, str]]:
    """The reconciler's part: handle again the group's newest Approved package and recently Rejected ones whose
    deployment failed or whose event was lost (:func:`steps.approval_state.packages_to_retry`)."""
    config = runtime.config
    group = model_package_group_name(config.registry, config.project)
    sm = runtime.client("sagemaker")
    registry = SageMakerModelRegistry(sm)
    try:
        arns = approval_state.packages_to_retry(sm, group)
    except ClientError as err:
        if err.response["Error"].get("Code") not in ("ResourceNotFound", "ValidationException"):
            raise
        return []  # no group yet
    report = []
    for arn in arns:
        try:
            outcome = handle_package(registry.describe_package(arn), runtime, registry)
            report.append({"package": arn, "outcome": f"{outcome['action']}: {outcome['reason']}"})
        except Exception as err:  # noqa: BLE001 - recorded on the package; the next run retries
            report.append({"package": arn, "outcome": f"failed again: {describe_error(err)}"})
    return report


def handle_endpoint_state(detail: Mapping[str, Any], group: str, endpoint: str, runtime: Runtime) -> dict[str, Any]:
    """``SageMaker Endpoint State Change``: clean up what the configured endpoint replaced once InService."""
    if detail.get("EndpointName") != endpoint:
        return {"action": "none", "reason": f"endpoint {detail.get('EndpointName')} is not {endpoint}"}
    deleted = cleanup_replaced(group, endpoint, SageMakerEndpointDeployment(runtime.client("sagemaker")))
    reason = f"deleted {', '.join(deleted)}" if deleted else f"nothing to clean up for {endpoint}"
    log.info("endpoint %s (%s): %s", endpoint, detail.get("EndpointStatus"), reason)
    return {"action": "cleaned" if deleted else "none", "reason": reason, "endpointName": endpoint,
            "cleanedUp": deleted}


def handler(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    """Lambda entry point (EventBridge rules)."""
    return handle(event, default_runtime())
