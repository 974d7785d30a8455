"""`storyboard status`, `list` and `stop`, and the execution helpers `start --wait` shares: the latest execution,
its steps (one line each), waiting for its end and the Studio link.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from typing import Any

from core.errors import InputError
from pipeline.commands.context import _clients, _pipeline_name

TERMINAL_STATUSES = ("Succeeded", "Failed", "Stopped")
EXIT_FAILED = 1


def studio_link(client: Any, config: Any, region: str, pipeline_name: str, execution_arn: str) -> str | None:
    """Studio URL of an execution: ``sagemaker.studio_domain_id``, else the Region's first domain."""
    domain = config.sagemaker.studio_domain_id
    if not domain:
        try:
            domains = client.list_domains(MaxResults=1).get("Domains", [])
            domain = domains[0]["DomainId"] if domains else None
        except Exception:  # noqa: BLE001 - a missing permission must not stop the command
            domain = None
    if not domain:
        return None
    execution_id = execution_arn.rsplit("/", 1)[-1]
    return (f"https://studio-{domain}.studio.{region}.sagemaker.aws/pipelines/view/{pipeline_name}"
            f"/executions/{execution_id}/graph")


def _print_link(link: str | None) -> None:
    if link:
        print(f"Studio: {link}")
    else:
        print("Studio: no domain found; set sagemaker.studio_domain_id for a direct link")


def _latest_execution(client: Any, pipeline_name: str, executing_only: bool = False) -> str:
    paginator = client.get_paginator("list_pipeline_executions")
    for page in paginator.paginate(PipelineName=pipeline_name, SortBy="CreationTime", SortOrder="Descending"):
        for summary in page.get("PipelineExecutionSummaries", []):
            if not executing_only or summary.get("PipelineExecutionStatus") == "Executing":
                return summary["PipelineExecutionArn"]
    what = "executing execution" if executing_only else "execution"
    raise InputError(f"pipeline {pipeline_name} has no {what}; give the execution ARN")


def list_steps(client: Any, execution_arn: str) -> list[dict[str, Any]] | None:
    """The execution's steps, oldest first (``None`` where the endpoint does not offer the call)."""
    from botocore.exceptions import BotoCoreError, ClientError

    steps: list[dict[str, Any]] = []
    try:
        paginator = client.get_paginator("list_pipeline_execution_steps")
        for page in paginator.paginate(PipelineExecutionArn=execution_arn, SortOrder="Ascending"):
            steps.extend(page.get("PipelineExecutionSteps", []))
    except (ClientError, BotoCoreError) as err:
        code = getattr(err, "response", {}).get("Error", {}).get("Code", "") if isinstance(err, ClientError) else ""
        if code in ("AccessDeniedException", "ResourceNotFound", "ValidationException"):
            raise
        return None
    return steps


def _step_line(step: dict[str, Any]) -> str:
    reason = step.get("FailureReason") or ""
    meta = step.get("Metadata", {})
    detail = ""
    if "Condition" in meta:
        detail = f"outcome {meta['Condition'].get('Outcome')}"
    elif "Callback" in meta:
        outputs = {o["Name"]: o.get("Value") for o in meta["Callback"].get("OutputParameters", [])}
        detail = ", ".join(f"{k}={v}" for k, v in sorted(outputs.items()))
    elif "Lambda" in meta:
        outputs = {o["Name"]: o.get("Value") for o in meta["Lambda"].get("OutputParameters", [])}
        detail = ", ".join(f"{k}={v}" for k, v in sorted(outputs.items()))
    elif "ProcessingJob" in meta:
        detail = meta["ProcessingJob"].get("Arn", "")
    text = f"  {step.get('StepName', '?'):<20} {step.get('StepStatus', '?'):<11} {detail}"
    return f"{text} {reason}".rstrip()


def _timestamp(value: Any) -> str:
    return value.isoformat(timespec="seconds") if hasattr(value, "isoformat") else str(value or "")


# ----- commands ---------------------------------------------------------------------------------------

def wait_for_execution(client: Any, execution_arn: str, poll_seconds: float = 30.0,
                       sleep: Any = time.sleep, out: Any = None) -> int:
    """Poll until the execution ends, printing each step's status change; 0 if it succeeded, else 1."""
    out = out or sys.stdout
    seen: dict[str, str] = {}
    while True:
        described = client.describe_pipeline_execution(PipelineExecutionArn=execution_arn)
        steps = list_steps(client, execution_arn) or []
        for step in steps:
            key = step.get("StepName", "?")
            if seen.get(key) != step.get("StepStatus"):
                seen[key] = step.get("StepStatus", "?")
                print(_step_line(step), file=out, flush=True)
        status = described.get("PipelineExecutionStatus")
        if status in TERMINAL_STATUSES:
            print(f"execution {status}" + (f": {described.get('FailureReason')}" if described.get("FailureReason")
                                           else ""), file=out, flush=True)
            return 0 if status == "Succeeded" else EXIT_FAILED
        sleep(poll_seconds)


def cmd_status(args: argparse.Namespace) -> int:
    """Print an execution's status, failure reason, steps and Studio link."""
    config, session, client = _clients(args)
    name = _pipeline_name(config)
    arn = args.execution_arn or _latest_execution(client, name)
    described = client.describe_pipeline_execution(PipelineExecutionArn=arn)
    print(f"execution: {arn}")
    print(f"status:    {described.get('PipelineExecutionStatus')}")
    if described.get("PipelineExecutionDisplayName"):
        print(f"name:      {described['PipelineExecutionDisplayName']}")
    print(f"started:   {_timestamp(described.get('CreationTime'))}")
    if described.get("FailureReason"):
        print(f"reason:    {described['FailureReason']}")
    steps = list_steps(client, arn)
    if steps is None:
        print("steps:     (this endpoint does not list execution steps)")
    else:
        print("steps:" if steps else "steps:     none started yet")
        for step in steps:
            print(_step_line(step))
    pipeline_name = arn.split(":pipeline/", 1)[-1].split("/", 1)[0] if ":pipeline/" in arn else name
    _print_link(studio_link(client, config, session.region_name, pipeline_name, arn))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Print the pipeline's executions, newest first."""
    config, _, client = _clients(args)
    if not 1 <= args.max <= 100:
        raise InputError(f"--max must be 1..100, got {args.max}")
    name = _pipeline_name(config)
    response = client.list_pipeline_executions(PipelineName=name, SortBy="CreationTime", SortOrder="Descending",
                                                MaxResults=args.max)
    summaries = response.get("PipelineExecutionSummaries", [])
    if not summaries:
        print(f"pipeline {name} has no execution")
        return 0
    print(f"{'started':<26} {'status':<10} execution")
    for summary in summaries[: args.max]:
        label = summary.get("PipelineExecutionDisplayName") or ""
        print(f"{_timestamp(summary.get('StartTime')):<26} {summary.get('PipelineExecutionStatus', '?'):<10} "
              f"{summary['PipelineExecutionArn']} {label}".rstrip())
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    """Stop an execution (idempotent through ``ClientRequestToken``)."""
    config, _, client = _clients(args)
    arn = args.execution_arn or _latest_execution(client, _pipeline_name(config), executing_only=True)
    token = uuid.uuid5(uuid.NAMESPACE_URL, f"stop:{arn}").hex[:64]
    response = client.stop_pipeline_execution(PipelineExecutionArn=arn, ClientRequestToken=token)
    print(f"stopping {response.get('PipelineExecutionArn', arn)}; running Callback steps wait for their consumer "
          "to answer the Stopping message")
    return 0
