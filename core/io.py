"""Atomic file output: every file is written to a temporary name in its folder, then renamed.

A reader therefore sees either the previous complete file or the new complete file, never half a
manifest, and a step killed mid-write can simply be re-run. The file gets the permissions a plain
``open(path, "w")`` would give (``0o666`` less the process umask), not the ``0o600`` of
:func:`tempfile.mkstemp`, so a team sharing a run folder can read it.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (for example ``0o022``), read without changing it for other threads.

    Linux 4.7+ reports it in ``/proc/self/status`` (``Umask:``); elsewhere it is read with the
    set-and-restore idiom of :func:`os.umask`, under a lock so that two writers of this module never
    see each other's temporary value.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on a clean exit, fsync it and rename it over ``path``.

    ``mode`` is ``"w"`` (text) or ``"wb"`` (binary). On an exception the temporary file is removed
    and ``path`` is left untouched. The file's mode is ``0o666 & ~umask`` (:func:`current_umask`).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())
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
    from core.errors import InputError

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
