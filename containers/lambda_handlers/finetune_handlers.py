"""FineTune on AWS: start the Bedrock job (or its dry run), answer from job-state events, reconcile.

The callback token travels on the job as the tag ``storyboard:callback-token`` (pipeline tokens are
exactly 10 characters; Bedrock tag values hold 256), so the completion event, which carries only the
job's ARN, leads back to the pipeline with one ``list_tags_for_resource`` call and no extra store.
After answering, the handler tags the job ``storyboard:callback-answered`` so duplicates and the
reconciler skip it; the answer itself is idempotent too (``ClientRequestToken`` derived from the
callback token, the job and its status).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from containers.lambda_handlers.callbacks import SageMakerPipelineCallback, truncate_reason
from containers.lambda_handlers.runtime import Runtime, default_runtime
from containers.lambda_handlers.storage import join_uri, parent_uri, read_jsonl, store_for, write_json
from steps.finetune import (
    TAG_ANSWERED,
    TAG_CALLBACK_TOKEN,
    BedrockModelCustomization,
    FineTuneInputs,
    JobOutcome,
    JobState,
    callback_tags,
    check_base_model_active,
    dry_run_outputs,
    dry_run_report,
    job_names,
    normalise_status,
    outcome_of,
    prepare_job,
    with_dry_run_placeholders,
)
from steps.image_probes import LocalImageProbe, S3ImageProbe

log = logging.getLogger(__name__)

BEDROCK_EVENT_SOURCE = "aws.bedrock"
BEDROCK_DETAIL_TYPE = "Model Customization Job State Change"


def start_finetune(callback_token: str, execution_arn: str, args: Mapping[str, str], runtime: Runtime) -> dict:
    """Handle a FineTune callback message.

    Checks the base model is ACTIVE (when ``finetune.require_active_base_model``), validates the data
    and the request, then either writes the dry run and answers at once, or starts the job (tagged with
    the callback token) and leaves the answer to :func:`job_state_handler`.

    Raises:
        InputError: bad arguments, a LEGACY base model, invalid data or request.
    """
    cfg = runtime.config.finetune
    inputs = FineTuneInputs.from_arguments(args, cfg)
    names = job_names(cfg.job_name_prefix, f"{execution_arn}|{callback_token}", args.get("JobName"))
    service = BedrockModelCustomization(runtime.client("bedrock"))
    base_status = "not checked"
    if cfg.require_active_base_model:
        base_status = check_base_model_active(service, inputs.base_model_id)
    manifest = inputs.training_manifest_uri
    s3 = runtime.client("s3") if manifest.startswith("s3://") else None
    rows = read_jsonl(store_for(manifest, s3), manifest)
    probe = S3ImageProbe(s3) if s3 is not None else LocalImageProbe(parent_uri(manifest))
    tags = callback_tags(callback_token, execution_arn)
    callback = SageMakerPipelineCallback(runtime.client("sagemaker"))
    if inputs.dry_run:
        checked, placeholders = with_dry_run_placeholders(inputs, names)
        prepared = prepare_job(checked, names, rows, probe, tags)
        folder = join_uri(inputs.output_s3_uri or join_uri(parent_uri(manifest), "finetune"), "dry-run",
                          names.job_name)
        out = store_for(folder, runtime.client("s3") if folder.startswith("s3://") else None)
        write_json(out, join_uri(folder, "request.json"), prepared.request)
        report = dry_run_report(inputs, prepared, base_status)
        report.update(placeholders=placeholders, job_name=names.job_name)
        write_json(out, join_uri(folder, "dry_run_report.json"), report)
        outputs = dry_run_outputs(names)
        callback.success(callback_token, outputs, names.job_name)
        return {"dry_run": True, "request": join_uri(folder, "request.json"), **outputs}
    prepared = prepare_job(inputs, names, rows, probe, tags)
    job_arn = service.start_job(prepared.request)
    log.info("started customization job %s (%s)", names.job_name, job_arn)
    return {"dry_run": False, "jobArn": job_arn, "jobName": names.job_name}


def find_job_for_callback(callback_token: str, execution_arn: str, runtime: Runtime,
                          job_name: str | None = None) -> JobState | None:
    """The job started for this callback, or ``None``.

    Looked up by its deterministic name (``job_name`` is the step's ``JobName`` argument, when the
    message carries it); failing that, among the jobs of the last ``finetune.reconcile_lookback_hours``
    by the callback-token tag.
    """
    from botocore.exceptions import ClientError

    cfg = runtime.config.finetune
    service = BedrockModelCustomization(runtime.client("bedrock"))
    names = job_names(cfg.job_name_prefix, f"{execution_arn}|{callback_token}", job_name)
    try:
        return service.describe_job(names.job_name)
    except ClientError as err:
        if err.response["Error"].get("Code") not in ("ResourceNotFoundException", "ValidationException"):
            raise
    since = datetime.now(timezone.utc) - timedelta(hours=cfg.reconcile_lookback_hours)
    return next((j for j in service.list_jobs(since) if j.tags.get(TAG_CALLBACK_TOKEN) == callback_token), None)


def stop_finetune(callback_token: str, execution_arn: str, runtime: Runtime, job_name: str | None = None) -> str | None:
    """Stop this callback's job if it runs (a ``Stopping`` message); returns the job name, if any."""
    job = find_job_for_callback(callback_token, execution_arn, runtime, job_name)
    if job is None or job.tags.get(TAG_CALLBACK_TOKEN) != callback_token:
        return None
    service = BedrockModelCustomization(runtime.client("bedrock"))
    if job.status == "InProgress":
        service.stop_job(job.job_name)
    service.tag_job(job.job_arn, {TAG_ANSWERED: "Stopping"})
    return job.job_name


