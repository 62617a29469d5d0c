"""Launch cbatch-starter exactly as Torque's pbs_mom does, without Torque.

For `cbatch demo`, the tests and the benchmarks. Each step follows torque-contract.md:
the .SC file (root 0700, then chowned to the user) in mom_priv/jobs (0751), the node file
in aux/, the spool .OU/.ER opened as the user with O_EXCL|O_APPEND (mode 0666 & ~umask),
then in the job's process: setsid, initgroups/setgid/setuid, chdir to PBS_O_INITDIR or
home, umask 077, SIGPIPE ignored, stdin a pipe holding "[exec ]<path>.SC[ -F args]\\n"
(plus the stray fd 9 copy and fd 14 pipe), and execve(starter, [starter, shell], env).
The parent process calls itself pbs_mom, as the daemon checks. Killing follows
kill_task(): signals go to every process whose session is the starter's; qdel is
SIGTERM then SIGKILL after kill_delay; other signals arrive about four times; when the
starter exits, the rest of its session gets TERM and KILL at once.

An interactive job (qsub -I) follows §1b: pbs_mom's child calls setsid, takes a pty as
its terminal and stays behind as the root session leader; its child, with the pty as fds
0-2 and PBS_ENVIRONMENT=PBS_INTERACTIVE, execs the starter; when that child ends, the
leader kills its own process group, so Torque records 265 whatever the shell's status.
The harness plays qsub's side of the pty: what the terminal shows is appended to the
job's .OU path (the transcript; natively there is no .OU), keystrokes come by command.

Run as ``python -m cbatch.harness.momsim '<json JobSpec>'``; it prints JSON lines on stdout
({"starter_pid": N}, then {"exit_status": N}) and takes commands on stdin
("qdel <kill_delay_s>", "signal <N>", "suspend", "resume", "walltime <limit_s>", and for
interactive jobs "type <json string>", "winsize <rows> <cols>").
"""

from __future__ import annotations

import ctypes
import dataclasses
import fcntl
import json
import os
import pwd
import resource
import secrets
import signal
import struct
import sys
import termios
import threading
import time
import xml.sax.saxutils
from pathlib import Path

from cbatch.harness import pbstrack

PBS_ENVIRONMENT = {"PATH": "/bin:/usr/bin", "LANG": "C.UTF-8"}
_PR_SET_NAME = 15


@dataclasses.dataclass
class JobSpec:
    user: str
    job_id: str
    torque_home: str
    script: str
    starter: str
    shell: str = "/bin/bash"
    job_name: str = "STDIN"
    queue: str = "batch"
    submit_args: str = ""  # qsub -F '...'
    join: bool = False  # qsub -j oe
    keep: bool = False  # qsub -k oe: output written straight into the home directory
    initdir: str | None = None  # qsub -d
    exec_with_exec: bool = False  # mom_priv/config $exec_with_exec true
    ppn: int = 1
    tmpdir: bool = False  # mom_priv/config $tmpdir <torque_home>/tmp
    job_env: dict = dataclasses.field(default_factory=dict)  # qsub -v
    mom_env: dict = dataclasses.field(default_factory=dict)  # extra pbs_environment lines
    rlimits: dict = dataclasses.field(default_factory=dict)  # name -> (soft, hard)
    pipe_output: bool = False  # fds 1/2 are pipes (as TM tasks' sockets to pbs_demux)
    tm_argv: list | None = None  # a TM task (pbsdsh, mpiexec): argv spawned without a shell
    tm_task: int = 2
    interactive: bool = False  # qsub -I: the job's fds 0-2 are a pty (empty script: none)
    term: str = "xterm"  # TERM, taken from qsub's terminal
    winsize: tuple = (24, 80)  # qsub's terminal: rows, columns

    @property
    def prefix(self) -> str:
        return self.job_id.replace("[", "-").replace("]", "")


