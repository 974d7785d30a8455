"""`storyboard` sub-commands for SageMaker Pipelines: compile, upsert, start, status, list, stop.

::

    storyboard compile [--config pipeline.yaml] --out definition.json     offline, byte-identical output
    storyboard upsert  [--config ...] [--role-arn ARN] [--no-validate-role]
    storyboard start   [--param Name=Value ...] [--wait] [--display-name NAME]
    storyboard status  [EXECUTION_ARN]          (default: the pipeline's latest execution)
    storyboard list    [--max N]
    storyboard stop    [EXECUTION_ARN]          (default: the pipeline's latest executing execution)

``--region`` and ``--profile`` work as in the AWS CLI (default: ``aws.region`` and ``aws.profile`` of
the configuration, then the usual boto3 chain); ``AWS_ENDPOINT_URL`` is honoured, which is how the tests
reach a moto server. The pipeline role comes from ``--role-arn``, then ``$STORYBOARD_ROLE_ARN``, then
``sagemaker.role_arn``. ``upsert`` uploads the containers' configuration to ``PipelineConfigS3Uri``
before creating or updating the pipeline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.errors import InputError

TERMINAL_STATUSES = ("Succeeded", "Failed", "Stopped")
STACK_HELP = ("CloudFormation stack of 'storyboard deploy' whose outputs name the role, bucket, images, queue and "
              "functions (default: sagemaker.stack_name; none: the configuration's own names)")
EXIT_FAILED = 1


# ----- parsers ----------------------------------------------------------------------------------------

def _common(parser: argparse.ArgumentParser, aws: bool = True) -> None:
    parser.add_argument("--config", type=Path, default=None,
                        help="pipeline.yaml (default: ./pipeline.yaml if present, else built-in defaults)")
    if aws:
        parser.add_argument("--region", default=None, help="AWS Region (default: aws.region of the configuration)")
        parser.add_argument("--profile", default=None, help="AWS credentials profile (default: aws.profile)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add compile, upsert, start, status, list and stop to ``subparsers``."""
    from pipeline.parameter_values import describe_parameters

    p = subparsers.add_parser(
        "compile", help="write the pipeline definition JSON (offline, deterministic)",
        description="Compile the SageMaker pipeline definition from the configuration and write it as JSON. "
                    "Offline: no AWS call; the same configuration gives byte-identical output. Without a role, "
                    "names use the placeholder account 000000000000.")
    _common(p, aws=False)
    p.add_argument("--out", default="-", help="output file (default: standard output)")
    p.add_argument("--role-arn", default=None, help="pipeline role ARN (default: $STORYBOARD_ROLE_ARN, config)")
    p.add_argument("--bucket", default=None, help="S3 bucket (default: $STORYBOARD_BUCKET, sagemaker.bucket)")
    p.set_defaults(func=cmd_compile)

    p = subparsers.add_parser(
        "upsert", help="create or update the SageMaker pipeline",
        description="Upload the containers' configuration to PipelineConfigS3Uri, then create or update the "
                    "SageMaker pipeline. The role comes from --role-arn, then $STORYBOARD_ROLE_ARN, then "
                    "sagemaker.role_arn. --region and --profile work as in the AWS CLI.")
    _common(p)
    p.add_argument("--role-arn", default=None, help="pipeline role ARN (default: $STORYBOARD_ROLE_ARN, config)")
    p.add_argument("--bucket", default=None, help="S3 bucket (default: $STORYBOARD_BUCKET, sagemaker.bucket)")
    p.add_argument("--no-validate-role", action="store_true",
                   help="skip the SDK's IAM simulation of the role (sets SAGEMAKER_VALIDATE_ROLE=false)")
    p.add_argument("--stack-name", default=None, help=STACK_HELP)
    p.set_defaults(func=cmd_upsert)

    p = subparsers.add_parser(
        "start", help="start a pipeline execution on SageMaker",
        description="Start an execution of the deployed pipeline. Every --param is checked before the request: "
                    "an unknown name is refused with the list of names and the closest match, and a value "
                    "with its type and range (listed below).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="pipeline parameters (--param Name=Value):\n" + describe_parameters(width=96))
    _common(p)
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="parameter override")
    p.add_argument("--display-name", default=None, help="execution display name")
    p.add_argument("--description", default=None, help="execution description")
    p.add_argument("--client-token", default=None,
                   help="ClientRequestToken: the same token starts one execution only (default: random)")
    p.add_argument("--wait", action="store_true", help="wait for the end and show each step's progress")
    p.add_argument("--poll-seconds", type=float, default=30.0, help="seconds between status polls (--wait)")
    p.add_argument("--stack-name", default=None, help=STACK_HELP)
    p.set_defaults(func=cmd_start)

    p = subparsers.add_parser("status", help="show an execution's status and steps",
                              description="Show an execution's status and its steps (default: the pipeline's "
                                          "latest execution).")
    _common(p)
    p.add_argument("execution_arn", nargs="?", default=None, help="execution ARN (default: the latest)")
    p.set_defaults(func=cmd_status)

    p = subparsers.add_parser("list", help="list the pipeline's executions, newest first",
                              description="List the pipeline's executions, newest first.")
    _common(p)
    p.add_argument("--max", type=int, default=20, help="at most this many (1..100)")
    p.set_defaults(func=cmd_list)

    p = subparsers.add_parser("stop", help="stop an execution",
                              description="Stop an execution (default: the pipeline's latest executing one).")
    _common(p)
    p.add_argument("execution_arn", nargs="?", default=None, help="execution ARN (default: the latest executing)")
    p.set_defaults(func=cmd_stop)


