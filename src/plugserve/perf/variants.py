"""Scratch repositories a perf run serves: the harness's calibration model, and variants of a built model."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from plugserve import config, repository
from plugserve.build import build_model
from plugserve.console import UsageError
from plugserve.perf.results import CALIBRATION_MODEL


def build_calibration_repository(repository_dir: Path, max_batch_size: int = 8) -> Path:
    """A repository holding one identity model, built by `plugserve.build` like any served model.

    An ONNX `Identity` on a small FP32 vector served by the onnxruntime runner: what is left of a
    request is the harness, the protocol and Triton's python-backend path, which is the ceiling
    no real model's measurement can rise above.
    """
    import onnx
    from onnx import TensorProto, helper

    repository_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = repository_dir.parent / f"{CALIBRATION_MODEL}.onnx"
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], CALIBRATION_MODEL,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "n"])],
    )
    # IR version 10 (onnx 1.16): recent onnx writes a newer IR than the onnxruntime here reads.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.save(model, str(onnx_path))
    tree = {"models": {CALIBRATION_MODEL: {
        "source": {"onnx": str(onnx_path)},
        "inputs": [{"name": "x", "dtype": "FP32", "dims": [-1]}],
        "outputs": [{"name": "y", "dtype": "FP32", "dims": [-1]}],
        "profiles": [{"x": {"min": [1, 1], "opt": [1, 16], "max": [max_batch_size, 4096]}}],
        "max_batch_size": max_batch_size,
        "dynamic_batching": {"max_queue_delay_microseconds": 0},
        "runtime": "onnxruntime",
    }}}
    spec = config.parse(tree, base_dir=repository_dir.parent, label="calibration model")[CALIBRATION_MODEL]
    build_model(spec, repository_dir)
    return repository_dir


def build_variant_repository(config_path: Path, source_repository: Path, model: str, into: Path, *,
                             dynamic_batching: bool | None, instances: int | None) -> Path:
    """The served model again, with dynamic batching or the instance count changed from models.yaml.

    Built by `plugserve.build` from the model.onnx of the newest version in `source_repository`,
    so the variant serves the same graph and only Triton's scheduling differs.
    """
    spec = config.load(config_path).get(model)
    if spec is None:
        raise config.ConfigError(f"{config_path}: no model {model!r}; variants are built from models.yaml")
    version_dir = repository.served_version_dir(source_repository / model)
    if version_dir is None:
        raise FileNotFoundError(f"no built version of {model!r} in {source_repository}: run `plugserve build` first")
    if repository.read_manifest(version_dir)["runtime"] != "onnxruntime":
        raise UsageError(f"{version_dir}: variants (--dynamic-batching, --instances) are built for the "
                         "onnxruntime runtime only")
    changes: dict[str, Any] = {"onnx": version_dir / repository.ONNX_FILE, "source_model": None, "checkpoint": None,
                               "runtime": "onnxruntime"}
    if dynamic_batching is not None:
        batching = spec.dynamic_batching or config.DynamicBatching((), 0)
        changes["dynamic_batching"] = batching if dynamic_batching else None
    if instances is not None:
        # The first group's kind and GPUs, with the count asked for.
        changes["instance_groups"] = (dataclasses.replace(spec.instance_groups[0], count=instances),)
    build_model(dataclasses.replace(spec, **changes), into)
    return into
