"""Run a compiled SageMaker pipeline definition on this machine (DESIGN §6).

The runner executes the same JSON definition that SageMaker stores:

- steps run in dependency order, from their ``Get`` references, ``Std:JsonGet`` property files,
  ``DependsOn`` lists and the branches of Condition steps; ties keep the definition's order;
- a **Processing** step runs its container entry point (``python3 -m <module>``) as a subprocess of this
  Python, once per instance (``InstanceCount``), with ``/opt/ml/processing`` mapped to the step's run
  folder (``STORYBOARD_PROCESSING_ROOT``); inputs are linked in (``ShardedByS3Key`` splits the files
  across instances), outputs stay where the container wrote them, and the property files are read from
  them;
- **Callback** steps call an in-process handler chosen by the ``Task`` argument, **Lambda** steps one
  chosen by the function name in ``FunctionArn``; both get the resolved arguments, with every S3 URI this
  run knows replaced by its local path, and must return every declared output parameter;
- a **Training** step runs its training entry point with ``/opt/ml`` mapped into the step's run folder
  and packs ``/opt/ml/model`` into ``model.tar.gz`` (:mod:`pipeline.local_training`);
- **Condition** and **Fail** steps are evaluated from the definition (:mod:`pipeline.expressions`).

An unsupported step type, function, condition, input mode or entry point is an error that names it,
raised before any step runs where it can be seen in the definition.

Run folder (``runs/<execution-id>/``)::

    definition.json    the definition executed (a resume uses it again)
    execution.json     pipeline name, execution ID and ARN, parameter values, local S3 mappings
    status.json        execution and step statuses, rewritten atomically after every change
    runner.log         the runner's own log
    <Step>/step.log    the step's log (container output, handler log); <Step>/properties.json its properties
    <Step>/input/...   processing inputs (links); <Step>/output/... processing outputs
    <Step>/algo-<k>/   per-instance processing roots when InstanceCount > 1 (outputs are merged up)
    <Step>/opt_ml/     a training step's /opt/ml (checkpoints/ survives a resume); <Step>/model-output/ its model.tar.gz

A failed or interrupted run resumes with :meth:`LocalRunner.resume`: steps that succeeded are kept
(their properties are read back), the failed or interrupted step and everything after it run again.
Retry policies and caching are cloud features and are not applied locally.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from core.io import write_json
from pipeline.expressions import (
    CONDITION_TYPES,
    EvaluationContext,
    ExpressionError,
    UnsupportedExpressionError,
    check_supported,
    parse_path,
    referenced_steps,
    to_text,
)
from pipeline.local_training import TrainingStepError, check_training, run_training_step
from pipeline.run_progress import StepLogFollower, append_line, condition_sentence, training_total

if TYPE_CHECKING:
    from core.config import StoryboardConfig

log = logging.getLogger(__name__)

SUPPORTED_STEP_TYPES = ("Processing", "Training", "Callback", "Lambda", "Condition", "Fail")
PROCESSING_ROOT = "/opt/ml/processing"
PROCESSING_ROOT_ENV = "STORYBOARD_PROCESSING_ROOT"
RESOURCE_CONFIG_ENV = "STORYBOARD_RESOURCE_CONFIG"
TQDM_INTERVAL_ENV = "TQDM_MININTERVAL"  # tqdm (>= 4.66) reads its arguments' defaults from TQDM_* variables
REPO_ROOT = Path(__file__).resolve().parents[1]

# Step statuses follow ListPipelineExecutionSteps; NotExecuted marks a branch not taken.
SUCCEEDED, FAILED, EXECUTING, STOPPED, NOT_EXECUTED, PENDING = (
    "Succeeded", "Failed", "Executing", "Stopped", "NotExecuted", "Pending")

CallbackHandler = Callable[[dict[str, str], Path, "StoryboardConfig"], Mapping[str, Any]]
LambdaHandler = Callable[[dict[str, Any], Path, "StoryboardConfig"], Mapping[str, Any]]


class UnsupportedStepError(UnsupportedExpressionError):
    """The definition has a step type or setting the local runner does not implement."""


class StepFailure(RuntimeError):
    """A step failed; the message is its failure reason."""


class ProcessingLauncher(Protocol):
    """Runs one instance of a processing container entry point.

    ``command`` is the entry point plus arguments with ``python3`` replaced by this interpreter; the
    process runs in ``cwd`` with ``env``; its output goes to ``log_path`` (appended). Returns the exit code.
    """

    def __call__(self, step_name: str, command: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> int: ...


def subprocess_launcher(step_name: str, command: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> int:
    """The default :class:`ProcessingLauncher`: a subprocess whose stdout and stderr go to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(command)}\n")
        handle.flush()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT)
        try:
            return process.wait()
        except BaseException:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
            raise


