"""cbatch-starter (csrc/cbatch-starter.c) against a fake daemon on a real Unix socket.

Each behaviour runs twice: the static build as setup.py makes it, and a build under
AddressSanitizer and UndefinedBehaviorSanitizer, whose first finding ends the starter with
a report on its stderr (so every exact-stderr assertion below would fail).
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from cbatch import errors, protocol
from cbatch.harness import momjob

SOURCE = Path(__file__).resolve().parents[2] / "csrc" / "cbatch-starter.c"
SANITIZERS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g", "-O1"]
CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror", "-D_FORTIFY_SOURCE=2"]
SAN_ENV = {"ASAN_OPTIONS": "detect_leaks=0", "UBSAN_OPTIONS": "print_stacktrace=1"}


@pytest.fixture(scope="session")
def builds(tmp_path_factory):
    folder = tmp_path_factory.mktemp("starter")
    os.chmod(folder, 0o755)
    made = {}
    for name, flags in (("static", ["-static", *CFLAGS]), ("sanitized", [*CFLAGS, *SANITIZERS])):
        made[name] = folder / f"cbatch-starter-{name}"
        subprocess.run(["cc", *flags, "-o", str(made[name]), str(SOURCE)], check=True)
    return made


@pytest.fixture(params=["static", "sanitized"])
def starter(request, builds):
    """(path, extra environment) of one build."""
    return str(builds[request.param]), (SAN_ENV if request.param == "sanitized" else {})


def _source_constant(name: str) -> int:
    return int(re.search(rf"^#define {name} (\d+)", SOURCE.read_text(), re.M).group(1))


def test_exit_codes_match_the_daemons():
    assert (_source_constant("EXIT_NODE_FAILURE"), _source_constant("EXIT_REFUSED")) == (
        errors.EXIT_NODE_FAILURE, errors.EXIT_REFUSED)
    assert _source_constant("PROTOCOL_VERSION") == protocol.VERSION


def test_limits_and_signals_match_the_protocol():
    text = SOURCE.read_text()
    assert "#define MAX_HEADER (256 * 1024)" in text and protocol.MAX_HEADER == 256 * 1024
    assert "#define MAX_PAYLOAD (1024 * 1024)" in text and protocol.MAX_PAYLOAD == 1024 * 1024
    listed = re.search(r"relayed\[\] = \{([^}]*)\}", text).group(1)
    assert [signal.Signals[s.strip()] for s in listed.split(",")] == list(protocol.RELAYED_SIGNALS)


def test_the_starter_reads_only_its_two_variables_and_no_user_database():
    text = SOURCE.read_text()
    assert set(re.findall(r'getenv\("(\w+)"\)', text)) == {"CBATCH_SOCKET", "CBATCH_RECONNECT_S"}
    assert not re.search(r"\b(getpw\w+|getgr\w+|setlocale|dlopen|malloc|strerror)\s*\(", text)


def test_the_installed_starter_is_statically_linked():
    path = momjob.installed_starter()
    elf = path.read_bytes()
    assert elf[:4] == b"\x7fELF" and elf[4] == 2, "not a 64-bit ELF executable"
    phoff = int.from_bytes(elf[0x20:0x28], "little")
    phentsize, phnum = (int.from_bytes(elf[o:o + 2], "little") for o in (0x36, 0x38))
    types = {int.from_bytes(elf[phoff + i * phentsize:phoff + i * phentsize + 4], "little")
             for i in range(phnum)}
    assert 1 in types and 3 not in types and 2 not in types  # PT_LOAD; no PT_INTERP, PT_DYNAMIC
    if shutil.which("ldd"):
        ldd = subprocess.run(["ldd", str(path)], capture_output=True, text=True)
        assert "not a dynamic executable" in ldd.stdout + ldd.stderr


class FakeDaemon:
    """Accepts one starter per conversation and plays its replies; records what it got.

    A reply is (kind, payload, fields), or raw bytes sent as they are. A conversation
    ends by closing the connection, as a daemon that stops does.
    """

    def __init__(self, path, *conversations, wait_for_signal=False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o666)
        self.sock.listen(1)
        self.conversations, self.wait_for_signal = conversations, wait_for_signal
        self.requests, self.fds, self.signals = [], [], []
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def request(self):
        return self.requests[0]

    def _serve(self):
        for replies in self.conversations:
            conn, _ = self.sock.accept()
            with conn:
                self.requests.append(protocol.recv(conn, self.fds))
                self.ready.set()
                if self.wait_for_signal:
                    header, _ = protocol.recv(conn)
                    self.signals.append(header["signal"])
                for reply in replies:
                    if isinstance(reply, bytes):
                        conn.sendall(reply)
                    else:
                        kind, payload, fields = reply
                        protocol.send(conn, kind, payload, **fields)
                time.sleep(0.2)
        for fd in self.fds:
            os.close(fd)
        self.sock.close()


@pytest.fixture
def launch(tmp_path, starter):
    path, extra_env = starter

    def _launch(*conversations, stdin=b"/x/jobs/1.vm.SC\n", socket_path=None, env=(),
                argv=("/bin/bash",), stdout=subprocess.PIPE, **kwargs):
        sock = tmp_path / "d.sock"
        daemon = FakeDaemon(sock, *conversations, **kwargs)
        proc = subprocess.Popen([path, *argv], stdin=subprocess.PIPE, stdout=stdout,
                                stderr=subprocess.PIPE,
                                env={"CBATCH_SOCKET": str(socket_path or sock), "PATH": "/bin",
                                     **extra_env, **dict(env)})
        proc.stdin.write(stdin)
        proc.stdin.close()
        return daemon, proc

    return _launch


def finish(proc):
    out = proc.stdout.read() if proc.stdout else b""
    err = proc.stderr.read()
    for pipe in (proc.stdout, proc.stderr):
        if pipe:
            pipe.close()
    return proc.wait(10), out, err


def exit_frame(status=0, signum=None, message=None):
    return ("exit", b"", {"status": status, "signal": signum, "message": message})


def raw_frame(header: bytes, payload: bytes = b"") -> bytes:
    return len(header).to_bytes(4, "big") + len(payload).to_bytes(4, "big") + header + payload


def test_request_carries_argv_stdin_and_output_fds(launch):
    daemon, proc = launch([exit_frame()])
    assert finish(proc)[0] == 0
    header, payload = daemon.request
    assert header == {"t": "request", "v": protocol.VERSION, "argv": ["/bin/bash"],
                      "tty": False, "winsize": None}
    assert payload == b"/x/jobs/1.vm.SC\n"
    assert len(daemon.fds) == 2


def test_arguments_reach_the_daemon_as_python_would_decode_them(launch):
    argv = [b"/bin/bash", "caf\u00e9 \U0001F600".encode(), b"\xff\xc3(\xed\xa0\x80 \xf4\x90\x80\x80",
            b'q"uo\\te\t\n\r\x01\x7f/']
    daemon, proc = launch([exit_frame()], argv=argv)
    assert finish(proc)[0] == 0
    assert daemon.request[0]["argv"] == [os.fsdecode(a) for a in argv]


def test_output_frames_go_to_fds_1_and_2_and_status_is_the_jobs(launch):
    daemon, proc = launch([("stdout", b"out\n", {}), ("stderr", b"err\n", {}), exit_frame(7)])
    assert finish(proc) == (7, b"out\n", b"err\n")


def test_a_full_size_payload_is_copied_whole(launch):
    big = bytes(range(256)) * (protocol.MAX_PAYLOAD // 256)
    daemon, proc = launch([("stdout", big, {}), exit_frame()])
    assert finish(proc) == (0, big, b"")


def test_output_to_a_reader_that_went_away_does_not_kill_the_starter(launch):
    r, w = os.pipe()
    os.close(r)
    try:
        daemon, proc = launch([("stdout", b"lost\n", {}), exit_frame(3)], stdout=w)
    finally:
        os.close(w)
    assert finish(proc) == (3, b"", b"")


def test_a_closed_stdout_is_not_taken_by_the_starters_own_sockets(starter, tmp_path):
    path, extra_env = starter
    daemon = FakeDaemon(tmp_path / "d.sock", [("stdout", b"nowhere\n", {}), exit_frame(5)])
    proc = subprocess.run([path, "/bin/bash"], input=b"x\n", stderr=subprocess.PIPE, timeout=10,
                          env={"CBATCH_SOCKET": str(tmp_path / "d.sock"), **extra_env},
                          preexec_fn=lambda: os.close(1))
    daemon.thread.join(5)
    assert (proc.returncode, proc.stderr) == (5, b"")
    assert daemon.fds == []  # no output file to hand over: output is streamed


def test_error_frame_is_one_cbatch_line_and_its_status(launch):
    daemon, proc = launch([("error", b"", {"status": 126, "message": "image refused"})])
    assert finish(proc) == (126, b"", b"cbatch: image refused\n")


def test_exit_message_is_printed_before_the_status(launch):
    daemon, proc = launch([exit_frame(137, message="oom")])
    assert finish(proc) == (137, b"", b"cbatch: oom\n")


def test_job_killed_by_relayed_signal_kills_the_starter_with_it(launch):
    daemon, proc = launch([exit_frame(143, signal.SIGTERM)], wait_for_signal=True)
    assert daemon.ready.wait(5)
    proc.send_signal(signal.SIGTERM)
    status, _, err = finish(proc)
    assert status == -signal.SIGTERM and err == b""  # Torque records 256 + 15
    assert daemon.signals == [signal.SIGTERM]


def test_a_job_dead_of_a_signal_the_starter_was_sent_kills_the_starter_with_it(launch):
    """pbs_mom signals the starter and the adopted container at once: the container may
    report the job's death before the daemon has seen the relayed signal."""
    daemon, proc = launch([exit_frame(143, None)], wait_for_signal=True)
    assert daemon.ready.wait(5)
    proc.send_signal(signal.SIGTERM)
    status, _, err = finish(proc)
    assert status == -signal.SIGTERM and err == b""  # Torque records 271, as natively


