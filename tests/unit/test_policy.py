import pytest

from cbatch import config, policy
from cbatch.directives import Directives
from cbatch.errors import PolicyDenied

D = "sha256:" + "b" * 64
CFG = config.parse({
    "images": {"default": "el9", "aliases": {
        "el9": {"ref": D},
        "slc6": {"ref": "reg/slc6@" + D, "groups": ["atlas"]},
        "legacy": {"ref": D, "queues": ["old"]},
        "mine": {"ref": D, "users": ["alice"]},
    }},
    "mounts": [{"path": "/cvmfs"}, {"path": "/data/atlas", "read_only": False, "groups": ["atlas"]}],
})


def decide(image=None, user="bob", groups=(), queue="batch"):
    return policy.decide(CFG, user, frozenset(groups), queue, Directives(image, 3 if image else None))


def test_no_directive_gets_the_default_image():
    assert decide().image.alias == "el9"


@pytest.mark.parametrize("image,user,groups,queue", [
    ("slc6", "bob", ["atlas"], "batch"),
    ("legacy", "bob", [], "old"),
    ("mine", "alice", [], "batch"),
    ("el9", "bob", [], "batch"),
])
def test_directive_image_allowed_by_user_group_or_queue(image, user, groups, queue):
    assert decide(image, user, groups, queue).image.alias == image


def test_refused_image_names_what_is_allowed_and_the_line():
    with pytest.raises(PolicyDenied) as info:
        decide("slc6")
    assert str(info.value) == ('image "slc6" (#CBATCH line 3) is not allowed for you on this '
                               "node; allowed images: el9")
    assert info.value.fields["allowed"] == ["el9"]


def test_unknown_image_is_refused():
    with pytest.raises(PolicyDenied, match='"centos7"'):
        decide("centos7")


def test_site_mounts_follow_their_audience():
    assert [str(m.path) for m in decide().site_mounts] == ["/cvmfs"]
    assert [str(m.path) for m in decide(groups=["atlas"]).site_mounts] == ["/cvmfs", "/data/atlas"]


@pytest.mark.parametrize("uid,settings,refused", [
    (0, {}, True), (999, {}, True), (1000, {}, False),
    (1500, {"jobs": {"min_uid": 2000}}, True),
    (0, {"jobs": {"allow_root": True}}, False),
])
def test_root_and_system_uids_are_refused_unless_allowed(uid, settings, refused):
    cfg = config.parse(settings)
    if refused:
        with pytest.raises(PolicyDenied, match=f"jobs of uid {uid} may not run"):
            policy.admit(cfg, uid)
    else:
        policy.admit(cfg, uid)


def test_group_names_are_looked_up_only_when_an_audience_names_groups():
    import grp
    gid = grp.getgrnam("root").gr_gid
    assert policy.group_names(config.parse({}), (gid,)) == frozenset()
    assert policy.group_names(CFG, (gid, 2**31 - 7)) == {"root"}  # an unknown gid: no name


def test_a_working_directory_in_a_system_folder_is_refused():
    from pathlib import Path
    decision = decide()
    policy.check_workdir(Path("/home/bob/run"), decision, Path("/var/spool/torque"))
    with pytest.raises(PolicyDenied, match="working directory /etc cannot be used"):
        policy.check_workdir(Path("/etc"), decision, Path("/var/spool/torque"))
