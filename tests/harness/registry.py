"""A private registry on loopback (Debian's docker-registry), for pinned-digest pulls."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

PORT = 5055


class Registry:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="cbatch-registry-"))
        config = self.root / "config.yml"
        config.write_text(f"""version: 0.1
storage:
  filesystem: {{rootdirectory: {self.root / 'data'}}}
  delete: {{enabled: true}}
http:
  addr: 127.0.0.1:{PORT}
""")
        self.log = open(self.root / "registry.log", "w")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(config)],
                                     stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{PORT}/v2/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError((self.root / "registry.log").read_text())
                time.sleep(0.1)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{PORT}"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)
