"""What a local run executes, checked before any step runs: the compiled definition's steps flattened out of
Condition branches, put in dependency order (the schedule), validated against what the local runner implements,
and the execution's parameter values resolved against the definition's types (:mod:`pipeline.local_runner`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.expressions import (
    CONDITION_TYPES,
    ExpressionError,
    UnsupportedExpressionError,
    check_supported,
    parse_path,
    referenced_steps,
)
from pipeline.local_training import TrainingStepError, check_training

SUPPORTED_STEP_TYPES = ("Processing", "Training", "Callback", "Lambda", "Condition", "Fail")
PROCESSING_ROOT = "/opt/ml/processing"


class UnsupportedStepError(UnsupportedExpressionError):
    """The definition has a step type or setting the local runner does not implement."""



@dataclass
class StepInfo:
    """A step of the definition, flattened out of Condition branches."""

    name: str
    type: str
    spec: dict[str, Any]
    order: int
    parent: str | None = None          # the Condition step whose branch holds this step
    branch: bool | None = None         # True: IfSteps, False: ElseSteps
    depends: set[str] = field(default_factory=set)



def flatten_steps(definition: Mapping[str, Any]) -> dict[str, StepInfo]:
    """All steps of ``definition`` by name, Condition branches included, with their dependencies.

    Raises:
        UnsupportedStepError: a step type other than :data:`SUPPORTED_STEP_TYPES`.
        ExpressionError: duplicate names, a reference to an unknown step, or a dependency cycle.
    """
    steps: dict[str, StepInfo] = {}

    def add(spec: Mapping[str, Any], parent: str | None, branch: bool | None) -> None:
        name, kind = spec.get("Name"), spec.get("Type")
        if not isinstance(name, str) or not name:
            raise ExpressionError(f"a step has no Name: {json.dumps(spec)[:200]}")
        if kind not in SUPPORTED_STEP_TYPES:
            raise UnsupportedStepError(f"step {name}: type {kind!r} is not supported by the local runner "
                                       f"(supported: {', '.join(SUPPORTED_STEP_TYPES)})")
        if name in steps:
            raise ExpressionError(f"step name {name!r} is used twice")
        info = StepInfo(name=name, type=kind, spec=dict(spec), order=len(steps), parent=parent, branch=branch)
        steps[name] = info
        if kind == "Condition":
            args = spec.get("Arguments", {})
            for child in args.get("IfSteps", []):
                add(child, name, True)
            for child in args.get("ElseSteps", []):
                add(child, name, False)

    for spec in definition.get("Steps", []):
        add(spec, None, None)
    for info in steps.values():
        args = info.spec.get("Arguments", {})
        if info.type == "Condition":
            args = {"Conditions": args.get("Conditions", [])}
        refs = referenced_steps(args) | set(info.spec.get("DependsOn", []) or [])
        if info.parent:
            refs.add(info.parent)
        unknown = sorted(refs - set(steps))
        if unknown:
            raise ExpressionError(f"step {info.name} refers to unknown step(s) {unknown}")
        refs.discard(info.name)
        info.depends = refs
    topological_order(steps)  # raises on a cycle
    return steps


def topological_order(steps: Mapping[str, StepInfo]) -> list[str]:
    """Kahn's algorithm; among ready steps the one earliest in the definition runs first.

    Raises:
        ExpressionError: the dependencies form a cycle (the message names the steps in it).
    """
    remaining = {name: set(info.depends) for name, info in steps.items()}
    order: list[str] = []
    while remaining:
        ready = sorted((n for n, deps in remaining.items() if not deps), key=lambda n: steps[n].order)
        if not ready:
            raise ExpressionError(f"dependency cycle among steps {sorted(remaining)}")
        chosen = ready[0]
        order.append(chosen)
        del remaining[chosen]
        for deps in remaining.values():
            deps.discard(chosen)
    return order


def validate_definition(definition: Mapping[str, Any]) -> dict[str, StepInfo]:
    """Check that the local runner can run every step of ``definition``; return the flattened steps.

    Raises:
        UnsupportedStepError / UnsupportedExpressionError: naming the step and the construct.
        ExpressionError: a reference to a step, or a property file, that does not exist.
    """
    steps = flatten_steps(definition)
    for info in steps.values():
        spec = info.spec
        where = f"step {info.name}"
        args = spec.get("Arguments", {})
        if info.type == "Condition":
            for cond in args.get("Conditions", []):
                _check_condition(cond, where)
            check_supported(args.get("Conditions", []), where)
        else:
            check_supported(args, where)
        if info.type == "Processing":
            _check_processing(info)
        if info.type == "Training":
            try:
                check_training(info.name, args)
            except TrainingStepError as err:
                raise UnsupportedStepError(str(err)) from None
        for expr_holder in ("PropertyFiles",):
            check_supported(spec.get(expr_holder, []), where)
    _check_property_file_refs(definition, steps)
    return steps


def _check_condition(cond: Mapping[str, Any], where: str) -> None:
    kind = cond.get("Type")
    if kind not in CONDITION_TYPES:
        raise UnsupportedExpressionError(f"{where}: condition type {kind!r} is not supported "
                                         f"(supported: {', '.join(CONDITION_TYPES)})")
    if kind == "Not":
        _check_condition(cond.get("Condition", {}), where)
    if kind == "Or":
        for sub in cond.get("Conditions", []):
            _check_condition(sub, where)


def _check_processing(info: StepInfo) -> None:
    args = info.spec.get("Arguments", {})
    where = f"step {info.name}"
    entry = args.get("AppSpecification", {}).get("ContainerEntrypoint")
    if not entry or not isinstance(entry[0], str) or not re.fullmatch(r"(.*/)?python(3(\.\d+)?)?", entry[0]):
        raise UnsupportedStepError(f"{where}: the local runner runs Python entry points (python3 -m <module> or "
                                   f"python3 <script>); ContainerEntrypoint is {entry!r}")
    for item in args.get("ProcessingInputs", []):
        s3 = item.get("S3Input")
        if s3 is None:
            raise UnsupportedStepError(f"{where}: input {item.get('InputName')!r} is not an S3Input "
                                       "(dataset definitions are not supported locally)")
        if s3.get("S3DataType", "S3Prefix") != "S3Prefix" or s3.get("S3InputMode", "File") != "File":
            raise UnsupportedStepError(f"{where}: input {item.get('InputName')!r} uses S3DataType "
                                       f"{s3.get('S3DataType')!r} / S3InputMode {s3.get('S3InputMode')!r}; "
                                       "the local runner supports S3Prefix in File mode")
        if s3.get("S3DataDistributionType", "FullyReplicated") not in ("FullyReplicated", "ShardedByS3Key"):
            raise UnsupportedStepError(f"{where}: distribution {s3.get('S3DataDistributionType')!r} not supported")
        if not str(s3.get("LocalPath", "")).startswith(PROCESSING_ROOT + "/"):
            raise UnsupportedStepError(f"{where}: input LocalPath {s3.get('LocalPath')!r} is outside {PROCESSING_ROOT}")
    for item in args.get("ProcessingOutputConfig", {}).get("Outputs", []):
        s3 = item.get("S3Output")
        if s3 is None or not str(s3.get("LocalPath", "")).startswith(PROCESSING_ROOT + "/"):
            raise UnsupportedStepError(f"{where}: output {item.get('OutputName')!r} must be an S3Output with a "
                                       f"LocalPath under {PROCESSING_ROOT}")


def _check_property_file_refs(definition: Mapping[str, Any], steps: Mapping[str, StepInfo]) -> None:
    declared = {(info.name, pf.get("PropertyFileName")) for info in steps.values()
                for pf in info.spec.get("PropertyFiles", []) or []}
    outputs = {info.name: {o.get("OutputName") for o in
                           info.spec.get("Arguments", {}).get("ProcessingOutputConfig", {}).get("Outputs", [])}
               for info in steps.values() if info.type == "Processing"}
    for info in steps.values():
        for pf in info.spec.get("PropertyFiles", []) or []:
            if pf.get("OutputName") not in outputs.get(info.name, set()):
                raise ExpressionError(f"step {info.name}: property file {pf.get('PropertyFileName')!r} reads output "
                                      f"{pf.get('OutputName')!r}, which the step does not declare")

    def visit(value: Any, where: str) -> None:
        if isinstance(value, Mapping):
            if "Std:JsonGet" in value and len(value) == 1:
                ref = value["Std:JsonGet"].get("PropertyFile") if isinstance(value["Std:JsonGet"], Mapping) else None
                if isinstance(ref, Mapping) and isinstance(ref.get("Get"), str):
                    tokens = parse_path(ref["Get"])
                    if len(tokens) != 4 or (str(tokens[1]), str(tokens[3])) not in declared:
                        raise ExpressionError(f"{where}: Std:JsonGet reads {ref['Get']!r}, which no step declares")
            for item in value.values():
                visit(item, where)
        elif isinstance(value, list):
            for item in value:
                visit(item, where)

    for info in steps.values():
        args = info.spec.get("Arguments", {})
        if info.type == "Condition":
            args = args.get("Conditions", [])
        visit(args, f"step {info.name}")


def resolve_parameters(definition: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Parameter values for an execution: the definition's defaults with ``overrides`` applied.

    Values are converted to the definition's types (``String``, ``Integer``, ``Float``, ``Boolean``)
    and checked against ``EnumValues``.

    Raises:
        core.errors.InputError: an unknown name (the message lists the known ones), a value that does
            not convert, a value outside ``EnumValues``, or a parameter with neither default nor value.
    """
    from core.errors import InputError

    declared = {p["Name"]: p for p in definition.get("Parameters", [])}
    from pipeline.parameter_values import unknown_parameter_error

    for name in overrides:
        if name not in declared:
            raise unknown_parameter_error(name, declared)
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        raw = overrides.get(name, spec.get("DefaultValue"))
        if raw is None:
            raise InputError(f"pipeline parameter {name} has no default; give --param {name}=<value>")
        kind = spec.get("Type", "String")
        try:
            if kind == "Integer":
                value: Any = int(raw) if not isinstance(raw, str) else int(raw.strip())
            elif kind == "Float":
                value = float(raw)
            elif kind == "Boolean":
                value = raw if isinstance(raw, bool) else {"true": True, "false": False}[str(raw).strip().lower()]
            else:
                value = str(raw)
        except (ValueError, KeyError):
            raise InputError(f"pipeline parameter {name} is {kind}; cannot use {raw!r}") from None
        enum = spec.get("EnumValues")
        if enum and value not in enum:
            raise InputError(f"pipeline parameter {name} must be one of {enum}, got {raw!r}")
        values[name] = value
    return values
