"""What `plugserve serve` serves: only versions whose files match their manifests, each model on its
own (a broken one never takes the others down, a broken newest version falls back to the previous
one), on 127.0.0.1 with the shared-memory API closed unless asked for, and never pruned under it."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException
from tritonclient.utils import shared_memory as shm

from plugserve import build, repository
from plugserve.client import Client
from plugserve.server import ServerError, TritonServer, free_port

pytestmark = pytest.mark.triton

GOOD = {"image": np.ones((1, 3, 8, 8), np.float32), "size": np.array([[16, 16]], np.int64)}


@pytest.fixture
def two_versions(tiny_models_yaml, tmp_path):
    """The tiny model built twice: versions 1 and 2."""
    repo = tmp_path / "repo"
    for _ in range(2):
        build.build(tiny_models_yaml, repo, log=lambda _: None)
    return repo


def version_ready(server, model: str, version: int) -> bool:
    try:
        url = f"http://{server.http_url}/v2/models/{model}/versions/{version}/ready"
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except urllib.error.HTTPError:
        return False


BREAKAGES = {
    "a changed model file": lambda v: v.joinpath("model.onnx").write_bytes(v.joinpath("model.onnx").read_bytes()[:-9]),
    "an invalid manifest": lambda v: v.joinpath("manifest.json").write_text("{not json"),
    "no manifest": lambda v: v.joinpath("manifest.json").unlink(),
    "a changed runner": lambda v: v.joinpath("model.py").write_text("def broken(:\n"),
}
NAMED = {"a changed model file": "model.onnx does not match manifest.json",
         "an invalid manifest": "manifest.json is unreadable", "no manifest": "manifest.json is missing",
         "a changed runner": "model.py does not match manifest.json"}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_a_newest_version_that_does_not_match_its_manifest_is_named_and_the_previous_one_serves(two_versions,
                                                                                               breakage):
    BREAKAGES[breakage](two_versions / "tiny" / "2")
    said: list[str] = []
    with TritonServer(two_versions, say=said.append) as server:
        assert server.loaded == {"tiny": [1]}
        assert version_ready(server, "tiny", 1) and not version_ready(server, "tiny", 2)
        assert Client(server.http_url).infer("tiny", GOOD)["upscaled"].shape == (1, 3, 16, 16)
    assert any(f"model tiny version 2 is not served: {NAMED[breakage]}" in line for line in said), said


def test_with_force_a_newest_version_that_fails_to_load_is_named_with_its_log_and_the_previous_one_serves(
        two_versions):
    BREAKAGES["a changed runner"](two_versions / "tiny" / "2")
    said: list[str] = []
    with TritonServer(two_versions, force=True, say=said.append) as server:
        assert server.loaded == {"tiny": [1]} and version_ready(server, "tiny", 1)
    failure = next(line for line in said if "model tiny version(s) [2] failed to load" in line)
    assert "log:" in failure and "model.py" in failure, failure


def test_a_model_that_cannot_be_served_leaves_the_others_up(two_versions):
    shutil.copytree(two_versions / "tiny", two_versions / "broken")
    for version in (1, 2):
        BREAKAGES["no manifest"](two_versions / "broken" / str(version))
    with TritonServer(two_versions, require_all=False) as server:
        assert server.loaded == {"tiny": [2]} and "broken" in server.unserved
        assert Client(server.grpc_url, "grpc").infer("tiny", GOOD)["upscaled"].shape == (1, 3, 16, 16)
    with pytest.raises(ServerError, match="model broken: no version could be served"):
        TritonServer(two_versions).start()


def test_model_control_none_refuses_to_start_on_a_file_that_does_not_match_naming_it(two_versions):
    BREAKAGES["a changed model file"](two_versions / "tiny" / "2")
    with pytest.raises(ServerError, match="model tiny version 2: model.onnx does not match manifest.json"):
        TritonServer(two_versions, model_control="none").start()


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def test_the_server_listens_on_127_0_0_1_only_unless_told(two_versions):
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    with TritonServer(two_versions) as server, socket.socket() as s:
        assert s.connect_ex((address, server.http_port)) != 0
    with TritonServer(two_versions, host="0.0.0.0") as server, socket.socket() as s:  # noqa: S104 - the point
        assert s.connect_ex((address, server.http_port)) == 0


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_shared_memory_registration_needs_the_admin_key_unless_allowed(two_versions, protocol):
    region = f"plugserve_test_{protocol}_{free_port()}"
    handle = shm.create_shared_memory_region(region, "/" + region, 64)
    try:
        with TritonServer(two_versions) as server:
            client = Client(server.http_url if protocol == "http" else server.grpc_url, protocol)
            with pytest.raises(InferenceServerException, match="restricted"):
                client.register_system_shared_memory(region, "/" + region, 64)
        with TritonServer(two_versions, allow_shared_memory=True) as server:
            client = Client(server.http_url if protocol == "http" else server.grpc_url, protocol)
            client.register_system_shared_memory(region, "/" + region, 64)
            client.unregister_shared_memory(region)
    finally:
        shm.destroy_shared_memory_region(handle)


def test_keep_never_removes_a_version_the_running_server_loaded(tiny_models_yaml, tmp_path):
    repo = tmp_path / "repo"
    build.build(tiny_models_yaml, repo, log=lambda _: None)
    said: list[str] = []
    with TritonServer(repo) as server:
        build.build(tiny_models_yaml, repo, keep=1, log=said.append)
        assert repository.versions(repo / "tiny") == [1, 2]
        assert version_ready(server, "tiny", 1)
    assert any("removed tiny version(s) none; kept version 1 (loaded by the server of pid" in line for line in said)
    build.build(tiny_models_yaml, repo, keep=1, log=said.append)
    assert repository.versions(repo / "tiny") == [3]
    assert "--keep 1 removed tiny version(s) [1, 2]" in said[-2]


def test_the_serve_command_prints_its_log_path_and_keeps_the_log_after_stop(two_versions, serve_command):
    BREAKAGES["no manifest"](two_versions / "tiny" / "2")
    with serve_command(two_versions) as (process, ports):
        first = process.stdout.readline()
        assert first.startswith("serve: server log "), first
        log = first.removeprefix("serve: server log ").strip()
        lines = [process.stdout.readline() for _ in range(2)]
        assert "serve: model tiny version 2 is not served: manifest.json is missing" in lines[0], lines
        assert lines[1].startswith(f"serve: ready on http 127.0.0.1:{ports[0]}") and "serving tiny [1]" in lines[1]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        assert f"server log kept at {log}" in process.stdout.read()
    assert "successfully loaded 'tiny'" in Path(log).read_text()


def test_the_version_policy_comes_from_models_yaml(tiny_models_yaml, tmp_path):
    tiny_models_yaml.write_text(tiny_models_yaml.read_text().replace("    max_batch_size: 4\n",
                                                                     "    max_batch_size: 4\n    version_policy: {latest: 2}\n"))
    for _ in range(3):
        build.build(tiny_models_yaml, tmp_path / "repo", log=lambda _: None)
    written = repository.to_dict(repository.read_config(tmp_path / "repo" / "tiny" / "config.pbtxt"))
    assert written["version_policy"] == {"latest": {"num_versions": 2}}
    with TritonServer(tmp_path / "repo") as server:
        assert server.loaded == {"tiny": [2, 3]}
        assert [version_ready(server, "tiny", v) for v in (1, 2, 3)] == [False, True, True]
        assert json.loads(json.dumps(Client(server.http_url).config("tiny")))["model_warmup"]