def test_a_job_dead_of_a_signal_the_starter_was_not_sent_is_its_status(launch):
    daemon, proc = launch([exit_frame(143, None)])
    assert finish(proc) == (143, b"", b"")  # killed by its own hand: 143, as natively


@pytest.mark.parametrize("signum", protocol.RELAYED_SIGNALS, ids=lambda s: s.name)
def test_every_signal_pbs_mom_sends_is_relayed_not_obeyed(launch, signum):
    daemon, proc = launch([exit_frame(0)], wait_for_signal=True)
    assert daemon.ready.wait(5)
    proc.send_signal(signum)
    assert finish(proc) == (0, b"", b"")
    assert daemon.signals == [signum]


def test_daemon_unreachable_is_node_failure(launch, tmp_path):
    daemon, proc = launch([], socket_path=tmp_path / "none.sock")
    status, out, err = finish(proc)
    assert status == 125 and out == b""
    assert err == (f"cbatch: cannot reach cbatchd on {os.uname().nodename} (No such file or "
                   "directory); the job did not run; it can be requeued, or tell your admin\n"
                   ).encode()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to listen as another uid")
def test_a_daemon_not_run_by_root_is_refused(starter, tmp_path):
    path, extra_env = starter
    os.chmod(tmp_path, 0o755)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "user.sock"))
    os.chmod(tmp_path / "user.sock", 0o666)
    # SO_PEERCRED reports who called listen(): a user's own process here
    listen = f"import socket; socket.socket(fileno={server.fileno()}).listen(1)"
    subprocess.run(["/usr/bin/python3", "-c", listen], pass_fds=[server.fileno()], user=65534,
                   check=True)
    try:
        proc = subprocess.run([path, "/bin/bash"], input=b"x\n", capture_output=True, timeout=10,
                              env={"CBATCH_SOCKET": str(tmp_path / "user.sock"), **extra_env})
    finally:
        server.close()
    assert (proc.returncode, proc.stdout) == (125, b"")
    assert proc.stderr == (f"cbatch: the daemon on {tmp_path}/user.sock is not run by root; "
                           "the job did not run\n").encode()


