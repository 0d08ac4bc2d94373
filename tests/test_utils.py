"""The package's shared rules: atomic writes (complete or absent, forced to disk) and range checks."""
import json
import os

import numpy as np
import pytest

from fscal_edu import utils
from fscal_edu.utils import (FscalError, atomic_path, atomic_write_bytes, atomic_write_json,
                             atomic_write_text, check_int, check_number)


def test_atomic_write_replaces_the_whole_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    atomic_write_json(target, {"x": [1, 2]})
    assert json.loads(target.read_text()) == {"x": [1, 2]}
    atomic_write_text(target, "héllo\n")
    assert target.read_text(encoding="utf-8") == "héllo\n"
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_writer_that_fails_halfway_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "w.bin"
    target.write_bytes(b"complete old file")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a ne")
            raise RuntimeError("killed while writing")
    assert target.read_bytes() == b"complete old file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.bin"]
    with pytest.raises(RuntimeError):                # no old file: the target stays absent
        with atomic_path(tmp_path / "new.bin") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert not (tmp_path / "new.bin").exists()


def test_a_reader_sees_the_old_bytes_until_the_rename(tmp_path):
    target = tmp_path / "r.txt"
    target.write_text("old")
    with atomic_path(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old" and tmp.parent == tmp_path and tmp != target
    assert target.read_text() == "new"


def test_the_file_and_its_folder_are_fsynced_before_the_write_returns(tmp_path, monkeypatch):
    synced, real_fsync, order = [], os.fsync, []
    real_replace = os.replace

    def fsync(fd):
        synced.append(os.path.realpath(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else fd)
        order.append("fsync")
        return real_fsync(fd)

    def replace(a, b):
        order.append("replace")
        return real_replace(a, b)

    monkeypatch.setattr(utils.os, "fsync", fsync)
    monkeypatch.setattr(utils.os, "replace", replace)
    atomic_write_text(tmp_path / "f.txt", "data")
    assert order[:2] == ["fsync", "replace"], order          # the file's bytes reach disk before the rename
    assert len(synced) >= 1
    if os.path.exists("/proc/self/fd") and os.name == "posix":
        assert synced[0].endswith(".tmp") and synced[-1] == os.path.realpath(tmp_path)


def test_atomic_write_keeps_permissions_readable(tmp_path):
    atomic_write_text(tmp_path / "shared.json", "{}", mode=0o644)
    assert (tmp_path / "shared.json").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("value", [1, 5, np.int64(3)])
def test_check_int_accepts_integers_at_or_above_the_bound(value):
    assert check_int(value, at_least=1, field="data.shots") == int(value)
    assert type(check_int(value, at_least=1, field="data.shots")) is int


@pytest.mark.parametrize("value", [0, -2, 2.0, True, "3", None])
def test_check_int_refuses_with_the_field_named(value):
    with pytest.raises(FscalError, match=r"^field 'data\.shots': must be an integer >= 1, got "):
        check_int(value, at_least=1, field="data.shots")


def test_check_int_names_the_file_too(tmp_path):
    with pytest.raises(FscalError, match=r"^file '.*x\.json', field 'n': must be an integer >= 0"):
        check_int(-1, at_least=0, field="n", file=tmp_path / "x.json")


@pytest.mark.parametrize("value, ok", [(0.5, True), (0, True), (1, True), (1.01, False), (-0.1, False),
                                       (float("nan"), False), (float("inf"), False), (True, False),
                                       ("0.5", False), (np.float32(0.25), True)])
def test_check_number_bounds_are_inclusive_and_finite(value, ok):
    if ok:
        assert check_number(value, low=0, high=1, field="post.soft_nms_sigma") == float(value)
    else:
        with pytest.raises(FscalError, match=r"^field 'post\.soft_nms_sigma': must be a finite number in \[0, 1\]"):
            check_number(value, low=0, high=1, field="post.soft_nms_sigma")


def test_check_number_open_bounds():
    assert check_number(-1e9, high=0, field="x") == -1e9
    with pytest.raises(FscalError, match=r"in \[0, inf\]"):
        check_number(-1, low=0, field="x")
