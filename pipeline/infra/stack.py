"""Deploy the project's CloudFormation stack through a change set, and read its outputs.

:func:`deploy_stack` is what ``storyboard deploy`` runs: a change set of type ``CREATE`` when the stack does
not exist (or exists only as ``REVIEW_IN_PROGRESS``, what a never-executed CREATE change set leaves), else
``UPDATE``; waited on with boto3's waiters; executed; waited on again. A change set without changes is deleted
and reported as ``"NONE"``. The change-set name is derived from the template body and the parameters
(``<stack>-<sha256[:16]>``), so a repeated run finds its own change set, and the execution's
``ClientRequestToken`` is that name, so a retried execute is idempotent.

Facts (CloudFormation API reference): change-set names match ``[a-zA-Z][-a-zA-Z0-9]*`` and have at most 128
characters; ``CAPABILITY_IAM``, ``CAPABILITY_NAMED_IAM`` (the template names its roles) and
``CAPABILITY_AUTO_EXPAND`` (macros, the SAM transform); a change set without changes ends ``FAILED`` with
the reason "The submitted information didn't contain changes..." (or "No updates are to be performed.").
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from core.errors import InputError

CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"]
STACK_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9-]{0,127}$"
NO_CHANGES = ("didn't contain changes", "No updates are to be performed")
# Stack states from which a change set cannot proceed (CloudFormation user guide, "Stack status codes").
BLOCKED_STATES = ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "DELETE_FAILED", "UPDATE_ROLLBACK_FAILED")


class DeployError(RuntimeError):
    """The change set or the stack operation failed; the message holds CloudFormation's reasons."""


@dataclass
class DeployResult:
    """What :func:`deploy_stack` did.

    Attributes:
        stack_name, stack_id: the stack.
        action: ``"CREATE"``, ``"UPDATE"`` or ``"NONE"`` (nothing to change; the change set was deleted).
        change_set_name: the deterministic change-set name used.
        changes: ``[{"Action", "LogicalResourceId", "ResourceType", "Replacement"}]`` of the change set.
        outputs: the stack's outputs after the operation (``OutputKey`` -> ``OutputValue``).
    """

    stack_name: str
    stack_id: str
    action: str
    change_set_name: str
    changes: list[dict[str, str]] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)


def parse_parameters(items: list[str] | None) -> dict[str, str]:
    """``["Key=Value", ...]`` to a mapping (the value may contain ``=``; it may be empty).

    Raises:
        InputError: an item without ``=`` or with an empty key.
    """
    result: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--parameter {item!r}: expected Key=Value (a template parameter name, then its value)")
        result[key.strip()] = value
    return result


def change_set_name(stack_name: str, body: str, parameters: Mapping[str, str]) -> str:
    """``<stack>-<16 hex>``: the same template and parameters give the same name (at most 128 characters)."""
    digest = hashlib.sha256((body + json.dumps(dict(parameters), sort_keys=True)).encode("utf-8")).hexdigest()[:16]
    return f"{stack_name[:110]}-{digest}"


def stack_status(cfn: Any, stack_name: str) -> str | None:
    """The stack's status, or ``None`` when no stack of that name exists."""
    from botocore.exceptions import ClientError

    try:
        stacks = cfn.describe_stacks(StackName=stack_name).get("Stacks", [])
    except ClientError as err:
        if "does not exist" in str(err.response.get("Error", {}).get("Message", "")):
            return None
        raise
    return stacks[0]["StackStatus"] if stacks else None


def stack_outputs(cfn: Any, stack_name: str) -> dict[str, str]:
    """The stack's outputs (``OutputKey`` -> ``OutputValue``).

    Raises:
        InputError: no stack of that name (deploy it first: ``storyboard deploy --stack-name NAME``).
    """
    from botocore.exceptions import ClientError

    try:
        stacks = cfn.describe_stacks(StackName=stack_name).get("Stacks", [])
    except ClientError as err:
        if "does not exist" in str(err.response.get("Error", {}).get("Message", "")):
            stacks = []
        else:
            raise
    if not stacks:
        raise InputError(f"CloudFormation stack {stack_name} does not exist in this account and Region; "
                         f"create it with `storyboard deploy --stack-name {stack_name}` or fix --stack-name / "
                         "sagemaker.stack_name")
    return {o["OutputKey"]: o.get("OutputValue", "") for o in stacks[0].get("Outputs", [])}


