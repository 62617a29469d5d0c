"""OpenPBS's proof: the hook's record of a job, and the .SC named on stdin."""

import json

import pytest

from cbatch.batch import openpbs
from cbatch.errors import NotABatchJob


def record(**facts):
    return json.dumps({"job_id": "7.vm-pbs", "queue": "workq", "owner": "ann", **facts}).encode()


@pytest.mark.parametrize("facts,slots,hosts", [
    ({"exec_host": "vm-pbs/0*2"}, 2, ("vm-pbs",)),
    ({"exec_host": "", "exec_vnode": "(vm-pbs:ncpus=3:mem=1gb)"}, 3, ("vm-pbs",)),
    ({"exec_vnode": "(n2:ncpus=1)+(vm-pbs[0]:ncpus=4)+(vm-pbs[1]:ncpus=2)"}, 6, ("n2", "vm-pbs")),
    ({"exec_host": "n2/0*2+n3/0"}, 1, ("n2", "n3")),  # none here: one slot, and a problem
])
def test_slots_and_hosts_come_from_the_moms_record(facts, slots, hosts):
    found = openpbs.parse(record(**facts), "7.vm-pbs", "vm-pbs")
    assert (found.queue, found.owner, found.slots, found.hosts) == ("workq", "ann", slots, hosts)


@pytest.mark.parametrize("data", [b"not json", record(job_id="8.vm-pbs"), b"[1]"])
def test_a_record_not_this_jobs_grants_nothing(data):
    found = openpbs.parse(data, "7.vm-pbs", "vm-pbs")
    assert (found.queue, found.slots) == ("", 1) and found.problem


def test_a_record_a_user_could_write_is_not_used(tmp_path):
    from cbatch import config
    folder = openpbs.records_dir(tmp_path)
    folder.mkdir(parents=True)
    (folder / "7.vm-pbs.json").write_bytes(record(exec_host="vm-pbs/0*2"))
    (folder / "7.vm-pbs.json").chmod(0o666)
    cfg = config.parse({"batch": {"system": "openpbs"}, "openpbs": {"home": str(tmp_path)}})
    assert "only root may write" in openpbs.record(cfg, "7.vm-pbs").problem


@pytest.mark.parametrize("line", ["/tmp/7.vm-pbs.SC\n", "{jobs}/8.vm-pbs.SC\n",
                                  "{jobs}/../x/7.vm-pbs.SC\n", "{jobs}/7.vm-pbs.SC.x\n"])
def test_stdin_naming_anything_but_this_jobs_script_is_refused(tmp_path, line):
    jobs = openpbs.jobs_dir(tmp_path)
    jobs.mkdir(parents=True)
    with pytest.raises(NotABatchJob, match="stdin does not name this job's script"):
        openpbs._script_path(jobs, line.format(jobs=jobs).encode(), "7.vm-pbs")


def test_an_array_subjobs_script_is_named_as_the_shell_reads_it(tmp_path):
    jobs = openpbs.jobs_dir(tmp_path)
    line = f"{jobs}/11\\[1\\].vm-pbs.SC\n".encode()
    assert openpbs._script_path(jobs, line, "11[1].vm-pbs") == jobs / "11[1].vm-pbs.SC"
