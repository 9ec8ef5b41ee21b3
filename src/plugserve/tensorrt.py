"""Every TensorRT call of the project: plugin loading, ONNX parsing, engine builds, engine provenance.

TensorRT is imported inside functions only: `plugserve --help`, the onnxruntime lowering and the
graph tests run without it. Functions that need it raise `TensorRTUnavailable` naming what is missing.

Two TensorRT generations are supported. 10.x builds weakly typed networks where reduced precision
is a builder flag (fp16/bf16); 11.x networks are always strongly typed, so reduced precision must
already be in the ONNX types (`plugserve export --dtype fp16`). `plan_precision` decides which.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx
    import onnx_graphsurgeon as gs
    import tensorrt as trt

    from plugserve.build import Lowered
    from plugserve.config import ModelSpec, Range

PLUGIN_NAMESPACE = "plugserve"
# The ONNX parser looks a non-standard node up in the plugin registry under these attributes;
# it defaults to version "1" and the empty namespace when they are absent.
PLUGIN_VERSION_ATTRIBUTE = "plugin_version"
PLUGIN_NAMESPACE_ATTRIBUTE = "plugin_namespace"
PRECISIONS = ("fp32", "fp16", "bf16")
# ONNX TensorProto element types of the floating-point precisions.
_ONNX_FLOAT_TYPES = {1: "fp32", 10: "fp16", 16: "bf16"}
# A TensorRT engine runs only under the exact TensorRT build that serialized it, only on the GPU
# model it was tuned for, and calls the plugin code it was built with.
STALE_REASONS = ("tensorrt", "gpu", "plugin_library")


class TensorRTUnavailable(RuntimeError):
    """TensorRT (or a GPU for it) is not present; the message says what is missing."""


class PluginNotRegistered(RuntimeError):
    """An ONNX node needs a plugin creator that no loaded library registered."""


class EngineBuildError(RuntimeError):
    """Parsing or building failed; the message carries TensorRT's own errors."""


def require_tensorrt() -> None:
    """Raise `TensorRTUnavailable` with the reason unless TensorRT can be imported.

    Callers then `import tensorrt as trt` themselves, so that mypy checks every call against
    tensorrt-stubs (a module returned from a helper would be untyped).
    """
    try:
        import tensorrt as trt
    except ImportError as error:
        raise TensorRTUnavailable(
            f"the tensorrt Python package is not installed ({error}); use the NGC image in docker/"
        ) from error
    # tensorrt-stubs installs a `tensorrt/` folder of .pyi files only, which imports as an empty
    # namespace package: a real installation has the Builder class.
    if not hasattr(trt, "Builder"):
        raise TensorRTUnavailable(
            "only type stubs for tensorrt are installed, not TensorRT itself; use the NGC image in docker/"
        )


def unavailable_reason() -> str | None:
    """Why TensorRT cannot be used here, or None when it can (for pytest skip reasons)."""
    try:
        require_tensorrt()
    except TensorRTUnavailable as error:
        return str(error)
    return None


def tensorrt_version() -> str | None:
    """The TensorRT version the Python bindings load, else the one libnvinfer reports, else None.

    `plugserve serve` uses the libnvinfer fallback: tritonserver's TensorRT backend links the system
    libnvinfer, which is what must match an engine, whether or not the Python package is installed.
    """
    try:
        require_tensorrt()
        import tensorrt as trt

        return trt.__version__
    except TensorRTUnavailable:
        pass
    for soname in ("libnvinfer.so.11", "libnvinfer.so.10"):
        try:
            library = ctypes.CDLL(soname)
        except OSError:
            continue
        # getInferLibVersion encodes MAJOR*10000 + MINOR*100 + PATCH since TensorRT 10.
        code = int(library.getInferLibVersion())
        return f"{code // 10000}.{code // 100 % 100}.{code % 100}"
    return None


def _version_key(version: str) -> str:
    """Major.minor.patch: the build number differs between the Python wheel and the system library."""
    return ".".join(version.split(".")[:3])


# ---------------------------------------------------------------------------------------------
# Environment: what an engine depends on, recorded at build time and compared at serve time.


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: str  # "9.0"


