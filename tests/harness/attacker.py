"""A job owner's kit of code that the job's environment (qsub -v) could make run.

Each payload appends "<pid namespace> <program> <how>" to a marker file; lines from the
host's pid namespace would be code run outside the container.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

EVIL_SO = r"""
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static void mark(const char *how) {
    char ns[64] = "", exe[256] = "", line[400];
    if (readlink("/proc/self/ns/pid", ns, sizeof ns - 1) < 0
            || readlink("/proc/self/exe", exe, sizeof exe - 1) < 0)
        return;
    int fd = open(MARKER, O_WRONLY | O_APPEND | O_CREAT, 0666);
    int n = snprintf(line, sizeof line, "%s %s %s\n", ns, exe, how);
    if (fd >= 0 && write(fd, line, (size_t)n) == n)
        close(fd);
}
__attribute__((constructor)) static void loaded(void) { mark("constructor"); }
unsigned int la_version(unsigned int version) { mark("audit"); return version; }
"""
EVIL_PY = ("import os\n"  # os-level calls: under PYTHONHOME it runs before io exists
           "fd = os.open({marker!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)\n"
           "os.write(fd, (os.readlink('/proc/self/ns/pid') + ' python ' + __name__ + '\\n').encode())\n")


def build(user: pwd.struct_passwd) -> dict:
    """The user's own attack kit in their home, as a job owner could leave it."""
    home = Path(user.pw_dir)
    kit = home / "evil"
    marker = kit / "marker"
    shutil.rmtree(kit, ignore_errors=True)
    (kit / "lib").mkdir(parents=True)
    (kit / "evil.c").write_text(EVIL_SO)
    subprocess.run(["cc", "-shared", "-fPIC", f'-DMARKER="{marker}"', "-o",
                    str(kit / "lib" / "libevil.so"), str(kit / "evil.c")], check=True)
    payload = EVIL_PY.format(marker=str(marker))
    py = kit / "py"  # PYTHONPATH: modules an interpreted starter would import first
    for name in ("sitecustomize.py", "usercustomize.py", "selectors.py", "cbatch/__init__.py"):
        (py / name).parent.mkdir(parents=True, exist_ok=True)
        (py / name).write_text(payload)
    stdlib = Path(f"/usr/lib/python{sys.version_info.major}.{sys.version_info.minor}")
    pyhome = kit / "home" / "lib" / stdlib.name  # PYTHONHOME: the stdlib, its encodings replaced
    (pyhome / "encodings").mkdir(parents=True)
    for entry in stdlib.iterdir():
        if entry.name != "encodings":
            (pyhome / entry.name).symlink_to(entry)
    for entry in (stdlib / "encodings").iterdir():
        if entry.name != "__init__.py":
            (pyhome / "encodings" / entry.name).symlink_to(entry)
    (pyhome / "encodings" / "__init__.py").write_text(payload)
    usersite = home / ".local" / "lib" / stdlib.name / "site-packages"
    usersite.mkdir(parents=True, exist_ok=True)
    for path in (kit, *kit.rglob("*"), home / ".local", *(home / ".local").rglob("*")):
        os.lchown(path, user.pw_uid, user.pw_gid)
    return {"marker": marker, "kit": kit, "usersite": usersite, "payload": payload}


def remove(user: pwd.struct_passwd) -> None:
    home = Path(user.pw_dir)
    shutil.rmtree(home / "evil", ignore_errors=True)
    shutil.rmtree(home / ".local", ignore_errors=True)


VECTORS = {  # name: (job environment, a dynamically linked or interpreted program it hijacks)
    "PYTHONPATH": ({"PYTHONPATH": "{kit}/py"}, "/usr/bin/python3"),
    "PYTHONHOME": ({"PYTHONHOME": "{kit}/home"}, "/usr/bin/python3"),
    "usercustomize": ({}, "/usr/bin/python3"),
    "LD_PRELOAD": ({"LD_PRELOAD": "{kit}/lib/libevil.so"}, "/bin/true"),
    "LD_LIBRARY_PATH": ({"LD_LIBRARY_PATH": "{kit}/lib", "LD_PRELOAD": "libevil.so"}, "/bin/true"),
    "LD_AUDIT": ({"LD_AUDIT": "{kit}/lib/libevil.so"}, "/bin/true"),
}


def host_marks(marker: Path) -> list[str]:
    host = os.readlink("/proc/self/ns/pid")
    lines = marker.read_text().splitlines() if marker.exists() else []
    return [line for line in lines if line.split(" ")[0] == host]


def fires_on_host(kit: dict, user: pwd.struct_passwd, env: dict[str, str], program: str) -> bool:
    """Does this environment make `program` (of the kind the starter once was) run the
    kit's code on the host? Proves the kit is live before a test relies on it."""
    kit["marker"].unlink(missing_ok=True)
    subprocess.run([program, *(["-c", "pass"] if "python" in program else [])],
                   user=user.pw_uid, group=user.pw_gid, extra_groups=[], cwd=user.pw_dir,
                   capture_output=True, env={"PATH": "/usr/bin:/bin", "HOME": user.pw_dir, **env})
    fired = bool(host_marks(kit["marker"]))
    kit["marker"].unlink(missing_ok=True)
    return fired


def arm(kit: dict, user: pwd.struct_passwd, vector: str) -> dict[str, str]:
    """The job environment for one vector (a user-site usercustomize.py needs none: it is
    written into place instead)."""
    template, _ = VECTORS[vector]
    if vector == "usercustomize":
        path = kit["usersite"] / "usercustomize.py"
        path.write_text(kit["payload"])
        os.chown(path, user.pw_uid, user.pw_gid)
    return {key: value.format(kit=kit["kit"]) for key, value in template.items()}


def disarm(kit: dict) -> None:
    (kit["usersite"] / "usercustomize.py").unlink(missing_ok=True)
