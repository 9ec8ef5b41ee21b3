"""The "tensorrt" lowering: model.plan built by TensorRT with libplugserve.so, served by Triton's TensorRT backend.

The engine is built from the prepared plugin-node graph (engine_source.onnx, kept beside the plan);
config.pbtxt gets the TensorRT platform, GPU instances, shape-tensor inputs and one warmup request
per profile; manifest.json gets the engine's provenance (plugserve.trt.provenance).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from plugserve import console, native, onnx_io, repository
from plugserve.config import ConfigError, Range
from plugserve.export import export_onnx
from plugserve.lowering import Lowered, package_versions
from plugserve.repository import sha256_file
from plugserve.runners.contract import DTYPES
from plugserve.surgery import pluginize
from plugserve.trt.engine import (
    BuildOptions,
    build_engine,
    graph_precision,
    plan_precision,
    timing_cache_path,
)
from plugserve.trt.environment import Environment, detect_gpu, require_tensorrt, unavailable_reason
from plugserve.trt.graph import Port, prepare
from plugserve.trt.provenance import MANIFEST_KEY, manifest_fields

if TYPE_CHECKING:
    import onnx

    from plugserve.config import ModelSpec, TensorRTSettings

ENGINE_SOURCE_FILE = "engine_source.onnx"  # the prepared plugin-node graph the engine was built from


def unavailable() -> str | None:
    return unavailable_reason()


def _onnx_dtype(triton_dtype: str) -> int:
    import onnx

    return int(onnx.helper.np_dtype_to_tensor_dtype(np.dtype(DTYPES[triton_dtype])))


def prepare_onnx(model: onnx.ModelProto, spec: ModelSpec) -> onnx.ModelProto:
    """The exported graph prepared for TensorRT and Triton with models.yaml's interface (trt.graph.prepare)."""
    inputs = [Port(t.name, _onnx_dtype(t.dtype), t.dims[0] if t.shape_tensor else 0) for t in spec.inputs]
    outputs = [Port(t.name, _onnx_dtype(t.dtype)) for t in spec.outputs]
    return prepare(model, inputs, outputs, batched=spec.max_batch_size > 0)


def engine_profiles(spec: ModelSpec) -> list[dict[str, Range]]:
    """models.yaml profiles as the engine sees them: shape-tensor values get the batch value in front
    (see `prepare_onnx`), bounded like the batch dimension of the profile's other inputs."""
    profiles = []
    for profile in spec.profiles:
        batch = next((r for name, r in profile.items() if not spec.input(name).shape_tensor), None)
        converted = {}
        for name, bounds in profile.items():
            if spec.input(name).shape_tensor and spec.max_batch_size > 0:
                low, opt, high = (
                    (batch.min[0], batch.opt[0], batch.max[0]) if batch else (1, 1, spec.max_batch_size)
                )
                bounds = Range((low, *bounds.min), (opt, *bounds.opt), (high, *bounds.max))
            converted[name] = bounds
        profiles.append(converted)
    return profiles



def _cuda_graphs(spec: ModelSpec) -> dict[str, Any]:
    shape_tensors = [t.name for t in spec.inputs if t.shape_tensor]
    if shape_tensors:
        raise ConfigError(
            f"{spec.label}: models.{spec.name}.tensorrt.cuda_graphs: a CUDA graph fixes every shape, but shape "
            f"tensor input(s) {shape_tensors} set output shapes per request; turn cuda_graphs off for this model"
        )
    specs = []
    for profile in spec.profiles:
        batched = spec.max_batch_size > 0
        specs.append(
            {
                "batch_size": next(iter(profile.values())).opt[0] if batched else 0,
                "input": {
                    name: {"dim": list(r.opt[1:] if batched else r.opt)} for name, r in profile.items()
                },
            }
        )
    return {"cuda": {"graphs": True, "graph_spec": specs}}


