"""One job, end to end: verify -> decide -> spec -> run -> exit.

The daemon hands it a checked Request and the peer it read at accept. Owns the
container's cleanup (it is removed however the job ends) and the bound log context.
With the daemon's dispatcher and the mains, the only place that catches CbatchError:
what a failure tells the starter and the log is failures.py's.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from typing import Callable

import structlog

from cbatch import accounting, binds, clients, directives, keeper, metrics, outputs, policy
from cbatch import batch, protocol, reconcile, spec, storage, terminal
from cbatch.config import Config
from cbatch.container import Labels
from cbatch.engine import Engine
from cbatch.errors import (CbatchError, EngineRestarted, NodeIncomplete, ResumeFailed,
                           ShellUnavailable, oom_message)
from cbatch.failures import refuse, report_bug
from cbatch.peer import Peer
from cbatch.supervise import Supervisor


class Session:
    def __init__(self, conn: socket.socket, cfg: Config, who: Peer,
                 request: protocol.Request, fds: list[int],
                 engine_factory: Callable[[], Engine] = Engine, log=None,
                 accepted: float | None = None) -> None:
        self.conn, self.cfg, self.who, self.request, self.fds = conn, cfg, who, request, fds
        self.engine_factory = engine_factory
        self.log = log or structlog.get_logger("cbatchd").bind(peer_pid=who.pid, uid=who.uid)
        self.send_lock = threading.Lock()
        self.engine: Engine | None = None
        self.container_id: str | None = None
        self.done = threading.Event()  # set once the job's end is known: EOF is then normal
        self.job: batch.Job | None = None
        self.plan: outputs.Plan | None = None
        self.resumed_carried = True  # a resumed container's keeper carries its output (-s)
        self.mounts: binds.Mounts | None = None  # the job's own folders, held open
        self.store: storage.Store | None = None  # the job's /tmp and /var/tmp
        self.exit_channel: keeper.ExitChannel | None = None
        self.adoption: threading.Thread | None = None
        self.init_pid: int | None = None  # the container's init on the host, once adopted
        self.marks = {"accepted": accepted or time.monotonic()}  # (when the daemon did)

    def run(self) -> None:
        """The job's whole story; the caller closes the connection and the fds."""
        try:
            self.marks["request"] = time.monotonic()
            job = self.job = self._verify()
            self.marks["verified"] = time.monotonic()
            attach = self._resume(job) if self.request.resume else self._launch(job)
            term = None
            if job.interactive:
                term = terminal.Terminal(self.engine, self.container_id, attach, self.log)
                term.resize(self.request.winsize)
            watch = Supervisor(self.conn, self._send, self.engine, self.container_id,
                               job.peer.pid, attach, term, self.exit_channel,
                               self._streams_output(), self.cfg.engine_retry_s, self.done,
                               self.request.resume,
                               job.argv[0], self.log)
            status = watch.run()
            self.marks["exited"] = time.monotonic()
            self._exit(watch, status)
            watch.hold_for_accounting()
        except CbatchError as exc:
            refuse(self._send, self.log, exc, self.marks)
        except Exception:  # a bug: log it fully, tell the user an incident id
            report_bug(self._send, self.log)
        finally:
            for held in (self.plan, self.mounts):
                if held is not None:
                    held.release()
            self._remove()
            if self.store is not None:  # after the container's removal: nothing holds it
                self.store.remove()
            if self.exit_channel is not None:
                self.exit_channel.discard()

    def _verify(self) -> batch.Job:
        job = batch.verify(self.cfg, self.who, list(self.request.argv), self.request.stdin,
                           tty=self.request.tty)
        self.log = self.log.bind(job_id=job.job_id, task=job.task, user=job.user)
        if job.record_problem:  # policy goes on with no queue and one slot
            self.log.warning("job_record_unused", reason=job.record_problem)
        return job

    def _launch(self, job: batch.Job) -> socket.socket:
        """Decide, build and start the job's container; its attached output stream."""
        found = directives.parse(job.script_text)
        groups = policy.group_names(self.cfg, job.groups)
        decision = policy.decide(self.cfg, job.user, groups, job.queue, found)
        self.log = self.log.bind(image=decision.image.alias, digest=decision.image.ref)
        mounts = self.mounts = binds.resolve(job, decision, self.cfg.pbs_home)
        mounts.pin(self.cfg.placeholder_dir, job.container_name)
        if decision.tmp_bytes:
            self.store = storage.make(self.cfg.placeholder_dir, job.container_name,
                                      decision.tmp_bytes, {b.target for b in mounts.binds})
        # an interactive job's output goes to its terminal: streamed, never mounted
        plan = self.plan = outputs.plan([] if job.interactive else self.fds,
                                        job.container_name, self.cfg.placeholder_dir)
        self.engine = self.engine_factory()
        parent = (accounting.torque_parent(job.job_id, self.engine.cgroup_driver())
                  if self.cfg.job_cgroup else None)
        if not os.access(self.cfg.keeper, os.X_OK):
            raise NodeIncomplete(f"cbatch is not completely installed on {os.uname().nodename} "
                                 f"({self.cfg.keeper} is missing); the job did not run; it "
                                 "can be requeued; tell your admin", keeper=str(self.cfg.keeper))
        self.exit_channel = keeper.ExitChannel(self.cfg.exit_dir, job.container_name)
        self.exit_channel.create(job.uid, job.gid)
        extra = plan.binds + (self.store.binds if self.store else ()) + clients.binds(self.cfg)
        container = spec.build(job, decision, mounts.binds, plan.stdout, plan.stderr, extra,
                               cgroup_parent=parent,
                               keeper=(self.cfg.keeper, self.exit_channel.path),
                               carry_output=self._streams_output() and not job.interactive)
        self.engine.ensure_image(decision.image.ref, self.cfg.pull)
        self.marks["image"] = time.monotonic()
        self.container_id = reconcile.create(self.engine, container, self.log)
        self.marks["created"] = time.monotonic()
        self.log = self.log.bind(container_id=self.container_id[:12])
        # Always attach both streams: with output going to files they stay silent unless
        # the container's init itself fails (e.g. the job's shell is not in the image).
        attach = self.engine.attach(self.container_id, stdout=True, stderr=True,
                                    stdin=job.interactive)
        self.conn.settimeout(None)
        try:
            self.engine.start(self.container_id)
            self.marks["started"] = time.monotonic()
        except CbatchError:
            attach.close()
            raise
        plan.release()  # the container holds its own mounts of the output files now
        mounts.release()  # and of the job's folders
        self.log.info("container_started", stdout=plan.stdout.mode, stderr=plan.stderr.mode,
                      cgroup_parent=parent)
        if parent is None and self.cfg.pbs_track is not None and self.cfg.pbs_track.exists():
            self.adoption = threading.Thread(target=self._adopt, daemon=True, name="adopt")
            self.adoption.start()
        return attach

    def _adopt(self) -> None:
        self.init_pid = accounting.adopt_container(self.engine, self.container_id,
                                                   self.cfg.pbs_track, self.job,
                                                   self.exit_channel, self.log)

    def _resume(self, job: batch.Job) -> socket.socket:
        """Re-adopt a running job's container after a daemon restart.

        The starter proves itself as any job does; its container must carry its very pid
        and start time. Output written to the job's files never stopped; streamed output
        resumes from now.
        """
        self.engine = self.engine_factory()
        existing = self.engine.find(job.container_name)
        if existing is None:  # the old daemon stopped before it created the container
            raise ResumeFailed("cbatchd restarted before the job's container was made; "
                               "the job did not run; it can be requeued")
        labels = Labels.of(existing)
        if labels.starter() != (job.peer.pid, job.peer.start_ticks):
            raise ResumeFailed("cbatchd restarted and the job's container belongs to "
                               "another starter; the job's end is unknown; tell your admin",
                               other_container=existing["Id"][:12])
        self.container_id = existing["Id"]
        self.log = self.log.bind(container_id=self.container_id[:12],
                                 image=labels.image or None)
        self.exit_channel = keeper.ExitChannel(self.cfg.exit_dir, job.container_name)
        self.exit_channel.open()
        self.resumed_carried = " -s " in f" {existing.get('Command', '')} "
        self.conn.settimeout(None)
        try:
            attach = self.engine.attach(self.container_id, stdout=True, stderr=True,
                                        stdin=job.interactive)
        except CbatchError:  # it ended while the daemon was away: nothing left to stream
            attach, other = socket.socketpair()
            other.close()
        if existing.get("State") == "created":  # the old daemon stopped before starting it
            self.engine.start(self.container_id)
        self.log.info("job_resumed", state=existing.get("State"))
        metrics.resumed()
        return attach

    def _streams_output(self) -> bool:
        """Does job output flow through the attach stream (not straight into files)?"""
        if self.job.interactive:
            return True
        if self.plan is None:  # resumed: the keeper was told (-s) when output streams
            return self.resumed_carried
        return "stream" in (self.plan.stdout.mode, self.plan.stderr.mode)

    def _exit(self, watch: Supervisor, status: int) -> None:
        """Tell the starter how the job ended, in the owner's words, and log it once."""
        if watch.init_failure is not None:
            raise ShellUnavailable(f"the image has no {self.job.argv[0]} (the job's shell) or "
                                   "it cannot run there; choose another image or shell "
                                   "(qsub -S)", init_error=watch.init_failure.strip(),
                                   exit_code=status)
        signum = watch.relay.killed_by_relayed(status)
        if watch.engine_lost and signum is None and status in (128 + signal.SIGTERM,
                                                              128 + signal.SIGKILL):
            raise EngineRestarted("the job was stopped by a restart of the container engine "
                                  "on this node; it can be requeued", exit_code=status)
        if self.adoption is not None:  # pbs_mom must know the container before the end
            self.adoption.join(accounting.TIMEOUT_S + 1)
        oom = accounting.oom_killed(self.engine, self.container_id, self.log, self.init_pid,
                                    self.job.uid)
        message = oom_message(status, self.job.rlimits.get("rss", (-1, -1))[0]) if oom else None
        tmp_full = self.store.full() if self.store is not None else None
        if tmp_full:
            self.log.warning("tmp_filled", limit_bytes=self.store.size_bytes, reason=tmp_full)
            message = message or tmp_full
        self.done.set()
        self._send(protocol.KIND_EXIT, status=status, signal=signum, message=message)
        self.marks["told"] = time.monotonic()
        metrics.job_ended("oom" if oom else "ran", self.marks)
        self.log.info("job_finished", exit_status=status, signal=signum, oom_killed=oom,
                      starter_gone=watch.starter_gone.is_set(), told_by=watch.status_source,
                      duration_s=round(time.monotonic() - self.marks["accepted"], 3),
                      phases_ms=metrics.phases(self.marks))

    def _remove(self) -> None:
        self.done.set()
        if self.engine is None:
            return
        try:
            if self.container_id is not None:
                began = time.monotonic()
                self.engine.remove(self.container_id)  # after EXIT: off the job's path
                self.log.info("container_removed",
                              removal_ms=round((time.monotonic() - began) * 1000, 1))
        except CbatchError as exc:
            self.log.error("container_not_removed", **exc.log_fields())

    def _send(self, kind: str, payload: bytes = b"", **fields: object) -> bool:
        try:
            with self.send_lock:
                protocol.send(self.conn, kind, payload, **fields)
            return True
        except OSError:
            return False