def new_execution_id() -> str:
    """A new local execution ID: ``local-<UTC yyyymmddThhmmss>-<6 hex>`` (letters, digits and '-')."""
    return f"local-{datetime.now(timezone.utc).strftime('%Y%m%dt%H%M%S')}-{secrets.token_hex(3)}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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


@dataclass
class StepRecord:
    """Status of one step in ``status.json``."""

    StepName: str
    StepType: str
    StepStatus: str = PENDING
    StartTime: str | None = None
    EndTime: str | None = None
    FailureReason: str | None = None
    Outputs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExecutionResult:
    """Outcome of :meth:`LocalRunner.run`.

    Attributes:
        status: ``Succeeded``, ``Failed`` or ``Stopped``.
        failure_reason: the failed step's reason (a Fail step's message), or ``None``.
        failed_step: name of the failed step, or ``None``.
        failed_step_type: its type (``Fail`` when the pipeline ended in a Fail step).
        steps: the step records in execution order.
        run_dir: the run folder.
        executed: names of the steps run by this call (not those kept from before a resume).
    """

    execution_id: str
    status: str
    failure_reason: str | None
    failed_step: str | None
    failed_step_type: str | None
    steps: list[StepRecord]
    run_dir: Path
    executed: list[str]


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


def _container_relative(local_path: str) -> Path:
    rel = local_path[len(PROCESSING_ROOT):].strip("/")
    return Path(rel)


