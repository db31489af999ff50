"""toolkit.io: atomic files, staged folders and when they reach the disk."""
from __future__ import annotations

import os

import pytest

from toolkit import io


@pytest.fixture
def disk_calls(monkeypatch):
    """Record os.fsync and os.sync calls (and whether the staged folder had appeared at each sync)."""
    calls = []
    monkeypatch.setattr(io.os, "fsync", lambda fd: calls.append("fsync"))
    monkeypatch.setattr(io.os, "sync", lambda: calls.append("sync"))
    return calls


def test_a_single_file_is_synced_before_it_replaces_the_old_one(tmp_path, disk_calls):
    with io.atomic_write(tmp_path / "a.bin") as f:
        f.write(b"new")
    assert disk_calls == ["fsync"] and (tmp_path / "a.bin").read_bytes() == b"new"


def test_a_staged_folder_is_synced_once_before_it_appears(tmp_path, disk_calls, monkeypatch):
    out = tmp_path / "dataset"
    seen_at_sync = []
    monkeypatch.setattr(io.os, "sync", lambda: (disk_calls.append("sync"), seen_at_sync.append(out.exists())))
    with io.staged_folder(out) as work:
        for i in range(5):
            with io.atomic_write(work / "sub" / f"{i}.bin") as f:
                f.write(bytes([i]))
        assert disk_calls == []  # no file synced on its own inside the staging folder
    assert disk_calls == ["sync"] and seen_at_sync == [False]
    assert sorted(p.name for p in (out / "sub").iterdir()) == [f"{i}.bin" for i in range(5)]
    with io.atomic_write(tmp_path / "after.bin") as f:  # outside any staging folder again
        f.write(b"x")
    assert disk_calls == ["sync", "fsync"]


def test_a_failed_staged_folder_is_removed_and_not_synced(tmp_path, disk_calls):
    with pytest.raises(RuntimeError), io.staged_folder(tmp_path / "dataset") as work:
        with io.atomic_write(work / "0.bin") as f:
            f.write(b"0")
        raise RuntimeError("interrupted")
    assert disk_calls == [] and os.listdir(tmp_path) == []
