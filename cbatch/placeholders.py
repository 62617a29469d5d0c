"""Give Docker an open file or folder, not a name: bind it onto a placeholder path.

The daemon bind-mounts /proc/self/fd/N (the object the descriptor holds, whatever its
name has become) onto a placeholder in its own root-only directory, Docker mounts the
placeholder, and the placeholder is unmounted once the container has started (the
container keeps its own mount). Nobody but root can name or swap a placeholder.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

_MS_BIND = 4096
_MS_REC = 16384
_MNT_DETACH = 2
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def mount(fd: int, placeholder: Path, directory: bool = False) -> bool:
    """Bind the object behind fd onto placeholder (made here); False if that failed.

    A folder is bound with what is mounted beneath it, as Docker's own binds are.
    """
    try:
        placeholder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if directory:
            placeholder.mkdir(mode=0o700)
        else:
            os.close(os.open(placeholder, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
    except OSError:
        return False
    flags = _MS_BIND | (_MS_REC if directory else 0)
    if _libc.mount(f"/proc/self/fd/{fd}".encode(), str(placeholder).encode(), None,
                   flags, None) != 0:
        _remove(placeholder)
        return False
    return True


def unmount(placeholder: Path) -> None:
    """Detach and remove one placeholder (the containers keep their own mounts)."""
    _libc.umount2(str(placeholder).encode(), _MNT_DETACH)
    _remove(placeholder)


def clean(run_dir: Path) -> int:
    """Remove the placeholders a previous daemon left behind (at start); how many."""
    count = 0
    for path in run_dir.glob("*") if run_dir.is_dir() else ():
        unmount(path)
        count += 1
    return count


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            path.unlink()
    except OSError:  # gone already, or still busy: the next start tries again
        pass
