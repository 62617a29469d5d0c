"""What Torque itself recorded about a job: its queue and its slots on this node.

pbs_mom keeps each job as XML in mom_priv/jobs/<prefix>.JB (Torque 6's saveJobToXML),
root-owned (Torque 6.1 leaves it 0644). Policy decides on these, never on the job's
environment, which its owner can set (qsub -v PBS_QUEUE=..., PBS_NUM_PPN=...). What cannot
be read safely falls back to what grants least: no queue (rules for every queue) and one slot.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from cbatch.batch import Record, read_root_record

MAX_BYTES = 4 * 1024 * 1024  # a job's record is a few kB; Variable_List can make it more
MAX_SLOTS = 1024
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")  # one exec_host index or range: 3, 0-7


def read(jobs_dir: Path, prefix: str, job_id: str, node: str | None = None) -> Record:
    """The job's queue and slot count from pbs_mom's record of it."""
    data, problem = read_root_record(jobs_dir / f"{prefix}.JB", MAX_BYTES)
    if problem:
        return Record("", 1, problem)
    return parse(data, job_id, node or os.uname().nodename)


def parse(data: bytes, job_id: str, node: str) -> Record:
    """Record from a .JB file's bytes; the file must be this job's."""
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:  # pbs_mom never writes either
        return Record("", 1, "the job record declares a DTD")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        return Record("", 1, f"the job record is not XML: {exc}")
    if root.tag != "job" or (root.findtext("jobid") or "") != job_id:
        return Record("", 1, "the job record is not this job's")
    attributes = root.find("attributes")
    if attributes is None:
        return Record("", 1, "the job record has no attributes")
    # the queue attribute is what pbs_mom puts in PBS_QUEUE
    queue = (attributes.findtext("queue") or "").strip()
    exec_host = attributes.findtext("exec_host") or ""
    slots = slots_on(exec_host, node)
    problem = None if slots else "the job record's exec_host names no slots on this node"
    owner = (attributes.findtext("euser") or "").strip()
    return Record(queue, min(slots, MAX_SLOTS) or 1, problem, owner, hosts_of(exec_host))


def hosts_of(exec_host: str) -> tuple[str, ...]:
    """exec_host's nodes in order, each once: "vm2/0+vm1/0-1+vm2/1" -> (vm2, vm1)."""
    hosts: list[str] = []
    for entry in exec_host.strip().split("+") if exec_host.strip() else []:
        host = entry.partition("/")[0]
        if host and host not in hosts:
            hosts.append(host)
    return tuple(hosts)


def slots_on(exec_host: str, node: str) -> int:
    """Slots exec_host gives this node: "vm/0-1+n2/0,3" -> 2 on vm; 0 if none or malformed.

    A job on one host is on this node whatever the host is called (pbs_mom's name for
    itself may differ from uname's); otherwise the host must match, short names compared.
    """
    counts: dict[str, int] = {}
    for entry in exec_host.strip().split("+") if exec_host.strip() else []:
        host, sep, indexes = entry.partition("/")
        if not sep or not host:
            return 0
        for part in indexes.split(","):
            match = _RANGE.match(part)
            if not match:
                return 0
            first, last = int(match[1]), int(match[2] or match[1])
            if last < first:
                return 0
            counts[host] = counts.get(host, 0) + last - first + 1
    if len(counts) == 1:
        return next(iter(counts.values()))
    short = node.split(".")[0]
    return sum(n for host, n in counts.items() if host.split(".")[0] == short)
