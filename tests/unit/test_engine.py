"""The Docker boundary: every docker/requests failure becomes one user line."""

import docker
import docker.errors
import pytest
import requests

from cbatch import engine
from cbatch.errors import ContainerFailed, EngineUnavailable, ImageUnavailable
from tests.unit.factories import make_decision, make_job
from cbatch import spec


@pytest.fixture
def api(mocker):
    fake = mocker.create_autospec(docker.APIClient, instance=True)
    mocker.patch.object(engine.docker, "APIClient", return_value=fake)
    fake.create_host_config.side_effect = lambda **kw: kw
    return fake


def response(status):
    r = requests.Response()
    r.status_code = status
    return r


def test_create_passes_the_spec_through(api):
    api.create_container.return_value = {"Id": "abc"}
    s = spec.build(make_job(), make_decision(), ())
    assert engine.Engine().create(s) == "abc"
    kwargs = api.create_container.call_args.kwargs
    assert kwargs["user"] == "1001:1001" and kwargs["name"] == "cbatch-12.vm"
    assert kwargs["host_config"]["cap_drop"] == ["ALL"]


@pytest.mark.parametrize("exc,kind,line", [
    (docker.errors.ImageNotFound("no such image", response(404)), ImageUnavailable,
     "the job's image is not available on this node"),
    (docker.errors.APIError("boom", response(500), explanation="OCI runtime create failed: "
                            "exec: \"/bin/zsh\": no such file"), ContainerFailed,
     "the job's container could not be created: \"/bin/zsh\": no such file"),
    (requests.exceptions.ConnectionError("refused"), EngineUnavailable,
     "the container engine on this node is not reachable"),
])
def test_docker_failures_are_translated_once(api, exc, kind, line):
    api.create_container.side_effect = exc
    with pytest.raises(kind) as info:
        engine.Engine().create(spec.build(make_job(), make_decision(), ()))
    assert str(info.value).startswith(line)
    assert info.value.__cause__ is exc and "docker_error" in info.value.log_fields()


def test_missing_image_is_pulled_once_only_when_policy_allows(api):
    api.inspect_image.side_effect = docker.errors.ImageNotFound("x", response(404))
    with pytest.raises(ImageUnavailable):
        engine.Engine().ensure_image("reg/a@sha256:" + "d" * 64, "never")
    api.pull.assert_not_called()
    api.inspect_image.side_effect = [docker.errors.ImageNotFound("x", response(404))] * 2
    engine.Engine().ensure_image("reg/a@sha256:" + "d" * 64, "missing")
    api.pull.assert_called_once_with("reg/a", tag="sha256:" + "d" * 64)


def test_kill_and_remove_of_a_gone_container_are_not_errors(api):
    api.kill.side_effect = docker.errors.APIError("gone", response(404))
    api.remove_container.side_effect = docker.errors.NotFound("gone", response(404))
    e = engine.Engine()
    e.kill("abc", 15)
    e.remove("abc")


def _docker_errors():
    """Every exception class docker.errors defines (the httpx test_exceptions idea)."""
    import inspect

    import docker.errors
    return [c for _, c in inspect.getmembers(docker.errors, inspect.isclass)
            if issubclass(c, Exception) and c.__module__.startswith("docker")]


def _instance(cls):
    import inspect
    params = [p for p in inspect.signature(cls.__init__).parameters.values()
              if p.name != "self" and p.default is p.empty
              and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return cls(*["x"] * len(params))


@pytest.mark.parametrize("cls", _docker_errors(), ids=lambda c: c.__name__)
def test_every_docker_error_is_translated_into_an_engine_error(cls):
    from cbatch.errors import EngineError
    with pytest.raises(EngineError) as caught:
        with engine._translate("be tested"):
            raise _instance(cls)
    assert isinstance(caught.value.__cause__, cls) and "\n" not in str(caught.value)


def test_one_connection_pool_serves_every_container():
    """docker-py pools per URL; the daemon's client reuses one pool whatever the URL."""
    adapter = engine.Engine(pool=8).api.get_adapter("http+docker://localhost")
    one = adapter.get_connection("http+docker://localhost/v1.41/containers/a/start")
    assert adapter.get_connection("http+docker://localhost/v1.41/containers/b/wait") is one
    assert one.pool.maxsize == 8
