"""Create (and remove) non-root test users with a supplementary group."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess


def create(name: str, extra_group: str) -> pwd.struct_passwd:
    subprocess.run(["groupadd", "-f", extra_group], check=True)
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash",
                        "--groups", extra_group, name], check=True)
    return pwd.getpwnam(name)


def remove(name: str, extra_group: str) -> None:
    uid = pwd.getpwnam(name).pw_uid
    for entry in os.scandir("/proc"):  # what the user left running, so userdel succeeds
        try:
            if entry.name.isdigit() and os.stat(entry.path).st_uid == uid:
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue
    subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)
    subprocess.run(["groupdel", extra_group], check=False, capture_output=True)
