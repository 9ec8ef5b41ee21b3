"""The "torch" lowering: a model served by PyTorch, its plugserve ops running libplugserve.so kernels.

The model from plugserve.models is wrapped to take and return the tensors models.yaml promises
(FP32 images, the INT64 size) while it computes in the chosen precision, captured with
`torch.export` and saved as `model.pt2`: a graph and its weights, no pickled Python. The generic
runner (runners/torch_runner.py) becomes the version's model.py; runners/torch_program.py loads
and runs the program inside tritonserver.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from plugserve import models, repository, runners
from plugserve.config import PRECISIONS, ConfigError, ModelSpec
from plugserve.lowering import Lowered, package_versions, to_json
from plugserve.runners.contract import DTYPES, SPEC_PARAMETER, TORCH_OPTIONS_PARAMETER

if TYPE_CHECKING:
    import torch

_TRACE_BATCH = 2  # torch.export specialises a dimension traced at size 1
FLOAT_DTYPES = ("FP32", "FP16", "BF16")  # the Triton types a torch-served output may have


def unavailable() -> str | None:
    import importlib.util

    return None if importlib.util.find_spec("torch") else "PyTorch is not installed (pip install torch)"


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

    path = f"{spec.label}: models.{spec.name}"
    if spec.source_model is None:
        raise ConfigError(f"{path}.source: runtime torch needs `model` (a plugserve model), not a ready ONNX file")
    if precision not in PRECISIONS:
        raise ConfigError(f"{path}.precisions: runtime torch serves {', '.join(PRECISIONS)}, got {precision!r}")
    module = models.module(spec.source_model)
    declared = [t.name for t in spec.inputs]
    if sorted(declared) != sorted(module.INPUTS) or sorted(t.name for t in spec.outputs) != sorted(module.OUTPUTS):
        raise ConfigError(f"{path}: inputs {declared} / outputs {[t.name for t in spec.outputs]} do not match "
                          f"model {spec.source_model!r} (inputs {list(module.INPUTS)}, outputs {list(module.OUTPUTS)})")
    for t in spec.outputs:
        if t.dtype not in FLOAT_DTYPES:
            raise ConfigError(f"{path}.outputs: {t.name} must be a float type for runtime torch, got {t.dtype}")
    if list(module.OUTPUTS) != [t.name for t in spec.outputs]:
        raise ConfigError(f"{path}.outputs: list them in the model's order {list(module.OUTPUTS)}")
    output_dtypes = [getattr(torch, DTYPES[t.dtype]) for t in spec.outputs]

    model = models.load(spec.source_model, spec.checkpoint)
    served = _served_module(model, getattr(torch, PRECISIONS[precision]), output_dtypes,
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
                path = f"{spec.label}: models.{spec.name}.profiles[{index}].{tensor.name}"
                if limits.min[axis] < lower:
                    raise ConfigError(f"{path}.min: dimension {axis} is {limits.min[axis]}, but the exported program "
                                      f"accepts {lower} or more; raise the profile's min to that")
                if bounds.upper.is_finite and limits.max[axis] > bounds.upper:
                    raise ConfigError(f"{path}.max: dimension {axis} is {limits.max[axis]}, but the exported program "
                                      f"accepts at most {int(bounds.upper)}; lower the profile's max to that")


def runner_options(spec: ModelSpec, precision: str) -> dict[str, Any]:
    """What the runner reads from config.pbtxt besides the tensor spec; recorded in the manifest too."""
    from plugserve.runners.torch_program import MAX_GRAPHS

    return {"program": repository.PROGRAM_FILE, "precision": precision, "ops": spec.torch.ops,
            "acceleration": resolve_acceleration(spec), "max_graphs": MAX_GRAPHS}


def lower(spec: ModelSpec, version_dir: Path, precision: str) -> Lowered:
    """model.pt2 plus the torch runner, served by the python backend on the instance's GPU or CPU."""
    import torch

    program = export_program(spec, precision)
    check_profiles(spec, program)
    torch.export.save(program, version_dir / repository.PROGRAM_FILE)
    runners.install("torch", version_dir)
    options = runner_options(spec, precision)
    return Lowered(
        backend="python",
        versions=package_versions("plugserve", "torch"),
        parameters={
            SPEC_PARAMETER: to_json(repository.runner_spec(spec)),
            TORCH_OPTIONS_PARAMETER: to_json(options),
            # Inputs that a client left in GPU memory (CUDA shared memory) reach the runner there.
            "FORCE_CPU_ONLY_INPUT_TENSORS": "no",
        },
        manifest={"torch": options},
    )
