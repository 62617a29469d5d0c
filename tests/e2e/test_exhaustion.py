"""A local user tries to stop or starve cbatchd (fds, connections, slow or nested frames).

Each attack runs over the real socket against a real daemon; afterwards the daemon is
alive and a normal job still runs.
"""

from __future__ import annotations

import array
import contextlib
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

from cbatch import nofile, protocol
from cbatch.config import Config
from tests.e2e.conftest import make_daemon

pytestmark = [pytest.mark.docker, pytest.mark.harness]


@pytest.fixture
def node(image_ids, site_dirs, test_user):
    """A daemon of the test's own, so an attack that kills it spoils no other test."""
    d = make_daemon(image_ids, site_dirs, socket={"request_timeout_s": 2})
    d.start()
    yield d
    d.cleanup()


def _fds_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _connect(d) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.connect(str(d.socket))  # blocking: waits while the listen backlog is full
    except OSError:
        sock.close()
        raise
    sock.settimeout(10)
    return sock


def _still_serves(d, run) -> None:
    assert d.proc.poll() is None, d.log_path.read_text()[-2000:]
    result = run("#!/bin/bash\necho served\n", d=d)
    assert result.out == "served\n", (result.err, d.log_path.read_text()[-3000:])
    assert not d.events("internal_error")


def test_a_frame_trickled_with_two_fds_per_byte_cannot_fill_the_fd_table(image_ids, site_dirs,
                                                                         test_user, run):
    """11,000 one-byte sendmsg calls carrying two fds each (more than the daemon's limit);
    while the attacker's connection stays open, the daemon still accepts and serves."""
    d = make_daemon(image_ids, site_dirs, socket={"request_timeout_s": 60})
    d.start()
    r, w = os.pipe()
    sent = 0
    try:
        baseline = _fds_of(d.proc.pid)
        with _connect(d) as sock:
            sock.sendall(struct.pack(">II", 200_000, 0))
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                for _ in range(11_000):
                    sock.sendmsg([b" "], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                           array.array("i", [r, w]))])
                    sent += 1
            assert _fds_of(d.proc.pid) <= baseline + 3
            _still_serves(d, run)
            header, _ = protocol.recv(sock)
            assert "too many file descriptors" in header["message"]
        assert sent < 11_000  # refused and hung up on at the first surplus fd
    finally:
        os.close(r)
        os.close(w)
        d.cleanup()


@contextlib.contextmanager
def _soft_nofile(limit: int):
    """Children started inside get this soft limit (systemd's default is 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_flood_of_idle_connections_under_systemds_default_limit(image_ids, site_dirs,
                                                                   test_user, run):
    """Started with a soft limit of 1024, the daemon raises it; 1,100 idle connections
    from one uid then meet its bound instead of exhausting its fds."""
    d = make_daemon(image_ids, site_dirs, socket={"request_timeout_s": 30})
    with _soft_nofile(1024):
        d.start()
    flood = []
    try:
        for _ in range(1100):
            flood.append(_connect(d))
        deadline = time.monotonic() + 20
        while len(d.events("connection_refused")) < 1100 - 512 and time.monotonic() < deadline:
            time.sleep(0.1)
        _still_serves(d, run)
        refused = d.events("connection_refused")
        assert len(refused) == 1100 - 512 and refused[0]["reason"].endswith("this uid")
        raised = d.events("nofile_raised")[0]
        assert raised["soft_before"] == 1024 and raised["soft"] >= nofile.needed(Config())
    finally:
        for sock in flood:
            sock.close()
        d.cleanup()


def test_a_connection_bound_beyond_the_hard_fd_limit_refuses_to_start(image_ids, site_dirs,
                                                                      test_user):
    d = make_daemon(image_ids, site_dirs, socket={"max_connections": 4096})
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "cbatch.daemon", "--config", str(d.config_path)],
            capture_output=True, text=True, timeout=30,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)))
        assert proc.returncode == 1
        assert proc.stderr.splitlines()[-1] == (
            "cbatchd: configuration error at socket.max_connections: 4096 connections need "
            "49216 open files (12 each and 64 spare) but cbatchd may open only 1024 "
            "(RLIMIT_NOFILE); set socket.max_connections to at most 80, or raise "
            "LimitNOFILE= in cbatchd.service")
        assert not d.socket.exists()
    finally:
        d.cleanup()


def test_a_request_trickled_one_byte_at_a_time_is_cut_off_at_the_deadline(node, run):
    frame = protocol.encode("request", b"x\n", v=1, argv=["/bin/bash"], tty=False)
    with _connect(node) as sock:
        started = time.monotonic()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for byte in frame:
                sock.send(bytes([byte]))
                time.sleep(0.3)  # each read is quick; the whole request is not
                if time.monotonic() - started > 10:
                    break
        header, _ = protocol.recv(sock)
    assert header["t"] == "error" and "did not arrive in time" in header["message"]
    assert time.monotonic() - started < 4  # request_timeout_s is 2
    _still_serves(node, run)


def test_a_deeply_nested_header_is_a_protocol_error_not_an_internal_one(node, run):
    header = b'{"t":"request","v":1,"argv":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with _connect(node) as sock:
        sock.sendall(struct.pack(">II", len(header), 0) + header)
        reply, _ = protocol.recv(sock)
    assert reply["t"] == "error" and "nests deeper than 32 levels" in reply["message"]
    _still_serves(node, run)


LAUNCH_WITH_FAILING_ACCEPT = """
import errno, socket, sys
failures = int(sys.argv[1])
accept = socket.socket.accept
def failing_accept(self):
    global failures
    if failures:
        failures -= 1
        raise OSError(errno.EMFILE, "Too many open files")
    return accept(self)
socket.socket.accept = failing_accept
from cbatch.daemon import main
sys.exit(main(sys.argv[2:]))
"""


def test_accept_failing_with_emfile_pauses_the_listener_not_the_daemon(image_ids, site_dirs,
                                                                       test_user, run):
    """accept() is made to fail as it does when the fd table is full (EMFILE)."""
    d = make_daemon(image_ids, site_dirs)
    with open(d.log_path, "a") as log:
        d.proc = subprocess.Popen([sys.executable, "-c", LAUNCH_WITH_FAILING_ACCEPT, "4",
                                   "--config", str(d.config_path)],
                                  stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not d.socket.exists():
            assert d.proc.poll() is None and time.monotonic() < deadline, d.log_path.read_text()
            time.sleep(0.05)
        _still_serves(d, run)  # its connection waits in the backlog through the pauses
        failed = d.events("accept_failed")
        assert [r["error"] for r in failed] == ["EMFILE"] * 4
        assert [r["pause_s"] for r in failed] == [0.05, 0.1, 0.2, 0.4]
    finally:
        d.proc.send_signal(signal.SIGTERM)
        d.cleanup()
