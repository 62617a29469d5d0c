"""A job's bounded /tmp store (a real tmpfs: needs root)."""

import errno
import os
from pathlib import Path

import pytest

from cbatch import storage

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs")
SIZE = 4 * 2**20


@pytest.fixture
def store(tmp_path):
    made = storage.make(tmp_path / "run", "cbatch-1.vm", SIZE, taken=set())
    yield made
    made.remove()


def fill(folder: Path, size: int) -> int:
    """Write up to size bytes; the errno that stopped it (0 if none)."""
    with open(folder / "big", "wb") as f:
        try:
            for _ in range(size // 2**20):
                f.write(b"\0" * 2**20)
                f.flush()
        except OSError as exc:
            return exc.errno
    return 0


def test_tmp_and_var_tmp_share_one_bound_and_are_everyones(store):
    assert {str(b.target): b.read_only for b in store.binds} == {"/tmp": False,
                                                                  "/var/tmp": False}
    for bind in store.binds:
        assert bind.source.stat().st_mode & 0o7777 == 0o1777
    assert os.statvfs(store.path).f_blocks * os.statvfs(store.path).f_frsize == SIZE


def test_a_small_file_leaves_the_store_not_full(store):
    (store.path / "tmp" / "small").write_bytes(b"x" * 100_000)
    assert store.full() is None


def test_writing_past_the_bound_fails_with_enospc_and_is_named(store):
    assert fill(store.path / "tmp", 2 * SIZE) == errno.ENOSPC
    assert store.full() == ("the job filled its /tmp and /var/tmp (4 MiB limit on this node); "
                            "write large files to $TMPDIR or your working directory")


def test_too_many_files_is_named(store):
    folder = store.path / "var-tmp"
    with pytest.raises(OSError) as caught:
        for n in range(100_000):
            (folder / str(n)).touch()
    assert caught.value.errno == errno.ENOSPC
    assert "too many files in its /tmp and /var/tmp (1024 at most" in store.full()


def test_targets_the_jobs_own_mounts_take_are_left_to_them(tmp_path):
    made = storage.make(tmp_path / "run", "cbatch-2.vm", SIZE, taken={Path("/tmp")})
    try:
        assert [str(b.target) for b in made.binds] == ["/var/tmp"]
    finally:
        made.remove()


def test_removal_unmounts_and_frees_it(tmp_path):
    made = storage.make(tmp_path / "run", "cbatch-3.vm", SIZE, taken=set())
    (made.path / "tmp" / "f").write_bytes(b"x" * 2**20)
    made.remove()
    assert not made.path.exists()
    assert str(made.path) not in Path("/proc/self/mounts").read_text()


@pytest.mark.parametrize("size,text", [(2**30, "1 GiB"), (1536 * 2**20, "1.5 GiB"),
                                       (512 * 2**20, "512 MiB")])
def test_sizes_read_as_people_write_them(size, text):
    assert storage.size_text(size) == text
