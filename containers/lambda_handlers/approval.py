"""Model package approval: EventBridge ``SageMaker Model Package State Change`` (source
``aws.sagemaker``).

``Approved`` creates a Provisioned Throughput for the package's custom model (idempotent name and
client token) and records it on the package; ``Rejected`` deletes the package's own throughput.
Events for other groups than the configured one are ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from containers.lambda_handlers.runtime import Runtime, default_runtime
from steps.mlops_config import model_package_group_name
from steps.registry import BedrockProvisionedThroughputs, SageMakerModelRegistry, on_package_status_change

log = logging.getLogger(__name__)

DETAIL_TYPE = "SageMaker Model Package State Change"


def handle(event: Mapping[str, Any], runtime: Runtime) -> dict[str, str]:
    """React to one state-change event; returns the action taken."""
    detail = event.get("detail") or {}
    config = runtime.config
    group = model_package_group_name(config.registry, config.project)
    if detail.get("ModelPackageGroupName") not in (None, group):
        return {"action": "none", "reason": f"group {detail.get('ModelPackageGroupName')} is not {group}"}
    arn = detail.get("ModelPackageArn")
    if not arn:
        return {"action": "none", "reason": "event without ModelPackageArn"}
    registry = SageMakerModelRegistry(runtime.client("sagemaker"))
    package = registry.describe_package(arn)  # the event may lag; the package is the truth
    action = on_package_status_change(package, config.registry.provisioned_throughput,
                                      BedrockProvisionedThroughputs(runtime.client("bedrock")), registry)
    log.info("approval %s: %s", arn, action.reason)
    return action.to_json()


def handler(event: Mapping[str, Any], context: Any = None) -> dict[str, str]:
    """Lambda entry point (EventBridge rule)."""
    return handle(event, default_runtime())
