"""Build a small root filesystem tarball from the host's own binaries (no registry).

Used by `cbatch demo` and the tests: `docker import` of this tar gives a local image
whose id (sha256:...) policy can pin, on a machine that cannot pull.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import tarfile
from pathlib import Path

TOOLS = ("bash", "sh", "cat", "echo", "env", "id", "whoami", "ls", "sleep", "touch", "mkdir",
         "rm", "head", "tail", "dd", "yes", "stat", "true", "false", "grep", "wc", "readlink",
         "kill", "ps", "sed", "pwd", "uname", "date", "hostname", "sync", "chmod", "nproc",
         "tty", "stty")
_LIB = re.compile(r"(/\S+) \(0x")
PROFILE = """\
# /etc/profile of the cbatch demo image
PATH=/usr/local/bin:/usr/bin:/bin
export PATH
"""


def _which(name: str) -> Path | None:
    for folder in ("/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def libraries(binary: Path) -> set[Path]:
    result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    return {Path(m) for m in _LIB.findall(result.stdout)}


def build(release: str = "cbatch-demo", extra_files: dict[str, tuple[bytes, int]] | None = None,
          tools: tuple[str, ...] = TOOLS) -> bytes:
    """A rootfs tar with the given tools and their libraries; /etc/os-release names it.

    extra_files maps an absolute path to (content, mode), e.g. a setuid test binary.
    """
    files: set[Path] = set()
    for name in tools:
        path = _which(name)
        if path is None:
            continue
        files.add(path)
        files |= libraries(path)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dirs = {"/etc": 0o755, "/tmp": 0o1777, "/proc": 0o755, "/sys": 0o755, "/dev": 0o755,
                "/home": 0o755, "/root": 0o700, "/usr": 0o755, "/usr/bin": 0o755,
                "/usr/lib": 0o755, "/usr/lib64": 0o755, "/usr/sbin": 0o755, "/var": 0o755,
                "/var/tmp": 0o1777, "/run": 0o755}
        for folder, mode in dirs.items():
            info = tarfile.TarInfo(folder.lstrip("/"))
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        for link in ("bin", "lib", "lib64", "sbin"):  # usr-merged layout, as on Debian 12
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, f"usr/{link}"
            tar.addfile(info)
        for path in sorted(files):
            real = Path(os.path.realpath(path))
            name = str(_under_usr(path)).lstrip("/")
            data = real.read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), real.stat().st_mode & 0o7777
            tar.addfile(info, io.BytesIO(data))
        content = {
            "/etc/profile": (PROFILE.encode(), 0o644),
            "/etc/os-release": (f'ID={release}\nPRETTY_NAME="{release}"\n'.encode(), 0o644),
            "/etc/nsswitch.conf": (b"passwd: files\ngroup: files\n", 0o644),
        }
        content.update(extra_files or {})
        for name, (data, mode) in content.items():
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _under_usr(path: Path) -> Path:
    """/bin/x -> /usr/bin/x, so files land under the usr-merged symlinks."""
    parts = path.parts
    if len(parts) > 1 and parts[1] in ("bin", "lib", "lib64", "sbin"):
        return Path("/usr", *parts[1:])
    return path