def request_parameters(declared: Mapping[str, Any], given: Mapping[str, str], updating: bool,
                       previous: set[str]) -> list[dict[str, Any]]:
    """The ``Parameters`` of the change set: the given values; on an update, every other declared parameter
    that the stack already has keeps its previous value (``UsePreviousValue``).

    Raises:
        InputError: a given parameter is not declared by the template.
    """
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise InputError(f"unknown template parameter(s) {unknown}; the template declares {sorted(declared)}")
    params = [{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(given.items())]
    if updating:
        params += [{"ParameterKey": k, "UsePreviousValue": True} for k in sorted(declared)
                   if k not in given and k in previous]
    return params


def _failure_reasons(cfn: Any, stack_name: str, limit: int = 5) -> str:
    try:
        events = cfn.describe_stack_events(StackName=stack_name).get("StackEvents", [])
    except Exception:  # noqa: BLE001 - the reasons are a courtesy; the failure is reported anyway
        return ""
    reasons = [f"{e.get('LogicalResourceId')}: {e.get('ResourceStatusReason')}" for e in events
               if str(e.get("ResourceStatus", "")).endswith("FAILED") and e.get("ResourceStatusReason")]
    return "; ".join(reasons[:limit])


def deploy_stack(cfn: Any, stack_name: str, body: str, declared: Mapping[str, Any], parameters: Mapping[str, str],
                 tags: Mapping[str, str] | None = None, delay_s: int = 5, max_attempts: int = 720,
                 log: Callable[[str], None] = lambda _msg: None) -> DeployResult:
    """Create or update ``stack_name`` from ``body`` through a change set, and wait until it is done.

    Args:
        cfn: a boto3 ``cloudformation`` client.
        stack_name: 1..128 characters, a letter first, then letters, digits and hyphens.
        body: the template body (:func:`pipeline.infra.cfn_template.template_body`).
        declared: the template's ``Parameters`` section.
        parameters: values to set; on an update the others keep their previous values.
        tags: stack tags (propagated to the resources that take tags).
        delay_s, max_attempts: waiter polling (default: every 5 s for up to an hour).
        log: receives one line per stage.

    Raises:
        InputError: a bad stack name or parameter, or a stack in a state that needs a person
            (``ROLLBACK_COMPLETE``: delete the stack first).
        DeployError: the change set or the stack operation failed (CloudFormation's reasons quoted).
    """
    from botocore.exceptions import WaiterError

    if not re.fullmatch(STACK_NAME_PATTERN, stack_name):
        raise InputError(f"stack name {stack_name!r}: 1 to 128 letters, digits and hyphens, starting with a letter")
    status = stack_status(cfn, stack_name)
    if status in BLOCKED_STATES:
        raise InputError(f"stack {stack_name} is {status}; delete it (aws cloudformation delete-stack --stack-name "
                         f"{stack_name}) and deploy again")
    if status is not None and status.endswith("_IN_PROGRESS") and status != "REVIEW_IN_PROGRESS":
        raise InputError(f"stack {stack_name} is {status}; wait until it finishes, then deploy again")
    updating = status not in (None, "REVIEW_IN_PROGRESS")
    previous: set[str] = set()
    if updating:
        stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
        previous = {p["ParameterKey"] for p in stack.get("Parameters", [])}
    params = request_parameters(declared, parameters, updating, previous)
    name = change_set_name(stack_name, body, {p["ParameterKey"]: p.get("ParameterValue", "(previous)")
                                              for p in params})
    _delete_change_set(cfn, stack_name, name)
    kind = "UPDATE" if updating else "CREATE"
    log(f"change set {name} ({kind}) for stack {stack_name}")
    request: dict[str, Any] = {
        "StackName": stack_name, "ChangeSetName": name, "ChangeSetType": kind, "TemplateBody": body,
        "Parameters": params, "Capabilities": CAPABILITIES, "ClientToken": name,
        "Description": "storyboard deploy",
    }
    if tags:
        request["Tags"] = [{"Key": k, "Value": v} for k, v in sorted(tags.items())]
    from botocore.exceptions import ClientError

    try:
        created = cfn.create_change_set(**request)
    except ClientError as err:  # some endpoints refuse an empty change set at once instead of failing it
        if updating and any(m in str(err.response.get("Error", {}).get("Message", "")) for m in NO_CHANGES):
            log(f"stack {stack_name}: nothing to change")
            outputs = stack_outputs(cfn, stack_name)
            return DeployResult(stack_name, stack_name, "NONE", name, [], outputs)
        raise
    stack_id = created.get("StackId", stack_name)
    waiter_config = {"Delay": delay_s, "MaxAttempts": max_attempts}
    try:
        cfn.get_waiter("change_set_create_complete").wait(StackName=stack_name, ChangeSetName=name,
                                                          WaiterConfig=waiter_config)
    except WaiterError:
        described = cfn.describe_change_set(StackName=stack_name, ChangeSetName=name)
        reason = str(described.get("StatusReason") or "")
        if any(marker in reason for marker in NO_CHANGES):
            _delete_change_set(cfn, stack_name, name)
            log(f"stack {stack_name}: nothing to change")
            return DeployResult(stack_name, stack_id, "NONE", name, [], stack_outputs(cfn, stack_name))
        raise DeployError(f"change set {name} failed: {reason or described.get('Status')}") from None
    described = cfn.describe_change_set(StackName=stack_name, ChangeSetName=name)
    changes = [{"Action": c["ResourceChange"].get("Action", ""),
                "LogicalResourceId": c["ResourceChange"].get("LogicalResourceId", ""),
                "ResourceType": c["ResourceChange"].get("ResourceType", ""),
                "Replacement": str(c["ResourceChange"].get("Replacement", ""))}
               for c in described.get("Changes", []) if "ResourceChange" in c]
    log(f"executing {len(changes)} change(s)")
    cfn.execute_change_set(StackName=stack_name, ChangeSetName=name, ClientRequestToken=name)
    waiter = "stack_update_complete" if updating else "stack_create_complete"
    try:
        cfn.get_waiter(waiter).wait(StackName=stack_name, WaiterConfig=waiter_config)
    except WaiterError as err:
        reasons = _failure_reasons(cfn, stack_name)
        raise DeployError(f"stack {stack_name} {kind.lower()} failed ({stack_status(cfn, stack_name)}): "
                          f"{reasons or err}") from None
    return DeployResult(stack_name, stack_id, kind, name, changes, stack_outputs(cfn, stack_name))


def _delete_change_set(cfn: Any, stack_name: str, name: str) -> None:
    """Delete the change set ``name`` of the stack if there is one (a previous run's, never executed)."""
    from botocore.exceptions import ClientError

    try:
        cfn.describe_change_set(StackName=stack_name, ChangeSetName=name)
    except ClientError:
        return
    try:
        cfn.delete_change_set(StackName=stack_name, ChangeSetName=name)
    except ClientError:  # executed or already gone: nothing to remove
        return
