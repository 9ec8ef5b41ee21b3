"""Load and validate models.yaml: what each served model is built from and how Triton serves it.

Every check names the field it rejects, as a path from the top of the file
(`models.yaml: models.super_resolution.profiles[0].image.max: expected 4 integers`), so a
broken file fails the build before any export starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The Triton data types a models.yaml tensor may declare (contract.DTYPES maps them to numpy's names).
TENSOR_DTYPES = ("FP32", "FP16", "INT64", "INT32", "UINT8", "BOOL")
# Precisions a model may be built in -> the dtype name its floats compute in.
PRECISIONS: dict[str, str] = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
INSTANCE_KINDS = ("KIND_CPU", "KIND_GPU", "KIND_AUTO")
# The `runtime:` names, one lowering each (plugserve.lowering.LOWERINGS is this tuple).
RUNTIMES = ("onnxruntime", "tensorrt", "torch")
DEFAULT_RUNTIME = "onnxruntime"
# `runtime: torch` options: which implementation the plugserve ops run ("plugserve" = the
# libplugserve.so kernels, "reference" = pure PyTorch, for side-by-side measurements), and how the
# program is executed ("auto" = CUDA graphs on GPU instances, eager on CPU ones).
TORCH_OPS = ("plugserve", "reference")
TORCH_ACCELERATIONS = ("auto", "none", "cuda_graphs", "compile")
# `runtime: onnxruntime` options: how ONNX Runtime runs the plugin nodes ("native" = the plugserve
# custom ops of libplugserve_ort.so, "decomposed" = rewritten into standard ops). Unset, the build
# takes native when it finds the library (plugserve.native.onnxruntime_library()).
ONNXRUNTIME_OPS = ("native", "decomposed")


class ConfigError(ValueError):
    """models.yaml is missing a field or has a wrong one; the message names the field."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # Triton name, e.g. "FP32"
    dims: tuple[int, ...]  # without the batch dimension; -1 = any size
    # A shape tensor's *values* matter (e.g. the requested output size): its profile bounds values, not dims.
    shape_tensor: bool = False
    # Requests with a NaN or infinity in this input are refused (one NaN pixel turns the encoder's whole
    # output into NaN); default: true for float inputs.
    reject_non_finite: bool = False


@dataclass(frozen=True)
class Range:
    """min/opt/max of one input in one shape profile: full shapes (batch first when batching) or shape-tensor values."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def as_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclass(frozen=True)
class DynamicBatching:
    preferred_batch_size: tuple[int, ...]
    max_queue_delay_microseconds: int


@dataclass(frozen=True)
class Budget:
    """models.yaml `budget:`, the most a request and a batch may cost, in elements (a request's cost:
    its largest input or output, runners/contract.request_elements). None: the largest request the
    profiles allow, for both."""

    request_elements: int | None = None
    batch_elements: int | None = None


@dataclass(frozen=True)
class InstanceGroup:
    count: int  # instances per GPU listed in `gpus`, as Triton counts them
    kind: str
    # KIND_GPU only: the CUDA device ids (as the server process sees them) each get `count` instances;
    # None (models.yaml `gpus: all` or no `gpus`) leaves the field out: Triton's default, every GPU.
    gpus: tuple[int, ...] | None = None


@dataclass(frozen=True)
class TorchOptions:
    ops: str = "plugserve"
    acceleration: str = "auto"


@dataclass(frozen=True)
class OnnxRuntimeOptions:
    ops: str | None = None  # None: decided at build time by whether the library is there


DEFAULT_CACHE_DIR = (
    Path(os.environ.get("PLUGSERVE_CACHE_DIR", Path.home() / ".cache" / "plugserve")) / "tensorrt"
)


@dataclass(frozen=True)
class TensorRTSettings:
    """models.yaml `tensorrt:`, the "tensorrt" runtime's build and serving options."""

    workspace_mib: int | None = None  # builder workspace limit; None: TensorRT's default
    optimization_level: int | None = None  # builder optimization level 0..5; None: TensorRT's default 3
    cuda_graphs: bool = False  # config.pbtxt optimization.cuda.graphs, one graph per profile's opt shapes
    timing_cache_dir: Path = DEFAULT_CACHE_DIR  # one file per TensorRT version and GPU, kept between builds


