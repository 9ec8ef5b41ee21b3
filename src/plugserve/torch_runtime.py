"""The `torch` runtime: a model served by PyTorch, its plugserve ops running libplugserve.so kernels.

Build side, `lower` (LOWERINGS["torch"]): the model from plugserve.models is wrapped to take and
return the tensors models.yaml promises (FP32 images, the INT64 size) while it computes in the
chosen precision, captured with `torch.export` and saved as `model.pt2`: a graph and its weights,
no pickled Python. The generic runner (runners/torch_runner.py) becomes the version's model.py.

Serve side, `Program` (used by that runner): loads model.pt2 onto the instance's device, selects the
ops' implementation (our kernels, or the pure-PyTorch reference for side-by-side measurements) and
runs batches eagerly, through CUDA graphs captured per input shape, or through torch.compile.
`check_request` and `group_key` hold the request rules the runner applies before a batch runs.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

    from plugserve.build import Lowered
    from plugserve.config import ModelSpec

PROGRAM_FILE = "model.pt2"
# config.pbtxt parameter holding the runner's options (JSON), beside repository.SPEC_PARAMETER.
OPTIONS_PARAMETER = "plugserve_torch"
ACCELERATIONS = ("none", "cuda_graphs", "compile")
# CUDA graphs kept per model instance (one per batch size and input shape seen); a key beyond
# these runs eagerly, so an unbounded variety of shapes cannot exhaust GPU memory.
MAX_GRAPHS = 32
# Eager runs on a side stream before a capture: cuDNN/cuBLAS pick their algorithms and allocate
# workspaces there, outside the graph.
WARMUP_RUNS = 2
_TRACE_BATCH = 2  # torch.export specialises a dimension traced at size 1
_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
_TRITON_FLOATS = {"FP32": "float32", "FP16": "float16", "BF16": "bfloat16"}

log = logging.getLogger(__name__)


class RequestError(ValueError):
    """A request breaks the model's contract; the message goes back to the client."""


# --------------------------------------------------------------------------------------------------
# Build side


def resolve_acceleration(spec: ModelSpec) -> str:
    """models.yaml's `torch.acceleration`, with "auto" made concrete: CUDA graphs on GPU-only instances."""
    choice = spec.torch.acceleration
    if choice != "auto":
        return choice
    return "cuda_graphs" if all(g.kind == "KIND_GPU" for g in spec.instance_groups) else "none"


