"""Scheduled reconciler: EventBridge delivery is best effort, so every hour (for example) this
answers Bedrock jobs and A2I reviews whose completion events were missed, and enforces the watchdogs
(``finetune.watchdog_hours``, ``review.watchdog_hours``); answers the evaluation throughput's provisioning step
once it is InService and deletes evaluation throughputs whose execution has ended; retries approvals whose
deployment failed (:mod:`containers.lambda_handlers.approval`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from containers.lambda_handlers.approval import retry_unhandled
from containers.lambda_handlers.evaluation_throughput import reconcile_evaluation_throughputs
from containers.lambda_handlers.finetune_handlers import reconcile_jobs
from containers.lambda_handlers.review_handlers import reconcile_reviews
from containers.lambda_handlers.runtime import Runtime, default_runtime

log = logging.getLogger(__name__)


def handler(event: Mapping[str, Any], context: Any = None, runtime: Runtime | None = None) -> dict:
    """Lambda entry point (EventBridge schedule): ``{"jobs": [...], "reviews": [...]}``."""
    runtime = runtime or default_runtime()
    result = {"jobs": reconcile_jobs(runtime), "reviews": reconcile_reviews(runtime),
              "evaluationThroughputs": reconcile_evaluation_throughputs(runtime),
              "approvals": retry_unhandled(runtime)}
    log.info("reconciled: %s", result)
    return result
