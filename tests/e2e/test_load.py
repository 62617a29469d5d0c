"""200 jobs at once on a 2-core node: each completes or fails cleanly; the daemon recovers."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import pytest

from cbatch.harness import momjob
from tests.e2e.conftest import job_spec

pytestmark = [pytest.mark.docker, pytest.mark.harness]
JOBS = 200


def status_of(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def test_two_hundred_jobs_at_once(fresh_daemon, run):
    d = fresh_daemon
    d.start()
    assert run("#!/bin/bash\necho warm\n", d=d).out == "warm\n"
    idle = status_of(d.proc.pid)
    specs = [job_spec(d, f"#!/bin/bash\necho job {n}\necho err {n} >&2\nsleep 2\nexit {n % 7}\n")
             for n in range(JOBS)]

    def one(spec):
        job = momjob.MomJob(spec)
        try:
            return job.wait(600), *job.output()
        finally:
            job.cleanup()

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=JOBS) as pool:
        results = list(pool.map(one, specs))
    elapsed = time.monotonic() - started
    completed = failed = 0
    for n, (status, out, err) in enumerate(results):
        if status == n % 7 and out == f"job {n}\n" and err == f"err {n}\n":
            completed += 1
        else:  # a clean failure: nothing ran, one cbatch: line, a documented code
            assert status in (125, 126) and out == "" and err.startswith("cbatch: "), (n, status, out, err)
            assert err.count("\n") == 1
            failed += 1
    print(f"\n{JOBS} jobs: {completed} completed, {failed} failed cleanly in {elapsed:.1f} s")
    assert completed >= JOBS * 0.95
    deadline = time.monotonic() + 30
    while int(status_of(d.proc.pid)["Threads"]) > int(idle["Threads"]):
        assert time.monotonic() < deadline, "daemon threads did not return to idle"
        time.sleep(0.5)
    rss_idle = int(idle["VmRSS"].split()[0])
    rss_after = int(status_of(d.proc.pid)["VmRSS"].split()[0])
    print(f"daemon RSS idle {rss_idle} kB, after {rss_after} kB; threads {idle['Threads']}")
    assert rss_after < rss_idle + 40 * 1024, "daemon memory did not settle"
