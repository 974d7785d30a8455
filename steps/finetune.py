"""Step 4, FineTune: a Bedrock model customization job on Nova Canvas, or its dry run.

The step never waits for the job: the callback consumer starts it (:class:`BedrockModelCustomization`)
and the Bedrock job-state event (or the reconciler) answers the pipeline. Before anything is paid for,
:func:`prepare_job` validates the training data against the Nova Canvas limits and the request against
botocore's ``bedrock`` service model; the dry run (:class:`DryRunModelCustomization`) stops there and
writes the exact request to ``request.json``.

The request itself (names, inputs, tags, validation) is built by :mod:`steps.customization_request`.

Facts used (DESIGN §5; Bedrock API reference ``GetModelCustomizationJob``, ``GetFoundationModel``):
- Job statuses: InProgress, Completed, Failed, Stopping, Stopped.
- ``get_foundation_model(...)["modelDetails"]["modelLifecycle"]["status"]`` is ACTIVE or LEGACY.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from core import io as sio
from core.errors import InputError
from steps.customization_request import (  # noqa: F401  (re-exported: the request lived here)
    DRY_RUN_PREFIX,
    PLACEHOLDER_BUCKET,
    PLACEHOLDER_ROLE_ARN,
    TAG_ANSWERED,
    TAG_CALLBACK_TOKEN,
    TAG_EXECUTION,
    TAG_VALUE_RE,
    TERMINAL_JOB_STATUSES,
    FineTuneInputs,
    JobNames,
    PreparedJob,
    build_customization_request,
    callback_tags,
    job_names,
    parse_hyperparameters,
    prepare_job,
    with_dry_run_placeholders,
)

log = logging.getLogger(__name__)


# -- job state ------------------------------------------------------------------------------------------


@dataclass
class JobState:
    """A customization job as the handlers need it.

    Attributes:
        job_arn, job_name: identity. status: InProgress, Completed, Failed, Stopping or Stopped.
        output_model_arn: the custom model (Completed). failure_message: why it failed.
        creation_time: when it was created (UTC), where known. tags: the job's tags.
    """

    job_arn: str
    job_name: str
    status: str
    output_model_arn: str | None = None
    failure_message: str | None = None
    creation_time: datetime | None = None
    tags: dict[str, str] = field(default_factory=dict)


def normalise_status(status: str | None) -> str:
    """Bedrock job status in the API's casing (events have been seen in other casings)."""
    lookup = {s.lower(): s for s in ("InProgress", "Completed", "Failed", "Stopping", "Stopped")}
    return lookup.get(str(status or "").replace("_", "").lower(), str(status or ""))


def job_outputs(job_arn: str, custom_model_arn: str, dry_run: bool) -> dict[str, str]:
    """The FineTune step's output parameters (flat strings): JobArn, CustomModelArn, DryRun."""
    return {"JobArn": job_arn, "CustomModelArn": custom_model_arn, "DryRun": "true" if dry_run else "false"}


def dry_run_outputs(names: JobNames) -> dict[str, str]:
    """Outputs of a dry run: ``JobArn`` ``dry-run:<job name>``, no custom model, ``DryRun`` ``"true"``."""
    return job_outputs(DRY_RUN_PREFIX + names.job_name, "", True)


@dataclass(frozen=True)
class JobOutcome:
    """How to answer the pipeline for a finished job: ``success`` with ``outputs``, or a failure ``reason``."""

    success: bool
    outputs: dict[str, str] = field(default_factory=dict)
    reason: str = ""


def outcome_of(state: JobState) -> JobOutcome | None:
    """The answer a job in ``state`` calls for; ``None`` while it is still running.

    Completed without an output model ARN is answered as a failure: the pipeline must never report
    a model that does not exist.
    """
    status = normalise_status(state.status)
    if status == "Completed":
        if not state.output_model_arn:
            return JobOutcome(False, reason=f"Bedrock job {state.job_name} Completed without an outputModelArn")
        return JobOutcome(True, job_outputs(state.job_arn, state.output_model_arn, False))
    if status == "Failed":
        return JobOutcome(False, reason=f"Bedrock job {state.job_name} Failed: {state.failure_message or 'no reason'}")
    if status == "Stopped":
        return JobOutcome(False, reason=f"Bedrock job {state.job_name} was Stopped"
                                        + (f": {state.failure_message}" if state.failure_message else ""))
    return None


