"""The Callback, Lambda, Condition, Fail and Training steps run locally: Callback and Lambda steps call an
in-process handler with their resolved, localized arguments and must return every declared output; Condition
and Fail steps are evaluated from the definition; a Training step runs through :mod:`pipeline.local_training`
(:class:`StepExecutors`, mixed into :class:`pipeline.local_runner.LocalRunner`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.io import write_json
from pipeline.expressions import EvaluationContext, ExpressionError, to_text
from pipeline.local_definition import StepInfo
from pipeline.local_processing import REPO_ROOT, _failure_text, _link, _list_files
from pipeline.local_status import StepFailure
from pipeline.local_training import run_training_step
from pipeline.run_progress import condition_sentence, training_total

if TYPE_CHECKING:
    from core.config import StoryboardConfig

log = logging.getLogger("pipeline.local_runner")  # the runner's logger: its runner.log holds these lines

CallbackHandler = Callable[[dict[str, str], Path, "StoryboardConfig"], Mapping[str, Any]]
LambdaHandler = Callable[[dict[str, Any], Path, "StoryboardConfig"], Mapping[str, Any]]


class StepExecutors:
    """The Callback, Lambda, Condition, Fail and Training step types; use the runner's ``_context``,
    ``localize``, ``s3_map``, ``callback_handlers``, ``lambda_handlers``, ``handler_import_error``, ``config``,
    ``launcher``, ``execution_id`` and ``_follower``."""

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


def _describe(ctx: EvaluationContext, value: Any) -> Any:
    try:
        return ctx.evaluate(value)
    except ExpressionError as err:
        return f"<{err}>"
