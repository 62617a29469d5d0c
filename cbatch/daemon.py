"""cbatchd: the per-node root daemon. Loads policy, reconciles, serves, stops in order.

Signal handlers only wake the main loop (set_wakeup_fd); the loop does the work. Each
connection's first frame says what it is (handle): a job's request goes to a Session,
admin and exec frames straight to their handlers in cbatch.admin.
"""

from __future__ import annotations

import argparse
import errno
import os
import selectors
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import structlog

from cbatch import (config, logs, metrics, nofile, outputs, protocol, reconcile, server, sisters,
                    trqauth)
from cbatch import batch, systemd
from cbatch.admin import jobexec, ops
from cbatch.engine import Engine, NodeImages
from cbatch.errors import EXIT_NODE_FAILURE, CbatchError, ConfigError, ProtocolError
from cbatch.peer import Peer
from cbatch.failures import refuse, report_bug
from cbatch.session import Session


# When accept() fails (EMFILE, ENFILE, ENOBUFS, ENOMEM: the node is short of fds, buffers
# or memory for a moment), the listener rests for a growing pause; the daemon never exits,
# since the running jobs' sessions live in it.
_BACKOFF_S = (0.05, 1.0)  # first pause, longest pause


class Daemon:
    def __init__(self, cfg: config.Config, config_path: Path) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.log = structlog.get_logger("cbatchd")
        self.sessions: set[Session] = set()
        self.lock = threading.Lock()
        self.metrics_failing = False  # the textfile's last write failed (logged once)
        self.images = NodeImages()  # what Docker holds
        self._engine: Engine | None = None
        self.relay: trqauth.Relay | None = None  # trqauthd's, for clients in containers

    def engine(self) -> Engine:
        """The daemon's one Docker client, shared by every session, sweep and admin
        request (made at first use; never closed by them)."""
        with self.lock:
            if self._engine is None:
                # a few beyond the connection limit: the sweep's and the admin CLI's
                self._engine = Engine(node=self.images, pool=self.cfg.max_connections + 8)
            return self._engine

    def _answer_sisters(self) -> sisters.Server | None:
        """Tell sister nodes the directives of the jobs whose scripts this node holds."""
        if self.cfg.sister_port is None:
            return None
        jobs = self.cfg.pbs_home / "mom_priv" / "jobs"

        def nodes_of(job_id: str) -> list[str]:
            return list(batch.record(self.cfg, job_id).hosts)

        try:
            return sisters.Server(jobs, nodes_of, self.log, port=self.cfg.sister_port).start()
        except OSError as exc:  # jobs here still run; only sisters' tasks cannot learn
            self.log.error("sister_port_unavailable", port=self.cfg.sister_port,
                           error=exc.strerror)
            return None

    def _relay_trqauthd(self) -> trqauth.Relay | None:
        """Let Torque's clients in containers (qsub, qstat) authenticate to trqauthd."""
        if self.cfg.batch_system != "torque" or not self.cfg.clients:
            return None
        try:
            return trqauth.Relay(self.cfg.trqauth_dir, self.log).start()
        except OSError as exc:  # jobs still run; only their qsub and qstat cannot log in
            self.log.error("trqauth_relay_unavailable", path=str(self.cfg.trqauth_dir),
                           error=exc.strerror)
            return None

    def serve(self) -> int:
        self._check_nofile(self.cfg)
        removed = outputs.clean(self.cfg.placeholder_dir)
        if removed:
            self.log.info("placeholders_cleaned", count=removed)
        self.sweep()
        listener = server.bind(self.cfg.socket_path, self.cfg.socket_mode, self.cfg.socket_group)
        answering = self._answer_sisters()
        self.relay = self._relay_trqauthd()
        srv = server.Server(listener, self.handle, lambda: (
            self.cfg.max_connections_per_user, self.cfg.max_connections), self._refuse_crowded)
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda *_: None)
        selector = selectors.DefaultSelector()
        selector.register(listener, selectors.EVENT_READ, "accept")
        selector.register(wake_r, selectors.EVENT_READ, "signal")
        self.log.info("daemon_started", socket=str(self.cfg.socket_path), pid=os.getpid(),
                      images=[i.alias for i in self.cfg.images], default=self.cfg.default_image)
        systemd.notify("READY=1")
        next_sweep = time.monotonic() + self.cfg.sweep_interval_s
        # systemd restarts a daemon whose loop stops turning; pings come from the loop only
        ping_every = systemd.watchdog_interval_s()
        next_ping = time.monotonic() if ping_every else float("inf")
        metrics.watch_running(self._running)
        next_metrics = time.monotonic()
        backoff, resume_at = 0.0, None  # accept's pause after a failure, when it ends
        try:
            while True:
                wake_at = min(next_sweep, next_ping, next_metrics, resume_at or float("inf"))
                events = selector.select(timeout=max(0.0, wake_at - time.monotonic()))
                if time.monotonic() >= next_ping:
                    systemd.notify("WATCHDOG=1")
                    next_ping = time.monotonic() + ping_every
                if time.monotonic() >= next_metrics:
                    self.write_metrics()
                    next_metrics = time.monotonic() + self.cfg.metrics_interval_s
                if time.monotonic() >= next_sweep:  # even on a busy node
                    self.sweep()
                    next_sweep = time.monotonic() + self.cfg.sweep_interval_s
                if resume_at is not None and time.monotonic() >= resume_at:
                    selector.register(listener, selectors.EVENT_READ, "accept")
                    resume_at = None
                for key, _ in events:
                    if key.data == "accept":
                        try:
                            srv.accept_one()
                            backoff = 0.0
                        except OSError as exc:
                            backoff = min(max(backoff * 2, _BACKOFF_S[0]), _BACKOFF_S[1])
                            self.log.error("accept_failed", error=errno.errorcode.get(
                                exc.errno or 0, str(exc)), reason=exc.strerror,
                                pause_s=backoff, connections=srv.total)
                            selector.unregister(listener)
                            resume_at = time.monotonic() + backoff
                        continue
                    for signum in wake_r.recv(64):
                        if signum == signal.SIGHUP:
                            self.reload()
                        elif signum in (signal.SIGTERM, signal.SIGINT):
                            return self.stop(listener)
        finally:
            signal.set_wakeup_fd(-1)
            if answering is not None:
                answering.close()
            if self.relay is not None:
                self.relay.close()

    def _running(self) -> int:
        with self.lock:
            return sum(1 for s in self.sessions if s.container_id and not s.done.is_set())

    def write_metrics(self) -> None:
        """Rewrite the textfile (when configured); a failure is logged once, not per turn."""
        path = self.cfg.metrics_textfile
        if path is None:
            return
        try:
            metrics.write(path)
        except OSError as exc:
            if not self.metrics_failing:
                self.log.error("metrics_not_written", path=str(path), reason=exc.strerror)
            self.metrics_failing = True
            return
        if self.metrics_failing:
            self.log.info("metrics_written", path=str(path))
        self.metrics_failing = False

    def handle(self, conn: socket.socket, who: Peer) -> None:
        """One connection, by its first frame: a job's request, an admin or exec frame."""
        log = self.log.bind(peer_pid=who.pid, uid=who.uid)
        fds: list[int] = []
        marks = {"accepted": time.monotonic()}

        def send(kind: str, **fields: object) -> bool:
            try:
                protocol.send(conn, kind, **fields)
                return True
            except OSError:
                return False

        try:
            cfg = self.cfg  # one policy for the whole connection, even across a reload
            header, payload = _first_frame(conn, fds, cfg.request_timeout_s)
            if header["t"] == protocol.KIND_ADMIN:
                log = log.bind(op=str(header.get("op"))[:20])
                return ops.serve(conn, cfg, who, header, self.engine, log)
            if header["t"] == protocol.KIND_EXEC:  # cbatch exec; answered and logged there
                return jobexec.serve(conn, cfg, who, header, self.engine, log)
            session = Session(conn, cfg, who, protocol.parse_request(header, payload), fds,
                              self.engine, log, marks["accepted"])
            with self.lock:
                self.sessions.add(session)
            try:
                session.run()
            finally:
                with self.lock:
                    self.sessions.discard(session)
        except CbatchError as exc:
            refuse(send, log, exc, marks)
        except Exception:  # a bug: log it fully, tell the user an incident id
            report_bug(send, log)
        finally:
            for fd in fds:
                os.close(fd)
            conn.close()

    def _refuse_crowded(self, conn: socket.socket, uid: int, reason: str) -> None:
        """One error frame, then close: never a thread for a connection over the bound."""
        self.log.warning("connection_refused", uid=uid, reason=reason,
                         limit_per_uid=self.cfg.max_connections_per_user,
                         limit=self.cfg.max_connections)
        whose = "from your user " if reason.endswith("this uid") else ""
        try:
            conn.setblocking(False)
            protocol.send(conn, protocol.KIND_ERROR, status=EXIT_NODE_FAILURE,
                          message=f"too many cbatch connections {whose}on this node; "
                                  "the job did not run; it can be requeued")
        except OSError:
            pass
        conn.close()

    def sweep(self) -> None:
        with self.lock:
            busy = {s.container_id for s in self.sessions if s.container_id}
        try:
            removed, failed = reconcile.sweep(self.engine(), busy)
        except CbatchError as exc:
            self.log.error("sweep_failed", **exc.log_fields())
            return
        for item in removed:
            self.log.info("orphan_removed", container_id=item.container_id[:12],
                          job_id=item.job_id, user=item.user, reason=item.reason)
        for container_id in failed:
            self.log.error("orphan_not_removed", container_id=container_id[:12])

    def _check_nofile(self, cfg: config.Config) -> None:
        """Raises ConfigError when cfg's connection bound cannot fit the fd limit."""
        before, now = nofile.ensure(cfg)
        if now != before:
            self.log.info("nofile_raised", soft_before=before, soft=now,
                          needed=nofile.needed(cfg))

    def reload(self) -> None:
        try:
            new = config.load(self.config_path)
            self._check_nofile(new)
        except ConfigError as exc:
            self.log.error("reload_failed", kept="previous configuration", **exc.log_fields())
            return
        if (new.socket_path, new.socket_mode, new.socket_group) != (
                self.cfg.socket_path, self.cfg.socket_mode, self.cfg.socket_group):
            self.log.warning("reload_socket_unchanged",
                             reason="socket settings take effect at the next restart")
        self.cfg = new
        if self.relay is None:  # clients named for the first time
            self.relay = self._relay_trqauthd()
        self.log.info("config_reloaded", images=[i.alias for i in new.images],
                      default=new.default_image)

    def stop(self, listener: socket.socket) -> int:
        systemd.notify("STOPPING=1")
        self.write_metrics()
        listener.close()
        try:
            os.unlink(self.cfg.socket_path)
        except FileNotFoundError:
            pass
        self.log.info("daemon_stopped", running_jobs=len(self.sessions))
        return 0


