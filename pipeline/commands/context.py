"""What every AWS sub-command starts from: the configuration (``--config``, else ``./pipeline.yaml``, else the
built-in defaults), the boto3 session of ``--region`` and ``--profile``, the SageMaker client with the project's
retry policy, the names of the stack ``--stack-name`` applied, and the pipeline's name.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


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
