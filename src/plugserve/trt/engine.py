"""Building a TensorRT engine from an ONNX file: optimization profiles, precision, timing cache, the build.

Two TensorRT generations are supported. 10.x builds weakly typed networks where reduced precision
is a builder flag (fp16/bf16); 11.x networks are always strongly typed, so reduced precision must
already be in the ONNX types (`plugserve export --dtype fp16`). `plan_precision` decides which.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from plugserve.trt.environment import Gpu, logger, require_tensorrt, version_key
from plugserve.trt.registry import check_plugins_registered, load_plugins

if TYPE_CHECKING:
    import onnx
    import tensorrt as trt

    from plugserve.config import Range

PRECISIONS = ("fp32", "fp16", "bf16")
# ONNX TensorProto element types of the floating-point precisions.
_ONNX_FLOAT_TYPES = {1: "fp32", 10: "fp16", 16: "bf16"}


class EngineBuildError(RuntimeError):
    """Parsing or building failed; the message carries TensorRT's own errors."""






# One optimization profile: input name -> min/opt/max (shapes, or a shape tensor's values).
Profile = Mapping[str, "Range"]


@dataclass(frozen=True)
class PrecisionPlan:
    strongly_typed: bool
    builder_flags: tuple[str, ...]  # BuilderFlag member names


def graph_precision(model: onnx.ModelProto) -> str:
    """The floating-point type the graph computes in ("fp32", "fp16", "bf16").

    Read from the weights (by element count), not the inputs: `prepare_onnx` may put fp32 Casts
    around an fp16 graph so that clients keep sending what models.yaml declares.
    """
    counts: dict[str, int] = {}
    for initializer in model.graph.initializer:
        kind = _ONNX_FLOAT_TYPES.get(initializer.data_type)
        if kind is not None:
            size = 1
            for dim in initializer.dims:
                size *= dim
            counts[kind] = counts.get(kind, 0) + size
    if counts:
        return max(counts, key=lambda kind: counts[kind])
    inputs = [_ONNX_FLOAT_TYPES.get(i.type.tensor_type.elem_type) for i in model.graph.input]
    return next((kind for kind in inputs if kind is not None), "fp32")


