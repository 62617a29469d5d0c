import array
import os
import socket
import struct
import threading
import time

import pytest

from cbatch import protocol


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_round_trip_with_payload(pair):
    a, b = pair
    protocol.send(a, protocol.KIND_STDOUT, b"\x00\xffbytes", seq=1)
    header, payload = protocol.recv(b)
    assert header == {"t": "stdout", "seq": 1} and payload == b"\x00\xffbytes"


def test_file_descriptors_travel_with_the_request(pair, tmp_path):
    a, b = pair
    with open(tmp_path / "out", "w") as f:
        protocol.send(a, protocol.KIND_REQUEST, b"line\n", fds=[f.fileno()], v=1)
        fds = []
        header, payload = protocol.recv(b, fds)
        assert header["t"] == "request" and len(fds) == 1
        os.write(fds[0], b"via passed fd")
        os.close(fds[0])
    assert (tmp_path / "out").read_text() == "via passed fd"


def test_clean_close_between_frames_is_peer_closed(pair):
    a, b = pair
    a.close()
    with pytest.raises(protocol.PeerClosed):
        protocol.recv(b)


def test_truncated_frame_is_a_protocol_error(pair):
    a, b = pair
    a.sendall(protocol.encode("stdout", b"12345")[:-2])
    a.close()
    with pytest.raises(protocol.FrameError, match="middle of a frame"):
        protocol.recv(b)


def test_oversized_frame_is_refused_without_reading_it(pair):
    a, b = pair
    a.sendall(struct.pack(">II", 10, protocol.MAX_PAYLOAD + 1))
    with pytest.raises(protocol.FrameError, match="too large"):
        protocol.recv(b)
    with pytest.raises(protocol.FrameError):
        protocol.encode("stdout", b"x" * (protocol.MAX_PAYLOAD + 1))


@pytest.mark.parametrize("header", [b"not json", b"[1, 2]", b'{"kind": "x"}', b"\xff\xfe"])
def test_malformed_header_is_a_protocol_error(pair, header):
    a, b = pair
    a.sendall(struct.pack(">II", len(header), 0) + header)
    with pytest.raises(protocol.FrameError):
        protocol.recv(b)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_descriptors_beyond_the_bound_are_closed_as_they_arrive(pair):
    """One byte per sendmsg, two fds each: the frame is refused at the first surplus fd."""
    a, b = pair
    frame = protocol.encode(protocol.KIND_REQUEST, v=1)
    r, w = os.pipe()
    try:
        a.sendall(frame[:8])
        for byte in frame[8:40]:
            a.sendmsg([bytes([byte])], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                         array.array("i", [r, w]))])
        before = _open_fds()
        fds: list[int] = []
        with pytest.raises(protocol.FrameError, match="too many file descriptors"):
            protocol.recv(b, fds)
        assert len(fds) == protocol.MAX_FDS
        assert _open_fds() == before + protocol.MAX_FDS  # the surplus pair was closed
    finally:
        for fd in (r, w, *fds):
            os.close(fd)


def test_a_frame_must_arrive_whole_within_the_timeout(pair):
    """A peer that trickles one byte at a time cannot stretch the per-read timeout."""
    a, b = pair
    frame = protocol.encode(protocol.KIND_REQUEST, v=1)

    def trickle():
        for byte in frame:
            try:
                a.send(bytes([byte]))
            except OSError:
                return
            time.sleep(0.05)

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    started = time.monotonic()
    with pytest.raises(protocol.FrameError, match="did not arrive in time"):
        protocol.recv(b, [], timeout_s=0.3)
    assert time.monotonic() - started < 0.6
    assert b.gettimeout() is None  # the socket is left as it was found
    a.close()
    sender.join()


@pytest.mark.parametrize("header", [
    b'{"t":"request","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # RecursionError natively
    b'{"t":"request","x":' + b'{"a":' * 33 + b"1" + b"}" * 33 + b"}",
])
def test_deeply_nested_headers_are_a_protocol_error(pair, header):
    a, b = pair
    a.sendall(struct.pack(">II", len(header), 0) + header)
    with pytest.raises(protocol.FrameError, match="nests deeper than 32"):
        protocol.recv(b)


def test_brackets_inside_strings_do_not_count_as_nesting(pair):
    a, b = pair
    text = "[" * 1000 + '\\"{' * 50
    protocol.send(a, protocol.KIND_REQUEST, argv=[text], nested=[[[{"a": [1]}]]])
    header, _ = protocol.recv(b)
    assert header["argv"] == [text]


@pytest.mark.parametrize("value,ok", [
    ([24, 80], True), ([1, 65535], True), ([0, 80], False), ([24], False),
    ((24, 80), False), ([24.0, 80], False), ([True, 80], False), (None, False),
])
def test_a_window_size_is_two_positive_ints(value, ok):
    assert protocol.is_winsize(value) is ok
