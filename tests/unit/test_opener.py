"""Opening a job's path step by step as its uid would (real folders; some need root)."""

import os
import shutil
import struct
import tempfile
from pathlib import Path

import pytest

from cbatch import opener

ME = opener.Who(os.getuid(), tuple(os.getgroups()) or (os.getgid(),))
ALICE = opener.Who(54321, (54321,))
BOB = opener.Who(54322, (54322, 54400))
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="makes folders of other uids")


@pytest.fixture
def place():
    """A folder every uid can search (pytest's tmp_path sits behind a 0700 parent)."""
    path = Path(tempfile.mkdtemp(prefix="cbatch-opener-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def reach(path, who=ME, directory=True, follow=False):
    opened = opener.reach(path, who, directory, follow)
    os.close(opened.fd)
    return opened


def refusal(path, who=ME, directory=True, follow=False) -> opener.Unreachable:
    with pytest.raises(opener.Unreachable) as caught:
        opener.reach(path, who, directory, follow)
    return caught.value


def test_a_plain_folder_is_opened_as_that_very_object(place):
    (place / "a" / "b").mkdir(parents=True)
    opened = opener.reach(place / "a" / "b", ME, directory=True)
    try:
        assert opened.path == place / "a" / "b"
        os.rename(place / "a" / "b", place / "a" / "moved")  # the fd follows the object
        assert os.readlink(f"/proc/self/fd/{opened.fd}") == str(place / "a" / "moved")
    finally:
        os.close(opened.fd)


def test_a_symlink_on_the_way_is_refused_unless_followed(place):
    (place / "real").mkdir()
    (place / "link").symlink_to(place / "real")
    assert "link is a symbolic link" in refusal(place / "link" / ".").reason
    assert "is a symbolic link" in refusal(place / "link").reason  # the last step too
    assert reach(place / "link", follow=True).path == place / "real"


def test_dot_dot_is_refused_unless_followed_and_then_resolved_physically(place):
    (place / "x" / "deep").mkdir(parents=True)
    (place / "y").mkdir()
    (place / "y" / "to-deep").symlink_to(place / "x" / "deep")
    assert refusal(f"{place}/y/../x").reason == "'..' in the path"
    # natively y/to-deep/.. is the link target's parent x, not y
    assert reach(f"{place}/y/to-deep/..", follow=True).path == place / "x"


def test_a_file_where_a_folder_is_expected(place):
    (place / "f").write_text("x")
    assert refusal(place / "f").reason == "not a folder"
    assert refusal(place / "f" / "sub").reason.endswith("f is not a folder")
    assert refusal(place, directory=False).reason == "not a regular file"
    assert reach(place / "f", directory=False).st.st_size == 1


def test_missing_is_told_apart_from_refused(place):
    assert refusal(place / "nothing" / "here").missing
    (place / "dangling").symlink_to("/nowhere-cbatch")
    assert not refusal(place / "dangling").missing  # a symlink, refused as one
    assert refusal(place / "dangling", follow=True).missing


def test_symlink_loops_end(place):
    (place / "a").symlink_to(place / "b")
    (place / "b").symlink_to(place / "a")
    assert "symbolic link" in refusal(place / "a", follow=True).reason


@needs_root
def test_a_0700_parent_of_another_user_closes_what_lies_behind_it(place):
    hidden = place / "bob-private"
    (hidden / "open-inside").mkdir(parents=True)
    os.chown(hidden, BOB.uid, BOB.gids[0])
    os.chmod(hidden, 0o700)
    os.chmod(hidden / "open-inside", 0o755)
    caught = refusal(hidden / "open-inside", ALICE)
    assert caught.reason == f"{hidden} is closed to uid {ALICE.uid}" and not caught.missing
    assert reach(hidden / "open-inside", BOB).path == hidden / "open-inside"
    # a symlink of alice's own pointing behind it is no way in either
    (place / "alice-link").symlink_to(hidden / "open-inside")
    assert "closed to uid" in refusal(place / "alice-link", ALICE, follow=True).reason
    os.chmod(hidden, 0o750)  # the group's x bit lets bob's group members through
    assert reach(hidden / "open-inside", opener.Who(54323, (54322,))).path
    assert refusal(hidden / "open-inside", ALICE)


@needs_root
def test_an_acl_that_denies_the_user_is_honoured(place):
    shut = place / "shut"
    (shut / "in").mkdir(parents=True)
    os.chmod(shut, 0o755)
    entry = struct.Struct("<HHI")
    # user::rwx, user:54321:---, group::r-x, mask::r-x, other::r-x
    acl = struct.pack("<I", 2) + b"".join(entry.pack(tag, perm, ident) for tag, perm, ident in (
        (0x01, 7, 0xFFFFFFFF), (0x02, 0, ALICE.uid), (0x04, 5, 0xFFFFFFFF),
        (0x10, 5, 0xFFFFFFFF), (0x20, 5, 0xFFFFFFFF)))
    try:
        os.setxattr(shut, "system.posix_acl_access", acl)
    except OSError as exc:
        pytest.skip(f"no POSIX ACLs here: {exc}")
    assert "closed to uid" in refusal(shut / "in", ALICE).reason
    assert reach(shut / "in", BOB).path == shut / "in"  # others still pass (other::r-x)
