"""A worker node without Torque: a real cbatchd on a temporary socket and Torque home.

Shared by `cbatch demo`, the tests and the benchmarks: it writes a policy, uses the
installed starter, starts and stops the daemon, reads its JSON log
records, and makes JobSpecs that cbatch.harness.momsim launches as pbs_mom would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path

from cbatch.harness import momjob, pbstrack
from cbatch.harness.momsim import JobSpec


class LocalNode:
    def __init__(self, images: dict[str, str], default: str, extra: dict | None = None,
                 prefix: str = "cbatch-node-") -> None:
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        os.chmod(self.root, 0o755)  # job users must reach the socket
        self.socket = self.root / "run" / "cbatchd.sock"
        self.torque_home = self.root / "torque"
        self.config_path = self.root / "cbatch.yaml"
        self.log_path = self.root / "cbatchd.log"
        self.starter = str(momjob.installed_starter())  # as pbs_mom runs it
        pbs_track = self.root / "pbs_track"  # behaves as Torque's (harness/pbstrack.py)
        pbs_track.write_text(f"#!/bin/sh\nexec /usr/bin/python3 -I -S {pbstrack.__file__} "
                             f"{self.torque_home} \"$@\"\n")
        os.chmod(pbs_track, 0o755)
        settings: dict = {
            "socket": {"path": str(self.socket)},
            # one node, many daemons at once in the tests: none answers sisters (port 1019)
            "torque": {"home": str(self.torque_home), "pbs_track": str(pbs_track),
                       "sister_port": None},
            "images": {"default": default,
                       "aliases": {alias: {"ref": ref} for alias, ref in images.items()}},
            "logging": {"format": "json"},
        }
        for key, value in (extra or {}).items():
            if isinstance(value, dict):
                settings.setdefault(key, {}).update(value)
            else:
                settings[key] = value
        self.write_config(settings)
        self.proc: subprocess.Popen | None = None
        self.env: dict[str, str] = {}  # extra environment for the daemon (e.g. DOCKER_HOST)

    def write_config(self, settings: dict) -> None:
        self.settings = settings
        self.config_path.write_text(json.dumps(settings, indent=2))  # JSON is YAML

    def start(self, timeout_s: float = 20) -> None:
        self.socket.unlink(missing_ok=True)
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [installed("cbatchd"), "--config", str(self.config_path)],
                stderr=log, stdout=log, start_new_session=True, env={**os.environ, **self.env})
        deadline = time.monotonic() + timeout_s
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"cbatchd did not start:\n{self.log_path.read_text()}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def job_spec(self, user: str, job_id: str, script: str, **kwargs: object) -> JobSpec:
        """A job for this node; the socket reaches the starter as pbs_environment would."""
        mom_env = {"CBATCH_SOCKET": str(self.socket), **kwargs.pop("mom_env", {})}
        kwargs.setdefault("starter", self.starter)
        return JobSpec(user=user, job_id=job_id, torque_home=str(self.torque_home),
                       script=script, mom_env=mom_env, **kwargs)

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines()
                if line.startswith("{")]

    def events(self, name: str) -> list[dict]:
        return [r for r in self.records() if r.get("event") == name]

    def wait_for_event(self, name: str, timeout: float = 15, **match: object) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.events(name):
                if all(record.get(k) == v for k, v in match.items()):
                    return record
            time.sleep(0.05)
        raise AssertionError(f"no {name} {match} in the daemon log:\n{self.log_path.read_text()}")

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def installed(program: str) -> str:
    """The installed program: the Debian package's (/usr/bin), else beside this Python's."""
    path = Path("/usr/bin") / program
    if not os.access(path, os.X_OK):
        path = Path(sysconfig.get_path("scripts")) / program
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{program} is not installed: run scripts/setup-node.sh")
    return str(path)