def paths(spec: JobSpec) -> dict[str, Path]:
    home = Path(spec.torque_home)
    user_home = Path(pwd.getpwnam(spec.user).pw_dir)
    seq = spec.job_id.split(".")[0]
    out_dir = user_home if spec.keep else home / "spool"
    out = out_dir / (f"{spec.job_name}.o{seq}" if spec.keep else f"{spec.prefix}.OU")
    err = out_dir / (f"{spec.job_name}.e{seq}" if spec.keep else f"{spec.prefix}.ER")
    return {"script": home / "mom_priv" / "jobs" / f"{spec.prefix}.SC",
            "nodefile": home / "aux" / spec.job_id, "out": out, "err": err if not spec.join else out,
            "tmpdir": Path("/tmp/pbstmp") / spec.job_id,  # as $tmpdir /tmp/pbstmp
            "record": home / "mom_priv" / "jobs" / f"{spec.prefix}.JB"}


def stage(spec: JobSpec) -> dict[str, Path]:
    """Create Torque's directories and the job's files as pbs_mom would (run as root)."""
    entry = pwd.getpwnam(spec.user)
    home = Path(spec.torque_home)
    for folder, mode in (("mom_priv", 0o751), ("mom_priv/jobs", 0o751), ("spool", 0o1777),
                         ("aux", 0o755), ("tmp", 0o1777), (ADOPTED, 0o1733)):
        (home / folder).mkdir(parents=True, exist_ok=True)
        os.chmod(home / folder, mode)
    p = paths(spec)
    if spec.script or not spec.interactive:
        p["script"].write_text(spec.script)
        os.chmod(p["script"], 0o700)
        os.chown(p["script"], entry.pw_uid, entry.pw_gid)
    p["nodefile"].write_text("".join(f"{os.uname().nodename}\n" for _ in range(spec.ppn)))
    p["record"].write_text(_record(spec))  # mom_priv/jobs/<prefix>.JB, root's, 0644
    os.chmod(p["record"], 0o644)
    if spec.tmpdir:
        p["tmpdir"].parent.mkdir(mode=0o1777, exist_ok=True)
        p["tmpdir"].mkdir(mode=0o755, exist_ok=True)
        os.chown(p["tmpdir"], entry.pw_uid, entry.pw_gid)
    return p


def _record(spec: JobSpec) -> str:
    """pbs_mom's record of the running job, as Torque 6 writes it (saveJobToXML), cut to
    what cbatch reads and a little context."""
    node, e = os.uname().nodename, xml.sax.saxutils.escape
    attributes = {"Job_Name": spec.job_name, "Job_Owner": f"{spec.user}@{node}",
                  "job_state": "R", "queue": spec.queue,
                  "exec_host": f"{node}/0-{spec.ppn - 1}" if spec.ppn > 1 else f"{node}/0",
                  "euser": spec.user}
    lines = [f"    <{k} flags=\"1\">{e(v)}</{k}>" for k, v in attributes.items()]
    lines.insert(4, f"    <Resource_List>\n      <nodes flags=\"1\">1:ppn={spec.ppn}</nodes>\n"
                    "    </Resource_List>")
    return (f"<?xml version=\"1.0\"?>\n<job>\n  <version>131842</version>\n  <state>4</state>\n"
            f"  <substate>42</substate>\n  <jobid>{e(spec.job_id)}</jobid>\n"
            f"  <fileprefix>{e(spec.prefix)}</fileprefix>\n  <queue/>\n  <attributes>\n"
            + "\n".join(lines) + "\n  </attributes>\n</job>\n")