def _is_within(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/")
    return path == prefix or path.startswith(prefix + "/")


class LocalRunner:
    """Executes one pipeline execution in ``run_dir``; see the module docstring.

    Create one with :meth:`create` (a new execution) or :meth:`resume` (an existing run folder).

    Args:
        definition: the compiled definition (a mapping, as ``json.loads`` gives it).
        run_dir: the execution's folder (``runs/<execution-id>``).
        execution: the ``execution.json`` content (ids, parameters, S3 mappings).
        config: the configuration handed to the handlers.
        callback_handlers: Callback handlers by ``Task``.
        lambda_handlers: Lambda handlers by function name.
        launcher: runs processing entry points (default: :func:`subprocess_launcher`).
        echo: receives each progress line a running step writes to its log (the command line prints them),
            or ``None``.
        handler_import_error: why the handlers could not be imported, quoted when one is missing.
    """

    def __init__(self, definition: Mapping[str, Any], run_dir: Path, execution: Mapping[str, Any],
                 config: StoryboardConfig, callback_handlers: Mapping[str, CallbackHandler] | None = None,
                 lambda_handlers: Mapping[str, LambdaHandler] | None = None,
                 launcher: ProcessingLauncher | None = None, handler_import_error: str | None = None,
                 echo: Callable[[str], None] | None = None) -> None:
        self.definition = dict(definition)
        self.run_dir = Path(run_dir).resolve()
        self.execution = dict(execution)
        self.config = config
        self.callback_handlers = dict(callback_handlers or {})
        self.lambda_handlers = dict(lambda_handlers or {})
        self.launcher = launcher or subprocess_launcher
        self.handler_import_error = handler_import_error
        self.echo = echo
        self._follower: StepLogFollower | None = None
        self.steps = validate_definition(self.definition)
        self.order = topological_order(self.steps)
        self.records: dict[str, StepRecord] = {name: StepRecord(name, self.steps[name].type) for name in self.order}
        self.properties: dict[str, dict[str, Any]] = {}
        self.status = "Executing"
        self.failure_reason: str | None = None
        self._load_status()

    # ----- construction -------------------------------------------------------------------------------

    @classmethod
    def create(cls, definition: Mapping[str, Any], runs_dir: str | Path, *, pipeline_name: str,
               parameters: Mapping[str, Any] | None = None, execution_id: str | None = None,
               region: str = "us-east-1", account: str = "000000000000",
               s3_prefixes: Mapping[str, str | Path] | None = None, config: StoryboardConfig,
               **kwargs: Any) -> LocalRunner:
        """Prepare a new execution: the run folder, ``definition.json`` and ``execution.json``.

        Args:
            parameters: overrides of the definition's parameter defaults (typed by the definition).
            s3_prefixes: S3 URI prefixes mapped to local folders, for URIs no step output covers (for
                example ``s3://<bucket>/<prefix>/<pipeline>/<execution-id>`` to the run folder).

        Raises:
            core.errors.InputError: an unknown parameter, a value of the wrong type, a missing
                parameter without default, or an existing run folder.
        """
        from core.errors import InputError

        execution_id = execution_id or new_execution_id()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}", execution_id):
            raise InputError(f"execution ID {execution_id!r}: use 1..63 letters, digits and '-'")
        run_dir = Path(runs_dir).resolve() / execution_id
        if (run_dir / "execution.json").exists():
            raise InputError(f"run folder {run_dir} already holds an execution; resume it with --resume "
                             f"{execution_id} or choose another execution ID")
        values = resolve_parameters(definition, parameters or {})
        arn = f"arn:aws:sagemaker:{region}:{account}:pipeline/{pipeline_name.lower()}/execution/{execution_id}"
        execution = {
            "ExecutionId": execution_id,
            "PipelineName": pipeline_name,
            "PipelineArn": f"arn:aws:sagemaker:{region}:{account}:pipeline/{pipeline_name.lower()}",
            "PipelineExecutionArn": arn,
            "StartDateTime": _now(),
            "Parameters": values,
            "S3Prefixes": {k: str(Path(v).resolve()) for k, v in (s3_prefixes or {}).items()},
        }
        validate_definition(definition)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "definition.json", definition)
        write_json(run_dir / "execution.json", execution)
        return cls(definition, run_dir, execution, config=config, **kwargs)

    @classmethod
    def resume(cls, run_dir: str | Path, *, config: StoryboardConfig, **kwargs: Any) -> LocalRunner:
        """Reopen the execution in ``run_dir`` (its ``definition.json`` and ``execution.json``).

        Raises:
            core.errors.InputError: the folder holds no execution, or the execution succeeded.
        """
        from core.errors import InputError

        run_dir = Path(run_dir).resolve()
        try:
            definition = json.loads((run_dir / "definition.json").read_text(encoding="utf-8"))
            execution = json.loads((run_dir / "execution.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{run_dir} holds no local execution (definition.json and execution.json); "
                             "check --runs and the execution ID") from None
        runner = cls(definition, run_dir, execution, config=config, **kwargs)
        if runner.status == SUCCEEDED:
            raise InputError(f"execution {execution['ExecutionId']} already succeeded; nothing to resume")
        return runner

    @property
    def execution_id(self) -> str:
        """The execution ID."""
        return str(self.execution["ExecutionId"])

    # ----- status ------------------------------------------------------------------------------------

    def _load_status(self) -> None:
        path = self.run_dir / "status.json"
        if not path.exists():
            return
        saved = json.loads(path.read_text(encoding="utf-8"))
        self.status = saved.get("PipelineExecutionStatus", "Executing")
        self.failure_reason = saved.get("FailureReason")
        for item in saved.get("Steps", []):
            name = item.get("StepName")
            if name not in self.records:
                continue
            record = StepRecord(**{k: item.get(k) for k in StepRecord.__dataclass_fields__ if k in item})
            if record.StepStatus == SUCCEEDED:
                props_path = self.run_dir / name / "properties.json"
                if not props_path.exists():
                    record.StepStatus = PENDING  # properties lost: run it again
                else:
                    self.properties[name] = json.loads(props_path.read_text(encoding="utf-8"))
            self.records[name] = record

    def _save_status(self) -> None:
        document = {
            "PipelineExecutionArn": self.execution["PipelineExecutionArn"],
            "ExecutionId": self.execution_id,
            "PipelineName": self.execution["PipelineName"],
            "PipelineExecutionStatus": self.status,
            "FailureReason": self.failure_reason,
            "StartTime": self.execution.get("StartDateTime"),
            "LastModifiedTime": _now(),
            "Parameters": self.execution.get("Parameters", {}),
            "Steps": [vars(self.records[name]) for name in self.order],
        }
        write_json(self.run_dir / "status.json", document)

    # ----- evaluation context ------------------------------------------------------------------------

    def _context(self) -> EvaluationContext:
        execution = {
            "PipelineExecutionId": self.execution_id,
            "PipelineExecutionArn": self.execution["PipelineExecutionArn"],
            "PipelineName": self.execution["PipelineName"],
            "PipelineArn": self.execution["PipelineArn"],
            "StartDateTime": self.execution.get("StartDateTime"),
            "CurrentDateTime": _now(),
        }

        def step_properties(name: str) -> Mapping[str, Any]:
            if name not in self.properties:
                status = self.records[name].StepStatus if name in self.records else "unknown"
                raise ExpressionError(f"step {name} has no properties yet (status {status})")
            return {k: v for k, v in self.properties[name].items() if not k.startswith("_")}

        def property_file(step: str, name: str) -> Any:
            props = self.properties.get(step)
            if props is None:
                raise ExpressionError(f"property file {step}.{name}: step {step} has not succeeded")
            path = props.get("_Local", {}).get("PropertyFiles", {}).get(name)
            if path is None:
                raise ExpressionError(f"step {step} declares no property file {name!r}")
            return json.loads(Path(path).read_text(encoding="utf-8"))

        def read_json_uri(uri: str) -> Any:
            local = self.localize(uri)
            if local.startswith("s3://"):
                raise ExpressionError(f"Std:JsonGet S3Uri {uri}: the local runner has no copy of it")
            return json.loads(Path(local).read_text(encoding="utf-8"))

        return EvaluationContext(parameters=self.execution.get("Parameters", {}), execution=execution,
                                 step_properties=step_properties, property_file=property_file,
                                 read_json_uri=read_json_uri)

    def s3_map(self) -> dict[str, str]:
        """S3 URI prefixes this run can read and write locally: step outputs and configured prefixes."""
        mapping = dict(self.execution.get("S3Prefixes", {}))
        for props in self.properties.values():
            mapping.update(props.get("_Local", {}).get("Outputs", {}))
        return mapping

    def localize(self, value: str, extra: Mapping[str, str] | None = None) -> str:
        """Replace a known S3 URI prefix in ``value`` by its local folder (longest prefix wins);
        ``file://`` URIs become paths; anything else is returned unchanged."""
        if value.startswith("file://"):
            return value[len("file://"):]
        if not value.startswith("s3://"):
            return value
        mapping = self.s3_map()
        mapping.update(extra or {})
        best = max((p for p in mapping if _is_within(value, p)), key=len, default=None)
        if best is None:
            return value
        rest = value[len(best.rstrip("/")):]
        return str(mapping[best]).rstrip("/") + rest

    # ----- the run -----------------------------------------------------------------------------------

    def run(self) -> ExecutionResult:
        """Run every step not yet succeeded, in order, until one fails or all are done.

        Returns an :class:`ExecutionResult`; a ``KeyboardInterrupt`` marks the running step and the
        execution ``Stopped`` and is re-raised.
        """
        self._file_log = logging.FileHandler(self.run_dir / "runner.log", encoding="utf-8")
        self._file_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(self._file_log)
        executed: list[str] = []
        failed: str | None = None
        try:
            self.status, self.failure_reason = "Executing", None
            for name in self.order:
                record = self.records[name]
                if record.StepStatus == SUCCEEDED:
                    log.info("%s: succeeded earlier, kept", name)
                    continue
                if not self._eligible(name):
                    record.StepStatus, record.FailureReason = NOT_EXECUTED, None
                    record.StartTime = record.EndTime = None
                    self._save_status()
                    continue
                executed.append(name)
                if not self._run_step(name):
                    failed = name
                    break
            if failed is None:
                self.status = SUCCEEDED
            else:
                self.status = FAILED
                self.failure_reason = self.records[failed].FailureReason
            self._save_status()
        except KeyboardInterrupt:
            for record in self.records.values():
                if record.StepStatus == EXECUTING:
                    record.StepStatus, record.EndTime, record.FailureReason = STOPPED, _now(), "interrupted"
            self.status, self.failure_reason = STOPPED, "interrupted; resume with --resume " + self.execution_id
            self._save_status()
            raise
        finally:
            log.removeHandler(self._file_log)
            self._file_log.close()
        return ExecutionResult(
            execution_id=self.execution_id, status=self.status, failure_reason=self.failure_reason,
            failed_step=failed, failed_step_type=self.steps[failed].type if failed else None,
            steps=[self.records[n] for n in self.order], run_dir=self.run_dir, executed=executed)

    def _eligible(self, name: str) -> bool:
        info = self.steps[name]
        if info.parent is not None:
            parent = self.records[info.parent]
            if parent.StepStatus != SUCCEEDED:
                return False
            if bool(self.properties[info.parent].get("Outcome")) != info.branch:
                return False
        return all(self.records[d].StepStatus == SUCCEEDED for d in info.depends)

    def _run_step(self, name: str) -> bool:
        info = self.steps[name]
        record = self.records[name]
        step_dir = self.run_dir / name
        step_dir.mkdir(parents=True, exist_ok=True)
        record.StepStatus, record.StartTime, record.EndTime, record.FailureReason = EXECUTING, _now(), None, None
        record.Outputs = {}
        self._save_status()
        (step_dir / "properties.json").unlink(missing_ok=True)
        if (step_dir / "step.log").exists():  # keep the previous attempt's log beside the new one
            os.replace(step_dir / "step.log", step_dir / "step.previous.log")
        position = f"step {self.order.index(name) + 1}/{len(self.order)}"
        log.info("%s: %s (%s) started; log: %s", position, name, info.type, step_dir / "step.log")
        append_line(step_dir / "step.log", f"progress: {position}: {name} ({info.type}) started")
        started = time.monotonic()
        step_log = logging.FileHandler(step_dir / "step.log", encoding="utf-8")
        step_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root_logger = logging.getLogger()
        root_logger.addHandler(step_log)
        previous_level = root_logger.level
        if root_logger.level > logging.INFO or root_logger.level == logging.NOTSET:
            root_logger.setLevel(logging.INFO)
        try:
            handler = {"Processing": self._processing, "Training": self._training, "Callback": self._callback,
                       "Lambda": self._lambda, "Condition": self._condition, "Fail": self._fail}[info.type]
            with StepLogFollower(step_dir / "step.log", echo=self.echo) as self._follower:
                properties, outputs = handler(info, step_dir)
        except (StepFailure, TrainingStepError) as err:
            return self._finish(name, FAILED, str(err), started)
        except Exception as err:  # noqa: BLE001 - any error fails the step and is recorded, as SageMaker does
            log.error("%s failed", name, exc_info=not isinstance(err, (ExpressionError, ValueError)))
            return self._finish(name, FAILED, f"{type(err).__name__}: {err}"[:2000], started)
        finally:
            root_logger.removeHandler(step_log)
            root_logger.setLevel(previous_level)
            step_log.close()
        write_json(step_dir / "properties.json", properties)
        self.properties[name] = properties
        record.Outputs = outputs
        return self._finish(name, SUCCEEDED, None, started)

    def _finish(self, name: str, status: str, reason: str | None, started: float) -> bool:
        record = self.records[name]
        record.StepStatus, record.EndTime, record.FailureReason = status, _now(), reason
        self._save_status()
        elapsed = time.monotonic() - started
        position = f"step {self.order.index(name) + 1}/{len(self.order)}"
        outputs = ", ".join(f"{k}={v}" for k, v in sorted(record.Outputs.items()))
        detail = reason or (f"outputs {outputs}"[:400] if outputs else "")
        append_line(self.run_dir / name / "step.log", f"progress: {position}: {name} {status.lower()} in "
                                                      f"{elapsed:.1f} s" + (f": {detail}" if detail else ""))
        if status == SUCCEEDED:
            log.info("%s: %s succeeded in %.1f s %s", position, name, elapsed,
                     json.dumps(record.Outputs, sort_keys=True) if record.Outputs else "")
        else:
            log.error("%s: %s %s: %s", position, name, status.lower(), reason)
        return status == SUCCEEDED

    # ----- step types --------------------------------------------------------------------------------

    def _handler_missing(self, kind: str, key: str, known: list[str]) -> StepFailure:
        extra = f" (containers.lambda_handlers.local could not be imported: {self.handler_import_error})" \
            if self.handler_import_error else ""
        return StepFailure(f"no local {kind} handler for {key!r}; known: {known or 'none'}{extra}")

    def _localized_arguments(self, args: Mapping[str, Any]) -> dict[str, Any]:
        def conv(value: Any) -> Any:
            if isinstance(value, str):
                return self.localize(value)
            if isinstance(value, Mapping):
                return {k: conv(v) for k, v in value.items()}
            if isinstance(value, list):
                return [conv(v) for v in value]
            return value
        return conv(args)

    def _declared_outputs(self, info: StepInfo, returned: Mapping[str, Any], kind: str) -> dict[str, Any]:
        declared = [o["OutputName"] for o in info.spec.get("OutputParameters", [])]
        missing = [n for n in declared if n not in returned]
        unknown = sorted(set(returned) - set(declared))
        if missing or unknown:
            raise StepFailure(f"the {kind} handler returned outputs {sorted(returned)}; declared "
                              f"{declared} (missing {missing}, undeclared {unknown})")
        outputs: dict[str, Any] = {}
        for name in declared:
            value = returned[name]
            if isinstance(value, (Mapping, list)) or value is None:
                raise StepFailure(f"output parameter {name} must be a flat value, got {value!r}")
            outputs[name] = to_text(value) if kind == "callback" else value
        return outputs

    def _callback(self, info: StepInfo, step_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        args = self._context().evaluate(info.spec.get("Arguments", {}))
        args = {k: to_text(v) for k, v in self._localized_arguments(args).items()}
        task = args.get("Task")
        if not task:
            raise StepFailure("the Callback step has no 'Task' argument; the local runner dispatches on it")
        handler = self.callback_handlers.get(task)
        if handler is None:
            raise self._handler_missing("callback", task, sorted(self.callback_handlers))
        write_json(step_dir / "arguments.json", args)
        outputs = self._declared_outputs(info, handler(args, step_dir, self.config), "callback")
        return {"OutputParameters": outputs, "Arguments": args}, outputs

    def _lambda(self, info: StepInfo, step_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        arn = str(info.spec.get("FunctionArn", ""))
        match = re.match(r"^arn:[^:]+:lambda:[^:]*:[^:]*:function:([^:]+)", arn)
        function = match.group(1) if match else arn
        args = self._localized_arguments(self._context().evaluate(info.spec.get("Arguments", {})))
        handler = self.lambda_handlers.get(function)
        if handler is None:
            raise self._handler_missing("Lambda", function, sorted(self.lambda_handlers))
        write_json(step_dir / "arguments.json", args)
        outputs = self._declared_outputs(info, handler(args, step_dir, self.config), "Lambda")
        return {"OutputParameters": outputs, "Arguments": args}, outputs

    def _condition(self, info: StepInfo, step_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        ctx = self._context()
        results = []
        conditions = info.spec.get("Arguments", {}).get("Conditions", [])
        for cond in conditions:
            value = ctx.condition(cond)
            results.append({"Type": cond.get("Type"), "Left": _describe(ctx, cond.get("LeftValue")),
                            "Right": _describe(ctx, cond.get("RightValue")), "Result": value})
        outcome = all(r["Result"] for r in results)
        branch = info.spec.get("Arguments", {}).get("IfSteps" if outcome else "ElseSteps", [])
        sentence = condition_sentence(info.spec.get("DisplayName") or info.name, conditions, results, outcome,
                                      [s.get("Name", "?") for s in branch], ctx.evaluate)
        log.info("%s", sentence)
        return {"Outcome": outcome, "Evaluations": results, "Explanation": sentence}, {"Outcome": outcome}

    def _fail(self, info: StepInfo, step_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        message = self._context().evaluate(info.spec.get("Arguments", {}).get("ErrorMessage", ""))
        text = to_text(message) if message != "" else f"the pipeline reached Fail step {info.name}"
        for uri, local in sorted(self.s3_map().items(), key=lambda item: -len(item[0])):
            text = text.replace(uri.rstrip("/"), str(local).rstrip("/"))  # local runs show local paths
        raise StepFailure(text)

    def _processing(self, info: StepInfo, step_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        args = self._context().evaluate(info.spec.get("Arguments", {}))
        cluster = args.get("ProcessingResources", {}).get("ClusterConfig", {})
        count = int(cluster.get("InstanceCount", 1))
        if count < 1:
            raise StepFailure(f"InstanceCount must be at least 1, got {count}")
        hosts = [f"algo-{i + 1}" for i in range(count)]
        roots = {host: (step_dir if count == 1 else step_dir / host) for host in hosts}
        # A fresh attempt: remove what an earlier attempt left.
        for sub in ("input", "output", "logs", *hosts):
            if (step_dir / sub).exists():
                shutil.rmtree(step_dir / sub)

        outputs = args.get("ProcessingOutputConfig", {}).get("Outputs", [])
        local_outputs = {}
        output_dirs: dict[str, Path] = {}
        for item in outputs:
            rel = _container_relative(item["S3Output"]["LocalPath"])
            output_dirs[item["OutputName"]] = step_dir / rel
            local_outputs[to_text(item["S3Output"]["S3Uri"])] = str(step_dir / rel)
        extra = dict(local_outputs)

        def map_arg(value: Any) -> str:
            text = to_text(value)
            if text.startswith(PROCESSING_ROOT):
                return text  # rewritten per host below
            return self.localize(text, extra)

        app = args.get("AppSpecification", {})
        entry = [to_text(v) for v in app.get("ContainerEntrypoint", [])]
        container_args = [map_arg(v) for v in app.get("ContainerArguments", []) or []]
        env_base = {k: to_text(v) for k, v in (args.get("Environment") or {}).items()}

        for item in args.get("ProcessingInputs", []):
            self._stage_input(item, roots, hosts, extra)

        codes: dict[str, int] = {}
        log_starts: dict[str, int] = {}
        for host in hosts:
            root = roots[host]
            for rel in (_container_relative(o["S3Output"]["LocalPath"]) for o in outputs):
                (root / rel).mkdir(parents=True, exist_ok=True)
            resource_config = root / "resourceconfig.json"
            write_json(resource_config, {"current_host": host, "hosts": hosts})
            env = dict(os.environ)
            env.update(env_base)
            env.setdefault(TQDM_INTERVAL_ENV, "5")  # a step's tqdm bar writes to a log file: every 5 s is enough
            env[PROCESSING_ROOT_ENV] = str(root)
            env[RESOURCE_CONFIG_ENV] = str(resource_config)
            env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
            command = [sys.executable, *entry[1:], *container_args]
            command = [str(root) + c[len(PROCESSING_ROOT):] if c.startswith(PROCESSING_ROOT) else c for c in command]
            log_path = step_dir / "step.log" if count == 1 else step_dir / "logs" / f"{host}.log"
            log_starts[host] = log_path.stat().st_size if log_path.exists() else 0
            codes[host] = self.launcher(info.name, command, env, REPO_ROOT, log_path)
        bad = {h: c for h, c in codes.items() if c != 0}
        if bad:
            reasons = []
            for host in bad:
                log_path = step_dir / "step.log" if count == 1 else step_dir / "logs" / f"{host}.log"
                reasons.append(f"{host} exited with {bad[host]}: {_failure_text(log_path, log_starts[host])}")
            raise StepFailure(f"{' | '.join(reasons)} (log: {log_path})"[:2000])
        if count > 1:
            for item in outputs:
                rel = _container_relative(item["S3Output"]["LocalPath"])
                for host in hosts:
                    _merge_tree(roots[host] / rel, step_dir / rel)
        property_files = {}
        for pf in info.spec.get("PropertyFiles", []) or []:
            path = output_dirs[pf["OutputName"]] / pf["FilePath"]
            if not path.is_file():
                raise StepFailure(f"property file {pf['PropertyFileName']} was not written: the entry point "
                                  f"wrote no {pf['FilePath']} in output {pf['OutputName']} ({path})")
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise StepFailure(f"property file {pf['PropertyFileName']} ({path}) is not JSON: {err}") from None
            property_files[pf["PropertyFileName"]] = str(path)
        properties = dict(args)
        properties.update({
            "ProcessingJobName": f"pipelines-{self.execution_id}-{info.name}"[:63],
            "ProcessingJobStatus": "Completed",
            "ProcessingJobArn": f"arn:aws:sagemaker:local:000000000000:processing-job/{self.execution_id}-{info.name}",
            "_Local": {"Outputs": local_outputs, "PropertyFiles": property_files, "Hosts": hosts},
        })
        outputs_summary = {name: str(path) for name, path in output_dirs.items()}
        return properties, outputs_summary

    def _training(self, info: StepInfo, step_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        def stage(source: Path, dest: Path) -> int:
            files = _list_files(source)
            for rel_file, path in files:
                _link(path, dest / rel_file)
            dest.mkdir(parents=True, exist_ok=True)
            return len(files)

        args = self._context().evaluate(info.spec.get("Arguments", {}))
        if self._follower is not None:
            self._follower.track_training(training_total(args), f"{info.name} training")
        return run_training_step(info.name, args, step_dir, execution_id=self.execution_id, localize=self.localize,
                                 stage=stage, launch=self.launcher, repo_root=REPO_ROOT, failure_text=_failure_text)

    def _stage_input(self, item: Mapping[str, Any], roots: Mapping[str, Path], hosts: list[str],
                     extra: Mapping[str, str]) -> None:
        from core.errors import InputError

        s3 = item["S3Input"]
        name = item.get("InputName")
        uri = to_text(s3["S3Uri"])
        local = self.localize(uri, extra)
        if local.startswith("s3://"):
            raise InputError(f"input {name}: the local runner has no copy of {uri}; pass a local path instead "
                             f"(for example --param <Parameter>=/path) or run the step that writes it")
        source = Path(local).expanduser()
        if not source.exists():
            raise InputError(f"input {name}: {source} does not exist")
        rel = _container_relative(s3["LocalPath"])
        files = _list_files(source)
        sharded = s3.get("S3DataDistributionType") == "ShardedByS3Key" and len(hosts) > 1
        for index, host in enumerate(hosts):
            dest = roots[host] / rel
            dest.mkdir(parents=True, exist_ok=True)
            chosen = files[index::len(hosts)] if sharded else files
            for rel_file, path in chosen:
                _link(path, dest / rel_file)
            log.info("input %s -> %s (%d file%s%s)", name, dest, len(chosen), "" if len(chosen) == 1 else "s",
                     f", shard {index + 1} of {len(hosts)}" if sharded else "")


def _describe(ctx: EvaluationContext, value: Any) -> Any:
    try:
        return ctx.evaluate(value)
    except ExpressionError as err:
        return f"<{err}>"


def _list_files(source: Path) -> list[tuple[Path, Path]]:
    """Files under ``source`` as (path relative to the input folder, absolute path), sorted by key."""
    if source.is_file():
        return [(Path(source.name), source.resolve())]
    files = []
    for folder, dirs, names in os.walk(source, followlinks=True):  # linked folders count, as S3 prefixes do
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            path = Path(folder) / name
            if not name.startswith(".") and path.is_file():
                files.append((path.relative_to(source), path.resolve()))
    return sorted(files)


def _link(source: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() or dest.is_symlink():
        dest.unlink()
    try:
        os.symlink(source, dest)
    except OSError:
        shutil.copy2(source, dest)


def _merge_tree(source: Path, dest: Path) -> None:
    """Copy every file of ``source`` into ``dest``; two instances writing one key is an error."""
    if not source.exists():
        return
    for path in sorted(source.rglob("*")):
        if not path.is_file():
            continue
        target = dest / path.relative_to(source)
        if target.exists():
            raise StepFailure(f"two instances wrote the same output file {target.relative_to(dest)}; "
                              "an entry point must write under a folder named after its host")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


def _failure_text(path: Path, start: int = 0, lines: int = 6) -> str:
    """What the entry point said before it failed: its ``error:`` line(s) (bad input, printed by
    ``containers.processing.common.run_main``), else the last lines it wrote (a traceback's end)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            handle.seek(start if start <= path.stat().st_size else 0)
            text = [line.strip() for line in handle.read().splitlines()
                    if line.strip() and not line.startswith("$ ")]  # "$ <command>": the launcher's own line
    except FileNotFoundError:
        return "(no log)"
    errors = [line for line in text if line.startswith("error:")]
    return " / ".join(errors or text[-lines:]) or "(no output)"


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