@dataclass(frozen=True)
class ModelSpec:
    name: str
    # Exactly one source: a model from plugserve.models (checkpoint None = its default), or a ready ONNX file.
    source_model: str | None
    checkpoint: Path | None
    onnx: Path | None
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    profiles: tuple[dict[str, Range], ...]
    precisions: tuple[str, ...]
    runtime: str
    max_batch_size: int
    dynamic_batching: DynamicBatching | None
    instance_groups: tuple[InstanceGroup, ...]
    torch: TorchOptions = TorchOptions()
    tensorrt: TensorRTSettings = TensorRTSettings()
    onnxruntime: OnnxRuntimeOptions = OnnxRuntimeOptions()
    budget: Budget = Budget()
    # config.pbtxt version_policy in Triton's JSON form: {"latest": {"num_versions": n}}, {"all": {}}
    # or {"specific": {"versions": [...]}}.
    version_policy: tuple[tuple[str, Any], ...] = (("latest", {"num_versions": 1}),)
    label: str = "models.yaml"  # the file the entry came from, for messages that name a field

    def model_name(self) -> str:
        """The plugserve model the entry is built from; an entry with a ready ONNX file has none."""
        if self.source_model is None:
            raise ValueError(f"models.{self.name} is built from the ONNX file {self.onnx}, not a plugserve model")
        return self.source_model

    def input(self, name: str) -> TensorSpec:
        return next(t for t in self.inputs if t.name == name)


class _Reader:
    """Typed access to a parsed YAML tree that reports the dotted path of whatever it rejects."""

    def __init__(self, file_label: str):
        self.label = file_label

    def fail(self, path: str, message: str) -> ConfigError:
        return ConfigError(f"{self.label}: {path}: {message}")

    def mapping(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping, got {_describe(value)}")
        return value

    def field(self, parent: dict[str, Any], key: str, path: str, default: Any = ...) -> Any:
        if key not in parent or parent[key] is None:
            if default is ...:
                raise self.fail(f"{path}.{key}", "missing")
            return default
        return parent[key]

    def no_unknown(self, parent: dict[str, Any], known: tuple[str, ...], path: str) -> None:
        for key in parent:
            if key not in known:
                raise self.fail(f"{path}.{key}", f"unknown field (known: {', '.join(known)})")

    def integer(self, value: Any, path: str, minimum: int | None = None, maximum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, f"expected an integer, got {_describe(value)}")
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            bounds = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
            raise self.fail(path, f"expected an integer {bounds}, got {value}")
        return value

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"expected true or false, got {_describe(value)}")
        return value

    def integers(self, value: Any, path: str, count: int | None = None, minimum: int | None = None) -> tuple[int, ...]:
        expected = f"{count} integers" if count is not None else "a list of integers"
        if (
            not isinstance(value, list)
            or (count is not None and len(value) != count)
            or any(isinstance(v, bool) or not isinstance(v, int) for v in value)
        ):
            raise self.fail(path, f"expected {expected}, got {_describe(value)}")
        if minimum is not None and any(v < minimum for v in value):
            raise self.fail(path, f"expected integers >= {minimum}, got {value}")
        return tuple(value)

    def string(self, value: Any, path: str, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(path, f"expected a non-empty string, got {_describe(value)}")
        if choices is not None and value not in choices:
            raise self.fail(path, f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    def items(self, value: Any, path: str) -> list[Any]:
        if not isinstance(value, list) or not value:
            raise self.fail(path, f"expected a non-empty list, got {_describe(value)}")
        return value


def _describe(value: Any) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)}: {value!r}"
    return f"{type(value).__name__} {value!r}"


