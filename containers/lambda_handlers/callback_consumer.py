"""The CallbackSteps' SQS consumer: fail loudly, never hang.

SageMaker puts ``{"token", "pipelineExecutionArn", "arguments": {...}}`` on the queue when a
CallbackStep starts; ``arguments["Task"]`` says which step (``HumanReview``, ``FineTune``, or the Bedrock
evaluation throughput's ``ProvisionEvaluationModel`` / ``ReleaseEvaluationModel``). When the execution is
stopped, it adds a message whose ``status`` (or ``Status``) is ``Stopping`` and waits until the consumer
answers: the consumer stops the step's work (human loops, the Bedrock job) and answers with a failure.

What happens to an error (:func:`handle_record`):

- an error a retry cannot fix (our :class:`~core.errors.InputError`, ``AccessDeniedException``, a Bedrock
  ``ValidationException``, a role that cannot be assumed, a bug: anything botocore's retry rules do not call
  retryable, :func:`steps.retry_policy.is_retryable`) answers ``SendPipelineExecutionStepFailure`` at once
  with the error as the reason (cut to 256 characters), and the message is consumed;
- throttling, HTTP 5xx and connection errors leave the message on the queue (the batch response lists it in
  ``batchItemFailures``; the event source mapping needs ``ReportBatchItemFailures``); every start is
  idempotent, so a repeat is harmless;
- a message delivered ``max_receive_count`` times (SQS ``ApproximateReceiveCount``; the environment variable
  ``STORYBOARD_CALLBACK_MAX_RECEIVE_COUNT``, which must equal the queue's redrive ``maxReceiveCount``) and
  still failing answers the step failure and is then left to SQS, which moves it to the dead-letter queue:
  the step never stays Executing;
- a message that cannot be answered (not JSON, no token) is left for the dead-letter queue.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from containers.lambda_handlers import evaluation_throughput, finetune_handlers, review_handlers
from containers.lambda_handlers.callbacks import SageMakerPipelineCallback
from containers.lambda_handlers.runtime import Runtime, default_runtime
from core.errors import InputError
from steps.retry_policy import describe_error, is_retryable

log = logging.getLogger(__name__)

TASKS = ("HumanReview", "FineTune", evaluation_throughput.PROVISION_TASK, evaluation_throughput.RELEASE_TASK)
MAX_RECEIVE_ENV = "STORYBOARD_CALLBACK_MAX_RECEIVE_COUNT"
DEFAULT_MAX_RECEIVE_COUNT = 5


def max_receive_count(environ: Mapping[str, str] | None = None) -> int:
    """Deliveries after which a retryable failure fails the step: ``$STORYBOARD_CALLBACK_MAX_RECEIVE_COUNT``
    (the queue's redrive ``maxReceiveCount``, 1 to 1,000 per the SQS ``RedrivePolicy``), default 5.

    Raises:
        InputError: the variable is not an integer from 1 to 1,000.
    """
    env = os.environ if environ is None else environ
    raw = str(env.get(MAX_RECEIVE_ENV, "") or "").strip()
    if not raw:
        return DEFAULT_MAX_RECEIVE_COUNT
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise InputError(f"{MAX_RECEIVE_ENV}={raw!r}: give the queue's redrive maxReceiveCount (1 to 1,000)")
    return int(raw)


def handle_message(message: Mapping[str, Any], runtime: Runtime) -> dict:
    """Handle one callback message; returns a summary for the log.

    Raises:
        InputError: the message is malformed (no token: it cannot be answered) or its arguments are bad.
        Exception: whatever starting the work raised; :func:`handle_record` decides what it means.
    """
    token = str(message.get("token") or "")
    execution = str(message.get("pipelineExecutionArn") or "")
    if not token:
        raise InputError(f"callback message without a token: {json.dumps(message)[:200]}")
    args = message.get("arguments") or {}
    task = str(args.get("Task") or "")
    status = str(message.get("status") or message.get("Status") or "")
    if status.lower() == "stopping":
        stopped: list[str] = []
        if task in ("", "HumanReview"):
            loops = review_handlers.stop_review(token, execution, runtime)
            stopped += [f"{len(loops)} human loops"] if loops else []
        if task in ("", "FineTune"):
            job = finetune_handlers.stop_finetune(token, execution, runtime, args.get("JobName"))
            stopped += [f"job {job}"] if job else []
        if task == evaluation_throughput.PROVISION_TASK:  # else the execution-status event releases it
            released = evaluation_throughput.release_for_execution(execution, runtime)
            stopped += [f"throughput {released}"] if released else []
        reason = "stopped by a StopPipelineExecution request" + (f"; stopped {', '.join(stopped)}" if stopped else "")
        SageMakerPipelineCallback(runtime.client("sagemaker")).failure(token, reason, "stopping")
        return {"task": task or "unknown", "stopping": True, "stopped": stopped}
    if task == "HumanReview":
        return {"task": task, **review_handlers.start_review(token, execution, args, runtime)}
    if task == "FineTune":
        return {"task": task, **finetune_handlers.start_finetune(token, execution, args, runtime)}
    if task == evaluation_throughput.PROVISION_TASK:
        return {"task": task, **evaluation_throughput.start_provisioning(token, execution, args, runtime)}
    if task == evaluation_throughput.RELEASE_TASK:
        return {"task": task, **evaluation_throughput.release(token, execution, args, runtime)}
    raise InputError(f"callback argument Task must be one of {list(TASKS)}, got {task!r}")


def _receive_count(record: Mapping[str, Any]) -> int:
    raw = str((record.get("attributes") or {}).get("ApproximateReceiveCount") or "1")
    return int(raw) if raw.isdigit() else 1


def handle_record(record: Mapping[str, Any], runtime: Runtime, max_receives: int) -> bool:
    """Handle one SQS record (see the module docstring); returns ``True`` to leave it on the queue.

    Args:
        record: an SQS event record (``messageId``, ``body``, ``attributes.ApproximateReceiveCount``).
        runtime: configuration and clients.
        max_receives: the queue's redrive ``maxReceiveCount``.
    """
    message_id = record.get("messageId")
    try:
        message = json.loads(record["body"])
        if not isinstance(message, dict) or not message.get("token"):
            raise ValueError("not a callback message (no token)")
    except (KeyError, TypeError, ValueError) as err:
        log.error("callback message %s cannot be answered (%s); it goes to the dead-letter queue", message_id, err)
        return True
    token = str(message["token"])
    task = str((message.get("arguments") or {}).get("Task") or "callback")
    try:
        log.info("callback message: %s", handle_message(message, runtime))
        return False
    except Exception as err:  # noqa: BLE001 - every error is classified below: answered or retried
        error = err
    receives = _receive_count(record)
    retryable = not isinstance(error, InputError) and is_retryable(error)
    if retryable and receives < max_receives:
        log.warning("%s: %s (delivery %d of %d); SQS will deliver it again", task, describe_error(error), receives,
                    max_receives)
        return True
    if retryable:
        reason = f"{task}: still failing after {receives} deliveries: {describe_error(error)}"
    elif isinstance(error, InputError):
        reason = f"{task}: {error}"
    else:
        log.exception("%s failed; a retry cannot fix it", task, exc_info=error)
        reason = f"{task}: {describe_error(error)}"
    try:
        SageMakerPipelineCallback(runtime.client("sagemaker")).failure(token, reason, "error")
    except Exception as answer_error:  # noqa: BLE001 - the answer failed too: keep the message for a retry/DLQ
        log.error("could not fail the step of message %s (%s): %s", message_id, describe_error(answer_error), reason)
        return True
    log.warning("step failed: %s", reason)
    return retryable  # exhausted retries: SQS moves the message to the dead-letter queue for inspection


def handle_sqs_event(event: Mapping[str, Any], runtime: Runtime, max_receives: int | None = None) -> dict:
    """Handle an SQS batch; returns ``{"batchItemFailures": [{"itemIdentifier": messageId}]}``."""
    limit = max_receive_count() if max_receives is None else max_receives
    failures = [{"itemIdentifier": record.get("messageId")} for record in event.get("Records") or []
                if handle_record(record, runtime, limit)]
    return {"batchItemFailures": failures}


def handler(event: Mapping[str, Any], context: Any = None) -> dict:
    """Lambda entry point (SQS trigger with ``ReportBatchItemFailures``)."""
    return handle_sqs_event(event, default_runtime())