def config_updates(
    spec: ModelSpec, settings: TensorRTSettings, warmup: list[dict[str, Any]]
) -> dict[str, Any]:
    """The config.pbtxt fields the tensorrt lowering sets over repository.config_dict's."""
    updates: dict[str, Any] = {
        "platform": "tensorrt_plan",
        "input": [
            {
                "name": t.name,
                "data_type": f"TYPE_{t.dtype}",
                "dims": list(t.dims),
                "is_shape_tensor": t.shape_tensor,
            }
            for t in spec.inputs
        ],
        # An engine runs on a GPU only: models.yaml's instance counts, on GPUs (the listed ones, if any).
        "instance_group": [repository.instance_group(g, "KIND_GPU") for g in spec.instance_groups],
        "model_warmup": warmup,
    }
    if settings.cuda_graphs:
        updates["optimization"] = _cuda_graphs(spec)
    return updates


def _export(spec: ModelSpec, out_path: Path, precision: str) -> onnx.ModelProto:
    """The plugin-node graph of `spec`: exported from its checkpoint, or its ONNX pluginized."""
    import onnx

    if spec.onnx is not None:
        return pluginize(onnx.load(str(spec.onnx)))
    if spec.source_model is None:
        raise ConfigError(f"{spec.label}: models.{spec.name}.source: needs `model` or `onnx`")
    # fp16 is exported as fp16 (strongly typed on TensorRT 10 and 11 alike); bf16 comes from the
    # builder flag of TensorRT 10 on an fp32 graph (plan_precision refuses it on 11).
    export_onnx(
        spec.source_model,
        out_path,
        checkpoint=spec.checkpoint,
        target="tensorrt",
        dtype="fp16" if precision == "fp16" else "fp32",
    )
    return onnx.load(str(out_path))


def lower(spec: ModelSpec, version_dir: Path, precision: str) -> Lowered:
    """Export, prepare and build `spec` into version_dir/model.plan; say how Triton serves it."""
    require_tensorrt()
    native.require_gpu("runtime tensorrt (building an engine)")  # before the export, not after it
    import onnx
    import tensorrt as trt

    settings = spec.tensorrt
    source = _export(spec, version_dir / ENGINE_SOURCE_FILE, precision)
    # Before prepare_onnx, which may narrow int64 inputs to the int32 the plugins take.
    onnx_io.check(spec, source, precision)
    compute_dtype = graph_precision(source)
    plan_precision(
        int(trt.__version__.split(".")[0]), precision, compute_dtype
    )  # refuse early, before building
    onnx_path = version_dir / ENGINE_SOURCE_FILE
    onnx.save(prepare_onnx(source, spec), str(onnx_path))

    library = native.library_path()
    gpu = detect_gpu()
    profiles = engine_profiles(spec)
    options = BuildOptions(
        profiles=profiles,
        precision=precision,
        workspace_mib=settings.workspace_mib,
        optimization_level=settings.optimization_level,
        timing_cache=timing_cache_path(settings.timing_cache_dir, trt.__version__, gpu),
    )
    with console.step(f"build: {spec.name}: TensorRT engine ({precision}, {len(profiles)} profile(s))"):
        info = build_engine(onnx_path, version_dir / repository.PLAN_FILE, options, library, graph_dtype=compute_dtype)
    environment = Environment(info.tensorrt_version, gpu, sha256_file(library) if library else None)
    warmup = repository.warmup_requests(spec, version_dir.parent / repository.WARMUP_DIR, version_dir.name,
                                        data="random_data")
    print(
        f"[tensorrt] {spec.name}: built {info.plan.name} in {info.build_seconds:.0f} s "
        f"(TensorRT {info.tensorrt_version}, {gpu.name if gpu else 'no GPU name'}, {precision})",
        file=sys.stderr,
    )
    return Lowered(
        backend="tensorrt",
        versions={**package_versions("plugserve", "torch", "onnx"), "tensorrt": info.tensorrt_version},
        config_updates=config_updates(spec, settings, warmup),
        manifest={
            MANIFEST_KEY: manifest_fields(
                environment,
                onnx_path=onnx_path,
                profiles=profiles,
                precision=precision,
                plugin_library=library,
            )
        },
    )
