"""The repository builder: version directories, manifest, pruning, atomicity, field-naming errors."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from plugserve import build, repository, repository_api, runners
from plugserve.cli import main
from plugserve.config import ConfigError
from plugserve.runners import contract, runner_path

ROOT = Path(__file__).resolve().parents[2]


def quiet(_line: str) -> None:
    pass


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root with its content hash ("dir" for directories)."""
    return {
        str(p.relative_to(root)): "dir" if p.is_dir() else repository.sha256_file(p)
        for p in sorted(root.rglob("*"))
    }


def test_a_build_writes_the_model_the_runner_the_config_and_a_manifest(tiny_models_yaml, tmp_path):
    import onnxruntime as ort

    tiny_models_yaml.write_text(tiny_models_yaml.read_text() + "    onnxruntime: {ops: decomposed}\n")
    repo = tmp_path / "repo"
    (result,) = build.build(tiny_models_yaml, repo, log=quiet)

    version_dir = repo / "tiny" / "1"
    assert result.version == 1 and result.path == version_dir
    assert sorted(p.name for p in version_dir.iterdir()) == sorted(["manifest.json", "model.onnx", "model.py",
                                                                   "served_config.pbtxt", *runners.HELPERS])
    assert (version_dir / "model.py").read_bytes() == runner_path("onnxruntime").read_bytes()
    config = repository.read_config(repo / "tiny" / "config.pbtxt")
    assert config.backend == "python" and config.max_batch_size == 4
    assert contract.SPEC_PARAMETER in repository.read_parameters(config)
    assert repository.read_parameters(config)[contract.ONNXRUNTIME_OPTIONS_PARAMETER] == '{"ops":"decomposed"}'
    assert not config.HasField("model_operations")

    manifest = repository.read_manifest(version_dir)
    assert manifest["model"] == "tiny" and manifest["version"] == 1
    assert manifest["runtime"] == "onnxruntime" and manifest["precision"] == "fp32"
    assert manifest["source"]["sha256"] == repository.sha256_file(tmp_path / "tiny.onnx")
    assert manifest["config_sha256"] == repository.sha256_file(repo / "tiny" / "config.pbtxt")
    assert {"onnx", "onnxruntime", "python", "plugserve"} <= manifest["versions"].keys()
    assert manifest["built_at"].endswith("+00:00")
    assert manifest["onnxruntime"] == {"ops": "decomposed"}
    assert repository.verify_manifest(version_dir) == []

    session = ort.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"image": np.zeros((2, 3, 8, 8), np.float32), "size": np.array([16, 24])})
    assert out.shape == (2, 3, 16, 24)


def test_every_build_makes_a_new_version_and_keep_prunes_the_oldest(tiny_models_yaml, tmp_path):
    repo = tmp_path / "repo"
    for _ in range(3):
        build.build(tiny_models_yaml, repo, keep=2, log=quiet)
    assert repository.versions(repo / "tiny") == [2, 3]
    assert [repository.read_manifest(repo / "tiny" / str(v))["version"] for v in (2, 3)] == [2, 3]
    assert not repository.staging_root(repo).exists()


def test_the_build_command_prints_each_version_it_made(tiny_models_yaml, tmp_path, capsys):
    repo = tmp_path / "repo"
    assert main(["build", "--config", str(tiny_models_yaml), "--repository", str(repo), "--keep", "1"]) == 0
    assert f"build: tiny version 1 (onnxruntime, fp32) -> {repo / 'tiny' / '1'}" in capsys.readouterr().out


def test_a_models_yaml_with_a_wrong_field_fails_the_build_naming_the_field(tiny_models_yaml, tmp_path, capsys):
    tiny_models_yaml.write_text(tiny_models_yaml.read_text().replace("max: [4, 3, 64, 64]", "max: [4, 3, 64]"))
    repo = tmp_path / "repo"
    assert main(["build", "--config", str(tiny_models_yaml), "--repository", str(repo)]) == 3
    assert "models.yaml: models.tiny.profiles[0].image.max: expected 4 integers" in capsys.readouterr().err
    assert not repo.exists()


