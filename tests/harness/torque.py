"""Drive a real single-node Torque (built by ../shared/torque/build-torque.sh) from tests.

TorqueNode switches pbs_mom between native jobs and cbatch (its mom_priv/config and a
restart, as an admin would), runs a cbatchd of the tests' own on the starter's default
socket, and submits jobs with qsub as a test user. Job reads what Torque recorded: qstat
-f, the server's accounting E record and the delivered .o/.e files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

PBS_HOME = Path("/var/spool/torque")
SBIN = Path("/usr/local/sbin")
BIN = Path("/usr/local/bin")  # Torque's clients
CBATCH_BIN = Path("/usr/bin")  # cbatch's programs (the Debian package)
STARTER = CBATCH_BIN / "cbatch-starter"
SOCKET = Path("/run/cbatch/cbatchd.sock")  # the starter's default: nothing to configure
MOM_CONFIG = PBS_HOME / "mom_priv" / "config"
CHECK_POLL_S = 10  # pbs_mom's $check_poll_time here: walltime kills within ~10 s

_START = ("import os, signal, sys\n"
          "for s in range(1, signal.NSIG):\n"
          "    try: signal.signal(s, signal.SIG_DFL)\n"
          "    except (OSError, ValueError, RuntimeError): pass\n"
          "signal.pthread_sigmask(signal.SIG_SETMASK, [])\n"
          "os.execv(sys.argv[1], sys.argv[1:])\n")


def kit() -> Path:
    """The folder with build-torque.sh and torque-multimom.sh (scripts/setup-torque.sh
    looks in the same places)."""
    here = Path(__file__).resolve().parents[2]
    for folder in (os.environ.get("CBATCH_TORQUE_KIT", ""), here.parent / "shared" / "torque",
                   "/work/shared/torque"):
        if folder and (Path(folder) / "torque-multimom.sh").exists():
            return Path(folder)
    raise RuntimeError("no Torque kit (build-torque.sh) found: set CBATCH_TORQUE_KIT")


def installed() -> bool:
    return (SBIN / "pbs_server").exists() and (SBIN / "pbs_mom").exists()


def _pids(exe: Path) -> list[int]:
    """Pids of a real Torque daemon, by executable (the harness's momsim calls itself
    pbs_mom too), leaving out its own forks (pbs_mom's per-job children run its image)."""
    def image(pid: int | str) -> str | None:
        try:
            return os.readlink(f"/proc/{pid}/exe")
        except OSError:
            return None

    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and image(entry.name) == str(exe):
            try:
                parent = _ppid(int(entry.name))
            except OSError:
                continue
            if image(parent) != str(exe):
                found.append(int(entry.name))
    return found


def _ppid(pid: int) -> int:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return int(raw[raw.rindex(")") + 2:].split()[1])


def start_daemon(program: Path, *args: str, attempts: int = 5) -> None:
    """Start a Torque daemon as an init system would: default dispositions, empty mask.

    Retried for a while: a pbs_mom just stopped can hold its ports a moment longer, and
    the new one then exits at once.
    """
    for attempt in range(attempts):
        done = subprocess.run(["/usr/bin/python3", "-c", _START, str(program), *args],
                              cwd="/", stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if done.returncode == 0:
            return
        time.sleep(2)
    raise RuntimeError(f"{program} {' '.join(args)} would not start (exit {done.returncode}): "
                       f"{done.stderr.strip()}")


def qmgr(command: str) -> str:
    return subprocess.run([str(BIN / "qmgr"), "-c", command], capture_output=True, text=True,
                          check=True, timeout=60).stdout


def wait_for(predicate, timeout: float, what: str, step: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def node_state() -> str:
    out = subprocess.run([str(BIN / "pbsnodes"), os.uname().nodename], capture_output=True,
                         text=True, timeout=30).stdout
    match = re.search(r"^\s+state = (\S+)", out, re.M)
    return match.group(1) if match else ""


def node_message() -> str:
    out = subprocess.run([str(BIN / "pbsnodes"), os.uname().nodename], capture_output=True,
                         text=True, timeout=30).stdout
    # the health check's words travel in the node's status, as message=...
    match = re.search(r"(?:^\s+message = |[,=]message=)([^,\n]*)", out, re.M)
    return match.group(1) if match else ""


def ensure_running() -> None:
    """trqauthd, pbs_server and pbs_sched up (build-torque.sh set them up once)."""
    if not _pids(SBIN / "trqauthd"):
        start_daemon(SBIN / "trqauthd")
    if not _pids(SBIN / "pbs_server"):
        start_daemon(SBIN / "pbs_server")
    wait_for(lambda: subprocess.run([str(BIN / "qmgr"), "-c", "list server"],
                                    capture_output=True, timeout=30).returncode == 0,
             90, "pbs_server to answer")
    if not _pids(SBIN / "pbs_sched"):
        start_daemon(SBIN / "pbs_sched")


def restart_mom(config_text: str) -> None:
    """Write mom_priv/config and restart every pbs_mom with the arguments it had (one, or
    the two of a multi-mom node); a HUP keeps stale settings."""
    moms = {pid: _cmdline(pid) for pid in _pids(SBIN / "pbs_mom")}
    for pid in moms:
        os.kill(pid, signal.SIGTERM)  # pbs_mom leaves its jobs' processes running
    try:
        wait_for(lambda: not _pids(SBIN / "pbs_mom"), 20, "pbs_mom to stop")
    except AssertionError:
        for pid in _pids(SBIN / "pbs_mom"):
            os.kill(pid, signal.SIGKILL)
    MOM_CONFIG.write_text(config_text)
    for argv in {tuple(a) for a in moms.values()} or [(str(SBIN / "pbs_mom"),)]:
        start_daemon(SBIN / "pbs_mom", *argv[1:])
    wait_for(lambda: all(state == "free" for state in node_states().values()), 90,
             "the nodes to be free", step=0.5)


def _cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [arg.decode() for arg in f.read().split(b"\0") if arg]


def node_states() -> dict[str, str]:
    out = subprocess.run([str(BIN / "pbsnodes"), "-a"], capture_output=True, text=True,
                         timeout=30).stdout
    return dict(re.findall(r"^(\S+)\n\s+state = (\S+)", out, re.M))


def multi_mom() -> list[str]:
    """The node names when this host runs a multi-mom cluster (torque-multimom.sh), else []."""
    names = sorted(node_states())
    return names if len(names) > 1 else []


@dataclasses.dataclass
class Job:
    """A submitted job and what Torque recorded for it."""

    job_id: str
    user: pwd.struct_passwd

    @property
    def seq(self) -> str:
        return self.job_id.split(".", 1)[0].split("[", 1)[0]

    def info(self) -> dict[str, str]:
        out = subprocess.run([str(BIN / "qstat"), "-f", self.job_id], capture_output=True,
                             text=True, timeout=60).stdout
        return parse_qstat(out)

    def state(self) -> str:
        return self.info().get("job_state", "")

    def wait(self, timeout: float = 120) -> dict[str, str]:
        """Wait until Torque has completed the job; its qstat -f attributes."""
        return wait_for(lambda: (lambda i: i if i.get("job_state") == "C" else None)(
            self.info()), timeout, f"job {self.job_id} to complete", step=0.5)

    def wait_state(self, state: str, timeout: float = 60) -> None:
        wait_for(lambda: self.state() == state, timeout, f"job {self.job_id} in state {state}")

    def exit_status(self, timeout: float = 120) -> int:
        return int(self.wait(timeout)["exit_status"])

    def accounting(self, timeout: float = 30) -> dict[str, str]:
        """The server's E record: {"Exit_status": ..., "resources_used.cput": ...}."""
        def find():
            folder = PBS_HOME / "server_priv" / "accounting"
            for path in sorted(folder.glob("*"), reverse=True)[:2]:
                for line in path.read_text(errors="replace").splitlines():
                    parts = line.split(";", 3)
                    if len(parts) == 4 and parts[1] == "E" and parts[2] == self.job_id:
                        return dict(f.split("=", 1) for f in parts[3].split() if "=" in f)
            return None
        return wait_for(find, timeout, f"the accounting E record of {self.job_id}")

    def output_now(self, which: str = "o") -> str | None:
        """What the job has written so far (its spool .OU/.ER on this node), or None."""
        attr = "OU" if which == "o" else "ER"
        for path in (PBS_HOME / "spool").glob(f"{self.job_id.split('.')[0]}*.{attr}"):
            return path.read_text(errors="replace")
        return None

    def output(self, which: str = "o", timeout: float = 30) -> str:
        """The delivered .o/.e file (Output_Path/Error_Path; pbs_mom copies it at the end)."""
        attr = self.info()["Output_Path" if which == "o" else "Error_Path"]
        path = Path(attr.split(":", 1)[-1])
        wait_for(path.exists, timeout, f"{path}")
        return path.read_text(errors="replace")


def parse_qstat(text: str) -> dict[str, str]:
    attrs: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        match = re.match(r"^    (\S+) = (.*)$", line)
        if match:
            key = match.group(1)
            attrs[key] = match.group(2)
        elif key and line.startswith("\t"):
            attrs[key] += line.strip()
    return attrs


def qsub(user: pwd.struct_passwd, script: str | None, *args: str, cwd: str | None = None,
         env: dict[str, str] | None = None) -> str:
    """qsub as the user (Torque refuses root); the job id."""
    command = ["/usr/sbin/runuser", "-u", user.pw_name, "--", str(BIN / "qsub"), *args]
    result = subprocess.run(command, input=script, capture_output=True, text=True, timeout=60,
                            cwd=cwd or user.pw_dir, env={"PATH": "/usr/bin:/bin",
                                                         "HOME": user.pw_dir, **(env or {})})
    if result.returncode != 0:
        raise RuntimeError(f"qsub failed: {result.stderr.strip()}")
    return result.stdout.strip()


def qdel(job_id: str) -> None:
    subprocess.run([str(BIN / "qdel"), job_id], check=True, capture_output=True, timeout=60)


def qsig(job_id: str, signame: str) -> None:
    subprocess.run([str(BIN / "qsig"), "-s", signame, job_id], check=True,
                   capture_output=True, timeout=60)


class CbatchNode:
    """A cbatchd of the tests' own on the starter's default socket, reading a test policy."""

    def __init__(self, images: dict[str, str], default: str, extra: dict | None = None):
        self.root = Path(tempfile.mkdtemp(prefix="cbatch-torque-"))
        os.chmod(self.root, 0o755)
        self.config_path = self.root / "cbatch.yaml"
        self.log_path = self.root / "cbatchd.log"
        self.settings: dict = {
            "socket": {"path": str(SOCKET)},
            "torque": {"home": str(PBS_HOME)},
            "images": {"default": default,
                       "aliases": {alias: {"ref": ref} for alias, ref in images.items()}},
            "logging": {"format": "json"},
        }
        for key, value in (extra or {}).items():
            self.settings.setdefault(key, {}).update(value)
        self.config_path.write_text(json.dumps(self.settings, indent=2))
        self.proc: subprocess.Popen | None = None
        self.env: dict[str, str] = {}  # cbatchd's extra environment (DOCKER_HOST)
        self.health_env: dict[str, str] = {}  # the health check's, likewise

    def write_health_check(self, path: Path) -> None:
        """The $node_check_script pbs_mom runs as root: `cbatch health` for this daemon."""
        env_file = self.root / "health.env"
        env_file.write_text("")
        path.write_text(f"#!/bin/sh\nset -a; . {env_file}; set +a\n"
                        f"exec {CBATCH_BIN}/cbatch --config {self.config_path} health\n")
        os.chmod(path, 0o755)

    def start(self) -> None:
        (self.root / "health.env").write_text(
            "".join(f"{k}={v}\n" for k, v in self.health_env.items()))
        SOCKET.unlink(missing_ok=True)
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen([str(CBATCH_BIN / "cbatchd"), "--config",
                                          str(self.config_path)], stdout=log, stderr=log,
                                         start_new_session=True, cwd="/",
                                         env={**os.environ, **self.env})
        wait_for(SOCKET.exists, 20, "cbatchd's socket")

    def kill(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=15)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines()
                if line.startswith("{")]

    def events(self, name: str, **match: object) -> list[dict]:
        return [r for r in self.records() if r.get("event") == name
                and all(r.get(k) == v for k, v in match.items())]

    def wait_for_event(self, name: str, timeout: float = 30, **match: object) -> dict:
        return wait_for(lambda: (self.events(name, **match) or [None])[0], timeout,
                        f"{name} {match} in the daemon log")

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def mom_config(starter: bool, health: Path | None = None) -> str:
    """mom_priv/config for this host: native jobs, or every job through cbatch-starter."""
    host = os.uname().nodename
    lines = [f"$pbsserver {host}", "$logevent 255", f"$check_poll_time {CHECK_POLL_S}"]
    if starter:
        lines.append(f"$job_starter {STARTER}")
    if health is not None:
        lines += [f"$node_check_script {health}", "$node_check_interval 1",
                  "$status_update_time 5"]
    return "\n".join(lines) + "\n"


def containers(api, job_id: str) -> list[dict]:
    return api.containers(all=True, filters={"label": f"cbatch.job_id={job_id}"})


def parse_duration(text: str) -> int:
    """Torque's HH:MM:SS (qstat) or plain seconds (accounting records) in seconds."""
    seconds = 0
    for part in text.split(":"):
        seconds = seconds * 60 + int(part)
    return seconds


def mem_kb(text: str) -> int:
    match = re.match(r"(\d+)kb", text)
    return int(match.group(1)) if match else 0


def mom_log_since(mark: float) -> str:
    """pbs_mom's log lines written since `mark` (a time.time())."""
    path = PBS_HOME / "mom_logs" / time.strftime("%Y%m%d")
    text = path.read_text(errors="replace") if path.exists() else ""
    lines = []
    for line in text.splitlines():
        try:
            stamp = time.mktime(time.strptime(line[:19], "%m/%d/%Y %H:%M:%S"))
        except ValueError:
            continue
        if stamp >= int(mark):
            lines.append(line)
    return "\n".join(lines)
