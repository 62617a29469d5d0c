"""The real OpenPBS of ../shared/openpbs/build-openpbs.sh, driven for the openpbs tier:
qsub/qstat/qdel by full path, cbatch's hook installed and removed with qmgr, and a cbatchd
of the tier's own on its own socket (the Torque tier owns the default one)."""

from __future__ import annotations

import json
import pwd
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.harness.qsub_terminal import QsubTerminal

PBS_EXEC = Path("/opt/pbs")
PBS_HOME = Path("/var/spool/pbs")
REPO = Path(__file__).resolve().parents[2]
HOOK_FILE = REPO / "hooks" / "openpbs" / "cbatch_hook.py"
HOOK = "cbatch"
CBATCH_BIN = Path("/usr/bin")  # cbatch's programs (the Debian package)
HOOKS_DIR = PBS_HOME / "mom_priv" / "hooks"  # where the mom keeps the hooks it was sent
SOCKET = Path("/run/cbatch-openpbs/cbatchd.sock")  # the hook sets CBATCH_SOCKET to it
ENV = {"PATH": f"{PBS_EXEC}/bin:{PBS_EXEC}/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
       "PBS_CONF_FILE": "/etc/pbs.conf"}


def installed() -> bool:
    return (PBS_EXEC / "bin" / "qsub").exists() and Path("/etc/pbs.conf").exists()


def run(*argv: str, user: str | None = None, check: bool = True, **kw) -> subprocess.CompletedProcess:
    cmd = list(argv) if user is None else ["runuser", "-u", user, "--", *argv]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, check=check,
                          timeout=60, **kw)


def ensure_running() -> None:
    if run(f"{PBS_EXEC}/bin/qstat", "-B", check=False).returncode != 0:
        subprocess.run(["/etc/init.d/pbs", "start"], env=ENV, check=True, timeout=120,
                       capture_output=True)