@dataclass(frozen=True)
class Environment:
    """What a TensorRT engine is tied to. None means absent (no TensorRT, no GPU, no plugin library)."""

    tensorrt_version: str | None
    gpu: Gpu | None
    plugin_sha256: str | None

    def as_manifest(self) -> dict[str, Any]:
        return {
            "tensorrt_version": self.tensorrt_version,
            "gpu": None
            if self.gpu is None
            else {"name": self.gpu.name, "compute_capability": self.gpu.compute_capability},
            "plugin_library_sha256": self.plugin_sha256,
        }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def detect_gpu() -> Gpu | None:
    """GPU 0 as nvidia-smi reports it (the device tritonserver's instance groups default to)."""
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader", "--id=0"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0 or "," not in result.stdout:
        return None
    name, capability = (part.strip() for part in result.stdout.strip().splitlines()[0].rsplit(",", 1))
    return Gpu(name=name, compute_capability=capability)


def detect_environment(plugin_library: Path | None) -> Environment:
    """The environment on this machine: TensorRT version, GPU 0, sha256 of the plugin library."""
    return Environment(
        tensorrt_version=tensorrt_version(),
        gpu=detect_gpu(),
        plugin_sha256=file_sha256(plugin_library)
        if plugin_library is not None and plugin_library.is_file()
        else None,
    )


# ---------------------------------------------------------------------------------------------
# Stale-engine check: `plugserve serve` refuses engines that cannot run correctly here.


@dataclass(frozen=True)
class StaleEngine:
    model: str
    version: str
    reasons: tuple[str, ...]  # human sentences, one per mismatch

    def __str__(self) -> str:
        return f"{self.model}/{self.version}: " + "; ".join(self.reasons)


MANIFEST_KEY = "tensorrt"


def manifest_fields(
    environment: Environment,
    *,
    onnx_path: Path,
    profiles: Sequence[Profile],
    precision: str,
    plugin_library: Path | None,
) -> dict[str, Any]:
    """The manifest.json section of a TensorRT engine, read back by `stale_engines`."""
    return {
        **environment.as_manifest(),
        "plugin_library": None if plugin_library is None else str(plugin_library),
        "onnx_sha256": file_sha256(onnx_path),
        "precision": precision,
        "profiles": [{name: r.as_dict() for name, r in profile.items()} for profile in profiles],
    }


def _mismatches(recorded: Mapping[str, Any], present: Environment) -> list[str]:
    reasons = []
    built_with = recorded.get("tensorrt_version")
    if present.tensorrt_version is None:
        reasons.append(f"built with TensorRT {built_with}, but no TensorRT is installed here")
    elif built_with is None or _version_key(str(built_with)) != _version_key(present.tensorrt_version):
        reasons.append(
            f"built with TensorRT {built_with}, but TensorRT {present.tensorrt_version} is installed"
        )
    gpu = recorded.get("gpu") or {}
    built_for = f"{gpu.get('name')} (compute capability {gpu.get('compute_capability')})"
    if present.gpu is None:
        reasons.append(f"built for {built_for}, but no GPU is visible here")
    elif (
        gpu.get("name") != present.gpu.name or gpu.get("compute_capability") != present.gpu.compute_capability
    ):
        reasons.append(
            f"built for {built_for}, but this GPU is {present.gpu.name} "
            f"(compute capability {present.gpu.compute_capability})"
        )
    built_sha = recorded.get("plugin_library_sha256")
    if built_sha is not None and present.plugin_sha256 is None:
        reasons.append("built with libplugserve.so, but no plugin library is present (run `make plugins`)")
    elif built_sha is not None and built_sha != present.plugin_sha256:
        reasons.append(
            f"built with plugin library sha256 {built_sha[:12]}…, but the present one is {str(present.plugin_sha256)[:12]}…"
        )
    return reasons


def served_version_dirs(repository: Path) -> list[Path]:
    """Per model, the version directory tritonserver serves under its default policy (the highest number)."""
    served = []
    for model_dir in sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith(".")):
        versions = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
        if versions:
            served.append(max(versions, key=lambda p: int(p.name)))
    return served


