"""Human loops kept in a local folder, with Amazon A2I's file formats: the offline side of
:class:`steps.human_loops.HumanLoops`.

Layout, one folder per loop: ``<folder>/<loop>/input.json`` (the ``InputContent`` given to
:meth:`LocalHumanLoops.start`), ``<folder>/<loop>/output.json`` (a reviewer's answer, in A2I's
``output.json`` format: ``humanAnswers[].answerContent`` and the echoed ``inputContent``; DESIGN §5) and
``<folder>/<loop>/stopped.json``. Every file is written atomically (``core.io``), so a reader never sees a
half-written answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core import io as sio
from core.errors import InputError
from steps.human_loops import LoopStatus


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class LocalHumanLoops:
    """Human loops kept in a local folder, with A2I's file formats.

    ``<folder>/<loop>/input.json`` holds the input content; a reviewer's answer is written to
    ``<folder>/<loop>/output.json`` in A2I's output format (:meth:`answer`), which marks the loop
    Completed; :meth:`stop` writes ``stopped.json``.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def start(self, name: str, input_content: str) -> None:
        """Write the loop's input (kept if it exists)."""
        path = self.folder / name / "input.json"
        if not path.exists():
            sio.write_text(path, input_content)

    def stop(self, name: str) -> None:
        """Mark an unfinished loop stopped."""
        if (self.folder / name / "input.json").exists() and not (self.folder / name / "output.json").exists():
            sio.write_json(self.folder / name / "stopped.json", {"stopped_at": _now()})

    def input_content(self, name: str) -> dict[str, Any]:
        """The loop's input content."""
        return json.loads((self.folder / name / "input.json").read_text(encoding="utf-8"))

    def output(self, name: str) -> dict[str, Any] | None:
        """The loop's ``output.json`` document, or ``None`` while it has no answer."""
        path = self.folder / name / "output.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def answer(self, name: str, answer_content: Mapping[str, Any], worker_id: str = "local-reviewer") -> Path:
        """Record a reviewer's answer as ``output.json`` (A2I's layout) and return its path.

        Raises:
            InputError: the loop does not exist or was stopped.
        """
        if not (self.folder / name / "input.json").exists():
            raise InputError(f"no local human loop named {name}")
        if (self.folder / name / "stopped.json").exists():
            raise InputError(f"human loop {name} was stopped")
        output = {
            "humanLoopName": name,
            "flowDefinitionArn": "local",
            "inputContent": self.input_content(name),
            "humanAnswers": [{"answerContent": dict(answer_content), "workerId": worker_id,
                              "submissionTime": _now(), "acceptanceTime": _now(), "timeSpentInSeconds": 0}],
        }
        return sio.write_json(self.folder / name / "output.json", output)

    def status(self, name: str) -> LoopStatus:
        """Completed when output.json exists, Stopped when stopped.json does, else InProgress."""
        loop = self.folder / name
        if (loop / "output.json").exists():
            return LoopStatus(name, "Completed", str(loop / "output.json"))
        if (loop / "stopped.json").exists():
            return LoopStatus(name, "Stopped")
        if not (loop / "input.json").exists():
            return LoopStatus(name, "Failed", failure="no such human loop")
        return LoopStatus(name, "InProgress")