def qmgr(command: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(f"{PBS_EXEC}/bin/qmgr", "-c", command, check=check)


def _mom_hook(enabled: bool | None) -> bool:
    """Whether the mom holds cbatch's hook in that state (None: does not hold it)."""
    try:
        control = (HOOKS_DIR / f"{HOOK}.HK").read_text().split()
    except OSError:
        return enabled is None
    off = "enabled=false" in control  # an enabled hook's control file may not say so
    return enabled is not None and off != enabled and (HOOKS_DIR / f"{HOOK}.PY").exists()


def install_hook(config_file: Path) -> None:
    """cbatch's hook on, as an admin installs it; returns once the mom has it."""
    remove_hook()
    qmgr(f"create hook {HOOK} event='execjob_launch,execjob_end'")
    qmgr(f"import hook {HOOK} application/x-python default {HOOK_FILE}")
    qmgr(f"import hook {HOOK} application/x-config default {config_file}")
    wait_for(lambda: _mom_hook(True) and (HOOKS_DIR / f"{HOOK}.CF").exists(), 60,
             "the server to send the hook to the mom")


def enable_hook(on: bool) -> None:
    """Switch the installed hook on or off (qmgr's enabled); returns once the mom has it.

    The mom takes a changed hook at once, while it may keep a deleted execjob_end hook
    that a job's end is running (it acknowledges the deletion all the same).
    """
    qmgr(f"set hook {HOOK} enabled={str(on).lower()}")
    wait_for(lambda: _mom_hook(on), 60, f"the mom to have the hook {'on' if on else 'off'}")


def remove_hook() -> None:
    """No cbatch hook on the server or the mom (one the mom kept is sent and deleted
    again)."""
    if qmgr(f"list hook {HOOK}", check=False).returncode == 0:
        enable_hook(False)
        qmgr(f"delete hook {HOOK}")
    elif not _mom_hook(None):
        qmgr(f"create hook {HOOK} event=execjob_launch")
        qmgr(f"delete hook {HOOK}")
    wait_for(lambda: _mom_hook(None), 60, "the mom to drop the hook")


class Hook:
    """The node's mode (native jobs, or every job through cbatch): the hook installed
    once, then switched on and off only when the mode changes."""

    def __init__(self, config_file: Path) -> None:
        self.config_file = config_file
        self.on: bool | None = None

    def use(self, on: bool) -> None:
        if self.on is None:
            install_hook(self.config_file)
            self.on = True
        if self.on != on:
            enable_hook(on)
            self.on = on


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Job:
    def __init__(self, job_id: str, user: str):
        self.id, self.user = job_id, user
        self.home = Path(pwd.getpwnam(user).pw_dir)

    def status(self) -> dict:
        out = run(f"{PBS_EXEC}/bin/qstat", "-fx", "-F", "json", self.id).stdout
        return json.loads(out)["Jobs"][self.id]

    def wait(self, timeout: float = 60) -> dict:
        return wait_for(lambda: (lambda s: s if s.get("job_state") in ("F", "X") else None)(
            self.status()), timeout, f"job {self.id} to finish")

    def output(self, kind: str = "o") -> str:
        """The delivered .o or .e file."""
        info = self.status()
        path = Path(info["Output_Path" if kind == "o" else "Error_Path"].partition(":")[2])
        wait_for(path.exists, 20, f"{path}")
        return path.read_text()

    def output_now(self, kind: str = "o") -> str:
        """What a running job has written so far (the mom's spool file), "" if nothing."""
        spool = PBS_HOME / "spool" / f"{self.id}.{'OU' if kind == 'o' else 'ER'}"
        try:
            return spool.read_text()
        except OSError:
            return ""


def submit(user: str, script: str | None, *args: str, workdir: Path) -> Job:
    """qsub as the user from workdir; the script on stdin (None: only args)."""
    out = run(f"{PBS_EXEC}/bin/qsub", *args, user=user, input=script, cwd=workdir).stdout
    return Job(out.strip(), user)


def accounting(job_id: str) -> dict[str, str]:
    """The E record of a job in today's accounting log: its key=value fields."""
    for path in sorted((PBS_HOME / "server_priv" / "accounting").glob("*"), reverse=True):
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split(";", 3)
            if len(parts) == 4 and parts[1] == "E" and parts[2] == job_id:
                return dict(re.findall(r"(\S+?)=(\S+)", parts[3]))
    return {}


class CbatchNode:
    """A cbatchd serving OpenPBS on the tier's own socket."""

    def __init__(self, images: dict[str, str], default: str, extra: dict | None = None):
        self.root = Path(tempfile.mkdtemp(prefix="cbatch-openpbs-"))
        os.chmod(self.root, 0o755)
        self.config_path = self.root / "cbatch.yaml"
        self.log_path = self.root / "cbatchd.log"
        self.settings: dict = {
            "batch": {"system": "openpbs", "clients": [str(PBS_EXEC / "bin" / "pbsdsh")]},
            "openpbs": {"home": str(PBS_HOME)},
            "socket": {"path": str(SOCKET)},
            "images": {"default": default,
                       "aliases": {alias: {"ref": ref} for alias, ref in images.items()}},
            "logging": {"format": "json"},
        }
        for key, value in (extra or {}).items():
            self.settings.setdefault(key, {}).update(value)
        self.config_path.write_text(json.dumps(self.settings, indent=2))
        self.hook_config = self.root / "cbatch_hook.json"
        self.hook_config.write_text(json.dumps({"starter": str(CBATCH_BIN / "cbatch-starter"),
                                                "socket": str(SOCKET)}))
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        SOCKET.parent.mkdir(parents=True, exist_ok=True)
        SOCKET.unlink(missing_ok=True)
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen([str(CBATCH_BIN / "cbatchd"), "--config",
                                          str(self.config_path)], stdout=log, stderr=log,
                                         start_new_session=True, cwd="/")
        wait_for(SOCKET.exists, 20, "cbatchd's socket")

    def kill(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=15)

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines()
                if line.startswith("{")]

    def events(self, name: str, **match: object) -> list[dict]:
        return [r for r in self.records() if r.get("event") == name
                and all(r.get(k) == v for k, v in match.items())]

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def Terminal(user: str, *args: str) -> QsubTerminal:
    """`qsub -I` on a pseudo-terminal, as a user at a login runs it."""
    return QsubTerminal(PBS_EXEC / "bin" / "qsub", user, ENV, *args)


