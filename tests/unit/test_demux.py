"""Docker's multiplexed attach stream, split into the job's stdout and stderr."""

import socket
import threading

import pytest

from cbatch import demux


def frames(*parts: tuple[int, bytes]) -> bytes:
    return b"".join(demux.HEADER.pack(stream, len(data)) + data for stream, data in parts)


def pumped(raw: bytes, pump=demux.pump, stop_after: int | None = None):
    a, b = socket.socketpair()
    got: list[tuple[int, bytes]] = []

    def emit(stream, data):
        got.append((stream, data))
        return stop_after is None or len(got) < stop_after

    writer = threading.Thread(target=lambda: (b.sendall(raw), b.close()))
    writer.start()
    failure = pump(a, emit)
    writer.join()
    a.close()
    return got, failure


def test_frames_go_to_their_stream_in_order():
    got, failure = pumped(frames((1, b"out1"), (2, b"err"), (1, b"out2")))
    assert got == [(1, b"out1"), (2, b"err"), (1, b"out2")] and failure is None


def test_a_frame_split_across_reads_arrives_whole():
    data = b"x" * 300_000  # larger than one socket read
    got, _ = pumped(frames((1, data)))
    assert b"".join(d for _, d in got) == data


@pytest.mark.parametrize("message", [b"[FATAL tini (7)] exec /bin/zsh failed: No such file",
                                     b"cbatch-keeper: exec /bin/zsh: No such file"])
def test_docker_init_failure_is_kept_apart_from_the_jobs_stderr(message):
    got, failure = pumped(frames((2, message[:20]), (2, message[20:])))
    assert got == [] and failure == message.decode()


def test_emit_returning_false_stops_the_pump():
    got, _ = pumped(frames((1, b"a"), (1, b"b"), (1, b"c")), stop_after=1)
    assert got == [(1, b"a")]


def test_unknown_stream_numbers_are_dropped():
    got, _ = pumped(frames((0, b"stdin echo"), (3, b"?"), (1, b"ok")))
    assert got == [(1, b"ok")]


def test_a_terminal_stream_is_all_stdout_and_its_init_failure_is_named():
    got, failure = pumped(b"hello\r\n", demux.pump_terminal)
    assert got == [(1, b"hello\r\n")] and failure is None
    got, failure = pumped(b"[FATAL tini (7)] exec failed", demux.pump_terminal)
    assert got == [] and failure.startswith("[FATAL tini")