def test_daemon_vanishing_mid_job_is_one_line_after_waiting_for_it(launch):
    daemon, proc = launch([("stdout", b"partial\n", {})], env={"CBATCH_RECONNECT_S": "1"})
    started = time.monotonic()
    status, out, err = finish(proc)
    assert time.monotonic() - started >= 1
    assert (status, out) == (125, b"partial\n")
    assert err == (b"cbatch: lost the connection to cbatchd while the job ran and it did not "
                   b"come back within 1 s; the job's end is unknown; tell your admin\n")


def test_a_term_while_the_daemon_is_away_ends_the_starter_as_natively(launch):
    """qdel while cbatchd restarts: pbs_mom TERMs the adopted container too; natively the
    job's top shell dies of it at once, so the starter does not wait for a daemon."""
    daemon, proc = launch([("stdout", b"partial\n", {})], env={"CBATCH_RECONNECT_S": "30"})
    time.sleep(0.5)  # the daemon has gone: the starter is waiting to reconnect
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    status, out, err = finish(proc)
    assert time.monotonic() - started < 5
    assert (status, out, err) == (-signal.SIGTERM, b"partial\n", b"")  # Torque records 271


def test_a_restarted_daemon_is_asked_to_resume_the_job(launch):
    daemon, proc = launch([("stdout", b"before\n", {})], [("stdout", b"after\n", {}), exit_frame(4)],
                          env={"CBATCH_RECONNECT_S": "10"})
    assert finish(proc) == (4, b"before\nafter\n", b"")
    (first, stdin), (again, stdin_again) = daemon.requests
    assert "resume" not in first and again["resume"] is True
    assert again["argv"] == first["argv"] and stdin_again == stdin == b"/x/jobs/1.vm.SC\n"
    assert len(daemon.fds) == 2  # the output fds went with the first request only