def load(path: str | Path) -> dict[str, ModelSpec]:
    """Parse and validate models.yaml; relative file paths in it are relative to its directory."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from error
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path.name}: not valid YAML: {error}") from error
    return parse(tree, base_dir=path.parent, label=path.name)


def parse(tree: Any, base_dir: Path, label: str = "models.yaml") -> dict[str, ModelSpec]:
    reader = _Reader(label)
    top = reader.mapping(tree, "top level")
    reader.no_unknown(top, ("models",), "top level")
    models = reader.mapping(reader.field(top, "models", "top level"), "models")
    if not models:
        raise reader.fail("models", "expected at least one model")
    for name in models:
        check_model_name(reader, name)
    return {name: _parse_model(reader, name, entry, base_dir) for name, entry in models.items()}


# Triton's model names are directory names of the repository: nothing that leaves it or hides in it.
MODEL_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def check_model_name(reader: _Reader, name: Any) -> None:
    if not isinstance(name, str) or not name or name.startswith(".") or not set(name) <= MODEL_NAME_CHARACTERS:
        raise reader.fail(f"models.{name}", "a model name must be letters, digits, '_', '-' or '.', not start with "
                                            "'.', and hold no path separator")


def _parse_model(reader: _Reader, name: str, entry: Any, base_dir: Path) -> ModelSpec:
    path = f"models.{name}"
    entry = reader.mapping(entry, path)
    reader.no_unknown(
        entry,
        ("source", "inputs", "outputs", "profiles", "precisions", "runtime", "max_batch_size",
         "dynamic_batching", "instance_groups", "torch", "tensorrt", "onnxruntime", "budget", "version_policy"),
        path,
    )
    source_model, checkpoint, onnx_path = _parse_source(reader, reader.field(entry, "source", path), path, base_dir)
    max_batch_size = reader.integer(reader.field(entry, "max_batch_size", path, 0), f"{path}.max_batch_size", 0)
    inputs = _parse_tensors(reader, reader.field(entry, "inputs", path), f"{path}.inputs")
    outputs = _parse_tensors(reader, reader.field(entry, "outputs", path), f"{path}.outputs", inputs=False)
    profiles = tuple(
        _parse_profile(reader, profile, f"{path}.profiles[{i}]", inputs, max_batch_size)
        for i, profile in enumerate(reader.items(reader.field(entry, "profiles", path), f"{path}.profiles"))
    )
    precisions = tuple(
        reader.string(p, f"{path}.precisions[{i}]", tuple(PRECISIONS))
        for i, p in enumerate(reader.items(reader.field(entry, "precisions", path, ["fp32"]), f"{path}.precisions"))
    )
    runtime = reader.string(reader.field(entry, "runtime", path, DEFAULT_RUNTIME), f"{path}.runtime", RUNTIMES)
    batching = _parse_batching(reader, entry.get("dynamic_batching"), f"{path}.dynamic_batching", max_batch_size)
    groups = tuple(
        _parse_instance_group(reader, group, f"{path}.instance_groups[{i}]")
        for i, group in enumerate(
            reader.items(reader.field(entry, "instance_groups", path, [{"count": 1, "kind": "KIND_CPU"}]),
                         f"{path}.instance_groups")
        )
    )
    torch_options = _parse_torch_options(reader, entry.get("torch"), f"{path}.torch", runtime, groups)
    tensorrt_settings = _parse_tensorrt_settings(reader, entry.get("tensorrt"), f"{path}.tensorrt", base_dir)
    onnxruntime_options = _parse_onnxruntime_options(reader, entry.get("onnxruntime"), f"{path}.onnxruntime", runtime)
    return ModelSpec(name, source_model, checkpoint, onnx_path, inputs, outputs, profiles, precisions, runtime,
                     max_batch_size, batching, groups, torch_options, tensorrt_settings, onnxruntime_options,
                     _parse_budget(reader, entry.get("budget"), f"{path}.budget"),
                     _parse_version_policy(reader, entry.get("version_policy"), f"{path}.version_policy"),
                     reader.label)


def _parse_budget(reader: _Reader, value: Any, path: str) -> Budget:
    if value is None:
        return Budget()
    budget = reader.mapping(value, path)
    reader.no_unknown(budget, ("request_elements", "batch_elements"), path)
    return Budget(*(None if budget.get(key) is None else reader.integer(budget[key], f"{path}.{key}", 1)
                    for key in ("request_elements", "batch_elements")))


def _parse_version_policy(reader: _Reader, value: Any, path: str) -> tuple[tuple[str, Any], ...]:
    """`latest: N`, `all: true` or `specific: [versions]` -> Triton's version_policy."""
    if value is None:
        return (("latest", {"num_versions": 1}),)
    policy = reader.mapping(value, path)
    reader.no_unknown(policy, ("latest", "all", "specific"), path)
    if len(policy) != 1:
        raise reader.fail(path, "expected exactly one of latest, all, specific")
    kind, item = next(iter(policy.items()))
    if kind == "latest":
        return (("latest", {"num_versions": reader.integer(item, f"{path}.latest", 1)}),)
    if kind == "all":
        if not reader.boolean(item, f"{path}.all"):
            raise reader.fail(f"{path}.all", "only `all: true` means something")
        return (("all", {}),)
    return (("specific", {"versions": list(reader.integers(item, f"{path}.specific", minimum=1))}),)


