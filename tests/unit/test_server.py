"""The daemon's socket: a safe bind, and connections bounded per uid and overall."""

import os
import socket
import stat
import threading

import pytest

from cbatch import server


def test_bind_sets_mode_and_replaces_only_a_stale_socket(tmp_path):
    path = tmp_path / "run" / "cbatchd.sock"
    first = server.bind(path, 0o666, None)
    first.close()
    again = server.bind(path, 0o660, None)  # the stale socket is replaced
    assert stat.S_ISSOCK(os.lstat(path).st_mode) and stat.S_IMODE(os.lstat(path).st_mode) == 0o660
    again.close()


@pytest.mark.parametrize("make", [lambda p: p.write_text("x"), lambda p: p.mkdir(),
                                  lambda p: p.symlink_to("/etc/passwd")])
def test_bind_refuses_to_replace_anything_but_a_socket(tmp_path, make):
    path = tmp_path / "cbatchd.sock"
    make(path)
    with pytest.raises(OSError, match="is not a socket"):
        server.bind(path, 0o666, None)
    assert os.path.lexists(path)


def test_connections_over_the_bound_are_refused_with_the_peer_read_once(tmp_path):
    listener = server.bind(tmp_path / "s.sock", 0o600, None)
    release = threading.Event()
    handled, refused = [], []

    def handle(conn, who):
        handled.append(who)
        release.wait(5)
        conn.close()

    srv = server.Server(listener, handle, lambda: (2, 10),
                        lambda conn, uid, why: (refused.append((uid, why)), conn.close()))
    clients = [socket.socket(socket.AF_UNIX) for _ in range(3)]
    for c in clients:
        c.connect(str(tmp_path / "s.sock"))
        srv.accept_one()
    assert refused == [(os.getuid(), "too many connections from this uid")]
    for _ in range(100):
        if len(handled) == 2:
            break
        release.wait(0.05)
    assert [(w.pid, w.uid) for w in handled] == [(os.getpid(), os.getuid())] * 2
    release.set()
    for c in clients:
        c.close()
    listener.close()
