import os
import socket
import struct

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
    with pytest.raises(protocol.ProtocolError, match="middle of a frame"):
        protocol.recv(b)


def test_oversized_frame_is_refused_without_reading_it(pair):
    a, b = pair
    a.sendall(struct.pack(">II", 10, protocol.MAX_PAYLOAD + 1))
    with pytest.raises(protocol.ProtocolError, match="too large"):
        protocol.recv(b)
    with pytest.raises(protocol.ProtocolError):
        protocol.encode("stdout", b"x" * (protocol.MAX_PAYLOAD + 1))


@pytest.mark.parametrize("header", [b"not json", b"[1, 2]", b'{"kind": "x"}', b"\xff\xfe"])
def test_malformed_header_is_a_protocol_error(pair, header):
    a, b = pair
    a.sendall(struct.pack(">II", len(header), 0) + header)
    with pytest.raises(protocol.ProtocolError):
        protocol.recv(b)
