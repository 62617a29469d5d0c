"""Through a real Torque: qsub to completion for a batch of short jobs, native and cbatch.

Interleaved in batches: between batches pbs_mom's $job_starter is switched on or off by
rewriting mom_priv/config and restarting every running pbs_mom with its own arguments (one
node, or a multi-mom pair), as tests/harness/torque.py does for one; the config found at
the start is put back at the end. Nothing else differs between the two modes.
"""

from __future__ import annotations

import datetime
import os
import re
import statistics
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.harness import torque, users

MOM = torque.SBIN / "pbs_mom"
SCRIPT = "#!/bin/bash\ntrue\n"


def unavailable() -> str | None:
    """Why this machine cannot run the benchmark now, or None."""
    if not torque.installed():
        return "no Torque on this machine"
    if _socket_served():
        return f"another cbatchd serves {torque.SOCKET}"
    torque.ensure_running()
    if not _moms():
        return "no pbs_mom runs"
    busy = subprocess.run([str(torque.BIN / "qselect"), "-s", "ERT"], capture_output=True,
                          text=True, timeout=60).stdout.split()
    return f"jobs are running ({len(busy)}): not switching pbs_mom under them" if busy else None


class Moms:
    """The running pbs_moms, restarted with their own arguments under a new config."""

    def __init__(self) -> None:
        self.argvs = [argv for _, argv in _moms()]
        self.saved = torque.MOM_CONFIG.read_text()
        kept = [line for line in self.saved.splitlines()
                if not line.strip().startswith("$job_starter")]
        self.native = "\n".join(kept) + "\n"
        self.cbatch = self.native + f"$job_starter {torque.STARTER}\n"
        self.mode: bool | None = None

    def use(self, starter: bool) -> None:
        if self.mode != starter:
            self._restart(self.cbatch if starter else self.native)
            self.mode = starter

    def restore(self) -> None:
        self._restart(self.saved)

    def _restart(self, config: str) -> None:
        for pid, argv in _moms():
            host, port = _option(argv, "-A", "localhost"), _option(argv, "-R", "15003")
            subprocess.run([str(torque.SBIN / "momctl"), "-h", host, "-p", port, "-s"],
                           capture_output=True, timeout=30)
            try:
                torque.wait_for(lambda: not _alive(pid), 20, "pbs_mom to stop")
            except AssertionError:
                os.kill(pid, signal.SIGKILL)
                torque.wait_for(lambda: not _alive(pid), 10, "pbs_mom to be killed")
        torque.MOM_CONFIG.write_text(config)
        for argv in self.argvs:  # a mom just stopped may still hold its port for a moment
            torque.wait_for(lambda: _start(argv), 30, "pbs_mom to start", step=1)
        for argv in self.argvs:  # each mom answers, then the server sees every node free
            host, port = _option(argv, "-A", "localhost"), _option(argv, "-R", "15003")
            torque.wait_for(lambda: subprocess.run(
                [str(torque.SBIN / "momctl"), "-h", host, "-p", port, "-d", "0"],
                capture_output=True, timeout=30).returncode == 0, 60, f"pbs_mom on {host}")
        torque.wait_for(lambda: all(s == "free" for s in torque.node_states().values()), 90,
                        "every node to be free", step=0.5)


def run(image: str, rounds: int, jobs: int) -> dict[str, dict[str, list[float]]]:
    """{"native"|"cbatch": {"makespan_s": [...], "latency_s": [...]}}, batches interleaved
    (the order alternates per round, so neither mode always follows a mom restart)."""
    user = users.create(os.environ.get("CBATCH_TEST_USER", "cbtperf"),
                        os.environ.get("CBATCH_TEST_GROUP", "cbtperfg"))
    node = torque.CbatchNode({"bench": image}, "bench")
    moms = Moms()
    work = Path(tempfile.mkdtemp(prefix="cbatch-torque-bench-", dir=user.pw_dir))
    os.chown(work, user.pw_uid, user.pw_gid)
    results: dict[str, dict[str, list[float]]] = {
        m: {"makespan_s": [], "latency_s": [], "jobs": []} for m in ("native", "cbatch")}
    try:
        node.start()
        try:
            for r in range(rounds):
                for starter in ((False, True) if r % 2 == 0 else (True, False)):
                    moms.use(starter)
                    makespan, latencies, ids = _batch(user, work, jobs)
                    mode = results["cbatch" if starter else "native"]
                    mode["makespan_s"].append(makespan)
                    mode["latency_s"].extend(latencies)
                    mode["jobs"].extend(ids)
        finally:
            moms.restore()
    finally:
        node.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    return results


