"""One job connection, end to end: request -> verify -> decide -> spec -> run -> exit.

Owns the container's cleanup (it is removed however the job ends) and the bound log
context. With the mains, the only place that catches CbatchError.
"""

from __future__ import annotations

import grp
import os
import secrets
import signal
import socket
import threading
import time
from typing import Callable

import structlog

from cbatch import adminops as admin
from cbatch import adopt, binds, cgroups, clients, demux, directives, keeper, outputs, peer
from cbatch import policy
from cbatch import jobexec, metrics
from cbatch import protocol
from cbatch import reconcile, spec, storage, terminal, torque
from cbatch.config import Config
from cbatch.engine import Engine
from cbatch.errors import (EXIT_NODE_FAILURE, EXIT_REFUSED, AdminRefused, CbatchError,
                           ContainerFailed, EngineError, EngineUnavailable, NotATorqueJob,
                           PolicyDenied, ProtocolError)
from cbatch.relay import Relay

RELAYED = frozenset(int(s) for s in protocol.RELAYED_SIGNALS)
# After the job's end, how long an adopted container is kept for pbs_mom's last sample:
# it takes it as it reaps the starter, then kills the adopted session itself.
ACCOUNTING_HOLD_S = 10.0


class Session:
    def __init__(self, conn: socket.socket, cfg: Config,
                 engine_factory: Callable[[], Engine] = Engine) -> None:
        self.conn = conn
        self.cfg = cfg
        self.engine_factory = engine_factory
        self.log = structlog.get_logger("cbatchd")
        self.send_lock = threading.Lock()
        self.engine: Engine | None = None
        self.container_id: str | None = None
        self.starter_gone = threading.Event()
        self.done = threading.Event()  # set once the job's end is known: EOF is then normal
        self.job: torque.Job | None = None
        self.plan: outputs.Plan | None = None
        self.mounts: binds.Mounts | None = None  # the job's own folders, held open
        self.store: storage.Store | None = None  # the job's /tmp and /var/tmp
        self.init_failure: str | None = None
        self.terminal: terminal.Terminal | None = None  # an interactive job's
        self.engine_lost = False
        self.exit_channel: keeper.ExitChannel | None = None
        self.adoption: threading.Thread | None = None
        self.starter_closed = threading.Event()  # the starter's end of the connection closed
        self.container_done = threading.Event()  # Docker reported the container's end
        self.status_source = "container"  # or "keeper": who told the job's end

    # -- entry point -------------------------------------------------------------------
    def run(self) -> None:
        started = time.monotonic()
        self.marks = {"accepted": started}
        fds: list[int] = []
        try:
            self.conn.settimeout(self.cfg.request_timeout_s)
            header, payload = self._read_request(fds)
            if header["t"] == protocol.KIND_ADMIN:
                self._admin(header)
                return
            if header["t"] == protocol.KIND_EXEC:  # cbatch exec; answered and logged there
                return jobexec.serve(self.conn, self.cfg, header, self.engine_factory, self.log)
            self.marks["request"] = time.monotonic()
            job = self._prove(header, payload)
            self.marks["verified"] = time.monotonic()
            if header.get("resume"):
                self._resume(job)
            else:
                self._launch(job, fds)
            if job.interactive:
                self.terminal = terminal.Terminal(self.engine, self.container_id,
                                                  self._attach, self.log)
                self.terminal.resize(header.get("winsize"))
            status = self._supervise()
            self.marks["exited"] = time.monotonic()
            self._finish(status, started)
            self._hold_for_accounting()
        except CbatchError as exc:
            self._refuse(exc)
        except Exception:  # a bug: log it fully, tell the user an incident id
            incident = secrets.token_hex(3)
            self.log.exception("internal_error", incident=incident)
            self._send(protocol.KIND_ERROR, status=EXIT_NODE_FAILURE,
                       message=f"internal error in cbatchd on {os.uname().nodename} "
                               f"(incident {incident}); your job did not complete; "
                               "please report this id to your admin")
        finally:
            for fd in fds:
                os.close(fd)
            if self.plan is not None:
                self.plan.release()
            if self.mounts is not None:
                self.mounts.release()
            self._cleanup()
            if self.store is not None:  # after the container's removal: nothing holds it
                self.store.remove()
            if self.exit_channel is not None:
                self.exit_channel.discard()
            self.conn.close()

    # -- steps -------------------------------------------------------------------------
    def _read_request(self, fds: list[int]) -> tuple[dict, bytes]:
        try:
            header, payload = protocol.recv(self.conn, fds, self.cfg.request_timeout_s)
        except protocol.PeerClosed:
            raise ProtocolError("the starter closed the connection before its request") from None
        except (protocol.ProtocolError, socket.timeout, OSError) as exc:
            raise ProtocolError(f"bad request from cbatch-starter: {exc}") from exc
        if header.get("t") in (protocol.KIND_ADMIN, protocol.KIND_EXEC):
            return header, payload
        if header.get("t") != protocol.KIND_REQUEST:
            raise ProtocolError(f"expected a request, got {str(header.get('t'))[:40]!r}")
        version = header.get("v")
        if type(version) is not int:  # noqa: E721 - a bool or a string is no version
            raise ProtocolError("the request's protocol version is not a number; "
                                "cbatch-starter and cbatchd do not match: ask your admin to "
                                "install matching versions")
        if version != protocol.VERSION:
            raise ProtocolError(f"cbatch-starter speaks protocol {str(header.get('v'))[:20]}, "
                                f"cbatchd speaks {protocol.VERSION}; ask your admin to "
                                "install matching versions")
        argv = header.get("argv")
        if (not isinstance(argv, list) or not argv or len(argv) > 256
                or not all(isinstance(a, str) for a in argv)):
            raise ProtocolError("the request's argv is not a list of strings")
        if header.get("winsize") is not None and not terminal.is_winsize(header["winsize"]):
            raise ProtocolError("the request's winsize is not [rows, columns]")
        return header, payload

    def _prove(self, header: dict, payload: bytes) -> torque.Job:
        try:
            who = peer.credentials(self.conn)
        except OSError as exc:
            raise NotATorqueJob("the job's starter ended before cbatch could check it") from exc
        self.log = self.log.bind(peer_pid=who.pid, uid=who.uid)
        job = torque.verify(self.cfg, who, header["argv"], payload, tty=bool(header.get("tty")))
        self.job = job
        self.log = self.log.bind(job_id=job.job_id, task=job.task, user=job.user)
        if job.record_problem:  # policy goes on with no queue and one slot
            self.log.warning("job_record_unused", reason=job.record_problem)
        return job

    def _launch(self, job: torque.Job, fds: list[int]) -> None:
        found = directives.parse(job.script_text)
        groups = _group_names(job.groups) if self.cfg.uses_groups else frozenset()
        decision = policy.decide(self.cfg, job.user, groups, job.queue, found)
        self.log = self.log.bind(image=decision.image.alias, digest=decision.image.ref)
        mounts = self.mounts = binds.resolve(job, decision, self.cfg.torque_home)
        mounts.pin(self.cfg.placeholder_dir, job.container_name)
        if decision.tmp_bytes:
            self.store = storage.make(self.cfg.placeholder_dir, job.container_name,
                                      decision.tmp_bytes, {b.target for b in mounts.binds})
        # an interactive job's output goes to its terminal: streamed, never mounted
        plan = self.plan = outputs.plan([] if job.interactive else fds, job.container_name,
                                        self.cfg.placeholder_dir)
        self.engine = self.engine_factory()
        parent = (cgroups.torque_parent(job.job_id, self.engine.cgroup_driver())
                  if self.cfg.job_cgroup else None)
        if not os.access(self.cfg.keeper, os.X_OK):
            raise ContainerFailed(f"cbatch is not completely installed on {os.uname().nodename} "
                                  f"({self.cfg.keeper} is missing); the job did not run; it "
                                  "can be requeued; tell your admin", keeper=str(self.cfg.keeper))
        self.exit_channel = keeper.ExitChannel(self.cfg.exit_dir, job.container_name)
        self.exit_channel.create(job.uid, job.gid)
        extra = plan.binds + (self.store.binds if self.store else ()) + _client_binds(self.cfg)
        container = spec.build(job, decision, mounts.binds, plan.stdout, plan.stderr, extra,
                               cgroup_parent=parent,
                               keeper=(self.cfg.keeper, self.exit_channel.path))
        self.engine.ensure_image(decision.image.ref, self.cfg.pull)
        self.marks["image"] = time.monotonic()
        self.container_id = self._create(container)
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
        self._attach = attach

    def _adopt(self) -> None:
        """pbs_track -a the container's session, so Torque counts it and qdel reaches it.

        The keeper holds the container open until the job's end has been reported, so
        its init is alive here however short the job.
        """
        try:
            pid = int(self.engine.inspect(self.container_id)["State"]["Pid"])
        except (CbatchError, KeyError, ValueError, TypeError) as exc:
            self.log.warning("adopt_failed", reason=f"no init pid: {exc}")
            return
        ok, said = adopt.adopt(self.cfg.pbs_track, self.job, pid)
        if ok:
            self.exit_channel.mark_adopted()
            self.log.info("job_adopted", init_pid=pid)
        else:
            self.log.warning("adopt_failed", init_pid=pid, reason=said)

    def _admin(self, header: dict) -> None:
        """ps and kill for uid 0 and the admin group; refused for everyone else."""
        try:
            who = peer.credentials(self.conn)
        except OSError as exc:
            raise ProtocolError("the admin client went away") from exc
        self.log = self.log.bind(peer_pid=who.pid, uid=who.uid, op=str(header.get("op"))[:20])
        if not admin.is_admin(self.cfg, who):
            raise AdminRefused("admin operations are for root and the admin group only")
        self.engine = self.engine_factory()
        reply = admin.handle(self.engine, header)
        self.log.info("admin_operation", **{k: v for k, v in reply.items() if k != "containers"})
        self._send(protocol.KIND_REPLY, **reply)

    def _resume(self, job: torque.Job) -> None:
        """Re-adopt a running job's container after a daemon restart.

        The starter proves itself as any job does; its container must carry its very pid
        and start time. Output written to the job's files never stopped; streamed output
        resumes from now.
        """
        self.engine = self.engine_factory()
        existing = self.engine.find(job.container_name)
        if existing is None:  # the old daemon stopped before it created the container
            raise ContainerFailed("cbatchd restarted before the job's container was made; "
                                  "the job did not run; it can be requeued")
        labels = existing.get("Labels") or {}
        if (labels.get("cbatch.starter_pid") != str(job.peer.pid)
                or labels.get("cbatch.starter_start") != str(job.peer.start_ticks)):
            raise ContainerFailed("cbatchd restarted and the job's container belongs to "
                                  "another starter; the job's end is unknown; tell your admin",
                                  other_container=existing["Id"][:12])
        self.container_id = existing["Id"]
        self.log = self.log.bind(container_id=self.container_id[:12],
                                 image=labels.get("cbatch.image"))
        self.exit_channel = keeper.ExitChannel(self.cfg.exit_dir, job.container_name)
        self.exit_channel.open()
        self.conn.settimeout(None)
        try:
            self._attach = self.engine.attach(self.container_id, stdout=True, stderr=True,
                                              stdin=job.interactive)
        except CbatchError:  # it ended while the daemon was away: nothing left to stream
            self._attach = _closed_socket()
        if existing.get("State") == "created":  # the old daemon stopped before starting it
            self.engine.start(self.container_id)
        self.log.info("job_resumed", state=existing.get("State"))
        metrics.resumed()

    def _create(self, container: spec.ContainerSpec) -> str:
        """Create the job's container; a stale one of the same job (requeue) is replaced."""
        try:
            return self.engine.create(container)
        except ContainerFailed as exc:
            if exc.fields.get("status_code") != 409:
                raise
        existing = self.engine.find(container.name)
        if existing and not reconcile.orphans([existing], busy=set()):  # its starter lives
            raise NotATorqueJob("this job task already runs in a container on this node",
                                other_container=existing["Id"][:12])
        if existing:
            self.log.info("stale_container_replaced", stale=existing["Id"][:12])
            self.engine.remove(existing["Id"])
        return self.engine.create(container)

    def _supervise(self) -> int:
        """Relay signals and output until the container exits; its wait status."""
        pump = threading.Thread(target=self._pump, args=(self._attach,), daemon=True,
                                name="pump")
        pump.start()
        self.relay = Relay(self.engine, self.container_id, self.job.peer.pid,
                           self.starter_gone, self.log)
        control = threading.Thread(target=self._control, daemon=True, name="control")
        control.start()
        status = self._wait()
        if self.status_source == "keeper" and self.exit_channel.exec_error:
            self.init_failure = (f"cannot execute the job's command "
                                 f"({self.job.argv[0]}): {self.exit_channel.exec_error}")
        if self.status_source != "keeper" or self._streams_output():
            if self.status_source == "keeper":  # the stream ends with the container
                self._end_container()
            pump.join(timeout=30)
        self._attach.close()
        if self.terminal is not None:
            self.terminal.close()
        return status

    def _streams_output(self) -> bool:
        """Does job output flow through the attach stream (not straight into files)?"""
        if self.plan is None or self.job.interactive:  # resumed, or a terminal
            return True
        return "stream" in (self.plan.stdout.mode, self.plan.stderr.mode)

    def _end_container(self) -> None:
        try:
            self.engine.kill(self.container_id, signal.SIGKILL)
        except CbatchError as exc:
            self.log.warning("container_not_killed", **exc.log_fields())

    def _wait(self) -> int:
        """The job's status: from the keeper the moment the job's shell ends, or else
        from the container's own end."""
        outcome: list = []

        def container_end() -> None:
            try:
                outcome.append(self._container_wait())
            except Exception as exc:  # noqa: BLE001 - handed to the session's thread
                outcome.append(exc)
            self.container_done.set()

        threading.Thread(target=container_end, daemon=True, name="wait").start()
        channel = self.exit_channel
        while not self.container_done.is_set():
            if channel is None or channel.fd is None:
                self.container_done.wait(0.5)
                continue
            raw = channel.wait(timeout=0.5)
            if raw is not None:
                self.status_source = "keeper"
                return keeper.container_status(raw)
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    def _container_wait(self) -> int:
        """The container's status, riding out a Docker outage of up to engine_retry_s."""
        deadline = None
        while True:
            try:
                return self.engine.wait(self.container_id)
            except EngineError as exc:
                if isinstance(exc, ContainerFailed) or self.status_source == "keeper":
                    raise  # (once the keeper has told the end, the container is let go)
                if deadline is None:
                    deadline = time.monotonic() + self.cfg.engine_retry_s
                    self.engine_lost = True
                    self.log.warning("engine_lost", **exc.log_fields())
                if time.monotonic() > deadline:
                    raise EngineUnavailable(
                        "the container engine on this node went away while the job ran and "
                        "did not come back; the job can be requeued") from exc
                time.sleep(0.5)

    def _finish(self, status: int, started: float) -> None:
        if self.init_failure is not None:
            shell = self.job.argv[0]
            raise PolicyDenied(f"the image has no {shell} (the job's shell) or it cannot "
                               "run there; choose another image or shell (qsub -S)",
                               init_error=self.init_failure.strip(), exit_code=status)
        signum = self.relay.killed_by_relayed(status)
        if self.engine_lost and signum is None and status in (128 + signal.SIGTERM,
                                                             128 + signal.SIGKILL):
            raise EngineError("the job was stopped by a restart of the container engine on "
                              "this node; it can be requeued", exit_code=status)
        if self.adoption is not None:  # pbs_mom must know the container before the end
            self.adoption.join(adopt.TIMEOUT_S + 1)
        oom_killed = self._oom_killed()
        message = None
        if oom_killed:
            limit = self.job.rlimits.get("rss", (-1, -1))[0]
            size = f" of {limit / 2**20:.0f} MiB" if limit > 0 else ""
            what = ("job killed" if status == 128 + signal.SIGKILL
                    else "a process of the job was killed")
            message = (f"{what}: it ran out of memory (limit{size}); request more memory "
                       "(qsub -l mem=...) or use less")
        tmp_full = self.store.full() if self.store is not None else None
        if tmp_full:
            self.log.warning("tmp_filled", limit_bytes=self.store.size_bytes, reason=tmp_full)
            message = message or tmp_full
        self.done.set()
        self._send(protocol.KIND_EXIT, status=status, signal=signum, message=message)
        metrics.job_ended("oom" if oom_killed else "ran", self.marks)
        self.log.info("job_finished", exit_status=status, signal=signum,
                      oom_killed=oom_killed,
                      starter_gone=self.starter_gone.is_set(), told_by=self.status_source,
                      duration_s=round(time.monotonic() - started, 3), phases_ms=self._phases())

    def _oom_killed(self) -> bool:
        """Was any process of the job OOM-killed (even if the job lived on)? Worth the
        round trip, so the owner learns why. Docker flags it only once the container has
        exited; while the keeper holds it, the container's memory cgroup tells."""
        try:
            state = self.engine.inspect(self.container_id).get("State", {})
        except CbatchError as exc:  # the job's end is known; only the OOM word is lost
            self.log.warning("inspect_failed", **exc.log_fields())
            return False
        if state.get("OOMKilled"):
            return True
        return bool(state.get("Running") and state.get("Pid")
                    and cgroups.oom_kills(int(state["Pid"])) > 0)

    def _hold_for_accounting(self) -> None:
        """Keep an adopted container's keeper alive until pbs_mom has counted it.

        pbs_mom samples the job's sessions once more as it reaps the starter, then kills
        what it adopted: so wait for the starter to close, then for the container to end,
        each bounded. Without adoption nothing else counts it: it is removed at once.
        """
        if (self.status_source != "keeper" or self.container_done.is_set()
                or not self.exit_channel.adopted):
            return
        began = time.monotonic()
        self.starter_closed.wait(ACCOUNTING_HOLD_S)
        ended = self.container_done.wait(ACCOUNTING_HOLD_S)
        self.log.info("accounting_hold", ended_by_pbs_mom=ended,
                      held_ms=round((time.monotonic() - began) * 1000, 1))

    def _phases(self) -> dict[str, float]:
        """Milliseconds between the session's steps, for the log and the benchmarks."""
        names = list(self.marks)
        return {b: round((self.marks[b] - self.marks[a]) * 1000, 1)
                for a, b in zip(names, names[1:])}

    def _refuse(self, exc: CbatchError) -> None:
        fields = exc.log_fields()
        if exc.exit_status == EXIT_REFUSED:  # the user's side: an expected refusal
            self.log.warning("job_refused", exit_status=exc.exit_status, **fields)
        else:
            self.log.error("job_failed", exit_status=exc.exit_status,
                           cause=repr(exc.__cause__) if exc.__cause__ else None, **fields)
        self._send(protocol.KIND_ERROR, status=exc.exit_status, message=str(exc))
        metrics.job_ended("refused" if exc.exit_status == EXIT_REFUSED else "node_failure",
                          self.marks)

    def _cleanup(self) -> None:
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
        finally:
            self.engine.close()

    # -- threads -----------------------------------------------------------------------
    def _pump(self, attach: socket.socket) -> None:
        """Forward the container's output streams to the starter as frames."""
        kinds = {demux.STDOUT: protocol.KIND_STDOUT, demux.STDERR: protocol.KIND_STDERR}

        def emit(stream: int, data: bytes) -> bool:
            return all(self._send(kinds[stream], data[i:i + protocol.MAX_PAYLOAD])
                       for i in range(0, len(data), protocol.MAX_PAYLOAD))

        try:
            self.init_failure = (self.terminal.pump(emit) if self.terminal is not None
                                 else demux.pump(attach, emit))
        except OSError as exc:
            self.log.warning("output_stream_broken", error=str(exc))

    def _control(self) -> None:
        """Read the starter's frames: signals to relay, an interactive job's keystrokes
        and window sizes; end of stream means the starter is gone."""
        while True:
            try:
                header, payload = protocol.recv(self.conn)
            except (protocol.PeerClosed, protocol.ProtocolError, OSError):
                break
            kind = header.get("t")
            if kind == protocol.KIND_SIGNAL and header.get("signal") in RELAYED:
                self.relay.deliver(int(header["signal"]))
            elif kind == protocol.KIND_INPUT and self.terminal is not None:
                self.terminal.type(payload)
            elif kind == protocol.KIND_RESIZE and self.terminal is not None:
                self.terminal.resize(header.get("winsize"))
        self.starter_closed.set()
        if self.done.is_set():
            return
        self.starter_gone.set()
        self.log.info("starter_gone")
        try:
            self.engine.kill(self.container_id, signal.SIGKILL)
        except CbatchError as exc:
            self.log.error("container_not_killed", **exc.log_fields())

    def _send(self, kind: str, payload: bytes = b"", **fields: object) -> bool:
        try:
            with self.send_lock:
                protocol.send(self.conn, kind, payload, **fields)
            return True
        except OSError:
            return False


def _closed_socket() -> socket.socket:
    a, b = socket.socketpair()
    b.close()
    return a


def _group_names(gids: tuple[int, ...]) -> frozenset[str]:
    names = set()
    for gid in gids:
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return frozenset(names)


def _client_binds(cfg: Config) -> tuple[binds.Bind, ...]:
    """The node's Torque clients, when the policy gives them to containers."""
    try:
        bundle = clients.for_config(cfg)
    except (OSError, ValueError) as exc:
        raise ContainerFailed(f"cbatch could not prepare this node's Torque clients for the "
                              f"job's container ({exc}); the job did not run; it can be "
                              "requeued; tell your admin") from exc
    return tuple(binds.Bind(m.source, m.target, m.read_only) for m in bundle.mounts) \
        if bundle else ()
