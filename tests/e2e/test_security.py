"""Attacks a batch user could try, each shown to fail (threat model in README.rst)."""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cbatch import protocol
from tests.e2e.conftest import GROUP, make_daemon
from tests.harness import attacker as attack

pytestmark = [pytest.mark.docker, pytest.mark.harness]


def test_setuid_binary_in_the_image_does_not_give_root(run, test_user):
    result = run("#!/bin/bash\nstat -c '%A %u' /usr/bin/suid-id\n/usr/bin/suid-id -u\n"
                 "grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status\n")
    lines = result.out.split("\n")
    assert lines[0] == "-rwsr-xr-x 0", result.out  # really a setuid-root binary
    assert lines[1] == str(test_user.pw_uid), result.out
    assert "CapPrm:\t0000000000000000" in result.out and "CapEff:\t0000000000000000" in result.out
    assert "NoNewPrivs:\t1" in result.out


def test_a_jobs_child_connecting_again_is_refused(run, daemon, tmp_path):
    """Only the job's session leader is a job: a child of it asking again is not."""
    wrapper = daemon.root / "child-starter"
    wrapper.write_text(f"#!/bin/sh\n{daemon.starter} \"$@\"\nexit $?\n")
    os.chmod(wrapper, 0o755)
    result = run("#!/bin/bash\necho ran\n", starter=str(wrapper))
    assert result.status == 126 and result.out == ""
    assert result.err == ("cbatch: cbatch-starter must be started by pbs_mom as a Torque job "
                          "(this process is not a job's session leader)\n")


def test_network_follows_policy(image_ids, site_dirs, test_user, run):
    d = make_daemon(image_ids, site_dirs, container={"network": "none"})
    d.start()
    try:
        result = run("#!/bin/bash\nwhile read -r name rest; do echo \"$name\"; done < /proc/net/dev\n",
                     d=d)
        assert [line for line in result.out.split("\n")[2:] if line] == ["lo:"], result.out
    finally:
        d.cleanup()


def test_an_idle_client_is_dropped_without_holding_anything(image_ids, site_dirs, test_user, run):
    d = make_daemon(image_ids, site_dirs, socket={"request_timeout_s": 0.5})
    d.start()
    try:
        with socket.socket(socket.AF_UNIX) as idle:
            idle.connect(str(d.socket))
            idle.settimeout(5)
            started = time.monotonic()
            header, _ = protocol.recv(idle)
            assert header["t"] == "error" and time.monotonic() - started < 3
            assert "bad request from cbatch-starter" in header["message"]
        assert run("#!/bin/bash\necho still-serving\n", d=d).out == "still-serving\n"
    finally:
        d.cleanup()


def _frames():
    junk = st.binary(max_size=64)
    header = st.dictionaries(st.sampled_from(["t", "v", "argv", "tty", "resume", "op", "signal"]),
                             st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40),
                                       st.text(max_size=20), st.lists(st.text(max_size=8), max_size=4),
                                       st.sampled_from(["request", "admin", "signal", "exit"])),
                             max_size=5)
    framed = st.tuples(header, junk).map(
        lambda hp: protocol._PREFIX.pack(len(_json(hp[0])), len(hp[1])) + _json(hp[0]) + hp[1])
    lying = st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), junk).map(
        lambda t: struct.pack(">II", t[0], t[1]) + t[2])
    return st.lists(st.one_of(junk, framed, lying), min_size=1, max_size=3).map(b"".join)


def _json(obj) -> bytes:
    import json
    return json.dumps(obj).encode()


@pytest.fixture(scope="module")
def fuzz_daemon(image_ids, site_dirs, test_user):
    d = make_daemon(image_ids, site_dirs, socket={"request_timeout_s": 2})
    d.start()
    yield d
    d.cleanup()


@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=_frames())
def test_generated_frames_never_crash_or_wedge_the_daemon(fuzz_daemon, data):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(fuzz_daemon.socket))
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass  # an error frame at most, then the daemon closes
        except (BrokenPipeError, ConnectionResetError):
            pass
    assert fuzz_daemon.proc.poll() is None


def test_daemon_serves_a_real_job_after_the_fuzzing(fuzz_daemon, run, api):
    assert fuzz_daemon.proc.poll() is None
    assert run("#!/bin/bash\necho fine\n", d=fuzz_daemon).out == "fine\n"
    assert not [r for r in fuzz_daemon.records() if r.get("event") == "internal_error"]
    status = Path(f"/proc/{fuzz_daemon.proc.pid}/status").read_text()
    threads = int(status.split("Threads:")[1].split()[0])
    assert threads <= 4, f"{threads} threads left after the fuzzing"


