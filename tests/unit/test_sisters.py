"""A sister asks the mother superior's cbatchd for a job's directives over real sockets."""

import os
import socket

import pytest
import structlog

from cbatch import sisters

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="privileged ports need root")
SCRIPT = "#!/bin/bash\n#PBS -l nodes=2\n#CBATCH image=slc6\n\necho secret-command\n#CBATCH x=1\n"


@pytest.fixture
def jobs(tmp_path):
    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / "42.vm15203.SC").write_text(SCRIPT)  # a multi-mom node names it by port
    os.chown(folder / "42.vm15203.SC", 1234, 1234)
    return folder


@pytest.fixture
def server(jobs):
    nodes = {"42.vm": ["localhost"], "43.vm": ["no-such-node.invalid"]}
    srv = sisters.Server(jobs, lambda job_id: nodes.get(job_id, []),
                         structlog.get_logger("test"), port=0, address="127.0.0.1").start()
    yield srv
    srv.close()


def test_the_leading_block_only_leaves_the_node():
    assert sisters.leading_block(SCRIPT) == "#!/bin/bash\n#PBS -l nodes=2\n#CBATCH image=slc6\n\n"


def test_finds_the_script_by_prefix_with_or_without_a_port(jobs):
    assert sisters.find_script(jobs, "42.vm").name == "42.vm15203.SC"
    assert sisters.find_script(jobs, "4") is None  # 4 is not 42
    (jobs / "4.vm.SC").write_text("x")
    assert sisters.find_script(jobs, "4.vm").name == "4.vm.SC"


@needs_root
def test_a_job_node_asking_from_a_privileged_port_gets_the_block_and_owner(server):
    uid, block = sisters.ask("127.0.0.1", "42.vm", port=server.port)
    assert (uid, block) == (1234, "#!/bin/bash\n#PBS -l nodes=2\n#CBATCH image=slc6\n\n")


@needs_root
def test_refusals(server):
    with pytest.raises(sisters.SisterError, match="not one of job 43.vm's nodes"):
        sisters.ask("127.0.0.1", "43.vm", port=server.port)
    with pytest.raises(sisters.SisterError, match="no script of job 44.vm"):
        server.nodes_of = lambda job_id: ["localhost"]
        sisters.ask("127.0.0.1", "44.vm", port=server.port)


@needs_root
def test_an_unprivileged_port_gets_nothing(server):
    with socket.create_connection(("127.0.0.1", server.port)) as sock:  # an ephemeral port
        sock.sendall(b"DIRECTIVES 42.vm\n")
        assert b"privileged" in sock.recv(4096)
