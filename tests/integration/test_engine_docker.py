"""engine.py against the real Docker engine (image built locally, never pulled)."""

from __future__ import annotations

import os
import socket
import time

import docker
import pytest

from cbatch import engine, peer, reconcile
from tests.harness import images

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def image():
    api = docker.APIClient(version="1.41")
    ref = images.build(api, "engine")
    yield ref
    for c in api.containers(all=True, filters={"label": "cbatch.job_id=engine-test"}):
        api.remove_container(c["Id"], force=True)
    images.remove(api, "engine")
    api.close()


def create(e: engine.Engine, image: str, cmd: list[str], **labels: str) -> str:
    """A cbatch-labelled container whose "starter" is this test process (alive), so no
    cbatchd's sweep on the machine takes it for an orphan unless the labels say so."""
    hc = e.api.create_host_config(init=True, log_config={"Type": "none", "Config": {}})
    me = {"cbatch.starter_pid": str(os.getpid()),
          "cbatch.starter_start": str(peer.stat(os.getpid()).start_ticks)}
    return e.api.create_container(image, entrypoint=cmd, host_config=hc, labels={
        "cbatch": "1", "cbatch.job_id": "engine-test", **me, **labels})["Id"]


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    return data


def test_output_after_a_silence_longer_than_the_client_timeout_still_arrives(image):
    e = engine.Engine(timeout=1)
    cid = create(e, image, ["/bin/sh", "-c", "sleep 3; echo late"])
    sock = e.attach(cid, stdout=True, stderr=True)
    e.start(cid)
    data = read_all(sock)  # as the session does: no stdin, never half-closed
    assert data.endswith(b"late\n") and data[0] == 1  # stream 1 (stdout) header
    assert e.wait(cid) == 0
    e.remove(cid)
    e.close()


def test_signal_death_is_reported_as_128_plus_n(image):
    e = engine.Engine()
    cid = create(e, image, ["/bin/sleep", "60"])
    e.start(cid)
    time.sleep(0.3)
    e.kill(cid, 15)
    assert e.wait(cid) == 143
    e.remove(cid)
    e.remove(cid)  # removing twice is not an error
    e.close()


def test_sweep_removes_containers_whose_starter_is_gone_and_verifies(image):
    e = engine.Engine()
    dead = create(e, image, ["/bin/sleep", "60"], **{"cbatch.starter_pid": "999999999",
                                                     "cbatch.starter_start": "1"})
    e.start(dead)
    removed, failed = reconcile.sweep(e)
    assert dead in [r.container_id for r in removed] and failed == []
    assert dead not in [c["Id"] for c in e.containers()]
    e.close()


def test_missing_image_is_image_unavailable(image):
    from cbatch.errors import ImageUnavailable
    e = engine.Engine()
    with pytest.raises(ImageUnavailable):
        e.ensure_image("sha256:" + "0" * 64, "never")
    e.close()