def _parse_onnxruntime_options(reader: _Reader, value: Any, path: str, runtime: str) -> OnnxRuntimeOptions:
    if value is None:
        return OnnxRuntimeOptions()
    if runtime != "onnxruntime":
        raise reader.fail(path, f"applies to runtime onnxruntime only, this model's runtime is {runtime!r}")
    options = reader.mapping(value, path)
    reader.no_unknown(options, ("ops",), path)
    ops = options.get("ops")
    return OnnxRuntimeOptions(None if ops is None else reader.string(ops, f"{path}.ops", ONNXRUNTIME_OPS))


def _parse_torch_options(
    reader: _Reader, value: Any, path: str, runtime: str, groups: tuple[InstanceGroup, ...]
) -> TorchOptions:
    if value is None:
        return TorchOptions()
    if runtime != "torch":
        raise reader.fail(path, f"applies to runtime torch only, this model's runtime is {runtime!r}")
    options = reader.mapping(value, path)
    reader.no_unknown(options, ("ops", "acceleration"), path)
    ops = reader.string(options.get("ops", "plugserve"), f"{path}.ops", TORCH_OPS)
    acceleration = reader.string(options.get("acceleration", "auto"), f"{path}.acceleration", TORCH_ACCELERATIONS)
    if acceleration == "cuda_graphs" and any(g.kind != "KIND_GPU" for g in groups):
        raise reader.fail(f"{path}.acceleration", "cuda_graphs needs every instance group to be KIND_GPU")
    return TorchOptions(ops, acceleration)


def _parse_tensorrt_settings(reader: _Reader, value: Any, path: str, base_dir: Path) -> TensorRTSettings:
    if value is None:
        return TensorRTSettings()
    settings = reader.mapping(value, path)
    reader.no_unknown(settings, ("workspace_mib", "optimization_level", "cuda_graphs", "timing_cache_dir"), path)

    def optional_integer(key: str, minimum: int, maximum: int | None = None) -> int | None:
        item = settings.get(key)
        return None if item is None else reader.integer(item, f"{path}.{key}", minimum, maximum)

    cache = settings.get("timing_cache_dir")
    return TensorRTSettings(
        workspace_mib=optional_integer("workspace_mib", 1),
        optimization_level=optional_integer("optimization_level", 0, 5),
        cuda_graphs=reader.boolean(settings.get("cuda_graphs", False), f"{path}.cuda_graphs"),
        timing_cache_dir=base_dir / reader.string(cache, f"{path}.timing_cache_dir") if cache is not None
        else DEFAULT_CACHE_DIR,
    )


def _parse_source(reader: _Reader, value: Any, path: str, base_dir: Path) -> tuple[str | None, Path | None, Path | None]:
    path = f"{path}.source"
    source = reader.mapping(value, path)
    reader.no_unknown(source, ("model", "checkpoint", "onnx"), path)
    if ("model" in source) == ("onnx" in source):
        raise reader.fail(path, "expected exactly one of 'model' (with 'checkpoint') or 'onnx'")
    if "onnx" in source:
        return None, None, base_dir / reader.string(source["onnx"], f"{path}.onnx")
    model = reader.string(source["model"], f"{path}.model")
    checkpoint = source.get("checkpoint")  # absent: the model's default checkpoint (plugserve.models)
    if checkpoint is None:
        return model, None, None
    return model, base_dir / reader.string(checkpoint, f"{path}.checkpoint"), None


def _parse_tensors(reader: _Reader, value: Any, path: str, *, inputs: bool = True) -> tuple[TensorSpec, ...]:
    tensors: list[TensorSpec] = []
    for i, item in enumerate(reader.items(value, path)):
        item_path = f"{path}[{i}]"
        item = reader.mapping(item, item_path)
        reader.no_unknown(item, ("name", "dtype", "dims", "shape_tensor", "reject_non_finite"), item_path)
        name = reader.string(reader.field(item, "name", item_path), f"{item_path}.name")
        dtype = reader.string(reader.field(item, "dtype", item_path), f"{item_path}.dtype", TENSOR_DTYPES)
        dims = reader.integers(reader.field(item, "dims", item_path), f"{item_path}.dims", minimum=-1)
        if 0 in dims:
            raise reader.fail(f"{item_path}.dims", f"a dimension is 0 in {list(dims)}; use -1 for 'any size'")
        shape_tensor = reader.boolean(item.get("shape_tensor", False), f"{item_path}.shape_tensor")
        if shape_tensor and (len(dims) != 1 or dims[0] < 1 or dtype not in ("INT32", "INT64")):
            raise reader.fail(item_path, "a shape tensor needs dtype INT32 or INT64 and dims [n] with n >= 1")
        if any(t.name == name for t in tensors):
            raise reader.fail(f"{item_path}.name", f"duplicate name {name!r}")
        floats = inputs and dtype in ("FP32", "FP16") and not shape_tensor
        reject = reader.boolean(item.get("reject_non_finite", floats), f"{item_path}.reject_non_finite")
        if reject and not floats:
            raise reader.fail(f"{item_path}.reject_non_finite", "applies to float inputs only")
        tensors.append(TensorSpec(name, dtype, dims, shape_tensor, reject))
    return tuple(tensors)


