"""A job's #CBATCH lines for its sister nodes, from the mother superior's cbatchd.

Torque gives the job script to the mother superior only; a TM task (pbsdsh, mpiexec) on a
sister must still run in the image the job chose. So each cbatchd answers, on a TCP port,
"what is job J's leading comment block?" (where #CBATCH lines are) for the jobs whose script it holds, and a sister asks the
mother superior named first in its own record's exec_host. The sister's policy then
decides on those lines as for any job.

Trust is Torque's own (and rsh's): both ends use privileged ports, so only root on a node
can ask or answer; the asker's address must be one of the job's own nodes; the answer
carries only the directive lines and the script owner's uid, which must be the task's.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import threading
from pathlib import Path
from typing import Callable


PORT = 1019  # privileged: only root on a node can listen here
MAX_LINE = 512
MAX_SCAN_BYTES = 256 * 1024  # of the script, for its leading comment block
TIMEOUT_S = 5.0
_JOB_ID = re.compile(r"^[0-9]+(\[[0-9]*\])?(\.[A-Za-z0-9_-][A-Za-z0-9_.-]*)?$")


class SisterError(Exception):
    """The mother superior could not be asked, or would not answer."""


def find_script(jobs_dir: Path, prefix: str) -> Path | None:
    """The job's .SC on this node: <prefix>.SC, or <prefix><port>.SC on a multi-mom node."""
    return find_job_file(jobs_dir, prefix, ".SC")


def find_job_file(jobs_dir: Path, prefix: str, suffix: str) -> Path | None:
    """pbs_mom's <prefix><suffix>, or <prefix><manager port><suffix> on a multi-mom node."""
    exact = jobs_dir / f"{prefix}{suffix}"
    if os.path.lexists(exact):
        return exact
    pattern = re.compile(re.escape(prefix) + r"[0-9]+" + re.escape(suffix) + "$")
    try:
        names = sorted(e.name for e in os.scandir(jobs_dir) if pattern.match(e.name))
    except OSError:
        return None
    return jobs_dir / names[0] if names else None


def leading_block(text: str) -> str:
    """The script's leading comment block, where directives are read (what a sister
    needs: its lines keep their numbers, and no command of the script leaves the node)."""
    block = []
    for line in text.splitlines():
        if line.strip() and not line.strip().startswith("#"):
            break
        block.append(line + "\n")
    return "".join(block)


class Server:
    """Answers sisters' questions about the jobs whose scripts this node holds."""

    def __init__(self, jobs_dir: Path, nodes_of: Callable[[str], list[str]], log,
                 port: int = PORT, address: str = "") -> None:
        self.jobs_dir = jobs_dir
        self.nodes_of = nodes_of  # job id -> the job's node names (its exec_host)
        self.log = log
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, port))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True, name="sisters")

    def start(self) -> "Server":
        self._thread.start()
        return self

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, (host, port) = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn, host, port), daemon=True,
                             name="sister").start()

    def _answer(self, conn: socket.socket, host: str, port: int) -> None:
        with conn:
            conn.settimeout(TIMEOUT_S)
            try:
                reply = self._reply(conn, host, port)
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except OSError:
                return

    def _reply(self, conn: socket.socket, host: str, port: int) -> dict:
        if port >= 1024:
            self.log.warning("sister_refused", peer=host, reason="unprivileged port")
            return {"ok": False, "error": "ask from a privileged port"}
        words = _read_line(conn).split()
        if len(words) != 2 or words[0] != "DIRECTIVES" or not _JOB_ID.match(words[1]):
            return {"ok": False, "error": "bad request"}
        job_id = words[1]
        if not _is_node_of(host, self.nodes_of(job_id)):
            self.log.warning("sister_refused", peer=host, job_id=job_id,
                             reason="not one of the job's nodes")
            return {"ok": False, "error": f"{host} is not one of job {job_id}'s nodes"}
        script = find_script(self.jobs_dir, job_id.replace("[", "-").replace("]", ""))
        if script is None:
            return {"ok": False, "error": f"no script of job {job_id} on this node"}
        try:
            fd = os.open(script, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            return {"ok": False, "error": f"cannot open {script.name}: {exc.strerror}"}
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                return {"ok": False, "error": f"{script.name} is not a regular file"}
            text = f.read(MAX_SCAN_BYTES).decode("utf-8", "replace")
        self.log.info("sister_answered", peer=host, job_id=job_id)
        return {"ok": True, "uid": st.st_uid, "directives": leading_block(text)}


def ask(mother: str, job_id: str, port: int = PORT, timeout: float = TIMEOUT_S) -> tuple[int, str]:
    """(the script owner's uid, the job's #CBATCH lines) from the mother superior.

    Raises SisterError when it cannot be asked or does not answer yes.
    """
    try:
        address = socket.getaddrinfo(mother, port, socket.AF_INET, socket.SOCK_STREAM)[0][4]
    except OSError as exc:
        raise SisterError(f"cannot resolve {mother}: {exc}") from exc
    with _privileged_socket() as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(address)
            sock.sendall(f"DIRECTIVES {job_id}\n".encode())
            reply = json.loads(_read_line(sock, limit=1024 * 1024))
        except (OSError, ValueError) as exc:
            raise SisterError(f"{mother}:{port} did not answer ({exc})") from exc
    if not isinstance(reply, dict) or not reply.get("ok"):
        raise SisterError(f"{mother} said: {str(reply.get('error'))[:200]}"
                          if isinstance(reply, dict) else f"{mother} gave no answer")
    if not isinstance(reply.get("uid"), int) or not isinstance(reply.get("directives"), str):
        raise SisterError(f"{mother} gave a malformed answer")
    return reply["uid"], reply["directives"]


def _privileged_socket() -> socket.socket:
    """A TCP socket bound to a free port below 1024 (only root can: that is the proof)."""
    for port in range(1023, 600, -1):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("", port))
            return sock
        except OSError:
            sock.close()
    raise SisterError("no free privileged port to ask from")


def _read_line(conn: socket.socket, limit: int = MAX_LINE) -> str:
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            raise ValueError("line too long")
    return data.split(b"\n", 1)[0].decode("utf-8", "replace")


def _is_node_of(address: str, nodes: list[str]) -> bool:
    for node in nodes:
        try:
            if any(info[4][0] == address
                   for info in socket.getaddrinfo(node, None, socket.AF_INET)):
                return True
        except OSError:
            continue
    return False