def environment(spec: JobSpec) -> dict[str, str]:
    """The job's environment in pbs_mom's order (contract §3): later entries win."""
    entry = pwd.getpwnam(spec.user)
    home = Path(spec.torque_home)
    workdir = spec.initdir or entry.pw_dir
    env = dict(PBS_ENVIRONMENT)
    env.update(spec.mom_env)
    env.update(spec.job_env)
    env.update({
        "PBS_O_HOME": entry.pw_dir, "PBS_O_WORKDIR": workdir, "PBS_O_HOST": os.uname().nodename,
        "PBS_O_SERVER": os.uname().nodename, "PBS_O_QUEUE": spec.queue,
        "PBS_O_LOGNAME": spec.user, "PBS_O_PATH": "/usr/local/bin:/usr/bin:/bin",
        "PBS_O_SHELL": entry.pw_shell, "PBS_O_LANG": "C.UTF-8",
    })
    if spec.initdir:
        env["PBS_O_INITDIR"] = spec.initdir
    if "[" in spec.job_id:
        env["PBS_ARRAYID"] = spec.job_id[spec.job_id.index("[") + 1: spec.job_id.index("]")]
    env.update({
        "HOME": entry.pw_dir, "LOGNAME": spec.user, "USER": spec.user, "SHELL": spec.shell,
        "PBS_JOBNAME": spec.job_name, "PBS_JOBID": spec.job_id, "PBS_QUEUE": spec.queue,
        "PBS_JOBCOOKIE": secrets.token_hex(16).upper(), "PBS_NODENUM": "0",
        "PBS_MOMPORT": "15003", "PBS_VERSION": "TORQUE-6.1-dev", "PBS_TASKNUM": "1",
        "PBS_VNODENUM": "0", "PBS_NP": str(spec.ppn), "PBS_NUM_NODES": "1",
        "PBS_NUM_PPN": str(spec.ppn), "HOSTNAME": os.uname().nodename,
        "PBS_NODEFILE": f"{home}/aux//{spec.job_id}",
        "PBS_GPUFILE": f"{home}/aux//{spec.job_id}gpu",
        "PBS_MICFILE": f"{home}/aux//{spec.job_id}mic",
        "PBS_WALLTIME": "3600", "PBS_ENVIRONMENT": "PBS_BATCH", "ENVIRONMENT": "BATCH",
    })
    if spec.interactive:
        env["PBS_ENVIRONMENT"] = "PBS_INTERACTIVE"
        env["TERM"] = spec.term
        del env["ENVIRONMENT"]
    if spec.tmpdir and "TMPDIR" not in spec.job_env:
        env["TMPDIR"] = str(paths(spec)["tmpdir"])
    if spec.tm_argv:  # TM tasks: their own task number, no top-task-only variables
        env.update({"PBS_TASKNUM": str(spec.tm_task), "PBS_VNODENUM": str(spec.tm_task - 2)})
        for name in ("LOGNAME", "USER", "SHELL", "PBS_NP"):
            env.pop(name, None)
    return env


def _session_pids(sid: int) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            raw = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(name))
    return pids


def kill_session(sid: int, signum: int, passes: int = 4) -> None:
    """kill_task(): every process of the session; signals other than TERM/KILL ~4 times."""
    if signum in (signal.SIGTERM, signal.SIGKILL):
        for pid in _session_pids(sid):
            try:
                os.kill(pid, signal.SIGTERM)
                if signum == signal.SIGKILL:
                    os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return
    for _ in range(passes):
        for pid in _session_pids(sid):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass


