"""The Amazon A2I resources a review's human loops run on: the worker task UI and the flow definition,
created when missing and reused otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.errors import InputError
from core.mlops_config import ReviewConfig


def ensure_human_task_ui(sagemaker: Any, name: str, template: str) -> str:
    """The worker task template's ARN, creating it if needed (``create_human_task_ui``).

    An existing UI of that name is reused as is (templates cannot be updated in place: give a new
    ``review.human_task_ui_name`` to change it).
    """
    from botocore.exceptions import ClientError

    try:
        return sagemaker.describe_human_task_ui(HumanTaskUiName=name)["HumanTaskUiArn"]
    except ClientError as err:
        if err.response["Error"].get("Code") not in ("ResourceNotFound", "ValidationException"):
            raise
    try:
        return sagemaker.create_human_task_ui(HumanTaskUiName=name, UiTemplate={"Content": template})["HumanTaskUiArn"]
    except ClientError as err:
        if err.response["Error"].get("Code") == "ResourceInUse":
            return sagemaker.describe_human_task_ui(HumanTaskUiName=name)["HumanTaskUiArn"]
        raise


def flow_definition_request(name: str, review: ReviewConfig, human_task_ui_arn: str, output_s3_uri: str) -> dict:
    """The ``create_flow_definition`` request: a custom task type, so no ``HumanLoopRequestSource``.

    Raises:
        InputError: ``review.workteam_arn`` or ``review.role_arn`` is not set.
    """
    missing = [k for k in ("workteam_arn", "role_arn") if not getattr(review, k)]
    if missing:
        raise InputError(f"ReviewMode a2i needs review.{' and review.'.join(missing)} in pipeline.yaml "
                         f"(or review.flow_definition_arn naming an existing flow definition)")
    return {
        "FlowDefinitionName": name,
        "HumanLoopConfig": {
            "WorkteamArn": review.workteam_arn,
            "HumanTaskUiArn": human_task_ui_arn,
            "TaskTitle": review.task_title,
            "TaskDescription": review.task_description,
            "TaskCount": review.task_count,
            "TaskAvailabilityLifetimeInSeconds": review.task_availability_s,
            "TaskTimeLimitInSeconds": review.task_time_limit_s,
            "TaskKeywords": ["image", "caption", "review"],
        },
        "OutputConfig": {"S3OutputPath": output_s3_uri},
        "RoleArn": review.role_arn,
    }


def ensure_flow_definition(sagemaker: Any, request: Mapping[str, Any], timeout_s: float | None = None) -> str:
    """The flow definition's ARN, creating it from ``request`` when none of that name exists, once it is Active
    (:func:`steps.a2i_flow.await_flow_definition_active`; loops must not start before).

    Raises:
        InputError: the flow definition is Failed (its FailureReason is quoted), Deleting, or not Active in time.
    """
    from botocore.exceptions import ClientError

    from steps.a2i_flow import ACTIVE_TIMEOUT_S, await_flow_definition_active

    name = request["FlowDefinitionName"]
    try:
        found = sagemaker.describe_flow_definition(FlowDefinitionName=name)
    except ClientError as err:
        if err.response["Error"].get("Code") not in ("ResourceNotFound", "ValidationException"):
            raise
        try:
            found = {"FlowDefinitionArn": sagemaker.create_flow_definition(**request)["FlowDefinitionArn"],
                     "FlowDefinitionStatus": "Initializing"}
        except ClientError as err2:
            if err2.response["Error"].get("Code") != "ResourceInUse":
                raise
            found = sagemaker.describe_flow_definition(FlowDefinitionName=name)
    if found.get("FlowDefinitionStatus") != "Active":
        found = await_flow_definition_active(sagemaker, name, ACTIVE_TIMEOUT_S if timeout_s is None else timeout_s)
    return found["FlowDefinitionArn"]
