"""The `torch` runtime on the CPU: models.yaml options, the exported program, and the program served."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from plugserve import config, models, native, repository, runners
from plugserve.build import build_model
from plugserve.config import ConfigError
from plugserve.lowering import torch as torch_lowering
from plugserve.runners import contract, torch_program

SR_ENTRY = {
    "source": {"model": "super_resolution", "checkpoint": "srcnn.pt"},
    "inputs": [{"name": "image", "dtype": "FP32", "dims": [3, -1, -1]},
               {"name": "size", "dtype": "INT64", "dims": [2], "shape_tensor": True}],
    "outputs": [{"name": "upscaled", "dtype": "FP32", "dims": [3, -1, -1]}],
    "profiles": [{"image": {"min": [1, 3, 8, 8], "opt": [2, 3, 16, 16], "max": [4, 3, 64, 64]},
                  "size": {"min": [8, 8], "opt": [32, 32], "max": [128, 128]}}],
    "precisions": ["fp32", "bf16"],
    "runtime": "torch",
    "max_batch_size": 4,
    "instance_groups": [{"count": 1, "kind": "KIND_CPU"}],
}


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory) -> Path:
    """Random SRCNN weights: the tests compare served with local numbers, not image quality."""
    directory = tmp_path_factory.mktemp("checkpoint")
    torch.manual_seed(0)
    torch.save(models.module("super_resolution").build().state_dict(), directory / "srcnn.pt")
    return directory


def sr_spec(checkpoint_dir: Path, **changes) -> config.ModelSpec:
    entry = {**SR_ENTRY, **changes}
    return config.parse({"models": {"super_resolution": entry}}, base_dir=checkpoint_dir)["super_resolution"]


@pytest.fixture(scope="module")
def built(checkpoint_dir, tmp_path_factory):
    """One fp32 build of the super-resolution model: (spec, version directory)."""
    spec = sr_spec(checkpoint_dir)
    result = build_model(spec, tmp_path_factory.mktemp("repository"))
    return spec, result.path


def test_torch_options_default_to_our_kernels_with_acceleration_chosen_by_instance_kind(checkpoint_dir):
    spec = sr_spec(checkpoint_dir)
    assert spec.torch == config.TorchOptions("plugserve", "auto")
    assert torch_lowering.resolve_acceleration(spec) == "none"
    gpu = sr_spec(checkpoint_dir, instance_groups=[{"count": 2, "kind": "KIND_GPU"}])
    assert torch_lowering.resolve_acceleration(gpu) == "cuda_graphs"


@pytest.mark.parametrize("options,runtime,message", [
    ({"ops": "cudnn"}, "torch", "models.super_resolution.torch.ops: expected one of plugserve, reference"),
    ({"acceleration": "cuda_graphs"}, "torch", "cuda_graphs needs every instance group to be KIND_GPU"),
    ({"graphs": True}, "torch", "models.super_resolution.torch.graphs: unknown field"),
    ({"ops": "reference"}, "onnxruntime", "applies to runtime torch only"),
])
def test_bad_torch_options_fail_naming_the_field(checkpoint_dir, options, runtime, message):
    with pytest.raises(ConfigError, match=message):
        sr_spec(checkpoint_dir, torch=options, runtime=runtime)


def test_a_model_given_as_onnx_cannot_be_lowered_to_torch(checkpoint_dir, tmp_path):
    spec = dataclasses.replace(sr_spec(checkpoint_dir), source_model=None, checkpoint=None, onnx=tmp_path / "x.onnx")
    with pytest.raises(ConfigError, match="runtime torch needs `model`"):
        torch_lowering.export_program(spec, "fp32")


def test_tensor_names_that_differ_from_the_model_fail_the_build(checkpoint_dir):
    outputs = [{"name": "image_out", "dtype": "FP32", "dims": [3, -1, -1]}]
    with pytest.raises(ConfigError, match="do not match model 'super_resolution'"):
        torch_lowering.export_program(sr_spec(checkpoint_dir, outputs=outputs), "fp32")


def test_the_build_writes_a_program_the_runner_and_a_manifest_recording_the_choices(built):
    _, version_dir = built
    assert {p.name for p in version_dir.iterdir()} == {"model.pt2", "model.py", "manifest.json", "served_config.pbtxt",
                                                         *runners.HELPERS}
    manifest = repository.read_manifest(version_dir)
    assert manifest["runtime"] == "torch" and manifest["backend"] == "python"
    assert manifest["torch"] == {"program": "model.pt2", "precision": "fp32", "ops": "plugserve",
                                 "acceleration": "none", "max_graphs": torch_program.MAX_GRAPHS}
    parameters = repository.read_parameters(repository.read_config(version_dir.parent / "config.pbtxt"))
    assert json.loads(parameters[contract.TORCH_OPTIONS_PARAMETER]) == manifest["torch"]
    assert parameters["FORCE_CPU_ONLY_INPUT_TENSORS"] == "no"


def test_the_program_holds_no_pickled_code(built):
    import zipfile

    _, version_dir = built
    with zipfile.ZipFile(version_dir / "model.pt2") as archive:
        assert not [name for name in archive.namelist() if name.endswith(".pkl")]


@pytest.mark.parametrize("ops", ["plugserve", "reference"])
def test_the_loaded_program_computes_what_the_local_model_computes(built, checkpoint_dir, ops):
    spec, version_dir = built
    program = torch_program.Program(version_dir / "model.pt2", "cpu", ops=ops)
    assert program.describe()["kernels"] == (ops == "plugserve" and native.available())
    image, size = torch.rand(3, 3, 20, 28), torch.tensor([40, 60])
    (served,) = program([image, size], [False, True])
    local = models.load("super_resolution", checkpoint_dir / "srcnn.pt")(image, size)
    torch.testing.assert_close(served, local, atol=1e-5, rtol=0)


def test_a_bf16_program_takes_and_returns_fp32_and_stays_close_to_fp32(checkpoint_dir, tmp_path):
    result = build_model(sr_spec(checkpoint_dir), tmp_path, precision="bf16")
    program = torch_program.Program(result.path / "model.pt2", "cpu")
    image, size = torch.rand(1, 3, 16, 16), torch.tensor([32, 32])
    (served,) = program([image, size], [False, True])
    assert served.dtype == torch.float32
    local = models.load("super_resolution", checkpoint_dir / "srcnn.pt")(image, size)
    assert (served - local).abs().max() < 0.05


def test_a_missing_program_or_cuda_graphs_on_the_cpu_fail_naming_the_problem(built, tmp_path):
    _, version_dir = built
    with pytest.raises(FileNotFoundError, match="torch program .*missing.pt2 does not exist"):
        torch_program.Program(tmp_path / "missing.pt2", "cpu")
    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device"):
        torch_program.Program(version_dir / "model.pt2", "cpu", acceleration="cuda_graphs")


def test_a_profile_below_what_the_exported_program_accepts_stops_the_build_naming_the_bound(tmp_path):
    # models.yaml's encoder profile starts at 64x64, fine for ONNX Runtime; the exported program's
    # guards need more than 64 (the stride-64 level must not collapse to one pixel).
    models_yaml = Path(__file__).resolve().parents[2] / "models.yaml"
    spec = dataclasses.replace(config.load(models_yaml)["deformable_encoder"], runtime="torch")
    with pytest.raises(ConfigError, match=r"profiles\[0\]\.image\.min: dimension 2 is 64, .* accepts 65 or more"):
        build_model(spec, tmp_path)
    assert not any(tmp_path.iterdir())


def test_each_instance_runs_on_the_gpu_triton_assigns_it_and_makes_that_gpu_current():
    # model_instance_device_id comes from the instance group's `gpus`, one instance per listed GPU.
    assert torch_program.instance_device("GPU", "1") == torch.device("cuda", 1)
    assert torch_program.instance_device("GPU", 0) == torch.device("cuda", 0)
    assert torch_program.instance_device("CPU", "0") == torch.device("cpu")
    scope = torch_program.device_scope(torch.device("cuda", 3))
    assert isinstance(scope, torch.cuda.device) and scope.idx == 3
    assert not isinstance(torch_program.device_scope(torch.device("cpu")), torch.cuda.device)


def test_listed_gpus_reach_the_served_config_of_a_torch_model(checkpoint_dir, tmp_path):
    spec = sr_spec(checkpoint_dir, precisions=["fp32"],
                   instance_groups=[{"count": 1, "kind": "KIND_GPU", "gpus": [0, 1]}])
    message = repository.read_config(build_model(spec, tmp_path).path.parent / repository.CONFIG_NAME)
    assert [(g.count, list(g.gpus)) for g in message.instance_group] == [(1, [0, 1])]