@pytest.mark.parametrize("header,status,err", [
    (b' {"t" : "exit" ,\n"status" : 9 , "signal" : null} ', 9, b""),
    (b'{"status":300,"t":"exit"}', 300 & 0xFF, b""),
    (b'{"t":"exit","status":-1}', 255, b""),
    (b'{"t":"exit"}', 125, b""),
    (b'{"t":"exit","status":"7"}', 125, b""),
    (b'{"t":"exit","status":99999999999999999999999}', 125, b""),
    (b'{"t":"exit","status":2.5e1}', 125, b""),
    (b'{"t":"exit","x":{"a":[1,-2.5e-3,true,false,null,"\\"]"],"b":{}},"y":[],"status":5}', 5, b""),
    (b'{"t":"e\\u0078it","status":6,"message":"caf\\u00e9 \\ud83d\\ude00 \\ud800 \\"q\\" \\\\ \\/"}',
     6, "cbatch: caf\u00e9 \U0001F600 \ufffd \"q\" \\ /\n".encode()),
    (b'{"t":"exit","status":1,"message":"two\\nlines\\u0000and\\ttabs"}', 1,
     b"cbatch: two lines and tabs\n"),
    (b'{"t":"exit","status":1,"message":"caf\xc3\xa9"}', 1, "cbatch: caf\u00e9\n".encode()),
    (b'{"t":"exit","status":1,"message":""}', 1, b""),
    (b'{"t":"error","status":126}', 126, b"cbatch: cbatchd refused the job\n"),
    (b'{"t":"error"}', 125, b"cbatch: cbatchd refused the job\n"),
    (b'{"t":"a-kind-longer-than-any-known-one","status":1}', None, None),
])
def test_daemon_headers_are_read_strictly(launch, header, status, err):
    replies = [raw_frame(header)] + ([] if status is not None else [raw_frame(b'{"t":"exit","status":8}')])
    daemon, proc = launch(replies)
    assert finish(proc) == (8 if status is None else status, b"", b"" if err is None else err)


LOST = (b"cbatch: lost the connection to cbatchd while the job ran and it did not come back "
        b"within 0 s; the job's end is unknown; tell your admin\n")


@pytest.mark.parametrize("frame", [
    raw_frame(b'{"t":"exit","status":07}'),
    raw_frame(b'{"t":"exit","status":7,}'),
    raw_frame(b'{"t":"exit","status":7} x'),
    raw_frame(b'{"t":"exit","status":-}'),
    raw_frame(b'{"t":"exit","status":1.}'),
    raw_frame(b'{"t":"exit","message":"\x01"}'),
    raw_frame(b'{"t":"exit","message":"\\u12"}'),
    raw_frame(b'{"t":"exit","message":"\\x"}'),
    raw_frame(b'{"t":"exit","message":"\xff"}'),
    raw_frame(b'{"t":"exit","message":"\xed\xa0\x80"}'),
    raw_frame(b'{"t":"exit","message":"open'),
    raw_frame(b'{"t":"exit","status":tru}'),
    raw_frame(b'{"t":"exit","x":' + b"[" * 64 + b"]" * 64 + b',"status":0}'),
    raw_frame(b'{"t":"exit","x":[1 2]}'),
    raw_frame(b'{"t":"exit","x":{"a"}}'),
    raw_frame(b'{"t":1,"status":0}'),
    raw_frame(b'{"status":0}'),
    raw_frame(b'["exit"]'),
    raw_frame(b""),
    (protocol.MAX_HEADER + 1).to_bytes(4, "big") + (0).to_bytes(4, "big"),
    (0).to_bytes(4, "big") + (protocol.MAX_PAYLOAD + 1).to_bytes(4, "big"),
    raw_frame(b'{"t":"exit","status":0}')[:-3],
])
def test_a_malformed_frame_is_a_lost_daemon_not_a_crash(launch, frame):
    daemon, proc = launch([frame], env={"CBATCH_RECONNECT_S": "0"})
    assert finish(proc) == (125, b"", LOST)