def test_tensor_names_that_differ_from_the_exported_graph_fail_the_build_and_leave_no_version(
    tiny_models_yaml, tmp_path
):
    tiny_models_yaml.write_text(tiny_models_yaml.read_text().replace("name: upscaled", "name: output"))
    repo = tmp_path / "repo"
    with pytest.raises(ConfigError, match=r"models.tiny.outputs: names \['output'\] do not match"):
        build.build(tiny_models_yaml, repo, log=quiet)
    assert not (repo / "tiny").exists()
    assert not repository.staging_root(repo).exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"runtime": "tvm"}, "--runtime: unknown runtime 'tvm' (known: onnxruntime"),
        ({"precision": "fp16"}, "models.tiny.precisions: 'fp16' is not listed"),
    ],
)
def test_an_unknown_runtime_or_unlisted_precision_is_named(tiny_models_yaml, tmp_path, options, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        build.build(tiny_models_yaml, tmp_path / "repo", log=quiet, **options)


def test_a_missing_source_file_is_named(tiny_models_yaml, tmp_path):
    (tmp_path / "tiny.onnx").unlink()
    with pytest.raises(ConfigError, match="models.tiny.source.onnx: file .*tiny.onnx does not exist"):
        build.build(tiny_models_yaml, tmp_path / "repo", log=quiet)


@pytest.mark.slow
def test_killing_a_build_midway_leaves_the_repository_exactly_as_it_was(tiny_models_yaml, tmp_path):
    import torch

    from plugserve import models

    repo = tmp_path / "repo"
    build.build(tiny_models_yaml, repo, log=quiet)
    before = snapshot(repo)

    # The same tensor contract from a PyTorch checkpoint: its export takes seconds, time to kill it.
    torch.save(models.module("super_resolution").build().state_dict(), tmp_path / "sr.pt")
    slow = tmp_path / "slow.yaml"
    slow.write_text(tiny_models_yaml.read_text().replace(
        "source: {onnx: tiny.onnx}", "source: {model: super_resolution, checkpoint: sr.pt}"))
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "build_engines.py"), "--config", str(slow), "--repository", str(repo)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    staged_version = repository.staging_root(repo) / f"build-{process.pid}-tiny-2" / "tiny" / "2"
    deadline = time.monotonic() + 120
    while not staged_version.is_dir() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)  # into the export
    assert process.poll() is None, "the build finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()

    assert snapshot(repo) == before
    assert staged_version.is_dir()  # the half-built version stayed outside the repository
    (result,) = build.build(tiny_models_yaml, repo, log=quiet)  # the next build cleans up after it
    assert result.version == 2
    assert not repository.staging_root(repo).exists()


def test_the_served_config_names_the_runtime_for_clients_to_read(tiny_models_yaml, tmp_path):
    from plugserve.perf.cli import _runtime

    result = build.build(tiny_models_yaml, tmp_path / "repo", log=quiet)[0]
    served = repository.read_config(result.path.parent / repository.CONFIG_NAME)
    assert repository.read_parameters(served)[repository.RUNTIME_PARAMETER] == "onnxruntime"
    # What bench reads from a server's config (JSON), whatever repository it has locally.
    config = {"parameters": {repository.RUNTIME_PARAMETER: {"string_value": "torch"}}}
    assert _runtime(config, tmp_path / "elsewhere", "tiny") == "torch"
    assert _runtime({}, tmp_path / "elsewhere", "tiny") == "unknown"


def test_build_engines_py_is_the_build_command(tmp_path):
    completed = subprocess.run([sys.executable, str(ROOT / "build_engines.py"), "--help"],
                               capture_output=True, text=True, check=True)
    assert completed.stdout.startswith("usage: plugserve build")
    assert "--keep" in completed.stdout


def test_concurrent_builds_of_one_repository_take_turns_and_each_gets_its_own_version(tiny_models_yaml, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    repo = tmp_path / "repo"
    said: list[str] = []
    with ThreadPoolExecutor(2) as pool, repository.build_lock(repo):
        # Both wait behind the lock this test holds, then run one after the other.
        futures = [pool.submit(build.build, tiny_models_yaml, repo, log=said.append) for _ in range(2)]
        time.sleep(1)
        assert not any(f.done() for f in futures)
    results = [f.result()[0].version for f in futures]
    assert sorted(results) == [1, 2] and repository.versions(repo / "tiny") == [1, 2]
    assert sum("waiting for another build" in line for line in said) == 2
    assert all(not repository.version_problems(repo / "tiny", v, newest=v == 2) for v in (1, 2))


def test_a_version_outside_a_running_servers_record_is_pruned_and_one_inside_it_kept(tiny_models_yaml, tmp_path):
    repo = tmp_path / "repo"
    for _ in range(3):
        build.build(tiny_models_yaml, repo, log=quiet)
    # A record without an address (or of a server that does not answer) is taken at its word.
    record = repository.write_serving_record(repo, {"loaded": {"tiny": [1]}})
    assert repository_api.loaded_by_servers(repo) == {"tiny": {1: f"the server of pid {record.stem}"}}
    in_use = repository_api.loaded_by_servers(repo)["tiny"]
    assert repository.prune(repo / "tiny", 1, tmp_path / "trash", in_use) == [2]
    assert repository.versions(repo / "tiny") == [1, 3]
    record.rename(record.with_name("999999999.json"))  # a server that no longer runs
    assert repository_api.loaded_by_servers(repo) == {}
