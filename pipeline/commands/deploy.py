"""`storyboard deploy`: create or update the project's CloudFormation stack (``pipeline/infra/template.yaml``).

::

    storyboard deploy [--config pipeline.yaml] [--stack-name NAME] [--region R] [--profile P]
                      [--parameter Key=Value ...] [--lambda-image-tag TAG]

The stack name is ``--stack-name``, else ``sagemaker.stack_name``, else the project name. ``ProjectName``,
``S3Prefix``, the model IDs and the work team come from the configuration unless ``--parameter`` sets them;
``LambdaImageUri`` is the pushed Lambda image by digest once ``storyboard images push`` has run (until then
the stack has no functions, and this command says so). Prints the change set's changes and the outputs.
The logic is :mod:`pipeline.infra.stack`; this module only adapts it to the command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pipeline.commands.context import _config, boto_session


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``deploy`` to ``subparsers``."""
    p = subparsers.add_parser(
        "deploy", help="create or update the AWS resources (CloudFormation change set)",
        description="Create or update the project's CloudFormation stack (pipeline/infra/template.yaml) with a "
                    "change set; its outputs name the role, bucket, image repositories and queue that upsert and "
                    "start use.")
    p.add_argument("--config", type=Path, default=None, help="pipeline.yaml (default: ./pipeline.yaml if present)")
    p.add_argument("--stack-name", default=None, help="stack name (default: sagemaker.stack_name, else the project)")
    p.add_argument("--region", default=None, help="AWS Region (default: aws.region of the configuration)")
    p.add_argument("--profile", default=None, help="AWS credentials profile (default: aws.profile)")
    p.add_argument("--parameter", action="append", default=[], metavar="KEY=VALUE",
                   help="template parameter (repeatable), e.g. WorkteamArn=arn:aws:sagemaker:...")
    p.add_argument("--lambda-image-tag", default="latest",
                   help="tag of the pushed Lambda image the functions run (pinned by digest; default latest)")
    p.add_argument("--template", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--poll-seconds", type=int, default=5, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_deploy)


def stack_name_of(args: argparse.Namespace, config: Any) -> str:
    """``--stack-name``, else ``sagemaker.stack_name``, else the project name."""
    return args.stack_name or config.sagemaker.stack_name or config.project


def cmd_deploy(args: argparse.Namespace) -> int:
    """Deploy the stack and print what changed and its outputs; 0 on success (also when nothing changed)."""
    from pipeline.infra.cfn_template import TEMPLATE_PATH, load_template, template_body, template_parameters
    from pipeline.infra.outputs import lambda_image_uri, stack_parameters
    from pipeline.infra.stack import DeployError, deploy_stack, parse_parameters

    config = _config(args)
    session = boto_session(args, config)
    name = stack_name_of(args, config)
    template = load_template(args.template or TEMPLATE_PATH)
    given = parse_parameters(args.parameter)
    parameters = {**stack_parameters(config), **given}
    if "LambdaImageUri" not in given:
        project = parameters.get("ProjectName", config.project)
        parameters["LambdaImageUri"] = lambda_image_uri(session.client("ecr"), f"{project}-lambda",
                                                        args.lambda_image_tag)
    cfn = session.client("cloudformation")
    try:
        result = deploy_stack(cfn, name, template_body(template), template_parameters(template), parameters,
                              tags=config.sagemaker.tags, delay_s=args.poll_seconds, log=print)
    except DeployError as err:
        print(f"storyboard deploy: error: {err}", file=sys.stderr)
        return 1
    for change in result.changes:
        replacement = " (replacement)" if change["Replacement"] == "True" else ""
        print(f"  {change['Action']:<8} {change['LogicalResourceId']:<32} {change['ResourceType']}{replacement}")
    verb = {"CREATE": "created", "UPDATE": "updated", "NONE": "unchanged (nothing to change)"}[result.action]
    print(f"stack {result.stack_name} {verb}")
    print("outputs:")
    for key, value in sorted(result.outputs.items()):
        print(f"  {key:<32} {value}")
    if not parameters["LambdaImageUri"]:
        print(f"note: no Lambda image {parameters.get('ProjectName', config.project)}-lambda:{args.lambda_image_tag} "
              "yet, so no functions, rules or schedule: run `storyboard images build` and `storyboard images push`, "
              "then `storyboard deploy` again")
    print(f"next: storyboard upsert --stack-name {result.stack_name}")
    return 0