@runtime_checkable
class ModelCustomization(Protocol):
    """Bedrock model customization: start, describe, stop and tag jobs."""

    def base_model_status(self, model_id: str) -> str:
        """The base model's lifecycle status (``ACTIVE``, ``LEGACY``) or ``UNKNOWN``."""
        ...

    def start_job(self, request: Mapping[str, Any]) -> str:
        """Start the job (idempotent for the same names); return its ARN."""
        ...

    def describe_job(self, job_id: str) -> JobState:
        """The job's :class:`JobState` by name or ARN."""
        ...

    def stop_job(self, job_id: str) -> None:
        """Stop a running job; a finished one is left alone."""
        ...

    def tag_job(self, job_arn: str, tags: Mapping[str, str]) -> None:
        """Add tags to the job."""
        ...

    def list_jobs(self, created_after: datetime, name_contains: str | None = None) -> list[JobState]:
        """Jobs created after ``created_after`` (whose name contains ``name_contains``), with tags."""
        ...


def check_base_model_active(service: ModelCustomization, model_id: str) -> str:
    """Fail before hours of work when the base model is not ACTIVE.

    Returns:
        The status (``ACTIVE``).

    Raises:
        InputError: the status is anything else (Nova Canvas v1 is reported to become LEGACY on
            2026-03-30, end of life 2026-09-30; DESIGN §5).
    """
    status = service.base_model_status(model_id)
    if status != "ACTIVE":
        raise InputError(f"base model {model_id} has lifecycle status {status}, not ACTIVE: Bedrock may no longer "
                         f"fine-tune it. Set the BaseModelId parameter (finetune.base_model_id) to an ACTIVE model, "
                         f"or finetune.require_active_base_model: false to try anyway")
    return status


class BedrockModelCustomization:
    """The AWS backend: the ``bedrock`` control-plane client."""

    def __init__(self, bedrock_client: Any) -> None:
        self.bedrock = bedrock_client

    def base_model_status(self, model_id: str) -> str:
        """``get_foundation_model(...)["modelDetails"]["modelLifecycle"]["status"]``."""
        details = self.bedrock.get_foundation_model(modelIdentifier=model_id)["modelDetails"]
        return str((details.get("modelLifecycle") or {}).get("status") or "UNKNOWN")

    def start_job(self, request: Mapping[str, Any]) -> str:
        """``create_model_customization_job``; a job of the same name that already exists (a re-delivered
        message) is returned when it carries the same callback token.

        Raises:
            InputError: a job of that name exists for a different callback.
        """
        from botocore.exceptions import ClientError

        try:
            return self.bedrock.create_model_customization_job(**request)["jobArn"]
        except ClientError as err:
            code = err.response["Error"].get("Code", "")
            if code not in ("ResourceInUseException", "ConflictException", "ValidationException"):
                raise
            try:
                existing = self.describe_job(request["jobName"])
            except ClientError:
                raise err from None
            wanted = {t["key"]: t["value"] for t in request.get("jobTags") or []}.get(TAG_CALLBACK_TOKEN)
            if wanted and existing.tags.get(TAG_CALLBACK_TOKEN) not in (None, wanted):
                raise InputError(f"a Bedrock job named {request['jobName']} already exists for another callback") \
                    from None
            log.info("customization job %s already exists (%s)", existing.job_name, existing.status)
            return existing.job_arn

    def _tags(self, job_arn: str) -> dict[str, str]:
        return {t["key"]: t["value"] for t in self.bedrock.list_tags_for_resource(resourceARN=job_arn)["tags"]}

    def describe_job(self, job_id: str) -> JobState:
        """``get_model_customization_job`` plus ``list_tags_for_resource``."""
        out = self.bedrock.get_model_customization_job(jobIdentifier=job_id)
        created = out.get("creationTime")
        return JobState(out["jobArn"], out["jobName"], normalise_status(out.get("status")),
                        out.get("outputModelArn"), out.get("failureMessage"),
                        created if isinstance(created, datetime) else None, self._tags(out["jobArn"]))

    def stop_job(self, job_id: str) -> None:
        """``stop_model_customization_job``; a job that is not running is left alone."""
        from botocore.exceptions import ClientError

        try:
            self.bedrock.stop_model_customization_job(jobIdentifier=job_id)
        except ClientError as err:
            if err.response["Error"].get("Code") in ("ValidationException", "ConflictException",
                                                     "ResourceNotFoundException"):
                log.info("job %s not stopped: %s", job_id, err.response["Error"].get("Message"))
                return
            raise

    def tag_job(self, job_arn: str, tags: Mapping[str, str]) -> None:
        """``tag_resource``."""
        self.bedrock.tag_resource(resourceARN=job_arn, tags=[{"key": k, "value": v} for k, v in tags.items()])

    def list_jobs(self, created_after: datetime, name_contains: str | None = None) -> list[JobState]:
        """``list_model_customization_jobs`` (all pages) with each job's tags."""
        jobs, token = [], None
        while True:
            kwargs: dict[str, Any] = {"creationTimeAfter": created_after, "maxResults": 100}
            if name_contains:
                kwargs["nameContains"] = name_contains
            if token:
                kwargs["nextToken"] = token
            page = self.bedrock.list_model_customization_jobs(**kwargs)
            for s in page.get("modelCustomizationJobSummaries") or []:
                created = s.get("creationTime")
                jobs.append(JobState(s["jobArn"], s["jobName"], normalise_status(s.get("status")),
                                     s.get("customModelArn"), None,
                                     created if isinstance(created, datetime) else None, self._tags(s["jobArn"])))
            token = page.get("nextToken")
            if not token:
                return jobs