def _batch(user, work: Path, jobs: int) -> tuple[float, list[float], list[str]]:
    """Submit `jobs` trivial jobs back to back; (first qsub to last completion, each job's
    qsub to completion), completion being Torque's state C (obit done, output delivered)."""
    submitted: dict[str, float] = {}
    start = time.monotonic()
    for _ in range(jobs):
        before = time.monotonic()
        submitted[torque.qsub(user, SCRIPT, "-j", "oe", cwd=str(work))] = before
    done: dict[str, float] = {}
    deadline = time.monotonic() + 60 + 10 * jobs
    while len(done) < jobs:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{jobs - len(done)} jobs did not complete: {set(submitted) - set(done)}")
        states = _job_states()
        now = time.monotonic()
        for job_id in submitted:
            if job_id not in done and states.get(job_id) == "C":
                done[job_id] = now
        time.sleep(0.1)
    failed = [j for j in submitted if _exit_status(j) != 0]
    if failed:
        said = next(work.glob(f"*.o{failed[0].split('.', 1)[0]}"), None)
        raise RuntimeError(f"{len(failed)} jobs failed ({failed[0]} said: "
                           f"{said.read_text().strip() if said else 'nothing'})")
    for path in work.iterdir():
        path.unlink()
    return max(done.values()) - start, [done[j] - submitted[j] for j in submitted], list(submitted)


# pbs_mom's log lines (millisecond stamps) that mark a job's steps on the node
_STEPS = {"adopted": re.compile(r";Task adopted"),
          "starter ended": re.compile(r";scan_for_terminated: job \S+ task 1 terminated"),
          "adopted session gone": re.compile(r"found exited session \d+ for task \d+ in job (\S+)"),
          "obit sent": re.compile(r";obit sent to server")}
_STARTED = re.compile(r"job (\S+) started, pid")


def mom_steps(job_ids: list[str]) -> dict[str, list[float]]:
    """From pbs_mom's own log: each step's milliseconds after the job's start, for the
    jobs given (what the mom waits for between the job's start and its obit)."""
    wanted, seen = set(job_ids), {}
    for log in sorted((torque.PBS_HOME / "mom_logs").glob("*")):
        for line in log.read_text(errors="replace").splitlines():
            fields = line.split(";")
            if len(fields) < 6:
                continue
            started = _STARTED.search(line)
            job = started.group(1) if started else fields[4]
            step = "started" if started else None
            for name, pattern in _STEPS.items():
                found = pattern.search(line)
                if found and not step:
                    step, job = name, found.group(1) if found.groups() else job
            if step and job in wanted:
                try:
                    when = datetime.datetime.strptime(fields[0], "%m/%d/%Y %H:%M:%S.%f")
                except ValueError:
                    continue
                seen.setdefault(job, {}).setdefault(step, when.timestamp())
    rows: dict[str, list[float]] = {}
    for steps in seen.values():
        for name in _STEPS:
            if "started" in steps and name in steps:
                rows.setdefault(name, []).append((steps[name] - steps["started"]) * 1000)
    return rows


def describe_steps(rows: dict[str, list[float]]) -> str:
    return ", ".join(f"{name} {statistics.median(v):.0f}" for name, v in rows.items())


def _job_states() -> dict[str, str]:
    """job id -> state for every job the server knows (one `qstat -f`-free call)."""
    out = subprocess.run([str(torque.BIN / "qstat"), "-x"], capture_output=True, text=True,
                         timeout=60).stdout
    return dict(re.findall(r"<Job_Id>([^<]+)</Job_Id>.*?<job_state>(\w)</job_state>", out, re.S))


def _exit_status(job_id: str) -> int:
    return int(torque.Job(job_id, None).info().get("exit_status", "-1"))


def _moms() -> list[tuple[int, list[str]]]:
    """(pid, argv) of each pbs_mom daemon (torque._pids leaves out its forks for jobs)."""
    found = []
    for pid in sorted(torque._pids(MOM)):
        try:
            found.append((pid, torque._cmdline(pid)))
        except OSError:
            continue
    return found


def _start(argv: list[str]) -> bool:
    try:
        torque.start_daemon(MOM, *argv[1:])
        return True
    except subprocess.CalledProcessError:
        return False


def _option(argv: list[str], flag: str, default: str) -> str:
    return argv[argv.index(flag) + 1] if flag in argv[:-1] else default


def _alive(pid: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/exe") == str(MOM)
    except OSError:
        return False


def _socket_served() -> bool:
    if not torque.SOCKET.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(torque.SOCKET))
            return True
        except OSError:
            return False


def slots() -> int:
    """How many jobs the nodes run at once (the sum of their np)."""
    out = subprocess.run([str(torque.BIN / "pbsnodes"), "-a"], capture_output=True, text=True,
                         timeout=30).stdout
    return sum(int(n) for n in re.findall(r"^\s+np = (\d+)", out, re.M)) or 1


def nodes() -> str:
    """The nodes pbs_server knows, as this run saw them (one node or a multi-mom pair)."""
    return ", ".join(torque.node_states()) + f"; {len(_moms())} pbs_mom"
