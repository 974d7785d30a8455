"""`storyboard images build|push [--tag TAG] [--stack-name NAME]`: the processing, training, inference and
Lambda images, tagged with the repository URIs of the stack's outputs. Each docker command is printed before it
runs; ``push`` logs in to ECR first (``ecr.get_authorization_token``). The logic: :mod:`pipeline.infra.images`."""

from __future__ import annotations

import argparse
import shlex
import subprocess
from pathlib import Path

from pipeline.commands.context import _config, boto_session
from pipeline.commands.deploy import stack_name_of

REPO_ROOT = Path(__file__).resolve().parents[2]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``images`` (``build`` and ``push``) to ``subparsers``."""
    p = subparsers.add_parser(
        "images", help="docker build / push the four images into the stack's repositories",
        description="Build (docker build) or push (docker push, after an ECR login) the processing, training, "
                    "inference and Lambda images into the repositories of the deployed stack.")
    p.add_argument("action", choices=("build", "push"))
    p.add_argument("--tag", default="latest", help="image tag (default latest; the stack's ImageTag parameter)")
    p.add_argument("--config", type=Path, default=None, help="pipeline.yaml (default: ./pipeline.yaml if present)")
    p.add_argument("--stack-name", default=None, help="stack name (default: sagemaker.stack_name, else the project)")
    p.add_argument("--region", default=None, help="AWS Region (default: aws.region of the configuration)")
    p.add_argument("--profile", default=None, help="AWS credentials profile (default: aws.profile)")
    p.set_defaults(func=cmd_images)


def _run(argv: list[str], stdin: str | None = None) -> int:
    print("$ " + shlex.join(argv), flush=True)
    return subprocess.run(argv, cwd=REPO_ROOT, input=stdin, text=True, check=False).returncode


def cmd_images(args: argparse.Namespace) -> int:
    """Build or push every image; stops at the first failing docker command and returns its status."""
    from pipeline.infra.images import build_commands, push_commands, registry_login, repositories
    from pipeline.infra.stack import stack_outputs

    config = _config(args)
    session = boto_session(args, config)
    repos = repositories(stack_outputs(session.client("cloudformation"), stack_name_of(args, config)))
    if args.action == "build":
        commands = build_commands(repos, args.tag)
    else:
        login, password = registry_login(session.client("ecr"))
        code = _run(login, stdin=password)
        if code:
            return code
        commands = push_commands(repos, args.tag)
    for argv in commands:
        code = _run(argv)
        if code:
            return code
    if args.action == "push":
        print("next: storyboard deploy (the functions run the Lambda image just pushed)")
    return 0
