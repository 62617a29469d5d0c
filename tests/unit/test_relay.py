"""The signals pbs_mom sends, delivered to the job's container; exit statuses read back.

The dumb-init way: one table of every relayed signal, one of exit statuses.
"""

import os
import signal
import socket
import threading
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from cbatch import protocol, relay
from cbatch.engine import Engine
from cbatch.errors import EngineUnavailable
from cbatch.supervise import Supervisor
from tests.harness.dockerproxy import DockerProxy

RELAYED = [signal.Signals(s) for s in protocol.RELAYED_SIGNALS]


class NoInitEngine:
    """Docker answers kill but cannot say the container's init pid."""

    def __init__(self):
        self.killed = []

    def inspect(self, cid):
        raise EngineUnavailable("down")

    def kill(self, cid, signum):
        self.killed.append((cid, signum))


def make_relay(engine, starter_pid=1):
    return relay.Relay(engine, "c" * 64, starter_pid, threading.Event(),
                       structlog.get_logger("test"))


def test_the_relayed_set_is_what_pbs_mom_sends():
    assert {s.name for s in RELAYED} == {"SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1", "SIGUSR2",
                                          "SIGQUIT", "SIGTSTP", "SIGCONT"}


@pytest.mark.parametrize("signum", [s for s in RELAYED if s != signal.SIGTSTP],
                         ids=lambda s: s.name)
def test_every_relayed_signal_reaches_the_init_when_the_processes_cannot_be_found(signum):
    engine = NoInitEngine()
    with capture_logs() as logs:
        make_relay(engine).deliver(signum)
    assert engine.killed == [("c" * 64, signum)]
    assert logs[-1]["event"] == "signal_relayed" and logs[-1]["signal"] == signum.name


@pytest.mark.parametrize("status,relayed,died_of", [
    (0, set(), None), (1, set(), None), (2, {15}, None), (125, set(), None),
    (126, set(), None), (127, set(), None), (128, {15}, None),
    *[(128 + int(s), {int(s)}, int(s)) for s in RELAYED],
    *[(128 + int(s), set(), None) for s in RELAYED],  # the job killed itself with it
    (128 + 9, {15}, None),  # walltime's KILL after TERM: pbs_mom's, never relayed
    (255, {127}, 127),
])
def test_a_status_names_the_relayed_signal_the_job_died_of(status, relayed, died_of):
    r = make_relay(NoInitEngine())
    r.relayed = set(relayed)
    assert r.killed_by_relayed(status) == died_of


def test_signal_all_skips_init_and_refuses_the_hosts_own_namespace(tmp_path):
    proc = tmp_path / "proc"
    (proc / "self" / "ns").mkdir(parents=True)
    (proc / "self" / "ns" / "pid").symlink_to("pid:[1]")
    (proc / "7" / "ns").mkdir(parents=True)
    (proc / "7" / "ns" / "pid").symlink_to("pid:[1]")
    with pytest.raises(PermissionError):
        relay.signal_all(7, signal.SIGTERM, proc)


def test_signal_all_signals_parents_before_children_whatever_their_pids(tmp_path, mocker):
    """Host pids wrap: the job's shell may have a higher pid than its children."""
    proc = tmp_path / "proc"
    (proc / "self" / "ns").mkdir(parents=True)
    (proc / "self" / "ns" / "pid").symlink_to("pid:[1]")
    tree = {900: (1, "pid:[2]"), 950: (900, "pid:[2]"), 30: (950, "pid:[2]"),
            20: (30, "pid:[2]"), 40: (950, "pid:[2]"), 60: (1, "pid:[1]")}
    for pid, (ppid, ns) in tree.items():
        (proc / str(pid) / "ns").mkdir(parents=True)
        (proc / str(pid) / "ns" / "pid").symlink_to(ns)
        (proc / str(pid) / "stat").write_text(f"{pid} (bash) S {ppid} {pid} {pid} 0 -1\n")
    fds: dict[int, int] = {}  # a real fd per pinned pid, as pidfd_open gives

    def pidfd_open(pid):
        fds[os.open("/dev/null", os.O_RDONLY)] = pid
        return next(reversed(fds))

    mocker.patch.object(relay.os, "pidfd_open", side_effect=pidfd_open)
    send = mocker.patch.object(relay.signal, "pidfd_send_signal")
    assert relay.signal_all(900, signal.SIGUSR1, proc) == 4
    assert [(fds[c.args[0]], c.args[1]) for c in send.call_args_list] == [
        (950, signal.SIGUSR1), (30, signal.SIGUSR1), (40, signal.SIGUSR1), (20, signal.SIGUSR1)]
    for fd in fds:  # every pidfd closed again
        with pytest.raises(OSError):
            os.fstat(fd)


def test_state_reads_a_stopped_process_and_none_when_gone(tmp_path):
    (tmp_path / "5").mkdir()
    (tmp_path / "5" / "stat").write_text("5 (a (b) c) T 1 5 5 0 -1\n")
    assert relay.state(5, tmp_path) == "T" and relay.state(6, tmp_path) is None


@pytest.fixture
def docker_down(tmp_path):
    proxy = DockerProxy(tmp_path / "docker.sock")
    proxy.cut()
    engine = Engine(base_url=proxy.url, timeout=5)
    yield engine
    engine.close()
    proxy.close()


def test_with_docker_down_a_relayed_signal_is_logged_as_lost_not_raised(docker_down):
    with capture_logs() as logs:
        make_relay(docker_down).deliver(signal.SIGTERM)
    lost = next(r for r in logs if r["event"] == "signal_not_relayed")
    assert lost["signal"] == "SIGTERM" and lost["error"] == "EngineUnavailable"


def test_with_docker_down_the_starters_end_is_still_noticed(docker_down):
    """A signal relayed while Docker is down must not end the control thread: the
    starter's end must still be seen (and the container's kill tried)."""
    daemon_end, starter_end = socket.socketpair()
    attach, attach_other = socket.socketpair()
    watch = Supervisor(daemon_end, lambda *a, **k: True, docker_down, "c" * 64, os.getpid(),
                       attach, None, None, True, 1.0, threading.Event(), False, "/bin/bash",
                       structlog.get_logger("test"))
    with capture_logs() as logs:
        control = threading.Thread(target=watch._control, daemon=True)
        control.start()
        protocol.send(starter_end, protocol.KIND_SIGNAL, signal=int(signal.SIGTERM))
        starter_end.close()
        assert watch.starter_gone.wait(10), "the control thread died with the relay"
        control.join(10)
    events = [r["event"] for r in logs]
    assert "signal_not_relayed" in events and "starter_gone" in events
    assert "container_not_killed" in events
    daemon_end.close()
    attach.close()
    attach_other.close()
