"""Atomic file output: every file is written to a temporary name in its folder, then renamed.

A reader therefore sees either the previous complete file or the new complete file, never half a
manifest, and a step killed mid-write can simply be re-run.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on a clean exit, fsync it and rename it over ``path``.

    ``mode`` is ``"w"`` (text) or ``"wb"`` (binary). On an exception the temporary file is removed
    and ``path`` is left untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    with atomic_open(path, "w") as handle:
        handle.write(text)
    return Path(path)


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (keys kept in insertion order)."""
    return write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write one compact JSON object per line to ``path`` atomically; return the number of lines."""
    count = 0
    with atomic_open(path, "w") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
            count += 1
    return count


def parse_jsonl(text: str, source: str = "JSON Lines") -> list[dict[str, Any]]:
    """Parse JSON Lines text into objects; blank lines are skipped.

    Raises:
        InputError: a line is not a JSON object; the message names ``source`` and the line number.
    """
    from steps.errors import InputError

    rows: list[dict[str, Any]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{source}:{lineno}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise InputError(f"{source}:{lineno}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSON Lines file (:func:`parse_jsonl`); raises InputError (a ValueError) naming the line."""
    return parse_jsonl(Path(path).read_text(encoding="utf-8"), str(path))