def _first_frame(conn: socket.socket, fds: list[int], timeout_s: float) -> tuple[dict, bytes]:
    """A connection's first frame, within timeout_s; fds it carries go into `fds`."""
    conn.settimeout(timeout_s)
    try:
        return protocol.recv(conn, fds, timeout_s)
    except protocol.PeerClosed:
        raise ProtocolError("the starter closed the connection before its request") from None
    except (ProtocolError, socket.timeout, OSError) as exc:
        raise ProtocolError(f"bad request from cbatch-starter: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cbatchd", description=__doc__.splitlines()[0] + " Runs in the foreground.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", type=Path, metavar="PATH",
                        default=Path(os.environ.get("CBATCH_CONFIG", config.DEFAULT_PATH)),
                        help="policy file (environment: CBATCH_CONFIG)")
    parser.add_argument("--log-file", type=Path, metavar="PATH", default=None,
                        help="append log records to this file instead of stderr; reopened "
                             "when logrotate moves it")
    args = parser.parse_args(argv)
    try:
        cfg = config.load(args.config)
    except ConfigError as exc:
        print(f"cbatchd: {exc}", file=sys.stderr)
        return 1
    try:
        logs.configure(cfg.log_format, cfg.log_level, args.log_file)
    except OSError as exc:
        print(f"cbatchd: cannot open the log file {args.log_file}: {exc.strerror}",
              file=sys.stderr)
        return 1
    try:
        return Daemon(cfg, args.config).serve()
    except ConfigError as exc:  # the connection bound does not fit the fd limit
        structlog.get_logger("cbatchd").error("daemon_failed", **exc.log_fields())
        print(f"cbatchd: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        structlog.get_logger("cbatchd").error("daemon_failed", error=str(exc))
        print(f"cbatchd: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
