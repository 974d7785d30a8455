"""Atomic writers: content, no temporary files left, and the permissions the umask gives."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from core.io import atomic_open, current_umask, write_bytes, write_json, write_jsonl, write_text


@pytest.fixture
def umask():
    """Set a umask for one test and restore the previous one."""
    previous = os.umask(0o022)
    os.umask(previous)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(previous)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600), (0o027, 0o640)])
def test_written_files_get_the_mode_the_umask_gives(tmp_path: Path, umask, mask: int, expected: int) -> None:
    umask(mask)
    assert current_umask() == mask
    paths = [write_text(tmp_path / "a.txt", "x"), write_bytes(tmp_path / "b.bin", b"x"),
             write_json(tmp_path / "c.json", {"a": 1})]
    write_jsonl(tmp_path / "d.jsonl", [{"a": 1}])
    paths.append(tmp_path / "d.jsonl")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    for path in [*paths, plain]:
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


def test_current_umask_leaves_the_umask_unchanged(umask) -> None:
    umask(0o027)
    assert current_umask() == 0o027
    assert current_umask() == 0o027
    assert os.umask(0o027) == 0o027


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = write_text(tmp_path / "f.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as handle:
            handle.write("new")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]