def stale_engines(repository: Path, present: Environment) -> list[StaleEngine]:
    """The served TensorRT engines of `repository` that do not match `present`.

    A version directory holds a TensorRT engine when it has model.plan; its manifest.json must then
    carry the `tensorrt` section written at build time. Versions without model.plan are not checked.
    """
    if not repository.is_dir():
        raise FileNotFoundError(f"model repository {repository} does not exist")
    stale = []
    for version_dir in served_version_dirs(repository):
        if not (version_dir / "model.plan").is_file():
            continue
        model, version = version_dir.parent.name, version_dir.name
        manifest_path = version_dir / "manifest.json"
        try:
            recorded = json.loads(manifest_path.read_text())[MANIFEST_KEY]
        except FileNotFoundError:
            stale.append(
                StaleEngine(
                    model, version, (f"{manifest_path} is missing, so the engine's origin is unknown",)
                )
            )
            continue
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            stale.append(
                StaleEngine(
                    model, version, (f"{manifest_path} has no readable '{MANIFEST_KEY}' section ({error!r})",)
                )
            )
            continue
        reasons = _mismatches(recorded, present)
        if reasons:
            stale.append(StaleEngine(model, version, tuple(reasons)))
    return stale


def check_repository(
    repository: Path, plugin_library: Path | None, *, force: bool = False
) -> list[StaleEngine]:
    """Refuse (RuntimeError) to serve stale TensorRT engines; with `force`, warn and return them.

    Called once by `plugserve serve` before tritonserver starts. Detecting the environment runs
    nvidia-smi, so it happens only when the repository holds at least one engine.
    """
    if not repository.is_dir() or not any(
        (d / "model.plan").is_file() for d in served_version_dirs(repository)
    ):
        return []  # nothing to check (a missing repository is reported by the server start)
    stale = stale_engines(repository, detect_environment(plugin_library))
    if not stale:
        return []
    models = " ".join(sorted({s.model for s in stale}))
    listing = "\n".join(f"  {s}" for s in stale)
    advice = f"rebuild them here: plugserve build --runtime tensorrt {models}"
    if force:
        print(f"warning: serving stale TensorRT engines because of --force:\n{listing}", file=sys.stderr)
        return stale
    raise RuntimeError(
        f"{repository} holds TensorRT engines that do not match this machine:\n{listing}\n{advice}  "
        "(or pass --force to serve them anyway)"
    )


def models_to_build(repository: Path, models: Iterable[str], present: Environment) -> list[str]:
    """Of `models`, those with no served TensorRT engine in `repository` or a stale one: what the NGC
    image's entrypoint builds before it serves."""
    served = {d.parent.name for d in served_version_dirs(repository) if (d / "model.plan").is_file()}
    stale = {s.model for s in stale_engines(repository, present)} if served else set()
    return [m for m in models if m not in served or m in stale]


# ---------------------------------------------------------------------------------------------
# Plugins: registration and the check that every plugin node of a graph has a creator.


@dataclass(frozen=True)
class CreatorKey:
    name: str
    version: str
    namespace: str

    def __str__(self) -> str:
        return (
            f"{self.namespace}::{self.name} v{self.version}"
            if self.namespace
            else f"{self.name} v{self.version}"
        )


# One process registers a library once: TensorRT rejects duplicate creators. NVIDIA's own plugins
# count as the first entry.
_loaded_libraries: dict[Path, Any] = {}
_registry_lock = threading.Lock()


_TRT_LOGGER: trt.Logger | None = None


def _logger() -> trt.Logger:
    # TensorRT wants one logger per process; WARNING keeps builds readable, errors are collected.
    import tensorrt as trt

    global _TRT_LOGGER
    if _TRT_LOGGER is None:
        _TRT_LOGGER = trt.Logger(trt.Logger.WARNING)
    return _TRT_LOGGER


