"""Orphaned containers (their starter gone) are found by label and removed, verified."""

from cbatch import reconcile
from cbatch.container import Labels


def container(cid, pid="4242", start="777", **extra):
    labels = Labels(job_id=f"{cid}.vm", user="alice", starter_pid=pid,
                    starter_start=start).for_docker()
    return {"Id": cid * 8, "Names": [f"/cbatch-{cid}.vm"], "Labels": labels, **extra}


def test_a_container_whose_starter_lives_is_no_orphan():
    alive = {(4242, 777)}
    found = reconcile.orphans([container("a"), container("b", pid="99")], busy=set(),
                              alive=lambda pid, ticks: (pid, ticks) in alive)
    assert [(o.name, o.job_id, o.user, o.reason) for o in found] == [
        ("cbatch-b.vm", "b.vm", "alice", "starter gone")]


def test_busy_containers_and_a_reused_pid_are_told_apart():
    found = reconcile.orphans([container("a"), container("b", start="1")], busy={"a" * 8},
                              alive=lambda pid, ticks: ticks == 777)
    assert [o.container_id for o in found] == ["b" * 8]


def test_unreadable_labels_make_an_orphan():
    bare = {"Id": "c" * 8, "Labels": {"cbatch": "1", "cbatch.starter_pid": "x"}}
    found = reconcile.orphans([bare], busy=set(), alive=lambda pid, ticks: True)
    assert [(o.name, o.job_id, o.user) for o in found] == [("?", "?", "?")]


class FakeEngine:
    """Lists its containers; removal takes `lag` lists to show, or never (`stuck`)."""

    def __init__(self, containers, stuck=(), lag=0):
        self.listed = {c["Id"]: c for c in containers}
        self.stuck, self.lag, self.removing = set(stuck), lag, {}

    def containers(self):
        for cid in list(self.removing):
            self.removing[cid] -= 1
            if self.removing[cid] < 0 and cid not in self.stuck:
                del self.listed[cid], self.removing[cid]
        return list(self.listed.values())

    def remove(self, cid):
        self.removing[cid] = self.lag


def test_sweep_removes_orphans_and_verifies_by_listing_again():
    engine = FakeEngine([container("a", pid="0"), container("b", pid="0")], stuck={"b" * 8},
                        lag=2)
    removed, failed = reconcile.sweep(engine, settle_s=0.3)
    assert [r.container_id for r in removed] == ["a" * 8] and failed == ["b" * 8]