# ----- helpers ----------------------------------------------------------------------------------------

def _config(args: argparse.Namespace) -> Any:
    from core.config import load_config

    path = args.config
    if path is None and Path("pipeline.yaml").is_file():
        path = Path("pipeline.yaml")
    return load_config(path)


def boto_session(args: argparse.Namespace, config: Any) -> Any:
    """A boto3 session for ``--region``/``--profile`` (else the configuration's)."""
    import boto3

    return boto3.Session(region_name=args.region or config.aws.region, profile_name=args.profile or config.aws.profile)


def sagemaker_client(session: Any, config: Any) -> Any:
    """The SageMaker client of ``session`` with the project's retry policy (adaptive retries)."""
    from core.aws import client_config

    return session.client("sagemaker", config=client_config(read_timeout_s=60, max_attempts=config.aws.max_attempts))


def _clients(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    config = _config(args)
    session = boto_session(args, config)
    return config, session, sagemaker_client(session, config)


@contextlib.contextmanager
def _env(name: str, value: str | None) -> Iterator[None]:
    if value is None:
        yield
        return
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def with_stack_outputs(args: argparse.Namespace, config: Any, session: Any) -> Any:
    """``config`` with the names of the stack ``--stack-name`` (else ``sagemaker.stack_name``) applied; unchanged
    when no stack is named (see :func:`pipeline.infra.outputs.apply_stack_outputs`)."""
    from pipeline.infra.outputs import apply_stack_outputs
    from pipeline.infra.stack import stack_outputs

    name = getattr(args, "stack_name", None) or config.sagemaker.stack_name
    if not name:
        return config
    return apply_stack_outputs(config, stack_outputs(session.client("cloudformation"), name), name)


def _pipeline_name(config: Any) -> str:
    from core.sagemaker_config import resolve_settings

    return resolve_settings(config).pipeline_name


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

def cmd_compile(args: argparse.Namespace) -> int:
    """Compile the definition offline and write it (sorted JSON); warn about placeholder names."""
    from core.io import write_text
    from core.sagemaker_config import resolve_settings
    from pipeline.compile import compile_definition, definition_to_json

    config = _config(args)
    settings = resolve_settings(config, role_arn=args.role_arn, bucket=args.bucket)
    text = definition_to_json(compile_definition(config, settings))
    if settings.placeholders:
        print(f"note: no role ARN configured; placeholder account {settings.account} used for "
              f"{', '.join(settings.placeholders)} (set sagemaker.role_arn or $STORYBOARD_ROLE_ARN before upsert)",
              file=sys.stderr)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        write_text(args.out, text)
        print(f"wrote {args.out} ({len(text.encode('utf-8'))} bytes)", file=sys.stderr)
    return 0


def upload_container_config(session: Any, config: Any, settings: Any, configured_bucket: bool) -> str:
    """Upload the containers' configuration to the ``PipelineConfigS3Uri`` default; return the URI.

    The SDK's default bucket (``sagemaker-<region>-<account>``) is created when missing, as the SDK
    does; a configured bucket must exist.

    Raises:
        core.errors.InputError: a configured bucket does not exist.
    """
    from botocore.exceptions import ClientError

    from pipeline.container_config import container_config_bytes
    from pipeline.parameter_values import parameter_defaults
    from pipeline.parameters import CONFIG_URI

    uri = str(parameter_defaults(config, settings)[CONFIG_URI])
    bucket, key = uri[len("s3://"):].split("/", 1)
    s3 = session.client("s3")
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
        if configured_bucket:
            raise InputError(f"S3 bucket {bucket} does not exist; create it or fix sagemaker.bucket") from None
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if settings.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": settings.region}
        s3.create_bucket(**kwargs)
    s3.put_object(Bucket=bucket, Key=key, Body=container_config_bytes(config), ContentType="application/json")
    return uri


def cmd_upsert(args: argparse.Namespace) -> int:
    """Upload the configuration, then create or update the pipeline (SDK ``Pipeline.upsert``)."""
    from core.sagemaker_config import BUCKET_ENV, resolve_settings
    from pipeline.compile import build_pipeline, quiet_sdk
    from pipeline.definition import pipeline_description

    config = _config(args)
    session = boto_session(args, config)
    config.aws.region = session.region_name or config.aws.region
    config = with_stack_outputs(args, config, session)
    settings = resolve_settings(config, role_arn=args.role_arn, bucket=args.bucket)
    if "role_arn" in settings.placeholders:
        raise InputError("no pipeline role: give --role-arn, set $STORYBOARD_ROLE_ARN or sagemaker.role_arn "
                         "(an IAM role SageMaker can assume)")
    configured_bucket = bool(args.bucket or os.environ.get(BUCKET_ENV) or config.sagemaker.bucket)
    uri = upload_container_config(session, config, settings, configured_bucket)
    print(f"configuration uploaded to {uri}")
    pipeline = build_pipeline(config, settings, boto_session=session)
    tags = [{"Key": k, "Value": v} for k, v in sorted(config.sagemaker.tags.items())]
    with _env("SAGEMAKER_VALIDATE_ROLE", "false" if args.no_validate_role else None), quiet_sdk():
        response = pipeline.upsert(role_arn=settings.role_arn, description=pipeline_description(config, settings),
                                   tags=tags)
    print(f"pipeline {settings.pipeline_name}: {response['PipelineArn']}")
    if getattr(args, "stack_name", None) or config.sagemaker.stack_name:
        print(f"functions' configuration: {upload_lambda_config(session, config, args)}")
    return 0


def upload_lambda_config(session: Any, config: Any, args: argparse.Namespace) -> str:
    """Write the configuration the stack's functions read (its ``LambdaConfigUri`` output); return the URI."""
    from pipeline.infra.outputs import lambda_config_yaml
    from pipeline.infra.stack import stack_outputs

    name = getattr(args, "stack_name", None) or config.sagemaker.stack_name
    uri = stack_outputs(session.client("cloudformation"), name)["LambdaConfigUri"]
    bucket, key = uri[len("s3://"):].split("/", 1)
    session.client("s3").put_object(Bucket=bucket, Key=key, Body=lambda_config_yaml(config).encode("utf-8"),
                                    ContentType="application/yaml")
    return uri


def cmd_start(args: argparse.Namespace) -> int:
    """Start an execution with ``--param`` overrides (checked against the deployed definition)."""
    from pipeline.expressions import to_text
    from pipeline.local_runner import resolve_parameters
    from pipeline.parameter_values import check_overrides, parse_assignments
    from pipeline.parameters import SPECS_BY_NAME

    config, session, client = _clients(args)
    config = with_stack_outputs(args, config, session)
    name = _pipeline_name(config)
    overrides = parse_assignments(args.param)
    from core.aws import client_config
    from steps.model_lifecycle import check_configured_models  # LEGACY / end-of-life models: refused before any work

    check_configured_models(config, session.client("bedrock", config=client_config(60, config.aws.max_attempts)),
                            overrides={SPECS_BY_NAME[k].source: v for k, v in overrides.items() if k in SPECS_BY_NAME})
    described = client.describe_pipeline(PipelineName=name)
    definition = json.loads(described.get("PipelineDefinition") or "{}")
    # Every --param before the request: the deployed pipeline's names (close-match suggestion), then each
    # value's type, allowed values and range (stepCount 10..20,000, ...), then the definition's own types.
    check_overrides(overrides, known={p["Name"]: p.get("Type", "String") for p in definition.get("Parameters", [])})
    resolve_parameters(definition, overrides)
    request: dict[str, Any] = {
        "PipelineName": name,
        "ClientRequestToken": args.client_token or str(uuid.uuid4()),
        "PipelineParameters": [{"Name": k, "Value": to_text(v)} for k, v in overrides.items()],
    }
    if args.display_name:
        request["PipelineExecutionDisplayName"] = args.display_name
    if args.description:
        request["PipelineExecutionDescription"] = args.description
    arn = client.start_pipeline_execution(**request)["PipelineExecutionArn"]
    print(f"execution: {arn}")
    _print_link(studio_link(client, config, session.region_name, name, arn))
    if not args.wait:
        return 0
    return wait_for_execution(client, arn, poll_seconds=args.poll_seconds)


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
