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

``status``, ``list`` and ``stop`` (and the waiting of ``start --wait``) are in :mod:`pipeline.commands.executions`;
the configuration, session and clients every command starts from in :mod:`pipeline.commands.context`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.errors import InputError
from pipeline.commands.context import _clients, _config, _pipeline_name, boto_session, with_stack_outputs
from pipeline.commands.executions import (
    _print_link,
    cmd_list,
    cmd_status,
    cmd_stop,
    studio_link,
    wait_for_execution,
)

STACK_HELP = ("CloudFormation stack of 'storyboard deploy' whose outputs name the role, bucket, images, queue and "
              "functions (default: sagemaker.stack_name; none: the configuration's own names)")


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
    from pipeline.local_definition import resolve_parameters
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