def _parse_profile(
    reader: _Reader, value: Any, path: str, inputs: tuple[TensorSpec, ...], max_batch_size: int
) -> dict[str, Range]:
    profile = reader.mapping(value, path)
    names = tuple(t.name for t in inputs)
    reader.no_unknown(profile, names, path)
    ranges = {}
    for tensor in inputs:
        entry_path = f"{path}.{tensor.name}"
        entry = reader.mapping(reader.field(profile, tensor.name, path), entry_path)
        reader.no_unknown(entry, ("min", "opt", "max"), entry_path)
        if tensor.shape_tensor:
            count, fixed = tensor.dims[0], (-1,) * tensor.dims[0]  # values, none fixed
        else:
            count = len(tensor.dims) + (1 if max_batch_size > 0 else 0)
            fixed = ((-1,) if max_batch_size > 0 else ()) + tensor.dims
        bounds = {
            key: reader.integers(reader.field(entry, key, entry_path), f"{entry_path}.{key}", count, minimum=1)
            for key in ("min", "opt", "max")
        }
        for axis, want in enumerate(fixed):
            if want != -1 and any(bounds[key][axis] != want for key in bounds):
                raise reader.fail(entry_path, f"position {axis} is fixed to {want} by the dims of input {tensor.name!r}")
        if not all(lo <= mid <= hi for lo, mid, hi in zip(bounds["min"], bounds["opt"], bounds["max"], strict=True)):
            raise reader.fail(entry_path, f"expected min <= opt <= max in every position, got {bounds}")
        if max_batch_size > 0 and not tensor.shape_tensor and bounds["max"][0] > max_batch_size:
            raise reader.fail(f"{entry_path}.max", f"batch {bounds['max'][0]} exceeds max_batch_size {max_batch_size}")
        ranges[tensor.name] = Range(bounds["min"], bounds["opt"], bounds["max"])
    return ranges


def _parse_batching(reader: _Reader, value: Any, path: str, max_batch_size: int) -> DynamicBatching | None:
    if value is None:
        return None
    if max_batch_size == 0:
        raise reader.fail(path, "dynamic batching needs max_batch_size > 0")
    batching = reader.mapping(value, path)
    reader.no_unknown(batching, ("preferred_batch_size", "max_queue_delay_microseconds"), path)
    preferred = reader.integers(batching.get("preferred_batch_size", []), f"{path}.preferred_batch_size", minimum=1)
    if any(size > max_batch_size for size in preferred):
        raise reader.fail(f"{path}.preferred_batch_size", f"sizes must be <= max_batch_size {max_batch_size}")
    delay = reader.integer(batching.get("max_queue_delay_microseconds", 0), f"{path}.max_queue_delay_microseconds", 0)
    return DynamicBatching(preferred, delay)


def _parse_instance_group(reader: _Reader, value: Any, path: str) -> InstanceGroup:
    group = reader.mapping(value, path)
    reader.no_unknown(group, ("count", "kind", "gpus"), path)
    count = reader.integer(reader.field(group, "count", path, 1), f"{path}.count", 1)
    kind = reader.string(reader.field(group, "kind", path, "KIND_CPU"), f"{path}.kind", INSTANCE_KINDS)
    value = group.get("gpus")
    if value is None or value == "all":
        gpus = None
    else:
        gpus = reader.integers(value, f"{path}.gpus", minimum=0)
        if not gpus or len(set(gpus)) != len(gpus):
            raise reader.fail(f"{path}.gpus", f"expected `all` or a non-empty list of distinct GPU ids, got {value!r}")
    if "gpus" in group and kind != "KIND_GPU":
        raise reader.fail(f"{path}.gpus", f"applies to kind KIND_GPU only, this group's kind is {kind}")
    return InstanceGroup(count, kind, gpus)
