"""`cbatch`: the admin CLI (check-config, ps, kill, cleanup, images, health, demo).

One funnel turns a CbatchError into one line and exit status 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sys
from pathlib import Path

from cbatch import config
from cbatch.errors import CbatchError


def _engine():
    from cbatch.engine import Engine  # docker is imported only by commands that need it
    return Engine()


def check_config(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    print(f"{args.config}: ok ({len(cfg.images)} images, default {cfg.default_image or '-'}, "
          f"{len(cfg.mounts)} site mounts, network {cfg.network})")
    return 0


def _ask_daemon(args: argparse.Namespace, timeout_s: float = 30, **request: object) -> dict:
    """One admin request to cbatchd (root or the admin group)."""
    from cbatch import protocol
    cfg = config.load(args.config)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(cfg.socket_path))
            protocol.send(sock, protocol.KIND_ADMIN, **request)
            header, _ = protocol.recv(sock)
        except (OSError, protocol.ProtocolError, protocol.PeerClosed) as exc:
            raise CbatchError(f"cannot talk to cbatchd on {cfg.socket_path}: {exc}") from exc
    if header.get("t") == protocol.KIND_ERROR:
        raise CbatchError(str(header.get("message")))
    return header


def ps(args: argparse.Namespace) -> int:
    try:
        reply = _ask_daemon(args, op="ps")
    except CbatchError as exc:
        if os.geteuid() != 0:
            raise
        # the daemon is down or stuck: root can still see the jobs' containers in Docker
        print(f"cbatch: {exc}; listing from Docker directly", file=sys.stderr)
        from cbatch import adminops
        reply = adminops.handle(_engine(), {"op": "ps"})
    columns = {"job_id": "JOB", "task": "TASK", "user": "USER", "image": "IMAGE",
               "state": "STATE", "container_id": "CONTAINER", "starter_pid": "STARTER"}
    rows = [tuple(columns.values())]
    rows += [tuple(str(c.get(k, "?")) for k in columns) for c in reply.get("containers", [])]
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    return 0


def kill(args: argparse.Namespace) -> int:
    name = args.signal.upper()
    try:
        signum = signal.Signals[name if name.startswith("SIG") else "SIG" + name]
    except KeyError:
        raise CbatchError(f"unknown signal {args.signal!r}; use a name like TERM or KILL") from None
    reply = _ask_daemon(args, op="kill", job_id=args.job_id, signal=int(signum))
    print(f"sent {reply['signal']} to {reply['count']} container(s) of job {args.job_id}")
    return 0


def cleanup(args: argparse.Namespace) -> int:
    from cbatch import reconcile
    removed, failed = reconcile.sweep(_engine())
    for item in removed:
        print(f"removed {item.container_id[:12]} {item.name} job {item.job_id} "
              f"user {item.user}: {item.reason}")
    for container_id in failed:
        print(f"cbatch: could not remove {container_id[:12]}", file=sys.stderr)
    if not removed and not failed:
        print("nothing to clean up")
    return 1 if failed else 0


def images(args: argparse.Namespace) -> int:
    """The pinned set on this node: list it, pull what is missing, prune old pins."""
    from cbatch import imageset
    cfg = config.load(args.config)
    if args.action == "pull":
        outcomes = imageset.pull(cfg, _engine())
        for alias, outcome in outcomes:
            print(f"{alias}: {outcome}")
        return 0 if all(o in ("present", "pulled") for _, o in outcomes) else 1
    if args.action == "prune":
        removed = imageset.prune(cfg, _engine())
        for ref, kept in removed:
            print(f"removed {ref}" if kept is None else f"kept {ref}: {kept}")
        if not removed:
            print("nothing to prune")
        return 0
    for item in imageset.survey(cfg, _engine()):
        size = "missing" if item.size_bytes is None else f"{item.size_bytes / 2**20:.0f} MiB"
        print(f"{item.alias}{' (default)' if item.default else ''}  {item.ref}  {size}")
    return 0


def health(args: argparse.Namespace) -> int:
    """For pbs_mom's $node_check_script: silent when healthy, one ERROR line when not."""
    problem = _health_problem(args)
    if problem:
        print(f"ERROR cbatch: {problem}")
    return 0  # pbs_mom ignores the exit code; the ERROR line is what marks the node down


def _health_problem(args: argparse.Namespace) -> str | None:
    try:
        cfg = config.load(args.config)
    except CbatchError as exc:
        return str(exc)
    if not cfg.socket_path.exists():
        return f"cbatchd is not running (no socket at {cfg.socket_path})"
    try:
        _ask_daemon(args, timeout_s=10, op="ping")
    except CbatchError as exc:
        return f"cbatchd is not answering ({exc})"
    try:
        from cbatch.engine import image_id
        engine = _engine()
        engine.ping()
        default = cfg.image(cfg.default_image)
        if default and cfg.pull == "never" and image_id(engine, default.ref) is None:
            return f"default image {default.alias} ({default.ref}) is missing on this node"
    except CbatchError as exc:
        return f"docker: {exc}"
    usage = shutil.disk_usage(args.docker_root if os.path.isdir(args.docker_root) else "/")
    if usage.free < args.min_free_gb * 2**30:
        return f"only {usage.free / 2**30:.1f} GiB free for images in {args.docker_root}"
    return None


def demo(args: argparse.Namespace) -> int:
    from cbatch import demo as demo_
    return demo_.run(user=args.user, keep=args.keep)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cbatch", description="cbatch admin tool")
    parser.add_argument("--config", type=Path,
                        default=Path(os.environ.get("CBATCH_CONFIG", config.DEFAULT_PATH)))
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check-config", help="validate the configuration").set_defaults(func=check_config)
    sub.add_parser("ps", help="list job containers on this node").set_defaults(func=ps)
    p = sub.add_parser("kill", help="signal a job's container")
    p.add_argument("job_id")
    p.add_argument("--signal", default="SIGKILL")
    p.set_defaults(func=kill)
    sub.add_parser("cleanup", help="remove containers whose job is gone").set_defaults(func=cleanup)
    p = sub.add_parser("images", help="the pinned images on this node: list, pull, prune")
    p.add_argument("action", nargs="?", choices=("list", "pull", "prune"), default="list")
    p.set_defaults(func=images)
    p = sub.add_parser("health", help="node health check for $node_check_script")
    p.add_argument("--docker-root", default="/var/lib/docker")
    p.add_argument("--min-free-gb", type=float, default=5.0)
    p.set_defaults(func=health)
    p = sub.add_parser("demo", help="run a sample job through starter, daemon and Docker")
    p.add_argument("--user", default="cbatch-demo")
    p.add_argument("--keep", action="store_true", help="keep the demo's temporary files")
    p.set_defaults(func=demo)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CbatchError as exc:
        print(f"cbatch: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