def _served_module(model: torch.nn.Module, compute_dtype: torch.dtype, output_dtypes: list[torch.dtype],
                   order: list[int]) -> torch.nn.Module:
    import torch

    class Served(torch.nn.Module):
        """The model behind models.yaml's interface: inputs in models.yaml order, floats cast to the
        compute precision on the way in and to the declared output dtypes on the way out."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model.to(compute_dtype)

        def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            args = [inputs[i].to(compute_dtype) if inputs[i].is_floating_point() else inputs[i] for i in order]
            result = self.model(*args)
            results = result if isinstance(result, tuple) else (result,)
            return tuple(out.to(dtype) for out, dtype in zip(results, output_dtypes, strict=True))

    return Served().eval()


def export_program(spec: ModelSpec, precision: str) -> torch.export.ExportedProgram:
    """`spec`'s model as a torch.export program: positional inputs in models.yaml order, outputs likewise.

    Programs are kept per process by what determines them, so the variants of one model that differ
    only in how they are served (ops, acceleration, batching) are exported once per build.
    """
    checkpoint = spec.checkpoint
    key = (spec.source_model, str(checkpoint), checkpoint.stat().st_mtime_ns if checkpoint and checkpoint.is_file()
           else None, precision, tuple((t.name, t.dtype) for t in (*spec.inputs, *spec.outputs)))
    if key not in _PROGRAMS:
        _PROGRAMS[key] = _export_program(spec, precision)
    return _PROGRAMS[key]


_PROGRAMS: dict[tuple, Any] = {}


def _export_program(spec: ModelSpec, precision: str) -> torch.export.ExportedProgram:
    import torch

    from plugserve import models
    from plugserve.config import ConfigError

    path = f"models.yaml: models.{spec.name}"
    if spec.source_model is None:
        raise ConfigError(f"{path}.source: runtime torch needs `model` (a plugserve model), not a ready ONNX file")
    if precision not in _DTYPES:
        raise ConfigError(f"{path}.precisions: runtime torch serves {', '.join(_DTYPES)}, got {precision!r}")
    module = models.module(spec.source_model)
    declared = [t.name for t in spec.inputs]
    if sorted(declared) != sorted(module.INPUTS) or sorted(t.name for t in spec.outputs) != sorted(module.OUTPUTS):
        raise ConfigError(f"{path}: inputs {declared} / outputs {[t.name for t in spec.outputs]} do not match "
                          f"model {spec.source_model!r} (inputs {list(module.INPUTS)}, outputs {list(module.OUTPUTS)})")
    for t in spec.outputs:
        if t.dtype not in _TRITON_FLOATS:
            raise ConfigError(f"{path}.outputs: {t.name} must be a float type for runtime torch, got {t.dtype}")
    if list(module.OUTPUTS) != [t.name for t in spec.outputs]:
        raise ConfigError(f"{path}.outputs: list them in the model's order {list(module.OUTPUTS)}")
    output_dtypes = [getattr(torch, _TRITON_FLOATS[t.dtype]) for t in spec.outputs]

    model = models.load(spec.source_model, spec.checkpoint)
    served = _served_module(model, getattr(torch, _DTYPES[precision]), output_dtypes,
                            [declared.index(name) for name in module.INPUTS])
    examples = dict(zip(module.INPUTS, module.example_inputs(batch=_TRACE_BATCH), strict=True))
    # AUTO rather than named ranges: export derives each dimension's valid range from the model
    # (e.g. the encoder needs H, W > 64) and the loaded program checks requests against it.
    dynamic_shapes = tuple(
        dict.fromkeys(module.DYNAMIC_AXES[name], torch.export.Dim.AUTO) if name in module.DYNAMIC_AXES else None
        for name in declared
    )
    with torch.no_grad():
        return torch.export.export(served, tuple(examples[name] for name in declared),
                                   dynamic_shapes={"inputs": dynamic_shapes})


def check_profiles(spec: ModelSpec, program: torch.export.ExportedProgram) -> None:
    """Every shape profile must lie within the sizes the exported program accepts.

    The runner admits requests by the profiles; a size inside them that the program's guards reject
    (the encoder's height and width must exceed 64) would fail every such request at run time, so
    the build fails instead, naming the bound.
    """
    from plugserve.config import ConfigError

    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    for tensor, placeholder in zip(spec.inputs, program.graph_signature.user_inputs, strict=True):
        if tensor.shape_tensor:
            continue
        for axis, size in enumerate(placeholders[placeholder].meta["val"].shape):
            if isinstance(size, int):
                continue
            bounds = program.range_constraints[size.node.expr]
            # As the program's own input check: a lower bound of 2 is export's assumption while
            # tracing, and sizes 0 and 1 are still accepted.
            lower = int(bounds.lower) if bounds.lower > 2 else 0
            for index, profile in enumerate(spec.profiles):
                limits = profile[tensor.name]
                path = f"models.yaml: models.{spec.name}.profiles[{index}].{tensor.name}"
                if limits.min[axis] < lower:
                    raise ConfigError(f"{path}.min: dimension {axis} is {limits.min[axis]}, but the exported program "
                                      f"accepts {lower} or more; raise the profile's min to that")
                if bounds.upper.is_finite and limits.max[axis] > bounds.upper:
                    raise ConfigError(f"{path}.max: dimension {axis} is {limits.max[axis]}, but the exported program "
                                      f"accepts at most {int(bounds.upper)}; lower the profile's max to that")


def runner_options(spec: ModelSpec, precision: str) -> dict[str, Any]:
    """What the runner reads from config.pbtxt besides the tensor spec; recorded in the manifest too."""
    return {"program": PROGRAM_FILE, "precision": precision, "ops": spec.torch.ops,
            "acceleration": resolve_acceleration(spec), "max_graphs": MAX_GRAPHS}


def lower(spec: ModelSpec, version_dir: Path, precision: str) -> Lowered:
    """model.pt2 plus the torch runner, served by the python backend on the instance's GPU or CPU."""
    import torch

    from plugserve import repository
    from plugserve.build import RUNNER_FILE, Lowered, _json, _package_versions
    from plugserve.runners import runner_path

    program = export_program(spec, precision)
    check_profiles(spec, program)
    torch.export.save(program, version_dir / PROGRAM_FILE)
    shutil.copyfile(runner_path("torch"), version_dir / RUNNER_FILE)
    options = runner_options(spec, precision)
    return Lowered(
        backend="python",
        versions=_package_versions("plugserve", "torch"),
        parameters={
            repository.SPEC_PARAMETER: _json(repository.runner_spec(spec)),
            OPTIONS_PARAMETER: _json(options),
            # Inputs that a client left in GPU memory (CUDA shared memory) reach the runner there.
            "FORCE_CPU_ONLY_INPUT_TENSORS": "no",
        },
        manifest={"torch": options},
    )


# --------------------------------------------------------------------------------------------------
# Request rules (the runner applies them to each request before batching)


@dataclass(frozen=True)
class InputRule:
    name: str
    shape_tensor: bool
    width: int  # a shape tensor's number of values; unused otherwise


def input_rules(spec: dict[str, Any]) -> list[InputRule]:
    """From the runner spec (repository.runner_spec, as JSON in config.pbtxt)."""
    return [InputRule(t["name"], t["shape_tensor"], t["dims"][0] if t["shape_tensor"] else 0) for t in spec["inputs"]]


def _shape(values) -> str:
    return "[" + ", ".join(str(int(v)) for v in values) + "]"


def shape_values(rule: InputRule, tensor: torch.Tensor, batching: bool) -> tuple[int, ...]:
    """A shape tensor's values; with batching every row of the request must carry the same ones."""
    rows = tensor.reshape(-1, rule.width) if batching else tensor.reshape(1, -1)
    if rows.shape[0] == 0 or rows.shape[1] != rule.width:
        raise RequestError(f"input '{rule.name}': expected {rule.width} values, got shape {_shape(tensor.shape)}")
    first = rows[0]
    if bool((rows != first).any()):
        raise RequestError(f"input '{rule.name}': all rows must be equal within one request, got {rows.tolist()}")
    values = tuple(int(v) for v in first.tolist())
    if any(v <= 0 for v in values):
        raise RequestError(f"input '{rule.name}': requested output size must be positive, got {_shape(values)}")
    return values


def check_request(spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Check one request's tensors (Triton has checked dtypes and ranks) against the shape profiles.

    Returns what each input contributes to its profile check: the full shape, or a shape tensor's values.
    """
    batching = spec["max_batch_size"] > 0
    bounds = {}
    for rule in input_rules(spec):
        tensor = tensors[rule.name]
        if tensor.numel() == 0:
            raise RequestError(f"input '{rule.name}' is empty (shape {_shape(tensor.shape)})")
        bounds[rule.name] = shape_values(rule, tensor, batching) if rule.shape_tensor else tuple(tensor.shape)

    def fits(profile: dict[str, Any], name: str) -> bool:
        low, high, got = profile[name]["min"], profile[name]["max"], bounds[name]
        return len(got) == len(low) and all(lo <= v <= hi for v, lo, hi in zip(got, low, high, strict=True))

    profiles = spec["profiles"]
    if any(all(fits(profile, name) for name in bounds) for profile in profiles):
        return bounds
    for rule in input_rules(spec):
        if not any(fits(profile, rule.name) for profile in profiles):
            what = "requested output size" if rule.shape_tensor else "shape"
            limits = "; ".join(f"min {_shape(p[rule.name]['min'])} max {_shape(p[rule.name]['max'])}" for p in profiles)
            raise RequestError(f"input '{rule.name}': {what} {_shape(bounds[rule.name])} is outside the model's "
                               f"profiles ({limits})")
    raise RequestError("the inputs fit no single shape profile together: "
                       + ", ".join(f"{name} {_shape(got)}" for name, got in bounds.items()))


def group_key(spec: dict[str, Any], bounds: dict[str, tuple[int, ...]]) -> tuple:
    """Requests with equal keys run as one batch: same per-item shapes and same shape-tensor values."""
    batching = spec["max_batch_size"] > 0
    return tuple(
        bounds[rule.name] if rule.shape_tensor else bounds[rule.name][1 if batching else 0:]
        for rule in input_rules(spec)
    )


def describe_failure(error: Exception, input_names: list[str]) -> str:
    """A PyTorch failure as the client should read it: the program's guards call the inputs
    `inputs_0`, `inputs_1`, ... (positional, models.yaml order); put the tensor names back."""
    message = f"{type(error).__name__}: {error}"
    for index in reversed(range(len(input_names))):  # inputs_10 before inputs_1
        message = message.replace(f"inputs_{index}", f"input '{input_names[index]}'")
    return f"PyTorch failed: {message}"


# --------------------------------------------------------------------------------------------------
# Serve side


class _GraphCache:
    """One CUDA graph per input signature, replayed on copies of the inputs into static buffers.

    The graphs share one memory pool; that is safe because one instance replays one graph at a time
    and outputs are cloned out of the pool before the next replay.
    """

    def __init__(self, module, device: torch.device, max_graphs: int):
        import torch

        self.module = module
        self.device = device
        self.max_graphs = max_graphs
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: dict[tuple, tuple[Any, list[torch.Tensor], tuple[torch.Tensor, ...]]] = {}
        self.disabled: str | None = None  # why capture is off for this instance, once it failed

    @staticmethod
    def signature(args: list[torch.Tensor]) -> tuple:
        # Host tensors are shape tensors: their values are baked into the graph at capture.
        return tuple((tuple(a.shape), a.dtype) if a.is_cuda else (tuple(a.tolist()), a.dtype) for a in args)

    def __call__(self, args: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        key = self.signature(args)
        entry = self.graphs.get(key)
        if entry is None:
            if self.disabled is not None or len(self.graphs) >= self.max_graphs:
                return self.module(*args)
            entry = self._capture(key, args)
            if entry is None:
                return self.module(*args)
        graph, static, outputs = entry
        for buffer, arg in zip(static, args, strict=True):
            if buffer.is_cuda:
                buffer.copy_(arg)
        graph.replay()
        return tuple(out.clone() for out in outputs)

    def _capture(self, key: tuple, args: list[torch.Tensor]):
        import torch

        static = [a.clone() for a in args]
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        # Outside the try: a request the program refuses fails here, as it would eagerly, and
        # leaves capture on for the next one.
        with torch.cuda.stream(stream):
            for _ in range(WARMUP_RUNS):
                self.module(*static)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        try:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool, stream=stream):
                outputs = self.module(*static)
        except Exception as error:  # noqa: BLE001 - any capture failure means: run this instance eagerly
            torch.cuda.synchronize(self.device)
            self.disabled = f"{type(error).__name__}: {error}"
            log.warning("CUDA graph capture failed, running eagerly from now on: %s", self.disabled)
            return None
        self.graphs[key] = (graph, static, outputs)
        return self.graphs[key]


class Program:
    """A model.pt2 loaded for serving on one device: `program(inputs)` -> outputs, in models.yaml order."""

    def __init__(self, path: str | Path, device: str | torch.device, *, ops: str = "plugserve",
                 acceleration: str = "none", max_graphs: int = MAX_GRAPHS):
        import torch
        from torch.export.passes import move_to_device_pass

        # The ops must be registered before a program that calls them can be loaded.
        from plugserve import ops as plugserve_ops
        from plugserve.ops import dynamic_resize, ms_deform_attn  # noqa: F401

        if acceleration not in ACCELERATIONS:
            raise ValueError(f"acceleration must be one of {ACCELERATIONS}, got {acceleration!r}")
        self.device = torch.device(device)
        if acceleration == "cuda_graphs" and self.device.type != "cuda":
            raise ValueError(f"acceleration cuda_graphs needs a CUDA device, got {self.device}")
        if self.device.type == "cuda":
            # Served shapes repeat (one per batch size), so cuDNN's per-shape algorithm search pays
            # off; with CUDA graphs it runs in the eager warm-up before each capture.
            torch.backends.cudnn.benchmark = True
        plugserve_ops.set_implementation(ops)
        self.ops = ops
        self.kernels = plugserve_ops.use_kernels()
        self.acceleration = acceleration
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"torch program {path} does not exist")
        program = torch.export.load(str(path))
        if self.device.type != "cpu":
            program = move_to_device_pass(program, self.device)
        module: Callable[..., Any] = program.module()
        self._graphs = None
        if acceleration == "compile":
            module = torch.compile(module, dynamic=False)
        elif acceleration == "cuda_graphs":
            self._graphs = _GraphCache(module, self.device, max_graphs)
        self.module = module

    def describe(self) -> dict[str, Any]:
        """What this instance actually runs (for the log): kernels or reference, and graphs' state."""
        state = {"device": str(self.device), "ops": self.ops, "kernels": self.kernels,
                 "acceleration": self.acceleration}
        if self._graphs is not None:
            state["graphs"] = len(self._graphs.graphs)
            state["graphs_disabled"] = self._graphs.disabled
        return state

    def __call__(self, inputs: list[torch.Tensor], host: list[bool]) -> tuple[torch.Tensor, ...]:
        """Run one batch; `host[i]` keeps input i on the CPU (shape tensors the ops read on the host)."""
        import torch

        args = [t if on_host else t.to(self.device, non_blocking=True) for t, on_host in zip(inputs, host, strict=True)]
        with torch.inference_mode():
            if self._graphs is not None:
                return self._graphs(args)
            return tuple(self.module(*args))
