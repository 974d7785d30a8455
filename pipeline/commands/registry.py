"""`storyboard approve`: approve or reject a model package, which deploys or removes it.

::

    storyboard approve MODEL_PACKAGE_ARN [--reject] --local [--runs runs] [--config pipeline.yaml]
    storyboard approve MODEL_PACKAGE_ARN [--reject] [--description TEXT] [--config ...] [--region R] [--profile P]

``--local`` works on the local registry (``<runs>/registry.json``, or ``registry.local_registry_path``)
that ``storyboard run --local`` registers into, then runs the approval handler's logic offline and prints
the planned deployment: for a LoRA package the exact ``create_model`` / ``create_endpoint_config`` /
``create_endpoint`` or ``update_endpoint`` (a later approval) or delete requests (a rejection), validated
against botocore's service model and appended to ``<runs>/deployments/deployment_requests.jsonl``, with the
state they imply in ``deployment_state.json``. Nothing is deployed.

Without ``--local`` the command calls ``update_model_package(ModelApprovalStatus=Approved|Rejected)`` and
the EventBridge rule's approval Lambda does the rest (as an approval in SageMaker Studio does).

Exit status: 0 done; 2 bad input (no such package, a refused request).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from pipeline.commands.local import LOCAL_HANDLERS_MODULE

APPROVE_DESCRIPTION = """\
Approve or reject a model package; an approval deploys it, a rejection removes its deployment.

  storyboard approve MODEL_PACKAGE_ARN [--reject] --local [--runs runs] [--config pipeline.yaml]
  storyboard approve MODEL_PACKAGE_ARN [--reject] [--description TEXT] [--config ...] [--region R] [--profile P]

--local works on the local registry (<runs>/registry.json, or registry.local_registry_path) that
'storyboard run --local' registers into, runs the approval handler's logic offline and prints the planned
deployment: for a LoRA package the create_model / create_endpoint_config / create_endpoint or
update_endpoint (a later approval) or delete requests (a rejection), validated against botocore's service
model and appended to <runs>/deployments/deployment_requests.jsonl, with the state they imply in
deployment_state.json. Nothing is deployed.

Without --local the command calls update_model_package(ModelApprovalStatus=Approved|Rejected) and the
EventBridge rule's approval Lambda does the rest (as an approval in SageMaker Studio does).

Exit status: 0 done; 2 bad input (no such package, a refused request).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``approve`` to ``subparsers``."""
    parser = subparsers.add_parser(
        "approve", help="approve (or --reject) a model package: deploys (or removes) its endpoint",
        description=APPROVE_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_package_arn", metavar="MODEL_PACKAGE_ARN", help="the model package (version) ARN")
    parser.add_argument("--reject", action="store_true", help="reject instead of approve")
    parser.add_argument("--local", action="store_true", help="the local registry and a planned deployment (offline)")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="folder of run folders (default: runs)")
    parser.add_argument("--description", default=None, help="ApprovalDescription (AWS only)")
    parser.add_argument("--config", type=Path, default=None,
                        help="pipeline.yaml (default: ./pipeline.yaml if present, else built-in defaults)")
    parser.add_argument("--region", default=None, help="AWS Region (default: aws.region of the configuration)")
    parser.add_argument("--profile", default=None, help="AWS credentials profile (default: aws.profile)")
    parser.set_defaults(func=run_approve)


def _config(path: Path | None) -> Any:
    from core.config import load_config

    if path is None and Path("pipeline.yaml").is_file():
        path = Path("pipeline.yaml")
    return load_config(path)


def run_approve(args: argparse.Namespace) -> int:
    """``storyboard approve``: prints a JSON summary; returns 0."""
    status = "Rejected" if args.reject else "Approved"
    config = _config(args.config)
    if args.local:
        local = importlib.import_module(LOCAL_HANDLERS_MODULE)
        approve, deployments_folder, local_registry_path = (
            local.approve, local.deployments_folder, local.local_registry_path)

        runs = args.runs.expanduser().resolve()
        action = approve(args.model_package_arn, status, runs, config)
        folder = deployments_folder(runs)
        summary = {"modelPackageArn": args.model_package_arn, "status": status, **action.to_json(),
                   "registry": str(local_registry_path(runs, config)),
                   "plannedRequests": str(folder / "deployment_requests.jsonl"),
                   "plannedState": str(folder / "deployment_state.json"),
                   "note": "planned offline: nothing was deployed"}
    else:
        from pipeline.commands.context import boto_session, sagemaker_client

        client = sagemaker_client(boto_session(args, config), config)
        request: dict[str, Any] = {"ModelPackageArn": args.model_package_arn, "ModelApprovalStatus": status}
        if args.description:
            request["ApprovalDescription"] = args.description
        client.update_model_package(**request)
        summary = {"modelPackageArn": args.model_package_arn, "status": status,
                   "note": "the approval Lambda (EventBridge 'SageMaker Model Package State Change') deploys or "
                           "cleans up; see its log"}
    print(json.dumps(summary, indent=2), file=sys.stdout)
    return 0
