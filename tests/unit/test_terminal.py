"""An interactive job's terminal against a fake engine: keys, sizes, re-attach."""

import socket
import time

import pytest
import structlog
from structlog.testing import capture_logs

from cbatch import terminal
from cbatch.errors import ContainerFailed

_made: list[socket.socket] = []


@pytest.fixture(autouse=True)
def close_sockets():
    yield
    while _made:
        _made.pop().close()


def stream(data: bytes) -> socket.socket:
    """An attach socket that delivers data, then EOF; what is sent to it waits at its
    peer (the last socket made)."""
    ours, theirs = socket.socketpair()
    theirs.sendall(data)
    theirs.shutdown(socket.SHUT_WR)
    _made.extend((ours, theirs))
    return ours


class FakeEngine:
    def __init__(self, attaches, running):
        self.attaches, self.running, self.sizes = list(attaches), list(running), []

    def inspect(self, cid):
        return {"State": {"Running": self.running.pop(0)}}

    def attach(self, cid, stdout, stderr, stdin=False):
        assert stdin is True
        return self.attaches.pop(0)

    def resize(self, cid, rows, cols):
        if rows == 99:
            raise ContainerFailed("gone")
        self.sizes.append((rows, cols))


def test_output_goes_on_after_a_detach_until_the_job_ends():
    engine = FakeEngine([stream(b"after\r\n")], running=[True, False])
    term = terminal.Terminal(engine, "c1", stream(b"before\r\n"), structlog.get_logger())
    seen = []
    with capture_logs() as logs:
        assert term.pump(lambda s, d: seen.append((s, d)) or True) is None
    assert seen == [(1, b"before\r\n"), (1, b"after\r\n")]
    assert [r["event"] for r in logs] == ["terminal_reattached"]


def test_an_init_failure_is_reported_not_reattached():
    engine = FakeEngine([], running=[])
    term = terminal.Terminal(engine, "c1", stream(b"[FATAL tini (7)] exec /bin/zsh failed\r\n"),
                             structlog.get_logger())
    assert "exec /bin/zsh failed" in term.pump(lambda s, d: True)


def test_keys_reach_the_attach_and_sizes_the_engine():
    engine = FakeEngine([], running=[])
    attach = stream(b"")
    peer = _made[-1]
    term = terminal.Terminal(engine, "c1", attach, structlog.get_logger())
    term.type(b"ls\r")
    assert peer.recv(10) == b"ls\r"
    term.resize([40, 100])
    term.resize("junk")  # ignored
    with capture_logs() as logs:
        term.resize([99, 100])  # the container is gone: logged, not raised
    assert engine.sizes == [(40, 100)] and logs[0]["event"] == "resize_failed"
    term.close()
    term.type(b"x")  # after the end: nowhere to go, no error


def test_resizes_are_paced_and_repeats_skipped():
    engine = FakeEngine([], running=[])
    term = terminal.Terminal(engine, "c1", stream(b""), structlog.get_logger())
    started = time.monotonic()
    for rows in (30, 31, 31, 32, 33, 33):
        term.resize([rows, 100])
    elapsed = time.monotonic() - started
    assert engine.sizes == [(30, 100), (31, 100), (32, 100), (33, 100)]
    assert elapsed >= 3 / terminal.RESIZES_PER_S - 0.01  # at most RESIZES_PER_S calls a second


def test_a_starter_gone_ends_the_pump_without_attaching_again():
    engine = FakeEngine([], running=[])  # an inspect or attach would find nothing to pop
    term = terminal.Terminal(engine, "c1", stream(b"output nobody reads"),
                             structlog.get_logger())
    assert term.pump(lambda s, d: False) is None
