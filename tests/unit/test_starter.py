"""cbatch-starter against a fake daemon on a real Unix socket: frames in, status out."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from cbatch import errors, momjob, protocol, starter


def test_starter_imports_only_the_standard_library():
    code = ("import sys, cbatch.starter; "
            "print(sorted({'docker', 'yaml', 'structlog', 'requests'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(starter.__file__)))
    assert out.stdout.strip() == "[]"


def test_exit_codes_match_the_daemons():
    assert (starter.EXIT_NODE_FAILURE, starter.EXIT_REFUSED) == (
        errors.EXIT_NODE_FAILURE, errors.EXIT_REFUSED)


class FakeDaemon:
    """Accepts one starter and plays a script of replies; records what it received."""

    def __init__(self, path, replies, wait_for_signal=False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o666)
        self.sock.listen(1)
        self.replies, self.wait_for_signal = replies, wait_for_signal
        self.request, self.fds, self.signals = None, [], []
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        conn, _ = self.sock.accept()
        with conn:
            self.request = protocol.recv(conn, self.fds)
            self.ready.set()
            if self.wait_for_signal:
                header, _ = protocol.recv(conn)
                self.signals.append(header["signal"])
            for kind, payload, fields in self.replies:
                protocol.send(conn, kind, payload, **fields)
            time.sleep(0.2)
        for fd in self.fds:
            os.close(fd)
        self.sock.close()


@pytest.fixture
def launch(tmp_path):
    path = momjob.install_starter(tmp_path / "starter")

    def _launch(replies, stdin=b"/x/jobs/1.vm.SC\n", socket_path=None, env=(), **kwargs):
        sock = tmp_path / "d.sock"
        daemon = FakeDaemon(sock, replies, **kwargs)
        proc = subprocess.Popen([str(path), "/bin/bash"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={"CBATCH_SOCKET": str(socket_path or sock), "PATH": "/bin",
                                     **dict(env)})
        proc.stdin.write(stdin)
        proc.stdin.close()
        return daemon, proc

    return _launch


def finish(proc):
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    return proc.wait(10), out, err


def test_request_carries_argv_stdin_and_output_fds(launch):
    daemon, proc = launch([("exit", b"", {"status": 0, "signal": None})])
    assert finish(proc)[0] == 0
    header, payload = daemon.request
    assert header["argv"] == ["/bin/bash"] and header["v"] == protocol.VERSION
    assert payload == b"/x/jobs/1.vm.SC\n" and header["tty"] is False
    assert len(daemon.fds) == 2


def test_output_frames_go_to_fds_1_and_2_and_status_is_the_jobs(launch):
    daemon, proc = launch([("stdout", b"out\n", {}), ("stderr", b"err\n", {}),
                           ("exit", b"", {"status": 7, "signal": None})])
    assert finish(proc) == (7, b"out\n", b"err\n")


def test_error_frame_is_one_cbatch_line_and_its_status(launch):
    daemon, proc = launch([("error", b"", {"status": 126, "message": "image refused"})])
    assert finish(proc) == (126, b"", b"cbatch: image refused\n")


def test_exit_message_is_printed_before_the_status(launch):
    daemon, proc = launch([("exit", b"", {"status": 137, "signal": None, "message": "oom"})])
    assert finish(proc) == (137, b"", b"cbatch: oom\n")


def test_job_killed_by_relayed_signal_kills_the_starter_with_it(launch):
    daemon, proc = launch([("exit", b"", {"status": 143, "signal": 15})], wait_for_signal=True)
    daemon.ready.wait(5)
    proc.send_signal(signal.SIGTERM)
    status, _, err = finish(proc)
    assert status == -signal.SIGTERM and err == b""  # Torque records 256 + 15
    assert daemon.signals == [signal.SIGTERM]


def test_daemon_unreachable_is_node_failure(launch, tmp_path):
    daemon, proc = launch([], socket_path=tmp_path / "none.sock")
    status, out, err = finish(proc)
    assert status == 125 and out == b""
    assert err.startswith(b"cbatch: cannot reach cbatchd") and err.count(b"\n") == 1


def test_daemon_vanishing_mid_job_is_one_line_after_waiting_for_it(launch):
    daemon, proc = launch([("stdout", b"partial\n", {})], env={"CBATCH_RECONNECT_S": "1"})
    started = time.monotonic()
    status, out, err = finish(proc)
    assert time.monotonic() - started >= 1
    assert (status, out) == (125, b"partial\n")
    assert err == (b"cbatch: lost the connection to cbatchd while the job ran and it did not "
                   b"come back within 1 s; the job's end is unknown; tell your admin\n")


def test_an_interactive_starter_carries_keys_and_sizes_and_restores_the_terminal(tmp_path):
    import fcntl
    import struct
    import termios
    path = momjob.install_starter(tmp_path / "starter")
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

    proc = subprocess.Popen([str(path), "/bin/bash"], stdin=tty, stdout=tty, stderr=tty,
                            env={"CBATCH_SOCKET": str(sock_path), "PATH": "/bin"},
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
