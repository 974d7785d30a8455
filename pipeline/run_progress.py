"""What ``storyboard run --local`` says while it runs: step progress lines and plain-language conditions.

- :func:`append_line` adds a ``progress:`` line to a step's ``step.log`` (the runner writes one when a
  step starts and one when it ends, whatever the step type);
- :class:`TrainingProgress` follows a training step's ``step=<n> loss=<x>`` metric lines in its log and
  adds a line with the count and the time left (the training entry point prints only the metric);
- :func:`condition_sentence` explains a Condition step's outcome in words, for example
  ``Check quality: Evaluate's gate.status is 'passed' (needs 'passed'): true -> RegisterModel. passed:
  character similarity 0.712 >= 0.650; ...``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from steps.progress import PREFIX, ProgressLog

COMPARISON_WORDS = {
    "Equals": "needs", "GreaterThan": "needs more than", "GreaterThanOrEqualTo": "needs at least",
    "LessThan": "needs less than", "LessThanOrEqualTo": "needs at most",
}
METRIC_LINE = re.compile(r"^step=(\d+) loss=")


def append_line(path: Path, text: str) -> None:
    """Append ``<time> <text>`` as one line to the log ``path`` (created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(f"{datetime.now().strftime('%H:%M:%S')} {text}\n")


class TrainingProgress:
    """While a training step runs, turn each new ``step=<n> loss=<x>`` line of ``log_path`` into a progress
    line (``progress: FineTune training: 40/100 steps (40%), 1m05s elapsed, about 1m38s left``).

    Use as a context manager around the step; a daemon thread polls the log every ``poll_s`` seconds
    and the last line is written on exit. ``total`` is the number of optimizer steps (``None``: no
    estimate).
    """

    def __init__(self, log_path: Path, total: int | None, label: str, poll_s: float = 1.0,
                 interval_s: float | None = None) -> None:
        self.log_path, self.poll_s = log_path, poll_s
        self.tracker = ProgressLog(label, total, "steps", interval_s=interval_s,
                                   write=lambda line: append_line(log_path, line))
        self._offset = log_path.stat().st_size if log_path.exists() else 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"progress-{label}", daemon=True)
        self.last_step = 0

    def __enter__(self) -> TrainingProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._scan()
        if self.last_step:
            self.tracker.close()

    def _scan(self) -> None:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                handle.seek(self._offset)
                text = handle.read()
        except FileNotFoundError:
            return
        complete = text[:text.rfind("\n") + 1]
        self._offset += len(complete.encode("utf-8"))
        for line in complete.splitlines():
            match = METRIC_LINE.match(line.strip())
            if match:
                self.last_step = int(match.group(1))
                self.tracker.update(self.last_step)

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._scan()


def training_total(arguments: Mapping[str, Any]) -> int | None:
    """The optimizer steps of a resolved training step's arguments (``HyperParameters.max_train_steps``)."""
    value = (arguments.get("HyperParameters") or {}).get("max_train_steps")
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def describe_operand(expr: Any) -> str | None:
    """Words for an operand of a condition: ``Evaluate's gate.status``, ``FineTune's output DryRun``,
    ``parameter MinCharacterSimilarity``; ``None`` for a literal."""
    if isinstance(expr, Mapping):
        if "Std:JsonGet" in expr:
            spec = expr["Std:JsonGet"]
            ref = spec.get("PropertyFile", {}) if isinstance(spec, Mapping) else {}
            get = ref.get("Get", "") if isinstance(ref, Mapping) else ""
            step = get.split(".")[1] if get.startswith("Steps.") else "the"
            return f"{step}'s {spec.get('Path')}"
        get = expr.get("Get")
        if isinstance(get, str):
            if get.startswith("Parameters."):
                return f"parameter {get.split('.', 1)[1]}"
            match = re.match(r"Steps\.([^.]+)\.(?:Properties\.)?(?:Outputs|OutputParameters)\[['\"]?([^'\"\]]+)", get)
            if match:
                return f"{match.group(1)}'s output {match.group(2)}"
            match = re.match(r"Steps\.([^.]+)\.(?:Properties\.)?(.+)$", get)
            if match:
                return f"{match.group(1)}'s {match.group(2)}"
            return get
    return None


def _summary_beside(expr: Any, read: Callable[[Any], Any]) -> str | None:
    """For an operand reading ``<x>.status`` from a property file, the ``<x>.summary`` beside it (the
    quality gate's one-sentence explanation), else ``None``."""
    if not isinstance(expr, Mapping) or "Std:JsonGet" not in expr:
        return None
    spec = dict(expr["Std:JsonGet"])
    path = str(spec.get("Path", ""))
    if not path.endswith(".status"):
        return None
    spec["Path"] = path[: -len("status")] + "summary"
    try:
        value = read({"Std:JsonGet": spec})
    except Exception:  # noqa: BLE001 - an explanation is optional; the condition's own result stands
        return None
    return value if isinstance(value, str) and value else None


def condition_sentence(title: str, conditions: list[Mapping[str, Any]], results: list[Mapping[str, Any]],
                       outcome: bool, next_steps: list[str], read: Callable[[Any], Any]) -> str:
    """One plain-language line for a Condition step.

    Args:
        title: the step's display name (or name).
        conditions: the definition's ``Conditions``.
        results: per condition ``{"Left", "Right", "Result", "Type"}`` (evaluated operands).
        outcome: whether every condition held.
        next_steps: the branch taken (names).
        read: evaluates an expression (for the summary beside a ``.status`` operand).
    """
    parts, notes = [], []
    for cond, result in zip(conditions, results):
        kind = cond.get("Type")
        left = describe_operand(cond.get("LeftValue"))
        words = COMPARISON_WORDS.get(str(kind), str(kind))
        left_text = f"{left} is {result['Left']!r}" if left else repr(result["Left"])
        held = f": {'true' if result['Result'] else 'false'}" if len(conditions) > 1 else ""
        parts.append(f"{left_text} ({words} {result['Right']!r}){held}")
        note = _summary_beside(cond.get("LeftValue"), read)
        if note:
            notes.append(note)
    branch = ", ".join(next_steps) if next_steps else "no further step"
    text = f"{title}: {'; '.join(parts)} => {'passed' if outcome else 'not passed'} -> {branch}"
    if notes:
        text += ". " + " ".join(notes)
    return text


__all__ = ["PREFIX", "TrainingProgress", "append_line", "condition_sentence", "describe_operand", "training_total"]
