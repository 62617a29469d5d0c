"""A real cbatchd in a subprocess on a temporary socket, with its log records parsed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from cbatch import momjob


class DaemonUnderTest:
    def __init__(self, images: dict[str, str], default: str, extra: dict | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="cbatch-test-"))
        os.chmod(self.root, 0o755)  # job users must reach the socket and the starter
        self.socket = self.root / "run" / "cbatchd.sock"
        self.torque_home = self.root / "torque"
        self.config_path = self.root / "cbatch.yaml"
        self.log_path = self.root / "cbatchd.log"
        self.starter = str(momjob.install_starter(self.root / "starter"))
        settings = {
            "socket": {"path": str(self.socket)},
            "torque": {"home": str(self.torque_home)},
            "images": {"default": default,
                       "aliases": {alias: {"ref": ref} for alias, ref in images.items()}},
            "logging": {"format": "json"},
        }
        for key, value in (extra or {}).items():
            settings.setdefault(key, {}).update(value) if isinstance(value, dict) else \
                settings.__setitem__(key, value)
        self.write_config(settings)
        self.proc: subprocess.Popen | None = None
        self.env: dict[str, str] = {}

    def write_config(self, settings: dict) -> None:
        self.settings = settings
        self.config_path.write_text(yaml.safe_dump(settings))

    def start(self) -> None:
        self.socket.unlink(missing_ok=True)
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cbatch.daemon", "--config", str(self.config_path)],
            stderr=log, stdout=log, start_new_session=True, env={**os.environ, **self.env})
        log.close()
        deadline = time.monotonic() + 20
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

    def records(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

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
