"""Drive jobs launched by cbatch.harness.momsim from a test, the demo or a benchmark.

MomJob starts `python -m cbatch.harness.momsim` (which plays pbs_mom), sends it qdel/qsig
commands and reads Torque's exit_status and the job's output files. installed_starter finds
the cbatch-starter that pbs_mom would run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

from cbatch.harness.momsim import JobSpec, stage

STARTER = "cbatch-starter"


def installed_starter() -> Path:
    """The installed cbatch-starter (a static executable every job user can run).

    The Debian package's first, then beside this Python's console scripts, then on PATH.
    """
    for candidate in (Path("/usr/bin") / STARTER, Path(sysconfig.get_path("scripts")) / STARTER,
                      shutil.which(STARTER)):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise FileNotFoundError(f"{STARTER} is not installed; run scripts/setup-node.sh")


class MomJob:
    """A job started through `python -m cbatch.harness.momsim`, driven from a test or the demo."""

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self.paths = stage(spec)
        self.proc = subprocess.Popen([sys.executable, "-m", "cbatch.harness.momsim",
                                      json.dumps(dataclasses.asdict(spec))],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.starter_pid = json.loads(self.proc.stdout.readline())["starter_pid"]

    def command(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def qdel(self, kill_delay_s: float = 2.0) -> None:
        self.command(f"qdel {kill_delay_s}")

    def signal(self, signum: int) -> None:
        self.command(f"signal {int(signum)}")

    def type(self, keys: str) -> None:
        """Type on an interactive job's terminal (as its owner would in qsub -I)."""
        self.command("type " + json.dumps(keys))

    def resize(self, rows: int, cols: int) -> None:
        """Resize an interactive job's terminal (the owner's window)."""
        self.command(f"winsize {rows} {cols}")

    def wait(self, timeout: float = 120) -> int:
        """Torque's exit_status for the job."""
        line = self._readline(timeout)
        self.proc.wait(timeout=10)
        self._close_pipes()
        result = json.loads(line)
        self.starter_s = result["starter_s"]  # fork of the job's process to its reaping
        return result["exit_status"]

    def _close_pipes(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass

    def _readline(self, timeout: float) -> str:
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(timeout)
        if not result or not result[0]:
            self.proc.kill()
            raise TimeoutError(f"job {self.spec.job_id} did not end within {timeout} s")
        return result[0]

    def wait_for_output(self, text: str, timeout: float = 30) -> None:
        """Block until the job's .OU holds `text` (the job reached a known point)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if text in self.paths["out"].read_text(errors="replace"):
                    return
            except FileNotFoundError:
                pass  # pbs_mom's child has not opened it yet
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise TimeoutError(f"job {self.spec.job_id} did not print {text!r}")
            time.sleep(0.05)

    def output(self) -> tuple[str, str]:
        """The job's .OU and .ER contents (as Torque would deliver them); for an
        interactive job, what its terminal showed, and no .ER."""
        out = self.paths["out"].read_text(errors="replace")
        err = ("" if self.spec.join or self.spec.interactive
               else self.paths["err"].read_text(errors="replace"))
        return out, err

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_pipes()
        for key in ("script", "nodefile", "out", "err"):
            self.paths[key].unlink(missing_ok=True)
        shutil.rmtree(self.paths["tmpdir"], ignore_errors=True)
