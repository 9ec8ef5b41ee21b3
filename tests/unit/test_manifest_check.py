"""The stale-engine check reads real manifest.json files and a real plugin library file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plugserve import repository
from plugserve.config import Range
from plugserve.trt import environment as trt_environment
from plugserve.trt import provenance as trt_provenance
from plugserve.trt.environment import Environment, Gpu

H100 = Gpu("NVIDIA H100 80GB HBM3", "9.0")
PROFILES = [{"image": Range((1, 3, 32, 32), (4, 3, 256, 256), (8, 3, 512, 512))}]


@pytest.fixture
def plugin_library(tmp_path: Path) -> Path:
    library = tmp_path / "libplugserve.so"
    library.write_bytes(b"\x7fELF plugin code as built")
    return library


def write_engine(repository: Path, model: str, version: int, environment: Environment, library: Path) -> Path:
    """A version directory as the tensorrt lowering leaves it: model.plan, the ONNX and manifest.json."""
    version_dir = repository / model / str(version)
    version_dir.mkdir(parents=True)
    (version_dir / "model.plan").write_bytes(b"serialized engine")
    onnx_path = version_dir / "source.onnx"
    onnx_path.write_bytes(b"onnx bytes")
    section = trt_provenance.manifest_fields(
        environment, onnx_path=onnx_path, profiles=PROFILES, precision="fp16", plugin_library=library
    )
    (version_dir / "manifest.json").write_text(json.dumps({"model": model, trt_provenance.MANIFEST_KEY: section}))
    return version_dir


def built_here(library: Path) -> Environment:
    return Environment("10.13.0.35", H100, repository.sha256_file(library))


def test_manifest_records_versions_gpu_plugin_hash_onnx_hash_and_profiles(tmp_path, plugin_library):
    version_dir = write_engine(
        tmp_path / "repo", "super_resolution", 1, built_here(plugin_library), plugin_library
    )
    section = json.loads((version_dir / "manifest.json").read_text())["tensorrt"]
    assert section["tensorrt_version"] == "10.13.0.35"
    assert section["gpu"] == {"name": H100.name, "compute_capability": "9.0"}
    assert section["plugin_library_sha256"] == repository.sha256_file(plugin_library)
    assert section["onnx_sha256"] == repository.sha256_file(version_dir / "source.onnx")
    assert section["profiles"] == [
        {"image": {"min": [1, 3, 32, 32], "opt": [4, 3, 256, 256], "max": [8, 3, 512, 512]}}
    ]
    assert section["precision"] == "fp16"


def test_engine_matching_the_environment_is_not_stale(tmp_path, plugin_library):
    write_engine(tmp_path / "repo", "super_resolution", 1, built_here(plugin_library), plugin_library)
    assert trt_provenance.stale_engines(tmp_path / "repo", built_here(plugin_library)) == []


def test_a_different_tensorrt_build_number_of_the_same_release_is_not_stale(tmp_path, plugin_library):
    # The Python wheel says 10.13.0.35 where libnvinfer reports 10.13.0: the same release.
    write_engine(tmp_path / "repo", "super_resolution", 1, built_here(plugin_library), plugin_library)
    present = Environment("10.13.0", H100, repository.sha256_file(plugin_library))
    assert trt_provenance.stale_engines(tmp_path / "repo", present) == []


@pytest.mark.parametrize(
    ("present_version", "expected"),
    [
        ("10.14.1.48", "built with TensorRT 10.13.0.35, but TensorRT 10.14.1.48 is installed"),
        ("11.1.0.10", "but TensorRT 11.1.0.10 is installed"),
        (None, "built with TensorRT 10.13.0.35, but no TensorRT is installed here"),
    ],
)
def test_engine_from_another_tensorrt_version_is_stale(tmp_path, plugin_library, present_version, expected):
    write_engine(tmp_path / "repo", "deformable_encoder", 3, built_here(plugin_library), plugin_library)
    present = Environment(present_version, H100, repository.sha256_file(plugin_library))
    [stale] = trt_provenance.stale_engines(tmp_path / "repo", present)
    assert (stale.model, stale.version) == ("deformable_encoder", "3")
    assert expected in str(stale)


@pytest.mark.parametrize(
    ("present_gpu", "expected"),
    [
        (Gpu("NVIDIA H200", "9.0"), "but this GPU is NVIDIA H200 (compute capability 9.0)"),
        (Gpu(H100.name, "8.0"), "(compute capability 8.0)"),
        (None, "but no GPU is visible here"),
    ],
)
def test_engine_for_another_gpu_is_stale(tmp_path, plugin_library, present_gpu, expected):
    write_engine(tmp_path / "repo", "super_resolution", 2, built_here(plugin_library), plugin_library)
    present = Environment("10.13.0.35", present_gpu, repository.sha256_file(plugin_library))
    [stale] = trt_provenance.stale_engines(tmp_path / "repo", present)
    assert f"built for {H100.name} (compute capability 9.0)" in str(stale)
    assert expected in str(stale)


def test_engine_built_with_another_plugin_library_is_stale(tmp_path, plugin_library):
    write_engine(tmp_path / "repo", "super_resolution", 1, built_here(plugin_library), plugin_library)
    plugin_library.write_bytes(b"\x7fELF plugin code after a kernel change")
    present = Environment("10.13.0.35", H100, repository.sha256_file(plugin_library))
    [stale] = trt_provenance.stale_engines(tmp_path / "repo", present)
    assert "built with plugin library sha256" in str(stale)


def test_engine_whose_plugin_library_is_gone_is_stale(tmp_path, plugin_library):
    write_engine(tmp_path / "repo", "super_resolution", 1, built_here(plugin_library), plugin_library)
    plugin_library.unlink()
    assert trt_environment.detect_environment(plugin_library).plugin_sha256 is None
    present = Environment("10.13.0.35", H100, None)
    [stale] = trt_provenance.stale_engines(tmp_path / "repo", present)
    assert "no plugin library is present" in str(stale)


def test_every_mismatch_is_reported_at_once(tmp_path, plugin_library):
    write_engine(tmp_path / "repo", "super_resolution", 1, built_here(plugin_library), plugin_library)
    [stale] = trt_provenance.stale_engines(
        tmp_path / "repo", Environment("10.14.1", Gpu("NVIDIA A100", "8.0"), "0" * 64)
    )
    assert len(stale.reasons) == 3


def test_engine_without_manifest_or_tensorrt_section_is_stale(tmp_path, plugin_library):
    repository = tmp_path / "repo"
    missing = write_engine(repository, "super_resolution", 1, built_here(plugin_library), plugin_library)
    (missing / "manifest.json").unlink()
    broken = write_engine(repository, "deformable_encoder", 1, built_here(plugin_library), plugin_library)
    (broken / "manifest.json").write_text(json.dumps({"model": "deformable_encoder"}))
    stale = {s.model: str(s) for s in trt_provenance.stale_engines(repository, built_here(plugin_library))}
    assert "manifest.json is missing" in stale["super_resolution"]
    assert "has no readable 'tensorrt' section" in stale["deformable_encoder"]


def test_only_the_version_tritonserver_serves_is_checked(tmp_path, plugin_library):
    repository = tmp_path / "repo"
    old = Environment("10.8.0", Gpu("NVIDIA A100", "8.0"), "0" * 64)
    write_engine(repository, "super_resolution", 9, old, plugin_library)  # kept by --keep, not served
    write_engine(repository, "super_resolution", 10, built_here(plugin_library), plugin_library)
    assert trt_provenance.stale_engines(repository, built_here(plugin_library)) == []
    write_engine(repository, "super_resolution", 11, old, plugin_library)
    [stale] = trt_provenance.stale_engines(repository, built_here(plugin_library))
    assert stale.version == "11"


def test_versions_without_an_engine_are_not_checked(tmp_path):
    onnx_version = tmp_path / "repo" / "super_resolution" / "1"
    onnx_version.mkdir(parents=True)
    (onnx_version / "model.onnx").write_bytes(b"onnx")
    (onnx_version / "manifest.json").write_text("{}")
    assert trt_provenance.stale_engines(tmp_path / "repo", Environment(None, None, None)) == []
    assert trt_provenance.check_repository(tmp_path / "repo", None) == []


def test_serve_check_refuses_stale_engines_and_names_the_rebuild(tmp_path, plugin_library):
    # Recorded for a GPU no machine has, so the engine is stale wherever this test runs.
    elsewhere = Environment(
        "10.13.0.35", Gpu("NVIDIA Imaginary GPU", "99.0"), repository.sha256_file(plugin_library)
    )
    write_engine(tmp_path / "repo", "deformable_encoder", 4, elsewhere, plugin_library)
    with pytest.raises(RuntimeError) as error:
        trt_provenance.check_repository(tmp_path / "repo", plugin_library)
    message = str(error.value)
    assert "deformable_encoder/4:" in message
    assert "plugserve build --runtime tensorrt deformable_encoder" in message
    assert "--force" in message


def test_serve_check_with_force_warns_and_lets_stale_engines_through(tmp_path, plugin_library, capsys):
    elsewhere = Environment(
        "10.13.0.35", Gpu("NVIDIA Imaginary GPU", "99.0"), repository.sha256_file(plugin_library)
    )
    write_engine(tmp_path / "repo", "deformable_encoder", 4, elsewhere, plugin_library)
    [stale] = trt_provenance.check_repository(tmp_path / "repo", plugin_library, force=True)
    assert stale.model == "deformable_encoder"
    assert "because of --force" in capsys.readouterr().err


def test_missing_repository_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        trt_provenance.stale_engines(tmp_path / "does-not-exist", Environment(None, None, None))


def test_plugserve_serve_refuses_a_repository_with_stale_engines_before_starting_tritonserver(
    tmp_path, plugin_library, capsys
):
    from plugserve.cli import main

    elsewhere = Environment(
        "10.13.0.35", Gpu("NVIDIA Imaginary GPU", "99.0"), repository.sha256_file(plugin_library)
    )
    write_engine(tmp_path / "repo", "super_resolution", 2, elsewhere, plugin_library)
    assert main(["serve", "--repository", str(tmp_path / "repo")]) == 1
    error = capsys.readouterr().err
    assert "super_resolution/2:" in error and "plugserve build --runtime tensorrt super_resolution" in error


def test_models_without_an_engine_or_with_a_stale_one_are_the_ones_to_build(tmp_path, plugin_library):
    repository = tmp_path / "repo"
    repository.mkdir()
    here = built_here(plugin_library)
    names = ["super_resolution", "deformable_encoder"]
    assert trt_provenance.models_to_build(repository, names, here) == names
    write_engine(repository, "super_resolution", 1, here, plugin_library)
    assert trt_provenance.models_to_build(repository, names, here) == ["deformable_encoder"]
    write_engine(repository, "deformable_encoder", 1, here, plugin_library)
    assert trt_provenance.models_to_build(repository, names, here) == []
    assert (
        trt_provenance.models_to_build(repository, names, Environment("10.14.1", H100, here.plugin_sha256)) == names
    )
