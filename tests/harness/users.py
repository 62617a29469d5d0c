"""Create (and remove) non-root test users with a supplementary group."""

from __future__ import annotations

import pwd
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
    subprocess.run(["pkill", "-KILL", "-u", name], check=False)
    subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)
    subprocess.run(["groupdel", extra_group], check=False, capture_output=True)
