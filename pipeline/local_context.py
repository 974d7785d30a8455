"""Expressions and S3 URIs resolved for a local run: the evaluation context that gives ``Get`` and
``Std:JsonGet`` the execution, parameters, step properties and property files (:mod:`pipeline.expressions`),
and S3 URIs mapped to local folders (:class:`RunContext`, mixed into :class:`pipeline.local_runner.LocalRunner`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.expressions import EvaluationContext, ExpressionError
from pipeline.local_status import _now


class RunContext:
    """The evaluation context and S3 URI mapping; uses the runner's ``execution``, ``execution_id``,
    ``records`` and ``properties``."""

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


def _is_within(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/")
    return path == prefix or path.startswith(prefix + "/")
