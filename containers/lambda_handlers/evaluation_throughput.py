"""The Bedrock backend's evaluation throughput: provision before Evaluate, release after it and on any failure.

Three entry points share :class:`steps.evaluation_throughput.EvaluationThroughputs`:

- the callback consumer, ``Task`` ``ProvisionEvaluationModel`` (:func:`start_provisioning`): creates the
  no-commitment throughput named after the execution for ``CustomModelArn`` (nothing for a dry run or when
  ``EvaluationImagesUri`` supplies the images), tagged with the callback token; answers at once when it is
  already InService, else the reconciler answers when it is (creation takes 20 to 30 minutes);
  ``ReleaseEvaluationModel`` (:func:`release`): deletes it after Evaluate and answers;
- :func:`execution_status_handler`, EventBridge ``SageMaker Model Building Pipeline Execution Status Change``:
  when an execution ends (Failed, Stopped, or Succeeded as a backstop) its throughput is deleted. This, not a
  step on a failure branch, is the clean-up on failure: a step with a ``Failed`` trigger runs only after the one
  step it names, never when an earlier step fails or the execution is stopped, and it turns the execution's
  status into ``CompletedWithFailures``; the event covers every way an execution ends;
- :func:`reconcile_evaluation_throughputs` (the scheduled reconciler): answers provisioning steps whose
  throughput became InService or Failed, and deletes throughputs whose execution is no longer running
  (missed events, a delete refused while Creating).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from containers.lambda_handlers.callbacks import SageMakerPipelineCallback
from containers.lambda_handlers.runtime import Runtime, default_runtime
from core.errors import InputError
from steps.evaluation_throughput import (
    TAG_ANSWERED,
    TAG_CALLBACK_TOKEN,
    TAG_CUSTOM_MODEL,
    TAG_EXECUTION,
    EvaluationThroughputs,
    ThroughputState,
    evaluation_throughput_name,
)
from steps.retry_policy import describe_error, is_retryable

log = logging.getLogger(__name__)

PROVISION_TASK = "ProvisionEvaluationModel"
RELEASE_TASK = "ReleaseEvaluationModel"
OUTPUTS = ("ProvisionedModelArn", "ProvisionedModelName")
EXECUTION_DETAIL_TYPE = "SageMaker Model Building Pipeline Execution Status Change"
ENDED = ("Succeeded", "Failed", "Stopped")
RUNNING = ("Executing", "Stopping")


def _service(runtime: Runtime) -> EvaluationThroughputs:
    return EvaluationThroughputs(runtime.client("bedrock"))


def _name(runtime: Runtime, execution_arn: str) -> str:
    return evaluation_throughput_name(runtime.config.project, execution_arn)


def _truthy(value: Any) -> bool:
    return str(value or "").strip().lower() in ("true", "1", "yes")


def _answer_ready(runtime: Runtime, token: str, state: ThroughputState) -> None:
    SageMakerPipelineCallback(runtime.client("sagemaker")).success(
        token, {"ProvisionedModelArn": state.arn, "ProvisionedModelName": state.name}, f"ready|{state.arn}")
    _service(runtime).tag(state.arn, {TAG_ANSWERED: "InService"})


def _fail_provisioning(runtime: Runtime, token: str, state: ThroughputState) -> None:
    SageMakerPipelineCallback(runtime.client("sagemaker")).failure(
        token, f"{PROVISION_TASK}: provisioned throughput {state.name} Failed: {state.failure_message or 'no reason'}",
        f"failed|{state.arn}")
    service = _service(runtime)
    service.tag(state.arn, {TAG_ANSWERED: "Failed"})
    service.delete(state.arn)


def start_provisioning(token: str, execution_arn: str, args: Mapping[str, Any], runtime: Runtime) -> dict[str, str]:
    """Handle a ``ProvisionEvaluationModel`` message (see the module docstring).

    Arguments: ``CustomModelArn`` and ``DryRun`` (FineTune's outputs), ``EvaluationImagesUri`` (the parameter).

    Raises:
        InputError: an existing throughput of that name serves another model, or it Failed.
    """
    model = str(args.get("CustomModelArn") or "").strip()
    callback = SageMakerPipelineCallback(runtime.client("sagemaker"))
    skip = ("FineTune was a dry run" if _truthy(args.get("DryRun")) else
            "EvaluationImagesUri supplies the fine-tuned images" if str(args.get("EvaluationImagesUri") or "").strip()
            else "no CustomModelArn" if not model else "")
    if skip:
        callback.success(token, {"ProvisionedModelArn": "", "ProvisionedModelName": ""}, "skipped")
        return {"provisioned": "false", "reason": f"nothing provisioned: {skip}"}
    state = _service(runtime).ensure(_name(runtime, execution_arn), model, execution_arn, token)
    if state.status == "InService":
        _answer_ready(runtime, token, state)
    elif state.status == "Failed":
        _fail_provisioning(runtime, token, state)
    return {"provisioned": "true", "throughput": state.arn, "status": state.status}


def release_for_execution(execution_arn: str, runtime: Runtime) -> str | None:
    """Delete the execution's evaluation throughput; returns its name, or ``None`` when there was none."""
    if not execution_arn:
        return None
    name = _name(runtime, execution_arn)
    return name if _service(runtime).delete(name) else None


def release(token: str, execution_arn: str, args: Mapping[str, Any], runtime: Runtime) -> dict[str, str]:
    """Handle a ``ReleaseEvaluationModel`` message: delete the throughput (if any) and answer success."""
    released = release_for_execution(execution_arn, runtime)
    SageMakerPipelineCallback(runtime.client("sagemaker")).success(
        token, {"Released": "true" if released else "false"}, "released")
    return {"released": released or ""}


def on_execution_status(event: Mapping[str, Any], runtime: Runtime) -> str:
    """Handle one execution-status event: delete the ended execution's throughput; returns what happened.

    Raises:
        ClientError: Bedrock refused the delete with a retryable error (the asynchronous invocation retries);
            any other refusal is left to the reconciler, which lists the throughputs of ended executions.
    """
    detail = event.get("detail") or {}
    execution = str(detail.get("pipelineExecutionArn") or "")
    status = str(detail.get("currentPipelineExecutionStatus") or "")
    if status not in ENDED:
        return f"ignored: status {status or 'missing'}"
    try:
        released = release_for_execution(execution, runtime)
    except ClientError as err:  # e.g. still Creating: the reconciler deletes it later
        if is_retryable(err):
            raise
        return f"left for the reconciler: {describe_error(err)}"
    return f"released {released}" if released else "nothing to release"


def execution_status_handler(event: Mapping[str, Any], context: Any = None, runtime: Runtime | None = None) -> dict:
    """Lambda entry point for the pipeline execution-status EventBridge rule."""
    outcome = on_execution_status(event, runtime or default_runtime())
    log.info("execution status event: %s", outcome)
    return {"outcome": outcome}


def reconcile_evaluation_throughputs(runtime: Runtime) -> list[dict[str, str]]:
    """Answer provisioning steps whose throughput is ready or failed; delete throughputs of ended executions."""
    service = _service(runtime)
    sm = runtime.client("sagemaker")
    report = []
    for summary in service.list_evaluation(runtime.config.project):
        arn = str(summary.get("provisionedModelArn") or "")
        tags = service.tags(arn)
        execution = tags.get(TAG_EXECUTION, "")
        status = "unknown"
        if execution:
            try:
                status = sm.describe_pipeline_execution(PipelineExecutionArn=execution)["PipelineExecutionStatus"]
            except ClientError as err:
                if err.response["Error"].get("Code") not in ("ResourceNotFound", "ValidationException"):
                    raise
                status = "gone"
        if status not in RUNNING and status != "unknown":
            try:
                service.delete(arn)
                report.append({"throughput": arn, "outcome": f"deleted (execution {status})"})
            except ClientError as err:
                report.append({"throughput": arn, "outcome": f"delete refused: {err.response['Error'].get('Code')}"})
            continue
        token = tags.get(TAG_CALLBACK_TOKEN)
        if not token or tags.get(TAG_ANSWERED):
            continue
        state = service.get(arn)
        if state is None:
            continue
        if state.status == "InService":
            try:
                service.check_serves(state, tags.get(TAG_CUSTOM_MODEL) or state.model_arn)
            except InputError as err:
                report.append({"throughput": arn, "outcome": f"not answered: {err}"})
                continue
            _answer_ready(runtime, token, state)
            report.append({"throughput": arn, "outcome": "answered success"})
        elif state.status == "Failed":
            _fail_provisioning(runtime, token, state)
            report.append({"throughput": arn, "outcome": "answered failure"})
    return report