def plan_precision(tensorrt_major: int, requested: str, graph: str) -> PrecisionPlan:
    """How to obtain `requested` precision from a graph typed `graph` under a TensorRT major version."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r} is not one of {', '.join(PRECISIONS)}")
    if requested == graph:
        # The ONNX types already say everything; strong typing keeps TensorRT from changing them.
        return PrecisionPlan(strongly_typed=True, builder_flags=())
    if graph != "fp32":
        raise ValueError(
            f"the ONNX graph is typed {graph} but precision {requested} was asked for; "
            f"export it again with --dtype {requested}"
        )
    if tensorrt_major >= 11:
        raise ValueError(
            f"TensorRT {tensorrt_major} builds strongly typed networks only: precision {requested} must come "
            f"from the ONNX types; export with `plugserve export --dtype {requested}`"
        )
    return PrecisionPlan(strongly_typed=False, builder_flags=(requested.upper(),))


@dataclass
class BuildOptions:
    profiles: Sequence[Profile]
    precision: str = "fp32"
    workspace_mib: int | None = None  # None: TensorRT's default (the GPU's memory)
    optimization_level: int | None = None  # 0..5, None: TensorRT's default (3)
    timing_cache: Path | None = None  # read before and written after the build
    show_progress: bool = True


@dataclass
class TensorInfo:
    name: str
    dtype: str  # numpy dtype name
    shape: tuple[int, ...]  # -1 for dynamic dimensions
    is_shape_tensor: bool


@dataclass
class EngineInfo:
    plan: Path
    tensorrt_version: str
    inputs: list[TensorInfo] = field(default_factory=list)
    outputs: list[TensorInfo] = field(default_factory=list)
    build_seconds: float = 0.0


# ---------------------------------------------------------------------------------------------
# The build.


def _progress_monitor() -> trt.IProgressMonitor:
    """A thread-safe IProgressMonitor printing top-level phases and at most one step line a few seconds."""
    import tensorrt as trt

    class ProgressMonitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()
            self._phases: dict[str, tuple[int, int]] = {}  # name -> (depth, steps)
            self._last_print = 0.0

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with self._lock:
                depth = 0 if parent_phase is None else self._phases.get(parent_phase, (0, 0))[0] + 1
                self._phases[phase_name] = (depth, num_steps)
                if depth <= 1:
                    print(
                        f"[tensorrt] {'  ' * depth}{phase_name} ({num_steps} steps)",
                        file=sys.stderr,
                        flush=True,
                    )

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self._lock:
                now = time.monotonic()
                depth, steps = self._phases.get(phase_name, (0, 0))
                if now - self._last_print > 5.0:
                    self._last_print = now
                    print(
                        f"[tensorrt] {'  ' * depth}{phase_name}: {step + 1}/{steps}",
                        file=sys.stderr,
                        flush=True,
                    )
            return True  # never cancel

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                self._phases.pop(phase_name, None)

    return ProgressMonitor()


def _dims(dims: trt.Dims) -> tuple[int, ...]:
    # Dims iterates through __getitem__ only, which the stubs do not declare iterable.
    return tuple(int(dims[i]) for i in range(len(dims)))


# TensorRT DataType member name -> dtype name (trt.nptype has no bfloat16).
_DTYPE_NAMES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "BF16": "bfloat16",
    "INT8": "int8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
    "UINT8": "uint8",
}


def _tensor_info(tensor: trt.ITensor) -> TensorInfo:
    return TensorInfo(
        name=tensor.name,
        dtype=_DTYPE_NAMES.get(tensor.dtype.name, tensor.dtype.name.lower()),
        shape=_dims(tensor.shape),
        is_shape_tensor=tensor.is_shape_tensor,
    )


def _add_profiles(
    builder: trt.Builder,
    network: trt.INetworkDefinition,
    config: trt.IBuilderConfig,
    profiles: Sequence[Profile],
) -> None:
    import tensorrt as trt

    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    for index, profile in enumerate(profiles):
        unknown = set(profile) - {t.name for t in inputs}
        if unknown:
            raise ValueError(f"profile {index} names inputs {sorted(unknown)} the network does not have")
        optimization_profile = builder.create_optimization_profile()
        for tensor in inputs:
            shape = _dims(tensor.shape)
            bounds = profile.get(tensor.name)
            if bounds is None:
                if tensor.is_shape_tensor or -1 in shape:
                    raise ValueError(
                        f"profile {index} has no min/opt/max for input {tensor.name!r} "
                        f"({'a shape tensor: give its values' if tensor.is_shape_tensor else f'shape {shape}'})"
                    )
                continue
            if tensor.is_shape_tensor:
                optimization_profile.set_shape_input(
                    tensor.name, list(bounds.min), list(bounds.opt), list(bounds.max)
                )
                continue
            for key, dims in (("min", bounds.min), ("opt", bounds.opt), ("max", bounds.max)):
                if len(dims) != len(shape) or any(
                    s not in (-1, d) for s, d in zip(shape, dims, strict=False)
                ):
                    raise ValueError(
                        f"profile {index}: {tensor.name}.{key} {list(dims)} does not fit shape {list(shape)}"
                    )
            optimization_profile.set_shape(
                tensor.name,
                trt.Dims(list(bounds.min)),
                trt.Dims(list(bounds.opt)),
                trt.Dims(list(bounds.max)),
            )
        config.add_optimization_profile(optimization_profile)


def _parse(network: trt.INetworkDefinition, onnx_path: Path) -> None:
    import tensorrt as trt

    parser = trt.OnnxParser(network, logger())
    if not parser.parse_from_file(str(onnx_path)):
        errors = []
        for index in range(parser.num_errors):
            error = parser.get_error(index)
            errors.append(
                f"  node {error.node()} ({error.node_operator()} {error.node_name()}): {error.desc()}"
            )
        raise EngineBuildError(f"TensorRT could not parse {onnx_path}:\n" + "\n".join(errors))


def _atomic_write(path: Path, data: bytes | memoryview) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    options: BuildOptions,
    plugin_library: Path | None,
    *,
    graph_dtype: str | None = None,
) -> EngineInfo:
    """Parse `onnx_path` with the plugin library registered, build with `options`, write `plan_path`.

    `graph_dtype` is the precision the graph computes in (default: read from its weights).
    """
    import onnx

    require_tensorrt()
    import tensorrt as trt

    model = onnx.load(str(onnx_path), load_external_data=False)
    check_plugins_registered(model, load_plugins(plugin_library), plugin_library)
    precision = plan_precision(
        int(trt.__version__.split(".")[0]), options.precision, graph_dtype or graph_precision(model)
    )

    builder = trt.Builder(logger())
    flags = 0
    if precision.strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    _parse(network, onnx_path)

    config = builder.create_builder_config()
    for flag in precision.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if options.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    if options.optimization_level is not None:
        config.builder_optimization_level = options.optimization_level
    if options.show_progress:
        config.progress_monitor = _progress_monitor()
    _add_profiles(builder, network, config, options.profiles)

    cache_bytes = (
        options.timing_cache.read_bytes() if options.timing_cache and options.timing_cache.is_file() else b""
    )
    timing_cache = config.create_timing_cache(cache_bytes)
    # ignore_mismatch=False: a cache from another GPU or TensorRT version is discarded, not trusted.
    config.set_timing_cache(timing_cache, False)

    started = time.monotonic()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build {onnx_path} (its log above says why)")
    build_seconds = time.monotonic() - started

    plan_path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(plan_path, memoryview(serialized))
    if options.timing_cache is not None:
        options.timing_cache.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(options.timing_cache, memoryview(config.get_timing_cache().serialize()))
    return EngineInfo(
        plan=plan_path,
        tensorrt_version=str(trt.__version__),
        inputs=[_tensor_info(network.get_input(i)) for i in range(network.num_inputs)],
        outputs=[_tensor_info(network.get_output(i)) for i in range(network.num_outputs)],
        build_seconds=build_seconds,
    )




def timing_cache_path(directory: Path, tensorrt: str, gpu: Gpu | None) -> Path:
    """A timing cache per TensorRT release and GPU model: caches from elsewhere would only be discarded."""
    device = "nogpu" if gpu is None else "".join(c if c.isalnum() else "-" for c in gpu.name).strip("-")
    return directory / f"timing-{version_key(tensorrt)}-{device}.cache"
