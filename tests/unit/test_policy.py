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