def test_stdin_larger_than_the_bound_is_refused(launch):
    daemon, proc = launch([], stdin=b"x" * (64 * 1024 + 1))
    assert finish(proc) == (126, b"", b"cbatch: the job's stdin is larger than cbatch accepts "
                                      b"(65536 bytes)\n")


def test_stdin_at_the_bound_is_sent_whole(launch):
    daemon, proc = launch([exit_frame()], stdin=b"x" * (64 * 1024))
    assert finish(proc)[0] == 0 and daemon.request[1] == b"x" * (64 * 1024)


def test_without_the_jobs_shell_it_refuses(starter):
    path, extra_env = starter
    proc = subprocess.run([path], input=b"", capture_output=True, env=extra_env, timeout=10)
    assert (proc.returncode, proc.stdout) == (126, b"")
    assert proc.stderr == (b"cbatch: cbatch-starter runs as Torque's $job_starter and needs "
                           b"the job's shell as its argument\n")


def test_an_interactive_starter_carries_keys_and_sizes_and_restores_the_terminal(tmp_path, starter):
    import fcntl
    import struct
    import termios
    path, extra_env = starter
    sock_path = tmp_path / "d.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    server.listen(1)
    terminal, tty = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    cooked = termios.tcgetattr(tty)

    def take_terminal():  # as the job's shell child: the pty is the session's terminal
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen([path, "/bin/bash"], stdin=tty, stdout=tty, stderr=tty,
                            env={"CBATCH_SOCKET": str(sock_path), "PATH": "/bin", **extra_env},
                            preexec_fn=take_terminal)
    conn, _ = server.accept()
    with conn:
        request, _ = protocol.recv(conn)
        protocol.send(conn, protocol.KIND_STDOUT, b"hello\r\n")
        assert os.read(terminal, 100) == b"hello\r\n"  # as sent: the terminal is raw now
        raw = termios.tcgetattr(tty)
        os.write(terminal, b"\x03")  # ^C is a key for the container, not a SIGINT here
        keys = protocol.recv(conn)
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
        resize = protocol.recv(conn)
        protocol.send(conn, protocol.KIND_EXIT, status=3, signal=None, message=None)
        assert proc.wait(10) == 3
    server.close()
    assert request["tty"] is True and request["winsize"] == [24, 80]
    assert keys == ({"t": "input"}, b"\x03")
    assert resize[0] == {"t": "resize", "winsize": [40, 100]}
    assert raw[3] & termios.ECHO == 0 and raw != cooked
    assert termios.tcgetattr(tty) == cooked
    os.close(terminal)
    os.close(tty)


def test_keys_typed_while_the_daemon_restarts_are_delivered_after_the_resume(tmp_path, starter):
    import fcntl
    import termios
    path, extra_env = starter
    sock_path = tmp_path / "d.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    server.listen(1)
    terminal, tty = os.openpty()

    def take_terminal():
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen([path, "/bin/bash"], stdin=tty, stdout=tty, stderr=tty,
                            env={"CBATCH_SOCKET": str(sock_path), "PATH": "/bin",
                                 "CBATCH_RECONNECT_S": "10", **extra_env},
                            preexec_fn=take_terminal)
    conn, _ = server.accept()
    protocol.recv(conn)
    conn.close()  # the daemon stops
    server.close()
    sock_path.unlink()
    time.sleep(0.3)
    os.write(terminal, b"typed meanwhile")
    time.sleep(0.3)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    server.listen(1)
    conn, _ = server.accept()  # the daemon is back
    with conn:
        request, _ = protocol.recv(conn)
        received = b""
        while received != b"typed meanwhile":
            header, payload = protocol.recv(conn)
            assert header == {"t": "input"}
            received += payload
        protocol.send(conn, protocol.KIND_EXIT, status=0, signal=None, message=None)
        assert proc.wait(10) == 0
    server.close()
    assert request["resume"] is True and request["tty"] is True
    os.close(terminal)
    os.close(tty)
