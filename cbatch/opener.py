"""Open a host path once, step by step, as the job's own uid would reach it.

A name checked by the daemon and resolved again later by Docker can be swapped in
between (a rename loop with a symlink). So each step is opened with O_PATH|O_NOFOLLOW
from the previous step's descriptor, starting at "/"; search permission is checked on
each folder's descriptor against the job's uid and groups (mode bits and POSIX ACLs);
and the caller mounts the final descriptor (placeholders.py), never the name.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
import struct
from pathlib import Path

_STEP = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINKS = 40  # as the kernel's ELOOP bound
# POSIX ACL xattr: a little-endian u32 version, then (u16 tag, u16 perm, u32 id) entries
_ACL_XATTR = "system.posix_acl_access"
_ACL_ENTRY = struct.Struct("<HHI")
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_SEARCH = 1  # the x bit


@dataclasses.dataclass(frozen=True, slots=True)
class Who:
    """The credentials a path is opened for: the job's uid, primary gid and groups."""

    uid: int
    gids: tuple[int, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Opened:
    fd: int  # O_PATH descriptor of the object; the caller closes it
    path: Path  # where the walk found it, symlinks resolved
    st: os.stat_result


class Unreachable(Exception):
    """The path cannot be opened as the job's uid; `missing` when it does not exist."""

    def __init__(self, path: str, reason: str, missing: bool = False) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason, self.missing = path, reason, missing


def reach(path: str | Path, who: Who, directory: bool, follow: bool = False) -> Opened:
    """Open path (a folder when `directory`, else a regular file) as `who` would.

    With follow=False any symlink or '..' on the way is refused (the job's own names
    need neither); with follow=True they are resolved here, step by step, each step
    checked as the job's uid (for admin-made links such as /home -> /export/home).

    Raises:
        Unreachable: missing, a symlink or '..' not followed, a folder `who` may not
            search, or the wrong kind of object.
    """
    text = str(path)
    if not text.startswith("/"):
        raise Unreachable(text, "not an absolute path")
    pending = _parts(text)
    stack = [(os.open("/", _STEP | os.O_DIRECTORY), Path("/"))]
    found: tuple[int, Path] | None = None
    links = 0
    try:
        while pending:
            part = pending.pop()
            fd, where = stack[-1]
            if part == "..":
                if not follow:
                    raise Unreachable(text, "'..' in the path")
                if len(stack) > 1:
                    os.close(stack.pop()[0])
                continue
            if not may_search(fd, os.fstat(fd), who):
                raise Unreachable(text, f"{where} is closed to uid {who.uid}")
            child = _step(fd, part, text)
            st = os.fstat(child)
            if stat.S_ISLNK(st.st_mode):
                try:
                    target = os.readlink("", dir_fd=child)  # this very link, not the name
                finally:
                    os.close(child)
                links += 1
                if not follow or links > _MAX_LINKS:
                    raise Unreachable(text, f"{where / part} is a symbolic link")
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop()[0])
                pending += _parts(target)
            elif stat.S_ISDIR(st.st_mode):
                stack.append((child, where / part))
            elif pending:
                os.close(child)
                raise Unreachable(text, f"{where / part} is not a folder")
            else:
                found = (child, where / part)
        if found is None:
            found = stack.pop()
        st = os.fstat(found[0])
        if directory != stat.S_ISDIR(st.st_mode) or not (directory or stat.S_ISREG(st.st_mode)):
            os.close(found[0])
            raise Unreachable(text, "not a folder" if directory else "not a regular file")
        return Opened(found[0], found[1], st)
    finally:
        for fd, _ in stack:
            os.close(fd)


def may_search(fd: int, st: os.stat_result, who: Who) -> bool:
    """May `who` pass through this folder (x permission), as the kernel would decide?"""
    if who.uid == 0:
        return True
    try:
        acl = os.getxattr(f"/proc/self/fd/{fd}", _ACL_XATTR)
    except OSError as exc:
        if exc.errno not in (errno.ENODATA, errno.EOPNOTSUPP, errno.ENOTSUP):
            return False
        acl = b""
    if len(acl) > 4:
        return _acl_allows(acl, st, who, _SEARCH)
    if st.st_uid == who.uid:
        return bool(st.st_mode >> 6 & _SEARCH)
    if st.st_gid in who.gids:
        return bool(st.st_mode >> 3 & _SEARCH)
    return bool(st.st_mode & _SEARCH)


def _acl_allows(raw: bytes, st: os.stat_result, who: Who, want: int) -> bool:
    """The kernel's posix_acl_permission: owner, named user, groups (masked), other."""
    entries = [_ACL_ENTRY.unpack_from(raw, off) for off in range(4, len(raw) - 7, 8)]
    mask = next((perm for tag, perm, _ in entries if tag == _MASK), 7)
    group_matched = False
    for tag, perm, ident in entries:
        if tag == _USER_OBJ and st.st_uid == who.uid:
            return perm & want == want
        if tag == _USER and ident == who.uid:
            return perm & mask & want == want
    for tag, perm, ident in entries:
        if (tag == _GROUP_OBJ and st.st_gid in who.gids) or (tag == _GROUP and ident in who.gids):
            group_matched = True
            if perm & mask & want == want:
                return True
    if group_matched:
        return False
    return any(tag == _OTHER and perm & want == want for tag, perm, _ in entries)


def _parts(path: str) -> list[str]:
    """Components of path as a stack (next one last), without empty parts and '.'."""
    return [p for p in reversed(path.split("/")) if p not in ("", ".")]


def _step(dirfd: int, name: str, whole: str) -> int:
    """Open one component without following it. A folder is opened as one (so an
    automount point on the way is triggered, as the job's own access would); anything
    else (a symlink, a file) is then opened to be looked at."""
    try:
        return os.open(name, _STEP | os.O_DIRECTORY, dir_fd=dirfd)
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise _unreachable(whole, name, exc) from None
    try:
        return os.open(name, _STEP, dir_fd=dirfd)
    except OSError as exc:
        raise _unreachable(whole, name, exc) from None


def _unreachable(whole: str, name: str, exc: OSError) -> Unreachable:
    if exc.errno == errno.ENOENT:
        return Unreachable(whole, f"no {name} there", missing=True)
    return Unreachable(whole, f"{name}: {exc.strerror or exc}")
