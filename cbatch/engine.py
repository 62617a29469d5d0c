"""The only module that talks to Docker (docker SDK, low-level API client).

Every docker/requests exception is translated here, once, into an EngineError.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from typing import Iterator

import docker
import docker.errors
import requests.exceptions

from cbatch import metrics
from cbatch.errors import ContainerFailed, EngineError, EngineUnavailable, ImageUnavailable
from cbatch.container import LABEL, ContainerSpec

API_VERSION = "1.41"  # Docker 20.10 and later; fixed, so no version round trip per job
# Docker ends an attach when this sequence is typed (default ctrl-p,ctrl-q, which shells
# and editors use); four rarely typed control keys in a row instead.
DETACH_KEYS = "ctrl-^,ctrl-],ctrl-_,ctrl-^"


@contextlib.contextmanager
def _translate(action: str, **fields: object) -> Iterator[None]:
    """Map docker/requests failures to EngineError subclasses (most specific first)."""
    try:
        yield
    except docker.errors.ImageNotFound as exc:
        raise ImageUnavailable(f"the job's image is not available on this node ({action}); "
                               "the job can be requeued elsewhere",
                               docker_error=str(exc), **fields) from exc
    except docker.errors.APIError as exc:
        why = exc.explanation or str(exc)
        if isinstance(why, bytes):
            why = why.decode("utf-8", "replace")
        raise ContainerFailed(f"the job's container could not {action}: {_short(why)}",
                              docker_error=str(exc), status_code=exc.status_code,
                              explanation=_short(why), **fields) from exc
    except (requests.exceptions.ConnectionError, FileNotFoundError,
            ConnectionRefusedError) as exc:
        raise EngineUnavailable("the container engine on this node is not reachable; the "
                                "job can be requeued elsewhere", docker_error=str(exc),
                                **fields) from exc
    except (docker.errors.DockerException, docker.errors.StreamParseError,
            requests.exceptions.RequestException) as exc:  # (StreamParseError: a RuntimeError)
        raise EngineError(f"the container engine failed to {action}",
                          docker_error=str(exc), **fields) from exc


def _short(text: str) -> str:
    """Docker's explanation without the runtime's boilerplate prefix."""
    text = " ".join(str(text).split())
    for marker in ("error during container init: ", "exec: ", "OCI runtime create failed: "):
        if marker in text:
            text = text[text.rindex(marker) + len(marker):]
    return text[:300]


def _one_pool(api: docker.APIClient) -> None:
    """Send every request to a local dockerd through one connection pool.

    docker-py's Unix-socket adapter (5.0 as 7.x) keys its pools by each request's whole
    URL, so every container's own URLs (start, wait, inspect, remove) got a new pool and
    a new connection, each pool built at its full size: nothing was reused from job to
    job. One socket, one pool: idle connections serve the next request, whatever its URL.
    """
    base_url = getattr(api, "base_url", None)  # (a test's autospecced client has none)
    adapter = api.get_adapter(base_url) if base_url else None
    if isinstance(adapter, docker.transport.UnixHTTPAdapter):
        pool = adapter.get_connection(base_url)
        adapter.get_connection = lambda url, proxies=None: pool


class NodeImages:
    """What the node's Docker was found to hold, shared by every Engine of one daemon.

    Pinned refs once seen are immutable, so never re-checked; jobs waiting on the same
    digest share one pull; the cgroup driver is asked once.
    """

    def __init__(self) -> None:
        self.present: set[str] = set()
        self.driver: str | None = None
        self._pull_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def pull_lock(self, ref: str) -> threading.Lock:
        with self._guard:
            return self._pull_locks.setdefault(ref, threading.Lock())


class Engine:
    """A client of dockerd. The daemon makes one and every session, sweep and admin
    request shares it: one connection pool (thread-safe), its connections kept alive
    from job to job. `pool` bounds the connections kept: each running job holds one (its
    blocking wait), so the daemon sizes it to its connection limit.

    `node` is the daemon's NodeImages; an Engine made without one (the admin CLI, a
    test) keeps its own.
    """

    def __init__(self, base_url: str | None = None, timeout: float = 60,
                 node: NodeImages | None = None, pool: int = 4) -> None:
        self.node = node if node is not None else NodeImages()
        with _translate("connect"):
            base_url = base_url or os.environ.get("DOCKER_HOST") or \
                docker.utils.utils.DEFAULT_UNIX_SOCKET
            self.api = docker.APIClient(base_url=base_url,
                                        version=API_VERSION, timeout=timeout, max_pool_size=pool)
        # dockerd is no web proxy's business and has no .netrc: requests would look both
        # up on every call
        self.api.trust_env = False
        _one_pool(self.api)

    def close(self) -> None:
        self.api.close()

    def ping(self) -> None:
        with _translate("answer"):
            self.api.ping()

    def ensure_image(self, ref: str, pull: str) -> None:
        """Make sure the pinned image is present, pulling it once per node if allowed."""
        if ref in self.node.present:
            return  # a create on a since-deleted image still fails cleanly (ImageUnavailable)
        with _translate("find its image", ref=ref):
            try:
                self.api.inspect_image(ref)
                self.node.present.add(ref)
                return
            except docker.errors.ImageNotFound:
                if pull != "missing" or "@" not in ref:
                    raise
            with self.node.pull_lock(ref):  # jobs waiting on the same digest share one pull
                try:
                    self.api.inspect_image(ref)
                except docker.errors.ImageNotFound:
                    repo, _, digest = ref.partition("@")
                    try:
                        self.api.pull(repo, tag=digest)
                    except Exception:
                        metrics.pulled(ok=False)
                        raise
                    metrics.pulled(ok=True)
                self.node.present.add(ref)

    def cgroup_driver(self) -> str:
        """Docker's cgroup driver ("cgroupfs" or "systemd"), asked once per daemon."""
        if self.node.driver is None:
            with _translate("describe itself"):
                self.node.driver = str(self.api.info().get("CgroupDriver", ""))
        return self.node.driver

    def create(self, spec: ContainerSpec) -> str:
        try:
            return self._create(spec)
        except ImageUnavailable:
            self.node.present.discard(spec.create["image"])  # deleted since it was seen
            raise

    def _create(self, spec: ContainerSpec) -> str:
        with _translate("be created", container=spec.name):
            # spec.py wrote mounts and ulimits in the Engine API's own shape: passed on as is
            created = self.api.create_container(
                host_config=self.api.create_host_config(**spec.host_config), **spec.create)
            return created["Id"]

    def attach(self, container_id: str, stdout: bool, stderr: bool,
               stdin: bool = False) -> socket.socket:
        """Attach the streams asked for, before start; never logs=True.

        With stdin (an interactive job's terminal), what is sent on the socket is typed
        into the container's terminal; Docker's detach sequence cannot be switched off,
        so it is set to one nobody types.
        """
        with _translate("be attached", container_id=container_id):
            params = {"stream": 1, "stdout": int(stdout), "stderr": int(stderr)}
            if stdin:
                params.update(stdin=1, detachKeys=DETACH_KEYS)
            raw = self.api.attach_socket(container_id, params=params)
            sock = getattr(raw, "_sock", raw)
            if sock is not raw:
                raw.close()  # drop the file wrapper's reference; sock.close() then frees the fd
            sock.settimeout(None)  # a job may be silent for hours
            return sock

    def resize(self, container_id: str, rows: int, cols: int) -> None:
        """Set the size of a container's terminal (interactive jobs)."""
        with _translate("be resized", container_id=container_id):
            self.api.resize(container_id, height=rows, width=cols)

    def exec_start(self, container_id: str, argv: list[str], user: str, workdir: str,
                   tty: bool) -> tuple[str, socket.socket]:
        """Run argv in a running container as `user` ("uid:gid"): (exec id, its stream).

        Docker gives the process the container's environment, supplementary groups
        (GroupAdd), capabilities and no-new-privileges; never privileged. Without a tty
        the stream is multiplexed as attach's is; shutting its write side ends stdin.
        """
        with _translate("run a command", container_id=container_id):
            created = self.api.exec_create(container_id, argv, stdout=True, stderr=True,
                                           stdin=True, tty=tty, privileged=False, user=user,
                                           workdir=workdir or None)
            raw = self.api.exec_start(created["Id"], tty=tty, socket=True)
            sock = getattr(raw, "_sock", raw)
            if sock is not raw:
                raw.close()
            sock.settimeout(None)
            return created["Id"], sock

    def exec_resize(self, exec_id: str, rows: int, cols: int) -> None:
        with _translate("resize a command's terminal"):
            self.api.exec_resize(exec_id, height=rows, width=cols)

    def exec_status(self, exec_id: str) -> int | None:
        """The command's exit status once it has ended, else None."""
        with _translate("inspect a command"):
            state = self.api.exec_inspect(exec_id)
            return None if state.get("Running") else int(state.get("ExitCode") or 0)

    def start(self, container_id: str) -> None:
        with _translate("start", container_id=container_id):
            self.api.start(container_id)

    def wait(self, container_id: str) -> int:
        """Block until the container exits; its status (128+N for a signal death)."""
        with _translate("be waited for", container_id=container_id):
            return int(self.api.wait(container_id, timeout=None)["StatusCode"])

    def inspect(self, container_id: str) -> dict:
        with _translate("be inspected", container_id=container_id):
            return self.api.inspect_container(container_id)

    def kill(self, container_id: str, signal: int) -> None:
        with _translate("be signalled", container_id=container_id):
            try:
                self.api.kill(container_id, signal=signal)
            except docker.errors.APIError as exc:
                if exc.status_code not in (404, 409):  # already gone or not running
                    raise

    def remove(self, container_id: str) -> None:
        with _translate("be removed", container_id=container_id):
            try:
                self.api.remove_container(container_id, force=True, v=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code != 409 or "already in progress" not in str(exc):
                    raise

    def containers(self, **labels: str) -> list[dict]:
        """All cbatch containers (running or not), optionally narrowed by cbatch.* labels."""
        filters = [LABEL] + [f"{LABEL}.{k}={v}" for k, v in labels.items()]
        with _translate("be listed"):
            return self.api.containers(all=True, filters={"label": filters})

    def find(self, name: str) -> dict | None:
        """The container with exactly this name, if any."""
        with _translate("be found"):
            for c in self.api.containers(all=True, filters={"name": f"^/{name}$"}):
                return c
            return None

    def import_rootfs(self, tar: bytes, repository: str, tag: str) -> str:
        """`docker import` a rootfs tarball; the new image's id (sha256:...)."""
        with _translate("import an image"):
            self.api.import_image_from_data(tar, repository=repository, tag=tag)
            return self.api.inspect_image(f"{repository}:{tag}")["Id"]

    def image_id(self, name: str) -> str | None:
        """The id of a local image, or None when it is absent."""
        with _translate("inspect an image"):
            try:
                return self.api.inspect_image(name)["Id"]
            except docker.errors.ImageNotFound:
                return None

    def images(self) -> list[dict]:
        """Every image on the node (Id, RepoTags, RepoDigests, Size)."""
        with _translate("list images"):
            return self.api.images(all=False)

    def remove_image(self, image: str) -> str | None:
        """Remove an image unless a container uses it; None when done, else Docker's reason."""
        with _translate("remove an image"):
            try:
                self.api.remove_image(image, force=False, noprune=False)
                return None
            except docker.errors.ImageNotFound:
                return None
            except docker.errors.APIError as exc:
                if exc.status_code == 409:  # in use by a container
                    return _short(exc.explanation or str(exc))
                raise
