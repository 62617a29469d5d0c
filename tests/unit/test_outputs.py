"""How each of the starter's output fds reaches the job: its file, /dev/null, or a stream."""

import os
from pathlib import Path

import pytest

from cbatch import outputs
from cbatch.container import STREAM, Output


@pytest.fixture
def fds():
    opened = []
    yield opened
    for fd in opened:
        os.close(fd)


def test_dev_null_stays_dev_null_and_a_pipe_is_streamed(fds):
    r, w = os.pipe()
    fds += [r, w, os.open("/dev/null", os.O_WRONLY)]
    assert outputs._classify(fds[2]) == Output("null")
    assert outputs._classify(w) == STREAM


def test_a_writable_regular_file_is_written_in_place(tmp_path, fds):
    path = tmp_path / "12.vm.OU"
    fds.append(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    assert outputs._classify(fds[0]) == Output("file", path)


@pytest.mark.parametrize("flags", [os.O_RDONLY])
def test_a_file_the_starter_cannot_write_is_streamed(tmp_path, fds, flags):
    path = tmp_path / "f"
    path.write_text("")
    fds.append(os.open(path, flags))
    assert outputs._classify(fds[0]) == STREAM


def test_a_deleted_file_is_streamed(tmp_path, fds):
    path = tmp_path / "gone"
    fds.append(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    path.unlink()
    assert outputs._classify(fds[0]) == STREAM


def test_a_file_under_a_system_folder_is_never_mounted(fds):
    fds.append(os.open("/etc/hostname", os.O_RDWR) if os.access("/etc/hostname", os.W_OK)
               else os.open("/dev/null", os.O_WRONLY))
    assert outputs._classify(fds[0]).mode in ("stream", "null")


def test_without_both_fds_everything_is_streamed(tmp_path):
    plan = outputs.plan([], "cbatch-1.vm", tmp_path)
    assert (plan.stdout, plan.stderr, plan.binds) == (STREAM, STREAM, ())


def test_null_and_pipe_need_no_placeholder(tmp_path, fds):
    r, w = os.pipe()
    fds += [r, w, os.open("/dev/null", os.O_WRONLY)]
    plan = outputs.plan([fds[2], w], "cbatch-1.vm", tmp_path)
    assert (plan.stdout, plan.stderr, plan.binds, plan.placeholders) == (
        Output("null"), STREAM, (), [])
    assert not list(Path(tmp_path).iterdir())
