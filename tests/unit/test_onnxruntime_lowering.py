"""The onnxruntime lowering's ops choice: native builds carry libplugserve_ort.so, its hash, the runner's
parameter and config.pbtxt's model_operations; decomposed builds carry none of them; models.yaml is checked."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from plugserve import build, config, native, repository
from plugserve.lowering import RuntimeUnavailable
from plugserve.runners import contract

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = native.onnxruntime_library()
needs_library = pytest.mark.skipif(
    LIBRARY is None, reason="libplugserve_ort.so not built (make -C plugins with ONNX Runtime headers in "
                            ".onnxruntime/include; a clean clone has none)")


def quiet(_line: str) -> None:
    pass


def model_entry(**fields) -> dict:
    return {"source": {"onnx": "m.onnx"}, "inputs": [{"name": "x", "dtype": "FP32", "dims": [3]}],
            "outputs": [{"name": "y", "dtype": "FP32", "dims": [3]}],
            "profiles": [{"x": {"min": [3], "opt": [3], "max": [3]}}], **fields}


def with_ops(models_yaml: Path, section: str) -> Path:
    models_yaml.write_text(models_yaml.read_text() + f"    onnxruntime: {section}\n")
    return models_yaml


def runner_session(version_dir: Path, config_path: Path):
    """An ONNX Runtime session made as the runner makes it, from the served config."""
    import onnxruntime as ort

    from plugserve.runners.onnxruntime_runner import session_options

    served = repository.to_dict(repository.read_config(config_path))
    return ort.InferenceSession(str(version_dir / repository.ONNX_FILE), session_options(served, str(version_dir)),
                                providers=["CPUExecutionProvider"])


@needs_library
def test_a_native_build_copies_the_library_hashes_it_and_names_it_in_the_parameter_and_model_operations(
        tiny_models_yaml, tmp_path, monkeypatch):
    import onnx

    monkeypatch.chdir(tmp_path)  # a relative --repository still gets an absolute library path
    build.build(with_ops(tiny_models_yaml, "{ops: native}"), Path("repo"), log=quiet)
    version_dir = (tmp_path / "repo" / "tiny" / "1").resolve()
    library = version_dir / native.ORT_LIBRARY_NAME
    assert library.read_bytes() == LIBRARY.read_bytes()

    manifest = repository.read_manifest(version_dir)
    assert manifest["onnxruntime"]["ops"] == "native"
    assert manifest["onnxruntime"]["library"] == native.ORT_LIBRARY_NAME
    assert manifest["onnxruntime"]["library_sha256"] == repository.sha256_file(LIBRARY)
    assert manifest["artifacts"][native.ORT_LIBRARY_NAME] == manifest["onnxruntime"]["library_sha256"]
    assert repository.verify_manifest(version_dir) == []

    config_path = tmp_path / "repo" / "tiny" / repository.CONFIG_NAME
    message = repository.read_config(config_path)
    assert repository.to_dict(repository.to_message(repository.to_dict(message))) == repository.to_dict(message)
    [named] = message.model_operations.op_library_filename
    assert Path(named) == library and Path(named).is_file()  # absolute, and there once committed
    options = json.loads(repository.read_parameters(message)[contract.ONNXRUNTIME_OPTIONS_PARAMETER])
    assert options == {"ops": "native", "library": native.ORT_LIBRARY_NAME}

    graph = onnx.load(str(version_dir / repository.ONNX_FILE))
    assert {(n.domain, n.op_type) for n in graph.graph.node} >= {("plugserve", "DynamicResize")}
    (out,) = runner_session(version_dir, config_path).run(
        None, {"image": np.zeros((2, 3, 8, 8), np.float32), "size": np.array([16, 24])})
    assert out.shape == (2, 3, 16, 24)


@needs_library
def test_the_next_build_points_model_operations_at_its_own_version(tiny_models_yaml, tmp_path):
    repo = tmp_path / "repo"
    for _ in range(2):
        build.build(tiny_models_yaml, repo, keep=1, log=quiet)
    [named] = repository.read_config(repo / "tiny" / repository.CONFIG_NAME).model_operations.op_library_filename
    assert Path(named) == repo / "tiny" / "2" / native.ORT_LIBRARY_NAME and Path(named).is_file()


def test_without_the_library_the_default_is_decomposed_and_native_is_refused_naming_the_field(
        tiny_models_yaml, tmp_path, monkeypatch):
    monkeypatch.setenv(native.ORT_ENV_VAR, str(tmp_path / "absent" / native.ORT_LIBRARY_NAME))
    (result,) = build.build(tiny_models_yaml, tmp_path / "repo", log=quiet)
    assert result.manifest["onnxruntime"] == {"ops": "decomposed"}
    assert not (result.path / native.ORT_LIBRARY_NAME).exists()
    with pytest.raises(RuntimeUnavailable, match=r"models\.tiny\.onnxruntime\.ops: native needs libplugserve_ort\.so"):
        build.build(with_ops(tiny_models_yaml, "{ops: native}"), tmp_path / "repo", log=quiet)
    assert repository.versions(tmp_path / "repo" / "tiny") == [1]


def test_a_native_version_whose_library_is_missing_fails_at_initialize_naming_the_file(tmp_path):
    pytest.importorskip("onnxruntime")
    from plugserve.runners.onnxruntime_runner import session_options

    parameter = {"string_value": json.dumps({"ops": "native", "library": native.ORT_LIBRARY_NAME})}
    with pytest.raises(RuntimeError, match=f"{native.ORT_LIBRARY_NAME} is missing from the version directory"):
        session_options({"parameters": {contract.ONNXRUNTIME_OPTIONS_PARAMETER: parameter}}, str(tmp_path))


def test_a_config_value_naming_a_version_file_the_build_did_not_write_is_refused(tmp_path):
    updates = {"model_operations": {"op_library_filename": [repository.VersionFile("lib.so")]}}
    with pytest.raises(FileNotFoundError, match="lib.so"):
        repository.resolve_version_files(updates, tmp_path, Path("/final"))
    (tmp_path / "lib.so").write_bytes(b"")
    assert repository.resolve_version_files(updates, tmp_path, Path("/final")) == {
        "model_operations": {"op_library_filename": ["/final/lib.so"]}}


@pytest.mark.parametrize("section, runtime, message", [
    ({"ops": "fused"}, "onnxruntime", "models.m.onnxruntime.ops: expected one of native, decomposed, got 'fused'"),
    ({"ops": "native", "threads": 2}, "onnxruntime", "models.m.onnxruntime.threads: unknown field (known: ops)"),
    ("native", "onnxruntime", "models.m.onnxruntime: expected a mapping"),
    ({"ops": "native"}, "torch", "models.m.onnxruntime: applies to runtime onnxruntime only, this model's runtime "
                                 "is 'torch'"),
])
def test_a_wrong_onnxruntime_section_is_refused_naming_the_field(section, runtime, message):
    with pytest.raises(config.ConfigError, match=re.escape(message)):
        config.parse({"models": {"m": model_entry(runtime=runtime, onnxruntime=section)}}, base_dir=ROOT)


def test_an_onnxruntime_section_without_ops_leaves_the_choice_to_the_build():
    assert config.parse({"models": {"m": model_entry(onnxruntime={})}}, base_dir=ROOT)["m"].onnxruntime.ops is None
