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
read: Torque's server_name file and, for qsub and qstat, the folder of cbatchd's relay in
front of trqauthd (trqauth.py), which the wrapper links at trqauthd's socket path in the
container's own /tmp. pbsdsh and TM reach the node's pbs_mom over the network: the
container must use the host's network.

Running containers keep mounting the bundle and the relay's folder across daemon
restarts, so neither is ever replaced under them: a restart whose clients are unchanged
reuses the bundle as it is, and the relay's socket is renewed inside its folder.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path

from cbatch import trqauth
from cbatch.container import Bind
from cbatch.errors import NodeIncomplete

BUNDLE_TARGET = Path("/.cbatch-torque")  # where a container sees the bundle (read-only)
RELAY_TARGET = Path("/.cbatch-trqauthd")  # where it sees the relay's folder (read-only)
MANIFEST = ".manifest"
LINKER = Path("/bin/ln")  # the node's, run like a client: an image need not have one
_LIBRARY = re.compile(r"(?:=> )?(/\S+) \(0x")


@dataclasses.dataclass(frozen=True, slots=True)
class Bundle:
    """The gathered clients and what a container mounts to use them."""

    folder: Path
    mounts: tuple[Bind, ...]
    names: tuple[str, ...]


def gather(clients: tuple[Path, ...], folder: Path, torque_home: Path,
           relay: Path | None = None) -> Bundle:
    """The clients and their libraries copied into folder, with the mounts that use them.

    A folder already holding the same files (same names, sizes and times) is reused as
    it is: running containers mount it. Otherwise the new bundle is built beside it and
    takes its name, the old one kept aside as <folder>.previous. relay is the folder of
    the trqauthd relay's socket, if the node runs one.

    Raises OSError or ValueError when a client cannot be bundled (not a dynamically
    linked executable, a library missing): jobs then do not run rather than find half a
    tool.
    """
    sources = {client: _libraries(client) for client in (*clients, LINKER)}
    manifest = "".join(f"{p} {p.stat().st_size} {p.stat().st_mtime_ns}\n"
                       for client, libraries in sources.items() for p in (client, *libraries))
    try:
        current = (folder / MANIFEST).read_text() == manifest
    except OSError:
        current = False
    if not current:
        staging = folder.with_name(f"{folder.name}.new")
        if staging.exists():
            shutil.rmtree(staging)
        _build(sources, staging)
        (staging / MANIFEST).write_text(manifest)
        if folder.exists():
            previous = folder.with_name(f"{folder.name}.previous")
            if previous.exists():
                shutil.rmtree(previous)
            folder.rename(previous)
        staging.rename(folder)
    mounts = [Bind(folder, BUNDLE_TARGET, True)]
    mounts += [Bind(folder / "bin" / client.name, client, True) for client in clients]
    server_name = torque_home / "server_name"
    if server_name.is_file():
        mounts.append(Bind(server_name, server_name, True))
    if relay is not None:
        mounts.append(Bind(relay, RELAY_TARGET, True))
    return Bundle(folder, tuple(mounts), tuple(c.name for c in clients))


def _build(sources: dict[Path, list[Path]], folder: Path) -> None:
    (folder / "lib").mkdir(parents=True)
    (folder / "libexec").mkdir()
    (folder / "bin").mkdir()
    loader = None
    for client, libraries in sources.items():
        for library in libraries:
            shutil.copy2(library, folder / "lib" / library.name)
            if library.name.startswith("ld-linux"):
                loader = library.name
        if loader is None:
            raise ValueError(f"{client} is not a dynamically linked executable")
        shutil.copy2(client, folder / "libexec" / client.name)
    lib = BUNDLE_TARGET / "lib"
    run = f"{lib / loader} --library-path {lib}"
    # trqauthd's socket path in the container's own /tmp leads to the relay's folder
    link = (f"[ -e {trqauth.TRQAUTHD_SOCKET} ] || {run} {BUNDLE_TARGET / 'libexec' / LINKER.name}"
            f" -s {RELAY_TARGET / trqauth.SOCKET_NAME} {trqauth.TRQAUTHD_SOCKET} 2>/dev/null\n")
    for client in sources:
        if client == LINKER:
            continue
        wrapper = folder / "bin" / client.name
        wrapper.write_text(
            "#!/bin/sh\n"
            f"# {client} from the node, with the node's own libraries (cbatch)\n"
            + link +
            f'exec {run} --argv0 "$0" {BUNDLE_TARGET / "libexec" / client.name} "$@"\n')
        wrapper.chmod(0o755)
    for path in folder.rglob("*"):  # libraries are read, the loader and programs run
        library = path.parent.name == "lib" and not path.name.startswith("ld-linux")
        os.chmod(path, 0o644 if library else 0o755)
    os.chmod(folder, 0o755)


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
    # the relay's folder, once the daemon has made it (a relay that could not start is
    # logged; its jobs still run, only their qsub and qstat cannot log in)
    relay = cfg.trqauth_dir if cfg.batch_system == "torque" else None
    relay = relay if relay is not None and relay.is_dir() else None
    key = (cfg.clients, cfg.clients_dir, cfg.pbs_home, relay)
    if key not in _bundles:
        try:
            bundle = gather(cfg.clients, cfg.clients_dir, cfg.pbs_home, relay)
        except (OSError, ValueError) as exc:
            raise NodeIncomplete(f"cbatch could not prepare this node's batch clients for "
                                 f"the job's container ({exc}); the job did not run; it can "
                                 "be requeued; tell your admin") from exc
        _bundles.clear()
        _bundles[key] = bundle
    return _bundles[key].mounts