FORGER = """#!/usr/bin/python3 -I
import os, sys
from cbatch import protocol  # the installed package
import signal
import socket
sock = socket.socket(socket.AF_UNIX)
sock.connect(os.environ["CBATCH_SOCKET"])
stdin = sys.stdin.buffer.read()
protocol.send(sock, "request", stdin, fds=[1, 2], v=protocol.VERSION, argv=sys.argv[1:],
              tty=False, uid=0, gid=0, user="root", groups=[0], job_id="1.other",
              image="beta", mounts=["/etc/shadow"], privileged=True)
while True:
    header, payload = protocol.recv(sock)
    if header["t"] in ("exit", "error"):
        os._exit(header["status"])
"""


def test_identity_and_options_claimed_by_the_request_are_ignored(daemon, run, test_user):
    forger = daemon.root / "forger"
    forger.write_text(FORGER)
    os.chmod(forger, 0o755)
    result = run("#!/bin/bash\nid -u\ncat /etc/os-release | head -1\ntest -e /etc/shadow || echo no-shadow\n",
                 starter=str(forger))
    assert result.out == f"{test_user.pw_uid}\nID=alpha\nno-shadow\n", result.err


def test_socket_has_the_configured_mode_and_group(image_ids, site_dirs, test_user):
    import grp
    import stat
    d = make_daemon(image_ids, site_dirs, socket={"mode": "0660", "group": GROUP})
    d.start()
    try:
        st = os.stat(d.socket)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
        assert (st.st_uid, st.st_gid) == (0, grp.getgrnam(GROUP).gr_gid)
    finally:
        d.cleanup()


@pytest.mark.parametrize("frame,reply", [
    (protocol.encode("request", b"x\n", v=99, argv=["/bin/bash"], tty=False),
     "cbatch-starter speaks protocol 99, cbatchd speaks 1"),
    (protocol.encode("signal", signal=15), "expected a request, got 'signal'"),
    (protocol.encode("request", b"", v=1, argv="rm -rf /", tty=False),
     "the request's argv is not a list of strings"),
])
def test_wrong_version_and_out_of_order_frames_get_one_error(fuzz_daemon, frame, reply):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(fuzz_daemon.socket))
        sock.sendall(frame)
        header, _ = protocol.recv(sock)
        assert header["t"] == "error" and reply in header["message"]
        with pytest.raises(protocol.PeerClosed):
            protocol.recv(sock)


def test_a_connection_flood_from_one_user_does_not_starve_the_others(image_ids, site_dirs,
                                                                    test_user, run):
    d = make_daemon(image_ids, site_dirs, socket={"max_connections_per_user": 20,
                                                   "request_timeout_s": 30})
    d.start()
    flood = []
    try:
        for _ in range(60):  # root's idle connections, far over its bound
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(str(d.socket))
            flood.append(sock)
        deadline = time.monotonic() + 10
        while len(d.events("connection_refused")) < 40 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)  # room for a wrongly accepted 41st
        status = Path(f"/proc/{d.proc.pid}/status").read_text()
        assert int(status.split("Threads:")[1].split()[0]) <= 22  # main + 20 + slack
        refused = d.events("connection_refused")
        assert len(refused) == 40 and refused[0]["uid"] == 0
        assert run("#!/bin/bash\necho served\n", d=d).out == "served\n"  # another uid
    finally:
        for sock in flood:
            sock.close()
        d.cleanup()


@pytest.fixture(scope="module")
def attacker(test_user):
    kit = attack.build(test_user)
    yield kit
    attack.remove(test_user)


@pytest.mark.parametrize("vector", attack.VECTORS)
def test_code_named_by_the_jobs_environment_never_runs_on_the_host(attacker, run, test_user,
                                                                  vector):
    env = attack.arm(attacker, test_user, vector)
    try:
        assert attack.fires_on_host(attacker, test_user, env, attack.VECTORS[vector][1]), \
            f"the {vector} kit did not fire on the host"
        result = run("#!/bin/bash\nhead -1 /etc/os-release\n", job_env=env)
        assert (result.status, result.out) == (0, "ID=alpha\n"), result.err
        assert attack.host_marks(attacker["marker"]) == []
    finally:
        attack.disarm(attacker)
