"""The relay in front of trqauthd, between a client in another pid namespace and a
stand-in trqauthd that checks callers as Torque's validate_user does (SO_PEERCRED)."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
import structlog

from cbatch import trqauth

NOBODY = pwd.getpwnam("nobody")
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (setuid, unshare)")

# Torque's client side (pbsD_connect.c): "1|" server port auth_type user pid client_port
CLIENT = """
import os, socket, sys
user, pid = sys.argv[2], sys.argv[3]
pid = str(os.getpid()) if pid == "own" else pid
req = f"1|9|localhost|15001|1|{len(user)}|{user}|{pid}|40000|".encode()
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(req)
print(os.getpid(), s.recv(4096).decode())
"""


class FakeTrqauthd:
    """Accepts an authentication request only from the uid and pid it names."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        os.chmod(path, 0o666)
        self.sock.listen(8)
        self.seen: list[tuple[int, int, list]] = []  # (peer pid, peer uid, fields)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                pid, uid, _ = struct.unpack("3i", conn.getsockopt(
                    socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
                buf = b""
                while True:
                    try:
                        kind, fields, _ = trqauth.parse(buf)
                        break
                    except trqauth.Incomplete:
                        buf += conn.recv(4096)
                self.seen.append((pid, uid, fields))
                ok = fields[3] == pwd.getpwuid(uid).pw_name.encode() and fields[4] == pid
                conn.sendall(b"0|0||" if ok else b"15008|7|refused|")


@pytest.fixture
def folder():
    """Open to nobody (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="cbatch-trqauth-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def relay(folder):
    tmp_path = folder
    fake = FakeTrqauthd(tmp_path / "trqauthd-unix")
    relay = trqauth.Relay(tmp_path / "relay", structlog.get_logger("test"),
                          trqauthd=tmp_path / "trqauthd-unix").start()
    yield relay, fake
    relay.close()
    fake.sock.close()


def ask(relay: trqauth.Relay, user: str, pid: str) -> tuple[int, str]:
    """A client as nobody in a pid namespace of its own (as in a container)."""
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "setpriv", f"--reuid={NOBODY.pw_uid}",
         f"--regid={NOBODY.pw_gid}", "--clear-groups", sys.executable, "-I", "-c", CLIENT,
         str(relay.path), user, pid], capture_output=True, text=True, timeout=30, check=True)
    own, reply = done.stdout.split(maxsplit=1)
    return int(own), reply.strip()


def test_a_client_in_a_pid_namespace_is_vouched_for_in_the_relays_name(relay):
    relay, fake = relay
    own, reply = ask(relay, "nobody", "own")
    assert own < 10  # its pid in its own namespace, which trqauthd never sees
    assert reply == "0|0||"
    pid, uid, fields = fake.seen[-1]
    assert uid == NOBODY.pw_uid and fields[4] == pid != own  # the relay's child, as nobody


def test_a_forged_pid_or_user_goes_through_unchanged_and_is_refused(relay):
    relay, fake = relay
    assert ask(relay, "nobody", "4242")[1].startswith("15008|")  # not its own pid
    assert fake.seen[-1][2][4] == 4242
    assert ask(relay, "root", "own")[1].startswith("15008|")  # someone else's name
    assert fake.seen[-1][2][3] == b"root"


def test_trqauthd_down_is_said_in_cbatchs_words(relay, folder):
    relay, fake = relay
    fake.sock.close()
    (folder / "trqauthd-unix").unlink()
    reply = ask(relay, "nobody", "own")[1]
    assert reply.startswith(f"{trqauth.SOCKET_FAULT}|") and "cbatch: trqauthd" in reply


def test_the_wire_format_round_trips():
    request = b"1|9|localhost|15001|1|5|alice|42|40000|"
    kind, fields, used = trqauth.parse(request + b"rest")
    assert (kind, used) == (1, len(request))
    assert fields == [b"localhost", 15001, 1, b"alice", 42, 40000]
    assert trqauth.encode(kind, fields) == request
    with pytest.raises(trqauth.Incomplete):
        trqauth.parse(request[:-3])
    with pytest.raises(ValueError):
        trqauth.parse(b"1|x|")
    assert trqauth.parse(b"2|") == (2, [], 2)
