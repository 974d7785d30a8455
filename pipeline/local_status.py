"""The record of a local execution: step and execution statuses, a step's failure, and ``status.json``
written after every change and read back when a run resumes (:class:`RunStatus`, mixed into
:class:`pipeline.local_runner.LocalRunner`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.io import write_json

# Step statuses follow ListPipelineExecutionSteps; NotExecuted marks a branch not taken.
SUCCEEDED, FAILED, EXECUTING, STOPPED, NOT_EXECUTED, PENDING = (
    "Succeeded", "Failed", "Executing", "Stopped", "NotExecuted", "Pending")


class StepFailure(RuntimeError):
    """A step failed; the message is its failure reason."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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


class RunStatus:
    """Saving and loading ``status.json``; uses the runner's ``run_dir``, ``execution``, ``execution_id``,
    ``order``, ``records``, ``properties``, ``status`` and ``failure_reason``."""

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