def answer(runtime: Runtime, callback_token: str, job: JobState, outcome: JobOutcome) -> bool:
    """Send the answer for ``job`` (idempotent) and tag the job answered."""
    callback = SageMakerPipelineCallback(runtime.client("sagemaker"))
    key = f"{job.job_arn}|{job.status}"
    if outcome.success:
        accepted = callback.success(callback_token, outcome.outputs, key)
    else:
        accepted = callback.failure(callback_token, truncate_reason(outcome.reason), key)
    BedrockModelCustomization(runtime.client("bedrock")).tag_job(
        job.job_arn, {TAG_ANSWERED: job.status if accepted else f"{job.status}-not-accepted"})
    return accepted


def on_job_state_change(event: Mapping[str, Any], runtime: Runtime) -> str:
    """Handle one ``Model Customization Job State Change`` event; returns what happened."""
    detail = event.get("detail") or {}
    job_arn = str(detail.get("jobArn") or "")
    status = normalise_status(detail.get("jobStatus") or detail.get("status"))
    if not job_arn:
        return "ignored: no jobArn"
    if status not in ("Completed", "Failed", "Stopped"):
        return f"ignored: status {status}"
    bedrock = runtime.client("bedrock")
    tags = {t["key"]: t["value"] for t in bedrock.list_tags_for_resource(resourceARN=job_arn)["tags"]}
    token = tags.get(TAG_CALLBACK_TOKEN)
    if not token:
        return "ignored: the job has no storyboard callback token"
    if tags.get(TAG_ANSWERED):
        return f"duplicate: already answered ({tags[TAG_ANSWERED]})"
    job = JobState(job_arn, str(detail.get("jobName") or job_arn.rsplit("/", 1)[-1]), status,
                   detail.get("outputModelArn"), detail.get("failureMessage"), tags=tags)
    if status == "Completed" and not job.output_model_arn:
        job = BedrockModelCustomization(bedrock).describe_job(str(detail.get("jobName") or job_arn))
    outcome = outcome_of(job)
    if outcome is None:  # pragma: no cover - statuses filtered above
        return f"ignored: status {status}"
    accepted = answer(runtime, token, job, outcome)
    return f"answered {'success' if outcome.success else 'failure'}" + ("" if accepted else " (not accepted)")


def job_state_handler(event: Mapping[str, Any], context: Any = None, runtime: Runtime | None = None) -> dict:
    """Lambda entry point for the Bedrock job-state EventBridge rule."""
    outcome = on_job_state_change(event, runtime or default_runtime())
    log.info("job state event: %s", outcome)
    return {"outcome": outcome}


def reconcile_jobs(runtime: Runtime, now: datetime | None = None) -> list[dict[str, str]]:
    """Answer finished jobs whose event was missed, and stop jobs past ``finetune.watchdog_hours``.

    Looks at jobs created in the last ``finetune.reconcile_lookback_hours`` that carry a callback
    token but no answered tag (whatever their name: the pipeline may name them through ``JobName``).
    """
    cfg = runtime.config.finetune
    now = now or datetime.now(timezone.utc)
    service = BedrockModelCustomization(runtime.client("bedrock"))
    report = []
    for job in service.list_jobs(now - timedelta(hours=cfg.reconcile_lookback_hours)):
        token = job.tags.get(TAG_CALLBACK_TOKEN)
        if not token or job.tags.get(TAG_ANSWERED):
            continue
        if job.status in ("Completed", "Failed", "Stopped"):
            if (job.status == "Completed" and not job.output_model_arn) or \
                    (job.status != "Completed" and not job.failure_message):
                job = service.describe_job(job.job_name)  # summaries carry no failureMessage
            outcome = outcome_of(job)
            if outcome is not None:
                answer(runtime, token, job, outcome)
                report.append({"job": job.job_name,
                               "outcome": "answered " + ("success" if outcome.success else "failure")})
            continue
        created = job.creation_time
        if job.status == "InProgress" and created is not None:
            created = created if created.tzinfo else created.replace(tzinfo=timezone.utc)
            age = (now - created).total_seconds() / 3600.0
            if age > cfg.watchdog_hours:
                service.stop_job(job.job_name)
                failed = JobState(job.job_arn, job.job_name, "Stopped", failure_message=(
                    f"stopped by the watchdog after {age:.1f} h (finetune.watchdog_hours {cfg.watchdog_hours:g})"))
                answer(runtime, token, failed, outcome_of(failed))
                report.append({"job": job.job_name, "outcome": "watchdog"})
    return report


def reconcile_handler(event: Mapping[str, Any], context: Any = None, runtime: Runtime | None = None) -> dict:
    """Lambda entry point for jobs only (see :mod:`containers.lambda_handlers.reconciler` for both)."""
    return {"jobs": reconcile_jobs(runtime or default_runtime())}

