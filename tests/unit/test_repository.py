"""config.pbtxt through Triton's protobuf schema, and manifest.json hashes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2

from plugserve import config, repository
from plugserve.runners import contract

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def specs():
    return config.load(ROOT / "models.yaml")


@pytest.mark.parametrize("model", ["super_resolution", "deformable_encoder"])
def test_a_generated_config_round_trips_through_tritons_model_config_schema(specs, model, tmp_path):
    spec = specs[model]
    parameters = {contract.SPEC_PARAMETER: json.dumps(repository.runner_spec(spec))}
    built = repository.config_dict(spec, "python", parameters)
    path = repository.write_config(built, tmp_path / "config.pbtxt")

    message = repository.read_config(path)
    assert repository.to_dict(message) == repository.to_dict(repository.to_message(built))
    assert message.name == model and message.backend == "python"
    assert message.max_batch_size == spec.max_batch_size
    assert [(i.name, list(i.dims)) for i in message.input] == [(t.name, list(t.dims)) for t in spec.inputs]
    assert [o.name for o in message.output] == [t.name for t in spec.outputs]
    assert list(message.dynamic_batching.preferred_batch_size) == list(spec.dynamic_batching.preferred_batch_size)
    assert message.dynamic_batching.max_queue_delay_microseconds == spec.dynamic_batching.max_queue_delay_microseconds
    assert [(g.count, g.kind) for g in message.instance_group] == [(g.count, model_config_pb2.ModelInstanceGroup.KIND_CPU)
                                                                   for g in spec.instance_groups]
    runner = json.loads(repository.read_parameters(message)[contract.SPEC_PARAMETER])
    assert runner["profiles"] == [{name: r.as_dict() for name, r in p.items()} for p in spec.profiles]


def test_a_lowering_can_replace_top_level_fields_and_the_schema_still_checks_them(specs):
    spec = specs["super_resolution"]
    message = repository.to_message(
        repository.config_dict(spec, "tensorrt", updates={"instance_group": [{"count": 2, "kind": "KIND_GPU"}]}))
    assert message.backend == "tensorrt" and message.instance_group[0].count == 2
    with pytest.raises(ValueError, match="does not fit Triton's schema"):
        repository.to_message(repository.config_dict(spec, "python", updates={"instance_group": [{"kind": "GPU"}]}))
    with pytest.raises(ValueError, match="does not fit Triton's schema"):
        repository.to_message(repository.config_dict(spec, "python", updates={"max_batch": 4}))


def test_listed_gpus_reach_config_pbtxt_and_every_gpu_leaves_the_field_out(specs, tmp_path):
    groups = (config.InstanceGroup(2, "KIND_GPU", (0, 1)), config.InstanceGroup(1, "KIND_GPU"))
    spec = dataclasses.replace(specs["deformable_encoder"], instance_groups=groups)
    message = repository.read_config(repository.write_config(repository.config_dict(spec, "python"),
                                                             tmp_path / "config.pbtxt"))
    assert [(g.count, list(g.gpus)) for g in message.instance_group] == [(2, [0, 1]), (1, [])]
    assert "gpus: 0" in (tmp_path / "config.pbtxt").read_text()


def test_the_manifest_records_the_sha256_of_every_artifact_and_of_the_config(tmp_path):
    version_dir = tmp_path / "model" / "1"
    (version_dir / "sub").mkdir(parents=True)
    (version_dir / "model.onnx").write_bytes(b"graph")
    (version_dir / "sub" / "weights.bin").write_bytes(b"\x00" * 10)
    config_path = tmp_path / "model" / "config.pbtxt"
    config_path.write_text('name: "model"\n')

    manifest = repository.write_manifest(version_dir, config_path, {"model": "model", "version": 1})
    assert manifest == repository.read_manifest(version_dir)
    assert manifest["artifacts"] == {
        "model.onnx": hashlib.sha256(b"graph").hexdigest(),
        "sub/weights.bin": hashlib.sha256(b"\x00" * 10).hexdigest(),
    }
    assert manifest["config_sha256"] == repository.sha256_file(config_path)
    assert repository.verify_manifest(version_dir) == []


def test_a_changed_or_added_artifact_no_longer_matches_the_manifest(tmp_path):
    version_dir = tmp_path / "1"
    version_dir.mkdir()
    (version_dir / "model.onnx").write_bytes(b"graph")
    config_path = tmp_path / "config.pbtxt"
    config_path.write_text("")
    repository.write_manifest(version_dir, config_path, {})
    (version_dir / "model.onnx").write_bytes(b"other graph")
    (version_dir / "extra.bin").write_bytes(b"?")
    assert repository.verify_manifest(version_dir) == ["extra.bin", "model.onnx"]


def test_sha256_file_matches_hashlib():
    path = ROOT / "models.yaml"
    assert repository.sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_versions_lists_only_numeric_directories_in_numeric_order(tmp_path):
    for name in ("2", "10", "1", "latest", ".staging"):
        (tmp_path / name).mkdir()
    (tmp_path / "3").write_text("a file, not a version")
    assert repository.versions(tmp_path) == [1, 2, 10]
    assert repository.versions(tmp_path / "absent") == []
