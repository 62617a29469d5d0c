"""Which images `cbatch images prune` may pick among many kinds at once (the engine mocked
at its boundary; the real engine's list, pull, prune and refusal are in e2e/test_registry)."""

from cbatch import config, imageset
from cbatch import engine as engine_

REPO = "reg.example/hep/el9"
PIN, OLD, OLDER = ("sha256:" + c * 64 for c in "abc")


def cfg():
    return config.parse({"images": {"default": "el9", "aliases": {
        "el9": {"ref": f"{REPO}@{PIN}"}, "local": {"ref": "sha256:" + "d" * 64}}}})


def test_prune_removes_only_unpinned_images_of_pinned_repositories(mocker):
    node = [
        {"Id": "i-pinned", "RepoDigests": [f"{REPO}@{PIN}"], "RepoTags": []},
        {"Id": "i-old", "RepoDigests": [f"{REPO}@{OLD}"], "RepoTags": ["<none>:<none>"]},
        {"Id": "i-busy", "RepoDigests": [f"{REPO}@{OLDER}"], "RepoTags": []},
        {"Id": "i-other", "RepoDigests": [f"reg.example/other@{OLD}"], "RepoTags": []},
        {"Id": "i-shared", "RepoDigests": [f"{REPO}@{OLD}"], "RepoTags": ["site/tools:1"]},
        {"Id": "sha256:" + "d" * 64, "RepoDigests": [], "RepoTags": []},  # pinned by id
        {"Id": "i-built", "RepoDigests": [], "RepoTags": ["mine:latest"]},
    ]
    mocker.patch.object(engine_, "local_images", return_value=node)
    remove = mocker.patch.object(engine_, "remove_image",
                                 side_effect=lambda e, i: "in use by a container" if i == "i-busy"
                                 else None)
    assert imageset.prune(cfg(), engine=None) == [
        (f"{REPO}@{OLD}", None), (f"{REPO}@{OLDER}", "in use by a container")]
    assert [c.args[1] for c in remove.call_args_list] == ["i-old", "i-busy"]

