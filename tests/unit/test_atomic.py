"""models.shared.atomic: a reader sees the old file or the whole new one; a failed write leaves no trace; a private
file is never readable by others; concurrent writers to one path never leave a partial file."""

import os
import stat
import threading

import nibabel as nib
import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord

from models.shared.atomic import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text
from models.weights import load_checkpoint, save_checkpoint

OLD = b"the previous, complete content\n"
GZIP_MAGIC = b"\x1f\x8b"


@pytest.fixture
def target(tmp_path):
    path = tmp_path / "out" / "result.json"
    path.parent.mkdir()
    path.write_bytes(OLD)
    return path


def mode_of(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_successful_write_replaces_the_file_and_leaves_nothing_else(target):
    atomic_write_text(target, "new ✓\n")
    assert target.read_text(encoding="utf-8") == "new ✓\n"
    atomic_write_json(target, {"b": 1, "a": [2]})
    assert target.read_text(encoding="utf-8") == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}\n'
    assert list(target.parent.iterdir()) == [target]


def test_missing_folders_are_created(tmp_path):
    atomic_write_bytes(tmp_path / "a" / "b" / "c.bin", b"x")
    assert (tmp_path / "a" / "b" / "c.bin").read_bytes() == b"x"


def test_an_exception_mid_block_keeps_the_old_file_and_removes_the_temp_file(target):
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half of the new cont")
        raise RuntimeError("disk full")
    assert target.read_bytes() == OLD
    assert list(target.parent.iterdir()) == [target]


def test_keyboard_interrupt_mid_block_keeps_the_old_file_and_removes_the_temp_file(target):
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt
    assert target.read_bytes() == OLD
    assert list(target.parent.iterdir()) == [target]


def test_a_writer_that_raises_half_way_keeps_the_old_file(target):
    """torch.save has written part of its archive when pickling the lambda fails."""
    with pytest.raises(Exception, match="lambda"), atomic_path(target) as tmp:
        torch.save({"weights": torch.zeros(1000), "bad": lambda: None}, tmp)
    assert target.read_bytes() == OLD
    assert list(target.parent.iterdir()) == [target]


def test_a_failing_checkpoint_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "models" / "global-latest.pt"
    save_checkpoint(ArrayRecord({"w": torch.ones(3)}), path, {"round": 1})
    with pytest.raises(Exception, match="lambda"):
        save_checkpoint(ArrayRecord({"w": torch.zeros(3)}), path, {"round": 2, "bad": lambda: None})
    state, meta = load_checkpoint(path)
    assert meta == {"round": 1} and torch.equal(state["w"], torch.ones(3))
    assert list(path.parent.iterdir()) == [path]


def test_the_temp_file_is_hidden_beside_the_target_and_ends_like_it(tmp_path):
    """nibabel picks compression from the name: the temp name must end in .nii.gz for a gzip file."""
    path = tmp_path / "case-1.nii.gz"
    with atomic_path(path) as tmp:
        assert tmp.parent == path.parent and tmp.name.startswith(".") and tmp.name.endswith(".nii.gz")
        nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)), tmp)
    assert path.read_bytes()[:2] == GZIP_MAGIC and nib.load(path).shape == (2, 2, 2)


def test_mode_0600_holds_from_creation_before_any_byte_is_written(tmp_path):
    path = tmp_path / "site.key"
    with atomic_path(path, mode=0o600) as tmp:
        assert tmp.stat().st_size == 0 and mode_of(tmp) == 0o600  # nothing written yet, already private
        tmp.write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
        assert mode_of(tmp) == 0o600
    assert mode_of(path) == 0o600
    atomic_write_bytes(path, b"replaced", mode=0o600)  # replacing a key keeps it private
    assert mode_of(path) == 0o600
    atomic_write_bytes(tmp_path / "run.sh", b"#!/bin/sh\n", mode=0o755)
    assert mode_of(tmp_path / "run.sh") == 0o755


def test_without_a_mode_the_file_gets_what_open_would_give(tmp_path):
    previous = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "atomic.txt", "x")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(previous)
    assert mode_of(tmp_path / "atomic.txt") == mode_of(tmp_path / "plain.txt") == 0o640


def test_concurrent_writers_never_leave_a_partial_file(tmp_path):
    """Writers in threads of one process (a pid-named temp file would be shared by them) and a reader that
    must only ever see one writer's whole payload."""
    path = tmp_path / "shared.bin"
    size, n_writers, n_writes = 256 * 1024, 4, 15
    payloads = [bytes([index]) * size for index in range(n_writers)]
    atomic_write_bytes(path, payloads[0])
    errors: list[BaseException] = []
    seen: set[bytes] = set()
    done = threading.Event()

    def write(payload: bytes) -> None:
        try:
            for _ in range(n_writes):
                atomic_write_bytes(path, payload)
        except BaseException as error:  # noqa: BLE001 - reported by the test thread
            errors.append(error)

    def read() -> None:
        while not done.is_set():
            data = path.read_bytes()
            if len(data) != size or data != data[:1] * size:
                errors.append(AssertionError(f"partial or mixed content: {len(data)} bytes"))
                return
            seen.add(data[:1])

    reader = threading.Thread(target=read)
    writers = [threading.Thread(target=write, args=(payload,)) for payload in payloads]
    reader.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    reader.join()
    assert errors == []
    assert path.read_bytes() in payloads and seen
    assert list(tmp_path.iterdir()) == [path]
