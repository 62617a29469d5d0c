"""The node's Torque clients bundled for containers: the loader, the libraries, wrappers."""

import os
import subprocess
from pathlib import Path

import pytest

from cbatch import clients, config
from cbatch.errors import NodeIncomplete

TRUE = Path("/usr/bin/true")  # any dynamically linked host program stands in for pbsdsh


def test_a_client_comes_with_its_loader_and_libraries(tmp_path):
    bundle = clients.gather((TRUE,), tmp_path / "bundle", tmp_path)
    lib = {p.name for p in (tmp_path / "bundle" / "lib").iterdir()}
    assert "libc.so.6" in lib and any(name.startswith("ld-linux") for name in lib)
    assert os.access(tmp_path / "bundle" / "lib" / next(n for n in lib if n.startswith("ld-")),
                     os.X_OK)
    wrapper = (tmp_path / "bundle" / "bin" / "true").read_text()
    assert "--library-path /.cbatch-torque/lib" in wrapper
    assert "/.cbatch-torque/libexec/true" in wrapper
    targets = {str(b.target): b.read_only for b in bundle.mounts}
    assert targets["/.cbatch-torque"] is True and targets["/usr/bin/true"] is True


def test_the_wrapper_runs_the_client_through_the_bundle(tmp_path):
    """As in a container: the bundle at its target, the client through its own loader."""
    bundle = clients.gather((TRUE,), tmp_path / "b", tmp_path)
    lib = bundle.folder / "lib"
    loader = next(p for p in lib.iterdir() if p.name.startswith("ld-linux"))
    done = subprocess.run([str(loader), "--library-path", str(lib), "--argv0", "true",
                           str(bundle.folder / "libexec" / "true")])
    assert done.returncode == 0


def test_a_client_that_cannot_be_bundled_is_a_node_failure(tmp_path):
    cfg = config.parse({"torque": {"clients": [str(tmp_path / "no-such-program")]},
                        "socket": {"path": str(tmp_path / "run" / "cbatchd.sock")}})
    with pytest.raises(NodeIncomplete, match="batch clients"):
        clients.binds(cfg)
    assert clients.binds(config.parse({})) == ()


def test_a_restart_reuses_an_unchanged_bundle_and_sets_a_changed_one_aside(tmp_path):
    """Running containers mount the bundle: it is never emptied under them."""
    first = clients.gather((TRUE,), tmp_path / "b", tmp_path)
    inode = os.stat(first.folder).st_ino
    clients.gather((TRUE,), tmp_path / "b", tmp_path)
    assert os.stat(tmp_path / "b").st_ino == inode
    clients.gather((TRUE, Path("/usr/bin/env")), tmp_path / "b", tmp_path)
    assert os.stat(tmp_path / "b").st_ino != inode
    assert os.stat(tmp_path / "b.previous").st_ino == inode
    assert (tmp_path / "b.previous" / "bin" / "true").exists()


def test_wrappers_lead_trqauthds_socket_to_the_relay_with_the_nodes_ln(tmp_path):
    bundle = clients.gather((TRUE,), tmp_path / "b", tmp_path, relay=tmp_path / "relay")
    wrapper = (bundle.folder / "bin" / "true").read_text()
    assert ("/.cbatch-torque/libexec/ln -s /.cbatch-trqauthd/trqauthd-unix /tmp/trqauthd-unix"
            in wrapper)
    assert (bundle.folder / "libexec" / "ln").exists()  # not the image's: it may have none
    targets = {str(b.target): (str(b.source), b.read_only) for b in bundle.mounts}
    assert targets["/.cbatch-trqauthd"] == (str(tmp_path / "relay"), True)
