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

The runner's parts, one job each: :mod:`pipeline.local_definition` (flattening, order, checks, parameter
values), :mod:`pipeline.local_status` (statuses and ``status.json``), :mod:`pipeline.local_context`
(expressions and S3 URIs), :mod:`pipeline.local_processing` (Processing steps), :mod:`pipeline.local_steps`
(Callback, Lambda, Condition, Fail and Training steps); this module creates or resumes an execution and runs
its steps in order, with their progress lines.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.io import write_json
from pipeline.expressions import ExpressionError
from pipeline.local_context import RunContext
from pipeline.local_definition import resolve_parameters, topological_order, validate_definition
from pipeline.local_processing import ProcessingExecutor, ProcessingLauncher, subprocess_launcher
from pipeline.local_status import (
    EXECUTING,
    FAILED,
    NOT_EXECUTED,
    STOPPED,
    SUCCEEDED,
    ExecutionResult,
    RunStatus,
    StepFailure,
    StepRecord,
    _now,
)
from pipeline.local_steps import CallbackHandler, LambdaHandler, StepExecutors
from pipeline.local_training import TrainingStepError
from pipeline.run_progress import StepLogFollower, append_line

if TYPE_CHECKING:
    from core.config import StoryboardConfig

log = logging.getLogger(__name__)


def new_execution_id() -> str:
    """A new local execution ID: ``local-<UTC yyyymmddThhmmss>-<6 hex>`` (letters, digits and '-')."""
    return f"local-{datetime.now(timezone.utc).strftime('%Y%m%dt%H%M%S')}-{secrets.token_hex(3)}"


class LocalRunner(RunStatus, RunContext, ProcessingExecutor, StepExecutors):
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
