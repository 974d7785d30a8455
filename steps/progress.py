"""Progress lines for logs: counts, percentage, elapsed time and an estimate of the time left.

A step that runs in a container or under ``storyboard run --local`` writes to a log file, where a tqdm
bar (carriage returns) reads badly. :class:`ProgressLog` writes one plain line at a time instead::

    progress: ExtractFrames sintel.mp4: 31.0/52.0 s of video (60%), 12 frames sampled, 1m10s elapsed, about 47s left

The first and the last update are always written, the others at most every ``interval_s`` seconds
(default 10; ``$STORYBOARD_PROGRESS_INTERVAL_S`` overrides it). The estimate is linear: the time per unit
since the first update, times the work left. :func:`stage` writes a line when a stage of known work
starts (``progress: CaptionImages stage 2/3: captioning 40 crops``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

PREFIX = "progress:"
INTERVAL_ENV = "STORYBOARD_PROGRESS_INTERVAL_S"
DEFAULT_INTERVAL_S = 10.0

_log = logging.getLogger("storyboard.progress")


def format_duration(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``42s`` (seconds rounded; negative values count as 0)."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S)))
    except ValueError:
        return DEFAULT_INTERVAL_S


def stage(label: str, index: int, count: int, detail: str = "", write: Callable[[str], None] | None = None) -> str:
    """Write (and return) ``progress: <label> stage <index>/<count>: <detail>``."""
    line = f"{PREFIX} {label} stage {index}/{count}" + (f": {detail}" if detail else "")
    (write or _log.info)(line)
    return line


class ProgressLog:
    """Throttled progress lines for work of known size.

    Args:
        label: what is being done (``"ExtractFrames sintel.mp4"``).
        total: the amount of work (> 0; ``None`` or 0: no percentage and no estimate).
        unit: the unit after the counts (``"s of video"``, ``"crops"``).
        interval_s: least seconds between two lines (default: ``$STORYBOARD_PROGRESS_INTERVAL_S`` or 10).
        write: where lines go (default: the ``storyboard.progress`` logger at INFO).
        clock: monotonic seconds (tests pass a fake).
    """

    def __init__(self, label: str, total: float | None, unit: str = "", interval_s: float | None = None,
                 write: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.total, self.unit = label, total if total and total > 0 else None, unit
        self.interval_s = _interval() if interval_s is None else interval_s
        self.write = write or _log.info
        self.clock = clock
        self.started = clock()
        self.last_written: float | None = None
        self.done = 0.0
        self.lines = 0
        self._finished_written = False
        self._first: tuple[float, float] | None = None

    def line(self, extra: str = "") -> str:
        """The progress line for the work done so far."""
        elapsed = self.clock() - self.started
        count = f"{self.done:g}" + (f"/{self.total:g}" if self.total else "") + (f" {self.unit}" if self.unit else "")
        parts = [count + (f" ({100.0 * self.done / self.total:.0f}%)" if self.total else "")]
        if extra:
            parts.append(extra)
        parts.append(f"{format_duration(elapsed)} elapsed")
        left = self.seconds_left()
        if left is not None:
            parts.append(f"about {format_duration(left)} left")
        return f"{PREFIX} {self.label}: " + ", ".join(parts)

    def seconds_left(self) -> float | None:
        """Linear estimate of the seconds left, or ``None`` without a total or measured progress.

        The rate is measured from the first update on, so setup before the first unit (loading a model,
        training a detector) does not count; until a second update has advanced, there is no estimate.
        """
        if not self.total or self._first is None or self.done <= self._first[1]:
            return None
        rate = (self.clock() - self._first[0]) / (self.done - self._first[1])
        return rate * max(0.0, self.total - self.done)

    def update(self, done: float, extra: str = "", force: bool = False) -> bool:
        """Record ``done`` units so far; write a line if due (or ``force``, or the work is complete and not
        yet reported). Returns whether a line was written."""
        self.done = done
        now = self.clock()
        if self._first is None:
            self._first = (now, done)
        finished = self.total is not None and done >= self.total
        if finished and self._finished_written:
            return False
        due = self.last_written is None or now - self.last_written >= self.interval_s
        if not (due or force or finished):
            return False
        self.write(self.line(extra))
        self.last_written = now
        self.lines += 1
        self._finished_written = finished
        return True

    def close(self, extra: str = "", complete: bool = False) -> None:
        """Write the final line (unless the last update already reported the whole); ``complete`` counts
        the whole work as done (a video's last sampled frame comes before its end)."""
        if complete and self.total:
            self.done = self.total
        if not self._finished_written:
            self.write(self.line(extra))
            self.lines += 1
            self._finished_written = True
