"""Torque's own clients (pbsdsh, qsub, qstat...) inside every job's container.

Job scripts call them natively: pbsdsh to start tasks on the job's nodes, qsub to submit
their successor, qstat to look. An image is not the host, and an old one (SLC6) has an
older C library than the host's clients were linked against. So the daemon gathers, once
at start, each named client with every library it loads, the host's dynamic loader
included, into a bundle of its own; in the container a small wrapper at the client's host
path runs it through that loader and those libraries, whatever the image carries:

    /usr/local/bin/pbsdsh  ->  <bundle>/lib/ld-linux-x86-64.so.2 --library-path <bundle>/lib
                               --argv0 pbsdsh <bundle>/libexec/pbsdsh "$@"

The wrapper needs the image's /bin/sh. Besides the clients, a container gets what they
read: Torque's server_name file and trqauthd's socket (for qsub, qstat). pbsdsh and TM
reach the node's pbs_mom over the network: the container must use the host's network.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path

from cbatch.container import Bind
from cbatch.errors import NodeIncomplete

BUNDLE_TARGET = Path("/.cbatch-torque")  # where a container sees the bundle (read-only)
TRQAUTHD_SOCKET = Path("/tmp/trqauthd-unix")  # Torque 6's default
_LIBRARY = re.compile(r"(?:=> )?(/\S+) \(0x")


@dataclasses.dataclass(frozen=True, slots=True)
class Bundle:
    """The gathered clients and what a container mounts to use them."""

    folder: Path
    mounts: tuple[Bind, ...]
    names: tuple[str, ...]


def gather(clients: tuple[Path, ...], folder: Path, torque_home: Path) -> Bundle:
    """Copy the clients and their libraries into folder (replacing what was there).

    Raises OSError or ValueError when a client cannot be bundled (not a dynamically
    linked executable, a library missing): the daemon then refuses to start, rather
    than jobs finding half a tool.
    """
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "lib").mkdir(parents=True)
    (folder / "libexec").mkdir()
    (folder / "bin").mkdir()
    loader = None
    mounts = []
    for client in clients:
        libraries = _libraries(client)
        for library in libraries:
            shutil.copy2(library, folder / "lib" / library.name)
            if library.name.startswith("ld-linux"):
                loader = library.name
        if loader is None:
            raise ValueError(f"{client} is not a dynamically linked executable")
        shutil.copy2(client, folder / "libexec" / client.name)
        wrapper = folder / "bin" / client.name
        lib = BUNDLE_TARGET / "lib"
        wrapper.write_text(
            "#!/bin/sh\n"
            f"# {client} from the node, with the node's own libraries (cbatch)\n"
            f'exec {lib / loader} --library-path {lib} --argv0 "$0" '
            f'{BUNDLE_TARGET / "libexec" / client.name} "$@"\n')
        wrapper.chmod(0o755)
        mounts.append(Bind(wrapper, client, True))
    for path in folder.rglob("*"):  # libraries are read, the loader and programs run
        library = path.parent.name == "lib" and not path.name.startswith("ld-linux")
        os.chmod(path, 0o644 if library else 0o755)
    os.chmod(folder, 0o755)
    mounts.insert(0, Bind(folder, BUNDLE_TARGET, True))
    server_name = torque_home / "server_name"
    if server_name.is_file():
        mounts.append(Bind(server_name, server_name, True))
    if TRQAUTHD_SOCKET.exists():
        mounts.append(Bind(TRQAUTHD_SOCKET, TRQAUTHD_SOCKET, False))
    return Bundle(folder, tuple(mounts), tuple(c.name for c in clients))


def _libraries(binary: Path) -> list[Path]:
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise ValueError(f"{binary} is not an executable file")
    done = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", "LANG": "C"})
    if "not found" in done.stdout:
        missing = [line.split()[0] for line in done.stdout.splitlines() if "not found" in line]
        raise ValueError(f"{binary} needs libraries this node lacks: {', '.join(missing)}")
    return [Path(p) for p in _LIBRARY.findall(done.stdout)]  # copied under these names


_bundles: dict[tuple, Bundle] = {}


def binds(cfg) -> tuple[Bind, ...]:
    """What a container mounts for the policy's `batch.clients` (gathered once per list).

    Raises NodeIncomplete when the clients cannot be bundled: the job does not run.
    """
    if not cfg.clients:
        return ()
    key = (cfg.clients, cfg.clients_dir, cfg.pbs_home)
    if key not in _bundles:
        try:
            bundle = gather(cfg.clients, cfg.clients_dir, cfg.pbs_home)
        except (OSError, ValueError) as exc:
            raise NodeIncomplete(f"cbatch could not prepare this node's batch clients for "
                                 f"the job's container ({exc}); the job did not run; it can "
                                 "be requeued; tell your admin") from exc
        _bundles.clear()
        _bundles[key] = bundle
    return _bundles[key].mounts
