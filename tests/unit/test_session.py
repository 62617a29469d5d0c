"""A job session with a fake engine: what the starter receives and what the admin reads."""

import socket
import threading
from pathlib import Path

from structlog.testing import capture_logs

from cbatch import config, daemon, protocol
from cbatch.batch import torque
from cbatch.peer import Peer
from tests.unit.factories import DIGEST, make_job


class BrokenEngine:
    """An engine whose create has a bug (not a CbatchError)."""

    def __init__(self):
        self.closed = False

    def ensure_image(self, ref, pull):
        pass

    def create(self, spec):
        raise RuntimeError("/secret/host/path exploded")

    def close(self):
        self.closed = True


def run_session(mocker, engine, job, **request):
    """The daemon's handling of one connection from job's starter, with a fake engine."""
    mocker.patch.object(torque, "verify", return_value=job)
    # no per-job /tmp store: these sessions mount nothing on the host
    cfg = config.parse({"images": {"default": "el9", "aliases": {"el9": {"ref": DIGEST}}},
                        "container": {"tmp_size": None}})
    daemon_end, starter_end = socket.socketpair()
    d = daemon.Daemon(cfg, Path("/nonexistent"))
    mocker.patch.object(d, "engine", lambda: engine)
    protocol.send(starter_end, protocol.KIND_REQUEST, b"x\n", v=protocol.VERSION,
                  argv=["/bin/bash"], tty=False, **request)
    with capture_logs() as logs:
        thread = threading.Thread(target=d.handle, args=(daemon_end, job.peer))
        thread.start()
        header, _ = protocol.recv(starter_end)
        thread.join(5)
    starter_end.close()
    return header, logs


def test_internal_error_gives_an_incident_id_and_no_host_details(mocker, tmp_path):
    engine = BrokenEngine()
    # folders that are gone: nothing of the job's to mount on the way to the bug
    job = make_job(home=Path("/nonexistent"), cwd=Path("/nonexistent/run"), env={})
    header, logs = run_session(mocker, engine, job)
    assert header["t"] == "error" and header["status"] == 125
    message = header["message"]
    assert message.startswith("internal error in cbatchd on ") and "incident" in message
    assert "/secret" not in message and "Traceback" not in message and "\n" not in message
    record = next(r for r in logs if r["event"] == "internal_error")
    assert record["incident"] in message and record["job_id"] == "12.vm"
    assert record["user"] == "alice" and record["image"] == "el9" and record["exc_info"]
    assert not engine.closed  # the daemon's one client outlives every session


def test_refused_directive_is_one_error_frame_and_one_record(mocker, tmp_path):
    job = make_job(home=tmp_path, cwd=tmp_path, env={}, script_text="#!/bin/bash\n#CBATCH x=1\n")
    header, logs = run_session(mocker, BrokenEngine(), job)
    assert header == {"t": "error", "status": 126, "message":
                      "bad #CBATCH directive on line 2 of the job script: unknown key 'x'; "
                      "known keys: image"}
    record = next(r for r in logs if r["event"] == "job_refused")
    assert record["error"] == "DirectiveError" and record["line"] == 2 and record["uid"] == 1001


class ResumableEngine:
    """The engine a restarted daemon finds: the job's container, created but never started."""

    def __init__(self, job, present=True):
        self.job, self.calls, self.present = job, [], present

    def find(self, name):
        self.calls.append(("find", name))
        if not self.present:
            return None
        return {"Id": "c0ffee" * 10, "State": "created", "Labels": {
            "cbatch.starter_pid": str(self.job.peer.pid),
            "cbatch.starter_start": str(self.job.peer.start_ticks), "cbatch.image": "el9"}}

    def attach(self, cid, stdout, stderr, stdin=False):
        a, b = socket.socketpair()
        b.close()
        return a

    def start(self, cid):
        self.calls.append(("start", cid))

    def wait(self, cid):
        return 4

    def inspect(self, cid):
        return {"State": {"OOMKilled": False}}

    def kill(self, cid, sig):
        pass

    def remove(self, cid):
        self.calls.append(("remove", cid))

    def close(self):
        pass


def test_resume_starts_a_container_the_old_daemon_created_but_never_started(mocker, tmp_path):
    job = make_job(home=tmp_path, cwd=tmp_path, env={})
    engine = ResumableEngine(job)
    header, logs = run_session(mocker, engine, job, resume=True)
    assert header == {"t": "exit", "status": 4, "signal": None, "message": None}
    assert [c[0] for c in engine.calls] == ["find", "start", "remove"]
    assert next(r for r in logs if r["event"] == "job_resumed")["state"] == "created"


def test_resume_with_another_starters_container_is_a_node_side_failure(mocker, tmp_path):
    job = make_job(home=tmp_path, cwd=tmp_path, env={})
    engine = ResumableEngine(make_job(peer=Peer(pid=1, uid=1001, gid=1001, groups=(), start_ticks=2)))
    header, _ = run_session(mocker, engine, job, resume=True)
    assert header["t"] == "error" and header["status"] == 125
    assert header["message"].startswith("cbatchd restarted and the job's container belongs to "
                                        "another starter")
    assert [c[0] for c in engine.calls] == ["find"]  # never touched


def test_resume_before_the_container_was_made_says_the_job_did_not_run(mocker, tmp_path):
    job = make_job(home=tmp_path, cwd=tmp_path, env={})
    header, logs = run_session(mocker, ResumableEngine(job, present=False), job, resume=True)
    assert header == {"t": "error", "status": 125, "message":
                      "cbatchd restarted before the job's container was made; the job did not "
                      "run; it can be requeued"}
    assert next(r for r in logs if r["event"] == "job_failed")["job_id"] == "12.vm"


def test_a_version_of_the_wrong_type_is_named_as_such(tmp_path):
    cfg = config.parse({"images": {"default": "el9", "aliases": {"el9": {"ref": DIGEST}}}})
    daemon_end, starter_end = socket.socketpair()
    protocol.send(starter_end, protocol.KIND_REQUEST, b"x\n", v="1", argv=["/bin/bash"],
                  tty=False)
    with capture_logs() as logs:
        daemon.Daemon(cfg, Path("/nonexistent")).handle(daemon_end, Peer(1, 1001, 1001, (), 1))
    header, _ = protocol.recv(starter_end)
    starter_end.close()
    assert header["message"] == ("the request's protocol version is not a number; "
                                 "cbatch-starter and cbatchd do not match: ask your admin "
                                 "to install matching versions")
    assert next(r for r in logs if r["event"] == "job_failed")["error"] == "ProtocolError"
