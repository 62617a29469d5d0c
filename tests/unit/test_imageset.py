"""Which images `cbatch images prune` may pick among many kinds at once (the engine mocked
at its boundary; the real engine's list, pull, prune and refusal are in e2e/test_registry)."""

import pytest

from cbatch import config
from cbatch.admin import images as imageset
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
    engine = mocker.create_autospec(engine_.Engine, instance=True)
    engine.images.return_value = node
    engine.remove_image.side_effect = lambda i: "in use by a container" if i == "i-busy" else None
    assert imageset.prune(cfg(), engine=engine) == [
        (f"{REPO}@{OLD}", None), (f"{REPO}@{OLDER}", "in use by a container")]
    assert [c.args[0] for c in engine.remove_image.call_args_list] == ["i-old", "i-busy"]



def _engine_whose_pull(mocker, error):
    """A real Engine whose Docker client has no image and fails the pull with `error`."""
    import docker
    import requests

    engine = engine_.Engine()
    engine.api = mocker.create_autospec(docker.APIClient, instance=True)
    engine.api.images.return_value = []
    response = requests.Response()
    response.status_code = 404
    engine.api.inspect_image.side_effect = docker.errors.ImageNotFound("no such image", response)
    engine.api.pull.side_effect = error
    return engine


def test_pull_failures_are_worded_for_the_admin(mocker):
    import docker
    import requests

    server_error = requests.Response()
    server_error.status_code = 500
    refused = docker.errors.APIError(
        "500 Server Error", server_error,
        explanation="Get \"https://reg.example/v2/\": dial tcp 10.0.0.9:443: connect: "
                    "connection refused")
    denied = docker.errors.ImageNotFound("pull access denied for reg.example/hep/el9, "
                                         "repository does not exist")
    gone = requests.exceptions.ConnectionError("Connection aborted: No such file")
    outcomes = {}
    for name, error in (("refused", refused), ("denied", denied), ("gone", gone)):
        outcome = dict(imageset.pull(cfg(), _engine_whose_pull(mocker, error)))["el9"]
        outcomes[name] = outcome
        assert "job" not in outcome, outcome  # admins' words, not job owners'
    assert outcomes["refused"] == (
        'failed: Docker refused: Get "https://reg.example/v2/": dial tcp 10.0.0.9:443: '
        "connect: connection refused")
    assert outcomes["denied"] == (
        f"failed: the registry has no image {REPO}@{PIN} or refuses this node; check the "
        "pinned digest and the node's registry login")
    assert outcomes["gone"] == ("failed: Docker is not answering on this node (Connection "
                                "aborted: No such file); start dockerd or check DOCKER_HOST")


def test_pulls_are_counted_for_metrics(mocker):
    import docker

    from cbatch import metrics


    def count(result):
        return metrics.REGISTRY.get_sample_value("cbatch_image_pulls_total", {"result": result})

    before = count("ok"), count("failed")
    engine = _engine_whose_pull(mocker, None)
    engine.ensure_image(f"{REPO}@{PIN}", "missing")
    failing = _engine_whose_pull(mocker, docker.errors.APIError("500 Server Error"))
    with pytest.raises(engine_.EngineError):
        failing.ensure_image(f"{REPO}@{PIN}", "missing")
    assert (count("ok"), count("failed")) == (before[0] + 1, before[1] + 1)
