"""models.yaml loading: the project's file is valid, and every broken field is named in the error."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from plugserve import config
from plugserve.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tree():
    return yaml.safe_load((ROOT / "models.yaml").read_text())


def parse(tree):
    return config.parse(tree, base_dir=ROOT)


def test_the_projects_models_yaml_declares_both_headline_models_with_the_shared_tensor_names():
    specs = config.load(ROOT / "models.yaml")
    sr, encoder = specs["super_resolution"], specs["deformable_encoder"]
    assert [(t.name, t.dtype, t.dims, t.shape_tensor) for t in sr.inputs] == [
        ("image", "FP32", (3, -1, -1), False), ("size", "INT64", (2,), True)]
    assert [t.name for t in sr.outputs] == ["upscaled"]
    assert [t.name for t in encoder.inputs] == ["image"] and [t.name for t in encoder.outputs] == ["memory"]
    assert sr.runtime == encoder.runtime == "onnxruntime"
    assert sr.checkpoint == ROOT / "src/plugserve/checkpoints/srcnn.pt"
    assert encoder.checkpoint is None  # the model's seeded default
    assert sr.max_batch_size >= max(sr.dynamic_batching.preferred_batch_size, default=1)


def test_a_profile_bounds_full_shapes_for_images_and_values_for_shape_tensors():
    sr = config.load(ROOT / "models.yaml")["super_resolution"]
    first = sr.profiles[0]
    assert len(first["image"].max) == 4 and len(first["size"].max) == 2
    assert first["image"].min == (1, 3, 8, 8) and first["size"].max == (1024, 1024)
    assert len(sr.profiles) >= 2


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t["models"]["super_resolution"].pop("inputs"), "models.super_resolution.inputs: missing"),
        (lambda t: t["models"]["super_resolution"]["profiles"][0]["image"].update(max=[8, 3, 256]),
         "models.super_resolution.profiles[0].image.max: expected 4 integers"),
        (lambda t: t["models"]["super_resolution"]["profiles"][0]["size"].update(min=[0, 8]),
         "models.super_resolution.profiles[0].size.min: expected integers >= 1"),
        (lambda t: t["models"]["super_resolution"]["profiles"][0]["image"].update(min=[1, 3, 300, 300]),
         "models.super_resolution.profiles[0].image: expected min <= opt <= max"),
        (lambda t: t["models"]["super_resolution"]["profiles"][0]["image"].update(min=[1, 4, 8, 8]),
         "models.super_resolution.profiles[0].image: position 1 is fixed to 3"),
        (lambda t: t["models"]["super_resolution"]["profiles"][1].pop("size"),
         "models.super_resolution.profiles[1].size: missing"),
        (lambda t: t["models"]["deformable_encoder"]["inputs"][0].update(dtype="FLOAT"),
         "models.deformable_encoder.inputs[0].dtype: expected one of FP32"),
        (lambda t: t["models"]["deformable_encoder"]["inputs"][0].update(dims="3,-1,-1"),
         "models.deformable_encoder.inputs[0].dims: expected a list of integers"),
        (lambda t: t["models"]["deformable_encoder"].update(max_batch_size=-1),
         "models.deformable_encoder.max_batch_size: expected an integer >= 0"),
        (lambda t: t["models"]["deformable_encoder"]["dynamic_batching"].update(preferred_batch_size=[16]),
         "models.deformable_encoder.dynamic_batching.preferred_batch_size: sizes must be <= max_batch_size 4"),
        (lambda t: t["models"]["deformable_encoder"]["profiles"][0]["image"].update(max=[9, 3, 512, 512]),
         "models.deformable_encoder.profiles[0].image.max: batch 9 exceeds max_batch_size 4"),
        (lambda t: t["models"]["deformable_encoder"]["instance_groups"][0].update(kind="KIND_TPU"),
         "models.deformable_encoder.instance_groups[0].kind: expected one of KIND_CPU"),
        (lambda t: t["models"]["deformable_encoder"]["instance_groups"][0].update(gpus=[0]),
         "models.deformable_encoder.instance_groups[0].gpus: applies to kind KIND_GPU only"),
        (lambda t: t["models"]["deformable_encoder"]["instance_groups"][0].update(kind="KIND_GPU", gpus=[0, -1]),
         "models.deformable_encoder.instance_groups[0].gpus: expected integers >= 0"),
        (lambda t: t["models"]["deformable_encoder"]["instance_groups"][0].update(kind="KIND_GPU", gpus=[1, 1]),
         "models.deformable_encoder.instance_groups[0].gpus: expected `all` or a non-empty list of distinct"),
        (lambda t: t["models"]["deformable_encoder"]["instance_groups"][0].update(kind="KIND_GPU", gpus=[]),
         "models.deformable_encoder.instance_groups[0].gpus: expected `all` or a non-empty list of distinct"),
        (lambda t: t["models"]["deformable_encoder"]["instance_groups"][0].update(kind="KIND_GPU", gpus="0,1"),
         "models.deformable_encoder.instance_groups[0].gpus: expected a list of integers"),
        (lambda t: t["models"]["deformable_encoder"]["source"].update(onnx="model.onnx"),
         "models.deformable_encoder.source: expected exactly one of 'model'"),
        (lambda t: t["models"]["deformable_encoder"].update(batching=True),
         "models.deformable_encoder.batching: unknown field"),
        (lambda t: t["models"]["super_resolution"]["precisions"].append("int4"),
         "models.super_resolution.precisions[1]: expected one of fp32, fp16, bf16"),
        (lambda t: t["models"]["super_resolution"]["inputs"][1].update(dtype="FP32"),
         "models.super_resolution.inputs[1]: a shape tensor needs dtype INT32 or INT64"),
    ],
)
def test_a_wrong_or_missing_field_is_named_in_the_error(tree, edit, message):
    broken = copy.deepcopy(tree)
    edit(broken)
    with pytest.raises(ConfigError) as error:
        parse(broken)
    assert str(error.value).startswith(f"models.yaml: {message}"), str(error.value)


def test_a_file_that_is_not_yaml_fails_with_its_name(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text("models: [unclosed\n")
    with pytest.raises(ConfigError, match="models.yaml: not valid YAML"):
        config.load(path)


def test_a_missing_file_fails_with_its_path(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "absent.yaml")


@pytest.mark.parametrize("name", ["../../x", "/abs/model", "a/b", ".hidden", "..", "sp ace"])
def test_a_model_name_that_could_leave_the_repository_is_refused(tree, name):
    tree["models"] = {name: tree["models"]["super_resolution"]}
    with pytest.raises(ConfigError, match="a model name must be letters, digits"):
        parse(tree)


def test_float_inputs_reject_non_finite_values_unless_told_and_the_version_policy_is_explicit(tree):
    spec = parse(tree)["super_resolution"]
    assert spec.input("image").reject_non_finite and not spec.input("size").reject_non_finite
    assert spec.version_policy == (("latest", {"num_versions": 1}),)
    entry = tree["models"]["super_resolution"]
    entry["inputs"][0]["reject_non_finite"] = False
    entry["version_policy"] = {"specific": [1, 3]}
    spec = parse(tree)["super_resolution"]
    assert not spec.input("image").reject_non_finite
    assert spec.version_policy == (("specific", {"versions": [1, 3]}),)
    entry["inputs"][1]["reject_non_finite"] = True
    with pytest.raises(ConfigError, match=r"inputs\[1\].reject_non_finite: applies to float inputs only"):
        parse(tree)


def test_gpu_instance_groups_list_their_gpus_or_take_every_gpu(tree):
    entry = tree["models"]["deformable_encoder"]
    entry["instance_groups"] = [{"count": 2, "kind": "KIND_GPU", "gpus": [0, 1]},
                                {"count": 1, "kind": "KIND_GPU", "gpus": "all"}, {"kind": "KIND_GPU"}]
    groups = parse(tree)["deformable_encoder"].instance_groups
    assert groups == (config.InstanceGroup(2, "KIND_GPU", (0, 1)), config.InstanceGroup(1, "KIND_GPU"),
                      config.InstanceGroup(1, "KIND_GPU"))
