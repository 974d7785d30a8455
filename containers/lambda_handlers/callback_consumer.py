"""The CallbackSteps' SQS consumer.

SageMaker puts ``{"token", "pipelineExecutionArn", "arguments": {...}}`` on the queue when a
CallbackStep starts; ``arguments["Task"]`` says which step (``HumanReview`` or ``FineTune``). When
the execution is stopped, it adds a message whose ``status`` (or ``Status``) is ``Stopping`` and waits
until the consumer answers: the consumer stops the step's work (human loops, the Bedrock job) and
answers with a failure.

Bad input (:class:`~steps.errors.InputError`) fails the step at once with the message as the reason
(cut to 256 characters). Any other error leaves the message on the queue for SQS to deliver again
(the batch response lists it in ``batchItemFailures``; the event source mapping needs
``ReportBatchItemFailures``); every start is idempotent, so a repeat is harmless.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from containers.lambda_handlers import finetune_handlers, review_handlers
from containers.lambda_handlers.callbacks import SageMakerPipelineCallback
from containers.lambda_handlers.runtime import Runtime, default_runtime
from steps.errors import InputError

log = logging.getLogger(__name__)

TASKS = ("HumanReview", "FineTune")


def handle_message(message: Mapping[str, Any], runtime: Runtime) -> dict:
    """Handle one callback message; returns a summary for the log.

    Raises:
        InputError: the message itself is malformed (no token); it cannot be answered.
    """
    token = str(message.get("token") or "")
    execution = str(message.get("pipelineExecutionArn") or "")
    if not token:
        raise InputError(f"callback message without a token: {json.dumps(message)[:200]}")
    args = message.get("arguments") or {}
    task = str(args.get("Task") or "")
    status = str(message.get("status") or message.get("Status") or "")
    callback = SageMakerPipelineCallback(runtime.client("sagemaker"))
    if status.lower() == "stopping":
        stopped: list[str] = []
        if task in ("", "HumanReview"):
            loops = review_handlers.stop_review(token, execution, runtime)
            stopped += [f"{len(loops)} human loops"] if loops else []
        if task in ("", "FineTune"):
            job = finetune_handlers.stop_finetune(token, execution, runtime, args.get("JobName"))
            stopped += [f"job {job}"] if job else []
        reason = "stopped by a StopPipelineExecution request" + (f"; stopped {', '.join(stopped)}" if stopped else "")
        callback.failure(token, reason, "stopping")
        return {"task": task or "unknown", "stopping": True, "stopped": stopped}
    try:
        if task == "HumanReview":
            return {"task": task, **review_handlers.start_review(token, execution, args, runtime)}
        if task == "FineTune":
            return {"task": task, **finetune_handlers.start_finetune(token, execution, args, runtime)}
        raise InputError(f"callback argument Task must be one of {list(TASKS)}, got {task!r}")
    except InputError as err:
        log.warning("%s failed on bad input: %s", task or "callback", err)
        callback.failure(token, f"{task or 'callback'}: {err}", "input-error")
        return {"task": task, "failed": str(err)}


def handle_sqs_event(event: Mapping[str, Any], runtime: Runtime) -> dict:
    """Handle an SQS batch; returns ``{"batchItemFailures": [{"itemIdentifier": messageId}]}``."""
    failures = []
    for record in event.get("Records") or []:
        try:
            message = json.loads(record["body"])
            log.info("callback message: %s", handle_message(message, runtime))
        except Exception:  # noqa: BLE001 - any failure must leave the message for another delivery
            log.exception("callback message %s failed; SQS will deliver it again", record.get("messageId"))
            failures.append({"itemIdentifier": record.get("messageId")})
    return {"batchItemFailures": failures}


def handler(event: Mapping[str, Any], context: Any = None) -> dict:
    """Lambda entry point (SQS trigger)."""
    return handle_sqs_event(event, default_runtime())