def load_plugins(plugin_library: Path | None) -> list[CreatorKey]:
    """Register TensorRT's own plugins and our library's creators; return every registered creator.

    NVIDIA's plugins (`init_libnvinfer_plugins`) provide MultiscaleDeformableAttnPlugin_TRT for
    graphs exported with `--msda nvidia`. Our library is opened with ctypes only: its static
    initializer registers the creators (a missing CUDA runtime or an unresolved symbol then shows
    dlopen's own message), and a later `registry.load_library` of the same file would find them
    registered already and add none.
    """
    require_tensorrt()
    import tensorrt as trt

    with _registry_lock:
        if not _loaded_libraries:
            trt.init_libnvinfer_plugins(_logger(), "")
            _loaded_libraries[Path("libnvinfer_plugin")] = None
        registry = trt.get_plugin_registry()
        if plugin_library is not None:
            path = plugin_library.resolve()
            if path not in _loaded_libraries:
                if not path.is_file():
                    raise FileNotFoundError(
                        f"plugin library {path} does not exist; build it with `make plugins`"
                    )
                _loaded_libraries[path] = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
        return [
            CreatorKey(str(c.name), str(c.plugin_version), str(c.plugin_namespace))
            for c in registry.all_creators
        ]


def _attribute(node: onnx.NodeProto, name: str, default: str) -> str:
    for attribute in node.attribute:
        if attribute.name == name:
            value = attribute.s
            return value.decode() if isinstance(value, bytes) else str(value)
    return default


def required_plugins(model: onnx.ModelProto) -> dict[CreatorKey, list[str]]:
    """The plugin creators the TensorRT ONNX parser will look up, with the nodes that need each.

    A node needs a plugin when its op is not a standard ONNX op of its domain: the parser then
    asks the registry for (op_type, plugin_version or "1", plugin_namespace or "").
    """
    import onnx.defs

    needed: dict[CreatorKey, list[str]] = {}
    for node in _all_nodes(model.graph):
        domain = node.domain if node.domain not in ("", "ai.onnx") else ""
        if domain in ("", "ai.onnx.ml") and onnx.defs.has(node.op_type, domain):
            continue
        key = CreatorKey(
            node.op_type,
            _attribute(node, PLUGIN_VERSION_ATTRIBUTE, "1"),
            _attribute(node, PLUGIN_NAMESPACE_ATTRIBUTE, ""),
        )
        needed.setdefault(key, []).append(node.name or node.op_type)
    return needed


