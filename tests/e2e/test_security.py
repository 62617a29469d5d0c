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


# The job's environment reaches pbs_mom's exec of the starter (qsub -v): code it names must
# not run on the host. Each payload appends "<pid namespace> <program>" to a marker file;
# lines from the host's pid namespace would be code run outside the container.
EVIL_SO = r"""
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static void mark(const char *how) {
    char ns[64] = "", exe[256] = "", line[400];
    if (readlink("/proc/self/ns/pid", ns, sizeof ns - 1) < 0 || readlink("/proc/self/exe", exe, sizeof exe - 1) < 0)
        return;
    int fd = open(MARKER, O_WRONLY | O_APPEND | O_CREAT, 0666);
    int n = snprintf(line, sizeof line, "%s %s %s\n", ns, exe, how);
    if (fd >= 0 && write(fd, line, (size_t)n) == n)
        close(fd);
}
__attribute__((constructor)) static void loaded(void) { mark("constructor"); }
unsigned int la_version(unsigned int version) { mark("audit"); return version; }
"""
EVIL_PY = ("import os\n"  # os-level calls: under PYTHONHOME it runs before io exists
           "fd = os.open({marker!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)\n"
           "os.write(fd, (os.readlink('/proc/self/ns/pid') + ' python ' + __name__ + '\\n').encode())\n")


@pytest.fixture(scope="module")
def attacker(test_user):
    """The test user's own attack kit in their home, as a job owner could leave it."""
    import shutil
    import subprocess
    import sys
    home = Path(test_user.pw_dir)
    kit = home / "evil"
    marker = kit / "marker"
    shutil.rmtree(kit, ignore_errors=True)
    (kit / "lib").mkdir(parents=True)
    (kit / "evil.c").write_text(EVIL_SO)
    subprocess.run(["cc", "-shared", "-fPIC", f'-DMARKER="{marker}"', "-o", str(kit / "lib" / "libevil.so"),
                    str(kit / "evil.c")], check=True)
    payload = EVIL_PY.format(marker=str(marker))
    py = kit / "py"  # PYTHONPATH: modules an interpreted starter would import first
    for name in ("sitecustomize.py", "usercustomize.py", "selectors.py", "cbatch/__init__.py"):
        (py / name).parent.mkdir(parents=True, exist_ok=True)
        (py / name).write_text(payload)
    stdlib = Path(f"/usr/lib/python{sys.version_info.major}.{sys.version_info.minor}")
    pyhome = kit / "home" / "lib" / stdlib.name  # PYTHONHOME: the stdlib, its encodings replaced
    (pyhome / "encodings").mkdir(parents=True)
    for entry in stdlib.iterdir():
        if entry.name != "encodings":
            (pyhome / entry.name).symlink_to(entry)
    for entry in (stdlib / "encodings").iterdir():
        if entry.name != "__init__.py":
            (pyhome / "encodings" / entry.name).symlink_to(entry)
    (pyhome / "encodings" / "__init__.py").write_text(payload)
    usersite = home / ".local" / "lib" / stdlib.name / "site-packages"
    usersite.mkdir(parents=True, exist_ok=True)
    for path in (kit, *kit.rglob("*"), home / ".local", *(home / ".local").rglob("*")):
        os.lchown(path, test_user.pw_uid, test_user.pw_gid)
    yield {"marker": marker, "kit": kit, "usersite": usersite, "payload": payload}
    shutil.rmtree(kit, ignore_errors=True)
    shutil.rmtree(home / ".local", ignore_errors=True)


VECTORS = {  # name: (job environment, a dynamically linked or interpreted program it hijacks)
    "PYTHONPATH": ({"PYTHONPATH": "{kit}/py"}, "/usr/bin/python3"),
    "PYTHONHOME": ({"PYTHONHOME": "{kit}/home"}, "/usr/bin/python3"),
    "usercustomize": ({}, "/usr/bin/python3"),
    "LD_PRELOAD": ({"LD_PRELOAD": "{kit}/lib/libevil.so"}, "/bin/true"),
    "LD_LIBRARY_PATH": ({"LD_LIBRARY_PATH": "{kit}/lib", "LD_PRELOAD": "libevil.so"}, "/bin/true"),
    "LD_AUDIT": ({"LD_AUDIT": "{kit}/lib/libevil.so"}, "/bin/true"),
}


def _host_marks(marker: Path) -> list[str]:
    host = os.readlink("/proc/self/ns/pid")
    lines = marker.read_text().splitlines() if marker.exists() else []
    return [line for line in lines if line.split(" ")[0] == host]


@pytest.mark.parametrize("vector", VECTORS)
def test_code_named_by_the_jobs_environment_never_runs_on_the_host(attacker, run, test_user,
                                                                  vector):
    import subprocess
    template, hijacked = VECTORS[vector]
    env = {key: value.format(kit=attacker["kit"]) for key, value in template.items()}
    usercustomize = attacker["usersite"] / "usercustomize.py"
    if vector == "usercustomize":
        usercustomize.write_text(attacker["payload"])
        os.chown(usercustomize, test_user.pw_uid, test_user.pw_gid)
    try:
        attacker["marker"].unlink(missing_ok=True)
        # the kit is live: the same environment hijacks a program of the starter's old kind
        subprocess.run([hijacked, *(["-c", "pass"] if "python" in hijacked else [])],
                       user=test_user.pw_uid, group=test_user.pw_gid, extra_groups=[],
                       cwd=test_user.pw_dir, capture_output=True,
                       env={"PATH": "/usr/bin:/bin", "HOME": test_user.pw_dir, **env})
        assert _host_marks(attacker["marker"]), f"the {vector} kit did not fire on the host"
        attacker["marker"].unlink()
        result = run("#!/bin/bash\nhead -1 /etc/os-release\n", job_env=env)
        assert (result.status, result.out) == (0, "ID=alpha\n"), result.err
        assert _host_marks(attacker["marker"]) == []
    finally:
        usercustomize.unlink(missing_ok=True)
