"""What ``storyboard run --local`` says while it runs: step progress lines and plain-language conditions.

- :func:`append_line` adds a ``progress:`` line to a step's ``step.log`` (the runner writes one when a
  step starts and one when it ends, whatever the step type);
- :class:`StepLogFollower` follows a running step's log: it echoes the step's progress lines to the
  console and turns a training entry point's ``step=<n> loss=<x>`` metric lines into lines with the count
  and the time left (the training entry point prints only the metric);
- :func:`condition_sentence` explains a Condition step's outcome in words, for example
  ``Check quality: Evaluate's gate.status is 'passed' (needs 'passed'): true -> RegisterModel. passed:
  character similarity 0.712 >= 0.650; ...``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from steps.progress import DEFAULT_INTERVAL_S, PREFIX, ProgressLog

COMPARISON_WORDS = {
    "Equals": "needs", "GreaterThan": "needs more than", "GreaterThanOrEqualTo": "needs at least",
    "LessThan": "needs less than", "LessThanOrEqualTo": "needs at most",
}
METRIC_LINE = re.compile(r"^step=(\d+) loss=")
PROGRESS_TEXT = re.compile(r"(?:^|\s)(progress: .*)$")  # after a log line's time, level and logger name
RUNNER_LINE = re.compile(r"^progress: step \d+/\d+: ")
TQDM_BAR = re.compile(r"^.*?\d+%\|[^|]*\| *\d+/\d+(?: \[[^\]]*\])?")


def append_line(path: Path, text: str) -> None:
    """Append ``<time> <text>`` as one line to the log ``path`` (created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(f"{datetime.now().strftime('%H:%M:%S')} {text}\n")


class StepLogFollower:
    """Follows a running step's ``step.log`` (a daemon thread polling every ``poll_s`` seconds).

    - ``progress:`` lines the step writes are passed to ``echo`` (the console of ``run --local``), as is,
      at most every ``interval_s`` seconds, the latest state of a tqdm bar (``\\r``-separated updates);
      the runner's own ``progress: step k/N`` lines are not (it prints those itself);
    - after :meth:`track_training`, each ``step=<n> loss=<x>`` metric line of a training entry point
      becomes a line with the count and the time left, appended to the log
      (``progress: FineTune training: 40/100 steps (40%), 1m05s elapsed, about 1m38s left``).

    Use as a context manager around the step; the log is read once more on exit.
    """

    def __init__(self, log_path: Path, echo: Callable[[str], None] | None = None, poll_s: float = 1.0,
                 interval_s: float | None = None) -> None:
        self.log_path, self.echo, self.poll_s = log_path, echo, poll_s
        self.interval_s = interval_s
        self.tracker: ProgressLog | None = None
        self.last_step = 0
        self._offset = log_path.stat().st_size if log_path.exists() else 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._follow, name=f"follow-{log_path.parent.name}", daemon=True)
        self._bar_echoed: float | None = None
        self._pending_bar: str | None = None

    def track_training(self, total: int | None, label: str) -> None:
        """Turn the metric lines written from now on into progress lines (``total`` optimizer steps)."""
        self.tracker = ProgressLog(label, total, "steps", interval_s=self.interval_s,
                                   write=lambda line: append_line(self.log_path, line))

    def __enter__(self) -> StepLogFollower:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._scan()
        if self.tracker is not None and self.last_step:
            self.tracker.close()
            self._scan()
        if self._pending_bar and self.echo:
            self.echo(self._pending_bar)

    def _scan(self) -> None:
        with self._lock:
            try:
                with open(self.log_path, "rb") as handle:
                    handle.seek(self._offset)
                    data = handle.read()
            except FileNotFoundError:
                return
            cut = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
            self._offset += cut
            for line in data[:cut].decode("utf-8", errors="replace").splitlines():
                self._line(line.strip())

    def _line(self, line: str) -> None:
        if not line:
            return
        match = METRIC_LINE.match(line)
        if match and self.tracker is not None:
            self.last_step = int(match.group(1))
            self.tracker.update(self.last_step)
            return
        if self.echo is None:
            return
        found = PROGRESS_TEXT.search(line)
        if found:
            if not RUNNER_LINE.match(found.group(1)):
                self.echo(found.group(1))
            return
        bar = TQDM_BAR.search(line)
        if bar:
            line = bar.group(0).strip()  # a bar's line may run into the next log line: keep the bar only
            now = time.monotonic()
            interval = DEFAULT_INTERVAL_S if self.interval_s is None else self.interval_s
            if self._bar_echoed is None or now - self._bar_echoed >= interval:
                self.echo(f"{PREFIX} {line}")
                self._bar_echoed, self._pending_bar = now, None
            else:
                self._pending_bar = f"{PREFIX} {line}"

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


__all__ = ["PREFIX", "StepLogFollower", "append_line", "condition_sentence", "describe_operand", "training_total"]