class DryRunModelCustomization:
    """The local backend: starts nothing, writes the exact request to ``<folder>/request.json``.

    ``describe_job`` of a dry-run job reports status ``DryRun``; the base model status is ``UNKNOWN``
    (it cannot be checked offline).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def base_model_status(self, model_id: str) -> str:
        """``UNKNOWN``: Bedrock cannot be asked offline."""
        return "UNKNOWN"

    def start_job(self, request: Mapping[str, Any]) -> str:
        """Write ``request.json`` and return ``dry-run:<job name>``."""
        sio.write_json(self.folder / "request.json", dict(request))
        return DRY_RUN_PREFIX + request["jobName"]

    def describe_job(self, job_id: str) -> JobState:
        """The dry-run job from ``request.json``.

        Raises:
            InputError: no dry run was written for that job.
        """
        path = self.folder / "request.json"
        name = job_id.removeprefix(DRY_RUN_PREFIX)
        if not path.exists() or json.loads(path.read_text(encoding="utf-8")).get("jobName") != name:
            raise InputError(f"no dry-run request for job {job_id} in {self.folder}")
        return JobState(DRY_RUN_PREFIX + name, name, "DryRun")

    def stop_job(self, job_id: str) -> None:
        """Nothing runs, so nothing stops."""

    def tag_job(self, job_arn: str, tags: Mapping[str, str]) -> None:
        """Tags of a dry run are kept in ``tags.json``."""
        path = self.folder / "tags.json"
        current = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        current.update(tags)
        sio.write_json(path, current)

    def list_jobs(self, created_after: datetime, name_contains: str | None = None) -> list[JobState]:
        """No jobs run locally."""
        return []


def dry_run_report(inputs: FineTuneInputs, prepared: PreparedJob, base_model_status: str) -> dict[str, Any]:
    """``dry_run_report.json``: the inputs, data checks, base model status and notes."""
    return {
        "dry_run": True,
        "inputs": {**asdict(inputs), "hyperparameters": inputs.hyperparameters.to_request()},
        "training_data": prepared.data_report.to_json(),
        "request_valid": True,
        "base_model_status": base_model_status,
        "notes": prepared.notes,
    }