def _child(spec: JobSpec, p: dict[str, Path], env: dict[str, str], stdin_r: int,
           extra_r: int, pipes: list[tuple[int, int]]) -> None:
    """In the forked child: become the job's process and exec the starter."""
    try:
        entry = pwd.getpwnam(spec.user)
        if not spec.interactive:  # the interactive job's child stays in its leader's session
            os.setsid()
        for name, (soft, hard) in spec.rlimits.items():  # mom_set_limits()
            resource.setrlimit(getattr(resource, f"RLIMIT_{name.upper()}"), (soft, hard))
        os.initgroups(spec.user, entry.pw_gid)
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
        os.umask(0o077)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        if not spec.tm_argv:
            flags |= os.O_EXCL  # the top task creates the spool files; TM tasks append
        if spec.interactive:  # fds 0-2 are the job's terminal
            out = err = stdin_r
        else:
            out = os.open(p["out"], flags, 0o666)
            err = out if spec.join else os.open(p["err"], flags, 0o666)
        if pipes:  # the demux side (parent) copies the pipes into the files
            os.close(out)
            if err != out:
                os.close(err)
            out, err = pipes[0][1], pipes[1][1]
            for r, _ in pipes:
                os.close(r)
        os.chdir(spec.initdir or entry.pw_dir)
        if spec.tm_argv:  # TM tasks: stdin is /dev/null, no stray fds
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        elif spec.interactive:
            os.dup2(stdin_r, 0)
        else:
            os.dup2(stdin_r, 0)
            os.dup2(stdin_r, 9)  # the stray copy pbs_mom leaves open (contract §1a)
            os.dup2(extra_r, 14)
        os.dup2(out, 1)
        os.dup2(err, 2)
        for fd in {stdin_r, extra_r, out, err}:
            if fd > 2 and fd not in (9, 14):
                os.close(fd)
        for fd in (0, 1, 2) if spec.tm_argv or spec.interactive else (0, 1, 2, 9, 14):
            os.set_inheritable(fd, True)
        for signum in range(1, signal.NSIG):
            try:
                signal.signal(signum, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # inherited from pbs_mom
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        argv = [spec.starter, *(spec.tm_argv or [spec.shell])]
        os.execve(spec.starter, argv, env)
    except BaseException as exc:  # noqa: BLE001 - report and never return into the parent
        os.write(2, f"momsim: cannot start the job: {exc}\n".encode())
        os._exit(127)


@dataclasses.dataclass
class Started:
    session: int  # the job's session id: what pbs_mom reaps and signals
    starter: int  # the starter's pid (the session itself, but for interactive jobs)
    forked: float
    copiers: list[threading.Thread]
    terminal: int | None = None  # qsub's side of an interactive job's pty


def run(spec: JobSpec) -> tuple[int, float]:
    """The pbs_mom side of one job: start it, obey commands, return Torque's exit_status."""
    ctypes.CDLL(None).prctl(_PR_SET_NAME, b"pbs_mom", 0, 0, 0)
    began = time.time()
    job = _start(spec)
    print(json.dumps({"starter_pid": job.starter}), flush=True)
    overlimit = threading.Event()
    threading.Thread(target=_commands, args=(job, spec, paths(spec), overlimit),
                     daemon=True).start()
    status, starter_s = _reap(job)
    for sid in adopted_sessions(spec, began):  # the job is over: what it adopted goes too
        kill_session(sid, signal.SIGKILL)
    if overlimit.is_set():
        return -11, starter_s  # JOB_EXEC_OVERLIMIT_WT: pbs_mom's code wins over the starter's
    return status, starter_s


def run_many(specs: list[JobSpec]) -> list[tuple[int, float]]:
    """Start all jobs at once from one pbs_mom process (for load benchmarks)."""
    ctypes.CDLL(None).prctl(_PR_SET_NAME, b"pbs_mom", 0, 0, 0)
    started = [_start(spec) for spec in specs]
    results: list[tuple[int, float]] = [(0, 0.0)] * len(specs)

    def reap(i: int) -> None:
        results[i] = _reap(started[i])

    threads = [threading.Thread(target=reap, args=(i,)) for i in range(len(specs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _start(spec: JobSpec) -> Started:
    p = paths(spec)
    env = environment(spec)
    if spec.interactive:
        return _start_interactive(spec, p, env)
    stdin_r, stdin_w = os.pipe()
    extra_r, extra_w = os.pipe()
    pipes = [os.pipe(), os.pipe()] if spec.pipe_output else []
    forked = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(spec, p, env, stdin_r, extra_r, pipes)
    os.close(stdin_r)
    copiers = []
    for (r, w), key in zip(pipes, ("out", "err")):
        os.close(w)
        copiers.append(threading.Thread(target=_copy, args=(r, p[key], spec.join)))
        copiers[-1].start()
    line = ("exec " if spec.exec_with_exec else "") + str(p["script"])
    line += (" " + spec.submit_args if spec.submit_args else "") + "\n"
    if not spec.tm_argv:
        os.write(stdin_w, line.encode())
    os.close(stdin_w)
    os.close(extra_w)
    os.close(extra_r)
    return Started(pid, pid, forked, copiers)


def _start_interactive(spec: JobSpec, p: dict[str, Path], env: dict[str, str]) -> Started:
    terminal, tty = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", *spec.winsize, 0, 0))
    report_r, report_w = os.pipe()
    forked = time.monotonic()
    leader = os.fork()
    if leader == 0:  # pbs_mom's child: the job's root session leader
        try:
            os.close(terminal)
            os.close(report_r)
            os.setsid()
            fcntl.ioctl(tty, termios.TIOCSCTTY, 0)
            shell = os.fork()
            if shell == 0:
                _child(spec, p, env, tty, tty, [])
            os.write(report_w, str(shell).encode())
            os.close(tty)
            os.waitpid(shell, 0)
        finally:
            os.kill(0, signal.SIGKILL)  # catchinter(): its own group, itself included
    os.close(tty)
    os.close(report_w)
    starter = int(os.read(report_r, 32))
    os.close(report_r)
    transcript = threading.Thread(target=_transcript, args=(terminal, p["out"]))
    transcript.start()
    return Started(leader, starter, forked, [transcript], terminal)


def _transcript(terminal: int, path: Path) -> None:
    """What qsub's terminal shows, until the job's side of the pty is closed."""
    with open(path, "ab", buffering=0) as f:
        while True:
            try:
                chunk = os.read(terminal, 65536)
            except OSError:  # EIO: no process holds the job's side any more
                break
            if not chunk:
                break
            f.write(chunk)


def _reap(job: Started) -> tuple[int, float]:
    """Wait for the job; Torque's exit_status and the seconds from fork to reaping."""
    _, status = os.waitpid(job.session, 0)
    starter_s = time.monotonic() - job.forked
    for copier in job.copiers:
        copier.join(10)
    kill_session(job.session, signal.SIGKILL)  # scan_for_terminated(): the rest of the session
    if os.WIFSIGNALED(status):
        return 0x100 + os.WTERMSIG(status), starter_s
    return os.WEXITSTATUS(status), starter_s


def _copy(fd: int, path: Path, join: bool) -> None:
    while not path.exists():  # created by the job's process as the user
        time.sleep(0.01)
    with open(path, "ab", buffering=0) as f:
        while chunk := os.read(fd, 65536):
            f.write(chunk)
    os.close(fd)


def _commands(job: Started, spec: JobSpec, p: dict[str, Path],
              overlimit: threading.Event) -> None:
    def kill_job(signum: int) -> None:  # the job's session and every session it adopted
        for sid in (job.session, *adopted_sessions(spec)):
            kill_session(sid, signum)

    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "type" and job.terminal is not None:
            os.write(job.terminal, json.loads(line.split(None, 1)[1]).encode())
        elif words[0] == "winsize" and job.terminal is not None:
            rows, cols = int(words[1]), int(words[2])
            fcntl.ioctl(job.terminal, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        elif words[0] == "qdel":
            kill_job(signal.SIGTERM)
            time.sleep(float(words[1]) if len(words) > 1 else 2.0)
            kill_job(signal.SIGKILL)
        elif words[0] == "signal":
            kill_job(int(words[1]))
        elif words[0] == "suspend":  # TSTP to task 0 only; STOP to every task
            kill_session(job.session, signal.SIGTSTP)
            time.sleep(5)
            kill_job(signal.SIGSTOP)
        elif words[0] == "resume":
            kill_job(signal.SIGCONT)
        elif words[0] == "walltime":
            overlimit.set()
            with open(p["err"], "a") as err:
                err.write(f"=>> PBS: job killed: walltime {words[1]} exceeded limit {words[1]}\n")
            kill_job(signal.SIGTERM)


ADOPTED = pbstrack.ADOPTED


def adopted_sessions(spec: JobSpec, since: float = 0.0) -> list[int]:
    """The sessions adopted into this job (since a time: this run's, not an earlier
    run's of the same job id)."""
    try:
        text = (Path(spec.torque_home) / ADOPTED / spec.job_id).read_text()
    except FileNotFoundError:
        return []
    rows = [line.split() for line in text.splitlines() if line.strip()]
    return [int(row[0]) for row in rows if float(row[2]) >= since]


def _main() -> None:
    if sys.argv[1] == "pbs_track":
        sys.exit(pbstrack.pbs_track(sys.argv[2], sys.argv[3:]))
    if sys.argv[1] == "--many":
        results = run_many([JobSpec(**s) for s in json.loads(sys.argv[2])])
        print(json.dumps([{"exit_status": st, "starter_s": t} for st, t in results]), flush=True)
        return
    spec = JobSpec(**json.loads(sys.argv[1]))
    status, starter_s = run(spec)
    print(json.dumps({"exit_status": status, "starter_s": starter_s}), flush=True)


if __name__ == "__main__":
    _main()
