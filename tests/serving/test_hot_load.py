"""`plugserve build --load URL` puts a new version into a running server: it serves once the build
returns, `--keep` removes only what no server holds, the watchdog does not take the retired
version for a dead one, and a version that does not load (or a server that takes no loads)
leaves the repository and the server as they were."""

from __future__ import annotations

import numpy as np
import pytest

from plugserve import build, repository
from plugserve.cli import main
from plugserve.client import Client
from plugserve.repository_api import LiveServer
from plugserve.server import TritonServer

pytestmark = pytest.mark.triton

GOOD = {"image": np.ones((1, 3, 8, 8), np.float32), "size": np.array([[16, 16]], np.int64)}


def build_args(models_yaml, repo, *more: str) -> list[str]:
    return ["build", "--config", str(models_yaml), "--repository", str(repo), *more]


def failure_lines(capsys) -> list[str]:
    """What a failed command printed to stderr after its progress lines: the problem, then the fix."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.strip().splitlines() if not line.startswith("build: ")]


def test_a_build_loaded_into_plugserve_serve_serves_and_keep_spares_only_the_loaded_version(
        tiny_models_yaml, tmp_path, serve_command, capsys):
    repo = tmp_path / "repo"
    build.build(tiny_models_yaml, repo, log=lambda _: None)
    with serve_command(repo) as (process, ports):
        while "serve: ready on" not in (line := process.stdout.readline()):
            assert line, "plugserve serve ended before it was ready"
        url = f"localhost:{ports[0]}"
        # Another repository: no serving record of this server holds the admin key, nothing is built.
        assert main(build_args(tiny_models_yaml, tmp_path / "other", "--load", url)) == 7
        problem, fix = failure_lines(capsys)
        assert "This API is restricted, expecting header 'plugserve-admin'" in problem
        assert "--repository the repository `plugserve serve` serves" in fix
        assert not (tmp_path / "other").exists()

        assert main(build_args(tiny_models_yaml, repo, "--load", url, "--keep", "1")) == 0
        out = capsys.readouterr().out
        assert f"build: tiny version 2 is ready on {url} (serving version(s) [2])" in out
        assert "build: --keep 1 removed tiny version(s) [1]\n" in out  # unloaded by the load: nothing holds it
        live = LiveServer(f"127.0.0.1:{ports[0]}")
        assert [live.version_ready("tiny", v) for v in (1, 2)] == [False, True]
        assert Client(f"127.0.0.1:{ports[0]}").infer("tiny", GOOD)["upscaled"].shape == (1, 3, 16, 16)

        assert main(build_args(tiny_models_yaml, repo, "--keep", "1")) == 0  # built, not loaded
        out = capsys.readouterr().out
        assert "--keep 1 removed tiny version(s) none; kept version 2 (loaded by the server of pid" in out
        assert repository.versions(repo / "tiny") == [2, 3]
        process.terminate()
        said = process.communicate(timeout=30)[0]
    assert "watchdog" not in said, said  # the instance the load retired is no death to revive


def test_a_version_that_fails_to_load_is_taken_back_out_and_the_previous_one_serves_on(
        tiny_models_yaml, tmp_path, capsys):
    repo = tmp_path / "repo"
    build.build(tiny_models_yaml, repo, log=lambda _: None)
    before = (repo / "tiny" / repository.CONFIG_NAME).read_text()
    # A GPU no machine has: tritonserver refuses the instance group when it loads the model.
    tiny_models_yaml.write_text(tiny_models_yaml.read_text().replace(
        "    max_batch_size: 4\n", "    max_batch_size: 4\n    instance_groups: [{count: 1, kind: KIND_GPU, gpus: [63]}]\n"))
    said: list[str] = []
    with TritonServer(repo, say=said.append) as server:
        assert main(build_args(tiny_models_yaml, repo, "--load", server.http_url)) == 7
        err = failure_lines(capsys)
        assert len(err) == 2 and "(exit 7;" in err[1], err
        assert err[0].startswith(f"plugserve build: tiny version 2 did not load into {server.http_url}, and was "
                                 f"taken back out of {repo} (the server serves [1]): version(s) [2] failed to load"), err
        assert repository.versions(repo / "tiny") == [1]
        assert (repo / "tiny" / repository.CONFIG_NAME).read_text() == before
        assert not repository.version_problems(repo / "tiny", 1, newest=True)
        assert server.live.loaded() == {"tiny": [1]}
        assert Client(server.http_url).infer("tiny", GOOD)["upscaled"].shape == (1, 3, 16, 16)
    assert not any("watchdog" in line for line in said), said


def test_a_server_under_model_control_none_is_named_with_the_fix_before_anything_is_built(
        tiny_models_yaml, tmp_path, capsys):
    repo = tmp_path / "repo"
    build.build(tiny_models_yaml, repo, log=lambda _: None)
    with TritonServer(repo, model_control="none") as server:
        assert main(build_args(tiny_models_yaml, repo, "--load", server.http_url)) == 7
    err = failure_lines(capsys)
    assert len(err) == 2, err
    assert err[0].startswith(f"plugserve build: the server at {server.http_url} runs with model control none or "
                             "poll, which refuses loads"), err
    assert "plugserve serve --model-control explicit" in err[1] and "(exit 7;" in err[1]
    assert repository.versions(repo / "tiny") == [1]