def _all_nodes(graph: onnx.GraphProto) -> Iterable[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.g.node:
                yield from _all_nodes(attribute.g)
            for subgraph in attribute.graphs:
                yield from _all_nodes(subgraph)


def check_plugins_registered(
    model: onnx.ModelProto, registered: Iterable[CreatorKey], plugin_library: Path | None
) -> None:
    """Raise `PluginNotRegistered` naming the nodes, the registered plugserve creators and the fix."""
    registered = set(registered)
    missing = {key: nodes for key, nodes in required_plugins(model).items() if key not in registered}
    if not missing:
        return
    ours = sorted(str(k) for k in registered if k.namespace == PLUGIN_NAMESPACE) or ["none"]
    lines = [
        f"  {key} needed by {', '.join(nodes[:3])}{' ...' if len(nodes) > 3 else ''}"
        for key, nodes in missing.items()
    ]
    library = plugin_library or "no plugin library (plugserve.plugins.library_path() found none)"
    raise PluginNotRegistered(
        "the TensorRT plugin registry has no creator for:\n"
        + "\n".join(lines)
        + f"\nregistered plugserve creators: {', '.join(ours)}\nloaded library: {library}\n"
        "fix: build the plugin library with its TensorRT glue (`make plugins` where the TensorRT headers "
        "are found, e.g. in the NGC image), or point PLUGSERVE_PLUGIN_LIBRARY at one; for NVIDIA's "
        "MultiscaleDeformableAttnPlugin_TRT use a TensorRT whose libnvinfer_plugin ships it"
    )


# ---------------------------------------------------------------------------------------------
# Build options: optimization profiles and precision.


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

    parser = trt.OnnxParser(network, _logger())
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

    builder = trt.Builder(_logger())
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


# ---------------------------------------------------------------------------------------------
# models.yaml `tensorrt:` settings of one model.

PLAN_FILE = "model.plan"  # tritonserver's default file name for platform tensorrt_plan
ENGINE_SOURCE_FILE = "engine_source.onnx"  # the prepared plugin-node graph the engine was built from
WARMUP_DIR = "warmup"  # tritonserver reads model_warmup input_data_file from <model>/warmup/
# The ONNX parser passes these inputs of a plugin node to IPluginV3 as shape inputs (TensorRT 10.1+).
SHAPE_INPUT_ATTRIBUTE = "tensorrt_plugin_shape_input_indices"
DEFAULT_CACHE_DIR = (
    Path(os.environ.get("PLUGSERVE_CACHE_DIR", Path.home() / ".cache" / "plugserve")) / "tensorrt"
)


@dataclass(frozen=True)
class TensorRTSettings:
    workspace_mib: int | None = None  # builder workspace limit; None: TensorRT's default
    optimization_level: int | None = None  # builder optimization level 0..5; None: TensorRT's default 3
    cuda_graphs: bool = False  # config.pbtxt optimization.cuda.graphs, one graph per profile's opt shapes
    timing_cache_dir: Path = DEFAULT_CACHE_DIR  # one file per TensorRT version and GPU, kept between builds

    @classmethod
    def parse(cls, where: str, value: Any, base_dir: Path) -> TensorRTSettings:
        """models.yaml `tensorrt:`; errors name the field (`where` is its path)."""
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        known = ("workspace_mib", "optimization_level", "cuda_graphs", "timing_cache_dir")
        for key in value:
            if key not in known:
                raise ValueError(f"{where}.{key}: unknown field (known: {', '.join(known)})")

        def integer(key: str, low: int, high: int | None) -> int | None:
            item = value.get(key)
            if item is None:
                return None
            if (
                isinstance(item, bool)
                or not isinstance(item, int)
                or item < low
                or (high is not None and item > high)
            ):
                bounds = f"{low}..{high}" if high is not None else f">= {low}"
                raise ValueError(f"{where}.{key}: expected an integer {bounds}, got {item!r}")
            return item

        graphs = value.get("cuda_graphs", False)
        if not isinstance(graphs, bool):
            raise ValueError(f"{where}.cuda_graphs: expected true or false, got {graphs!r}")
        cache = value.get("timing_cache_dir")
        if cache is not None and (not isinstance(cache, str) or not cache):
            raise ValueError(f"{where}.timing_cache_dir: expected a directory path, got {cache!r}")
        return cls(
            workspace_mib=integer("workspace_mib", 1, None),
            optimization_level=integer("optimization_level", 0, 5),
            cuda_graphs=graphs,
            timing_cache_dir=base_dir / cache if cache else DEFAULT_CACHE_DIR,
        )


# ---------------------------------------------------------------------------------------------
# Preparing an exported plugin-node graph for TensorRT and Triton.


def _onnx_dtype(triton_dtype: str) -> int:
    import onnx

    return {
        "FP32": onnx.TensorProto.FLOAT,
        "FP16": onnx.TensorProto.FLOAT16,
        "INT64": onnx.TensorProto.INT64,
        "INT32": onnx.TensorProto.INT32,
        "UINT8": onnx.TensorProto.UINT8,
        "BOOL": onnx.TensorProto.BOOL,
    }[triton_dtype]


def _tensor_elem_type(tensor: gs.Variable) -> int | None:
    import onnx

    if tensor.dtype is None:
        return None
    if isinstance(tensor.dtype, int):
        return tensor.dtype
    return int(onnx.helper.np_dtype_to_tensor_dtype(tensor.dtype))


def _retyped(graph: gs.Graph, tensor: gs.Variable, want: int, *, feeds_graph: bool) -> gs.Variable:
    """A tensor typed `want` that takes over `tensor`'s name, joined to it by a Cast: into the graph
    (a graph input) when `feeds_graph`, else out of it (a graph output)."""
    import onnx
    import onnx_graphsurgeon as gs

    name, exported = tensor.name, _tensor_elem_type(tensor)
    declared = gs.Variable(name, dtype=onnx.helper.tensor_dtype_to_np_dtype(want), shape=tensor.shape)
    tensor.name = f"{name}/as_exported"
    source, target, to = (declared, tensor, exported) if feeds_graph else (tensor, declared, want)
    graph.nodes.append(
        gs.Node("Cast", name=f"{name}/cast", attrs={"to": to}, inputs=[source], outputs=[target])
    )
    return declared


def prepare_onnx(model: onnx.ModelProto, spec: ModelSpec) -> onnx.ModelProto:
    """The exported plugin-node graph as TensorRT and Triton need it for `spec`.

    - DynamicResize nodes whose size is a 1-D tensor get `tensorrt_plugin_shape_input_indices=[1]`,
      so the parser hands the size to the plugin as a shape input (its values become output dims).
    - With batching (max_batch_size > 0), Triton prepends the batch size to every shape-tensor input
      (model_configuration.md, "Shape Tensors"): such an input becomes [batch, values...] and a
      Slice drops the batch value before the graph's own consumers.
    - Graph inputs and outputs get Casts to the dtypes models.yaml declares, so an fp16 export keeps
      the client interface (FP32 images, INT64 sizes) while the engine computes in fp16.
    """
    import numpy as np
    import onnx
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    for node in graph.nodes:
        if node.domain == PLUGIN_NAMESPACE and node.op == "DynamicResize" and len(node.inputs) == 2:
            size = node.inputs[1]
            if size.shape is None or len(size.shape) == 1:
                node.attrs[SHAPE_INPUT_ATTRIBUTE] = [1]

    inputs = {t.name: t for t in graph.inputs}
    outputs = {t.name: t for t in graph.outputs}
    for tensor_spec in spec.inputs:
        original = inputs.get(tensor_spec.name)
        if original is None:
            raise ValueError(
                f"models.yaml input {tensor_spec.name!r} is not an input of the ONNX graph ({sorted(inputs)})"
            )
        current = original
        if tensor_spec.shape_tensor and spec.max_batch_size > 0:
            count = tensor_spec.dims[0]
            batched = gs.Variable(original.name, dtype=original.dtype, shape=[count + 1])
            original.name = f"{tensor_spec.name}/values"
            graph.nodes.append(
                gs.Node(
                    "Slice",
                    name=f"{tensor_spec.name}/drop_batch",
                    inputs=[
                        batched,
                        *(
                            gs.Constant(f"{tensor_spec.name}/{k}", np.array([v], np.int64))
                            for k, v in (("start", 1), ("end", count + 1), ("axis", 0))
                        ),
                    ],
                    outputs=[original],
                )
            )
            current = batched
        want = _onnx_dtype(tensor_spec.dtype)
        if _tensor_elem_type(current) not in (None, want):
            current = _retyped(graph, current, want, feeds_graph=True)
        graph.inputs[graph.inputs.index(original)] = current
    for tensor_spec in spec.outputs:
        produced = outputs.get(tensor_spec.name)
        if produced is None:
            raise ValueError(
                f"models.yaml output {tensor_spec.name!r} is not an output of the ONNX graph ({sorted(outputs)})"
            )
        want = _onnx_dtype(tensor_spec.dtype)
        if _tensor_elem_type(produced) not in (None, want):
            graph.outputs[graph.outputs.index(produced)] = _retyped(graph, produced, want, feeds_graph=False)

    graph.cleanup().toposort()
    prepared = gs.export_onnx(graph)
    prepared.ir_version = model.ir_version
    del prepared.opset_import[:]
    prepared.opset_import.extend(model.opset_import)
    prepared.metadata_props.extend(model.metadata_props)
    onnx.checker.check_model(prepared)
    return prepared


def engine_profiles(spec: ModelSpec) -> list[dict[str, Range]]:
    """models.yaml profiles as the engine sees them: shape-tensor values get the batch value in front
    (see `prepare_onnx`), bounded like the batch dimension of the profile's other inputs."""
    from plugserve.config import Range

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


# ---------------------------------------------------------------------------------------------
# The "tensorrt" lowering of plugserve.build: model.plan, config.pbtxt fields, manifest section.


def timing_cache_path(directory: Path, tensorrt: str, gpu: Gpu | None) -> Path:
    """A timing cache per TensorRT release and GPU model: caches from elsewhere would only be discarded."""
    device = "nogpu" if gpu is None else "".join(c if c.isalnum() else "-" for c in gpu.name).strip("-")
    return directory / f"timing-{_version_key(tensorrt)}-{device}.cache"


def _warmup(
    spec: ModelSpec, profiles: Sequence[Profile], warmup_dir: Path, version: str
) -> list[dict[str, Any]]:
    """One warmup request per profile at its opt shapes. Shape tensors need real values, which
    tritonserver reads from files in <model>/warmup/ (named per version: versions share the folder)."""
    import numpy as np

    from plugserve.config import DTYPES

    requests = []
    for index, profile in enumerate(spec.profiles):
        ordinary = [name for name in profile if not spec.input(name).shape_tensor]
        batch = profile[ordinary[0]].opt[0] if spec.max_batch_size > 0 and ordinary else 1
        inputs: dict[str, Any] = {}
        for name, bounds in profile.items():
            tensor = spec.input(name)
            entry: dict[str, Any] = {"data_type": f"TYPE_{tensor.dtype}"}
            if tensor.shape_tensor:
                file_name = f"v{version}_profile{index}_{name}"
                warmup_dir.mkdir(parents=True, exist_ok=True)
                (warmup_dir / file_name).write_bytes(
                    np.array(bounds.opt, dtype=DTYPES[tensor.dtype]).tobytes()
                )
                entry.update(dims=list(tensor.dims), input_data_file=file_name)
            else:
                entry.update(
                    dims=list(bounds.opt[1:] if spec.max_batch_size > 0 else bounds.opt), random_data=True
                )
            inputs[name] = entry
        requests.append({"name": f"profile{index}_opt", "batch_size": batch, "inputs": inputs})
    return requests


def _cuda_graphs(spec: ModelSpec) -> dict[str, Any]:
    shape_tensors = [t.name for t in spec.inputs if t.shape_tensor]
    if shape_tensors:
        raise ValueError(
            f"models.yaml: models.{spec.name}.tensorrt.cuda_graphs: a CUDA graph fixes every shape, but shape "
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
        # An engine runs on a GPU only: models.yaml's instance counts, on GPUs.
        "instance_group": [{"count": g.count, "kind": "KIND_GPU"} for g in spec.instance_groups],
        "model_warmup": warmup,
    }
    if settings.cuda_graphs:
        updates["optimization"] = _cuda_graphs(spec)
    return updates


def _export(spec: ModelSpec, out_path: Path, precision: str) -> onnx.ModelProto:
    """The plugin-node graph of `spec`: exported from its checkpoint, or its ONNX pluginized."""
    import onnx

    if spec.onnx is not None:
        from plugserve.surgery import pluginize

        return pluginize(onnx.load(str(spec.onnx)))
    from plugserve.export import export_onnx

    if spec.source_model is None:
        raise ValueError(f"models.yaml: models.{spec.name}.source: needs `model` or `onnx`")
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
    import onnx
    import tensorrt as trt

    from plugserve import build, plugins

    settings = spec.tensorrt
    source = _export(spec, version_dir / ENGINE_SOURCE_FILE, precision)
    compute_dtype = graph_precision(source)
    plan_precision(
        int(trt.__version__.split(".")[0]), precision, compute_dtype
    )  # refuse early, before building
    onnx_path = version_dir / ENGINE_SOURCE_FILE
    onnx.save(prepare_onnx(source, spec), str(onnx_path))
    build.check_io_names(spec, onnx_path)

    library = plugins.library_path()
    gpu = detect_gpu()
    profiles = engine_profiles(spec)
    options = BuildOptions(
        profiles=profiles,
        precision=precision,
        workspace_mib=settings.workspace_mib,
        optimization_level=settings.optimization_level,
        timing_cache=timing_cache_path(settings.timing_cache_dir, trt.__version__, gpu),
    )
    info = build_engine(onnx_path, version_dir / PLAN_FILE, options, library, graph_dtype=compute_dtype)
    environment = Environment(info.tensorrt_version, gpu, file_sha256(library) if library else None)
    warmup = _warmup(spec, spec.profiles, version_dir.parent / WARMUP_DIR, version_dir.name)
    print(
        f"[tensorrt] {spec.name}: built {info.plan.name} in {info.build_seconds:.0f} s "
        f"(TensorRT {info.tensorrt_version}, {gpu.name if gpu else 'no GPU name'}, {precision})",
        file=sys.stderr,
    )
    return build.Lowered(
        backend="tensorrt",
        versions={**build._package_versions("plugserve", "torch", "onnx"), "tensorrt": info.tensorrt_version},
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
