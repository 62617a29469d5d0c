"""`cbatch`: the admin CLI (check-config, ps, kill, cleanup, images, health, exec, demo).

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
from cbatch.errors import (AdminRefused, CbatchError, ConfigError, DaemonRefused,
                           DaemonUnreachable, EngineUnavailable, for_admin)


def _engine():
    from cbatch.engine import Engine  # docker is imported only by commands that need it
    return Engine()


def check_config(args: argparse.Namespace) -> int:
    """The file, then (unless --no-docker) that its default image is on this node."""
    path = args.path or args.config
    cfg = config.load(path)
    if not cfg.images:
        raise ConfigError("images.aliases", "no images are defined, so jobs have none to run "
                                            "in: define at least one alias and images.default")
    note = ""
    if not args.no_docker:
        note = _default_image_note(cfg)
    print(f"{path}: ok ({len(cfg.images)} images, default {cfg.default_image}, "
          f"{len(cfg.mounts)} site mounts, network {cfg.network}){note}")
    return 0


def _default_image_note(cfg: config.Config) -> str:
    """Raises ConfigError when the default image is not on this node and will not be
    pulled; a note for the ok line when it will be."""
    default = cfg.image(cfg.default_image)
    try:
        present = _engine().image_id(default.ref) is not None
    except CbatchError as exc:
        raise EngineUnavailable("cannot check that the default image is on this node: Docker is "
                          f"not answering ({exc.fields.get('docker_error', exc)}); start it, or "
                          "check the file alone with --no-docker") from exc
    if present:
        return ""
    if cfg.pull == "missing" and "@" in default.ref:  # (an image id cannot be pulled)
        return (f"; the default image {default.alias} is not on this node yet: the first job "
                "pulls it, or run `cbatch images pull` now")
    raise ConfigError("images.default", f"{default.alias} ({default.ref}) is not on this node "
                                        "and images.pull is never: load it, or run `cbatch "
                                        "images pull` with pull: missing")


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
        except (OSError, protocol.FrameError, protocol.PeerClosed) as exc:
            raise DaemonUnreachable(f"cannot talk to cbatchd on {cfg.socket_path}: {exc}") from exc
    if header.get("t") == protocol.KIND_ERROR:
        raise DaemonRefused(str(header.get("message")), int(header.get("status", 1)))
    return header


def ps(args: argparse.Namespace) -> int:
    try:
        reply = _ask_daemon(args, op="ps")
    except CbatchError as exc:
        if os.geteuid() != 0:
            raise
        # the daemon is down or stuck: root can still see the jobs' containers in Docker
        print(f"cbatch: {exc}; listing from Docker directly", file=sys.stderr)
        from cbatch.admin import ops
        reply = ops.handle(_engine(), {"op": "ps"})
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
        raise AdminRefused(f"unknown signal {args.signal!r}; use a name like TERM or KILL") from None
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
    from cbatch.admin import images as imageset
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
        engine = _engine()
        engine.ping()
        default = cfg.image(cfg.default_image)
        if default and cfg.pull == "never" and engine.image_id(default.ref) is None:
            return f"default image {default.alias} ({default.ref}) is missing on this node"
    except CbatchError as exc:
        return f"docker: {exc}"
    usage = shutil.disk_usage(args.docker_root if os.path.isdir(args.docker_root) else "/")
    if usage.free < args.min_free_gb * 2**30:
        return f"only {usage.free / 2**30:.1f} GiB free for images in {args.docker_root}"
    return None


def exec_(args: argparse.Namespace) -> int:
    """A command or shell in a running job's container; for its owner (no root needed)."""
    from cbatch.admin import execclient
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        return execclient.run(_socket_path(args), args.job_id, command)
    except CbatchError as exc:  # the daemon's refusal keeps its status (126: refused)
        return execclient.main_exit(exc)


def _socket_path(args: argparse.Namespace) -> Path:
    """cbatchd's socket: CBATCH_SOCKET, the policy's, or the default when a user may not
    read the policy file."""
    if os.environ.get("CBATCH_SOCKET"):
        return Path(os.environ["CBATCH_SOCKET"])
    try:
        return config.load(args.config).socket_path
    except ConfigError:
        return config.Config().socket_path


def demo(args: argparse.Namespace) -> int:
    from cbatch.harness import demo as demo_
    return demo_.run(user=args.user, keep=args.keep)


class _ShowDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's help ends with its default, unless it has none worth saying."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def _parser() -> argparse.ArgumentParser:
    show = _ShowDefaults
    parser = argparse.ArgumentParser(prog="cbatch", formatter_class=show,
                                     description="cbatch: the admin's tool for one worker node")
    parser.add_argument("--config", type=Path, metavar="PATH",
                        default=Path(os.environ.get("CBATCH_CONFIG", config.DEFAULT_PATH)),
                        help="the node's policy file (environment: CBATCH_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text, formatter_class=show)
        p.set_defaults(func=func)
        return p

    p = command("check-config", check_config,
                "validate a policy file, and that its default image is on this node")
    p.add_argument("path", nargs="?", type=Path, metavar="PATH",
                   help="the file to check (default: the --config file)")
    p.add_argument("--no-docker", action="store_true",
                   help="check the file alone, not the images on this node")
    command("ps", ps, "list job containers on this node")
    p = command("kill", kill, "signal a job's containers")
    p.add_argument("job_id", metavar="JOBID", help="the Torque job id, e.g. 123.server")
    p.add_argument("--signal", default="SIGKILL", metavar="SIG",
                   help="signal name (TERM, KILL, USR1...) to send")
    command("cleanup", cleanup, "remove containers whose job is gone")
    p = command("images", images, "the pinned images on this node: list, pull, prune")
    p.add_argument("action", nargs="?", choices=("list", "pull", "prune"), default="list",
                   help="list the set and what is here, pull what is missing, or prune "
                        "pins moved on from")
    p = command("health", health, "node health check for pbs_mom's $node_check_script")
    p.add_argument("--docker-root", default="/var/lib/docker", metavar="DIR",
                   help="where Docker keeps images (its free space is checked)")
    p.add_argument("--min-free-gb", type=float, default=5.0, metavar="GB",
                   help="least free space in --docker-root for a healthy node")
    p = command("exec", exec_, "run a command, or a shell, inside one of your running jobs")
    p.add_argument("job_id", metavar="JOBID", help="the job's id, e.g. 123 or 123.server")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND",
                   help="what to run, as the job's user in its folder and environment "
                        "(default: a login shell)")
    p = command("demo", demo, "run a sample job through starter, daemon and Docker")
    p.add_argument("--user", default="cbatch-demo", help="user to run the job as (made if absent)")
    p.add_argument("--keep", action="store_true", help="keep the demo's temporary files")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except CbatchError as exc:
        print(f"cbatch: {for_admin(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
