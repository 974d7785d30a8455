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

from containers.lambda_handlers.runtime import Runtime, default_runtime
from pipeline.sagemaker_config import ROLE_ARN_ENV
from steps.endpoint_deployment import SageMakerEndpointDeployment, cleanup_replaced, execution_role
from steps.mlops_config import endpoint_name, model_package_group_name
from steps.registry import (
    BedrockProvisionedThroughputs,
    SageMakerModelRegistry,
    on_status_change,
    package_backend,
)

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
    if package_backend(package) == "sagemaker":
        role = execution_role(config.registry.endpoint, package, os.environ.get(ROLE_ARN_ENV),
                              config.sagemaker.role_arn)
        action = on_status_change(package, config.registry, endpoint, registry=registry, role_arn=role,
                                  deployment=SageMakerEndpointDeployment(runtime.client("sagemaker")))
    else:
        action = on_status_change(package, config.registry, endpoint, registry=registry,
                                  throughputs=BedrockProvisionedThroughputs(runtime.client("bedrock")))
    log.info("approval %s: %s", arn, action.reason)
    return action.to_json()


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
