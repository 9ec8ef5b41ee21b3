"""`plugserve export`: a model from its checkpoint to ONNX with plugin nodes (the single source of truth).

The dynamo exporter (`torch.onnx.export(dynamo=True)`) traces the model with `torch.export`; our
custom ops appear as single nodes and the translation table turns each into its plugin node.
`--target onnxruntime` then decomposes the plugin nodes into standard ONNX ops.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

from plugserve import console, models, ops, surgery
from plugserve.repository import sha256_file

TARGETS = ("tensorrt", "onnxruntime")
MSDA_PLUGINS = ("plugserve", "nvidia")
DTYPES = ("fp32", "fp16")
OPSET = 20  # GridSample with "linear" mode in the decomposition; TensorRT 10 and ORT 1.20+ read it
# Example batch used for tracing: 2, because torch.export specialises a dimension traced at size 1.
_TRACE_BATCH = 2


def export_onnx(model_name: str, out_path: str | Path, *, checkpoint: str | Path | None = None,
                target: str = "tensorrt", msda: str = "plugserve", dtype: str = "fp32") -> Path:
    """Export `model_name` to `out_path` and return the path; the graph passes onnx.checker and
    shape inference. Inputs and outputs carry the repository names; batch, height and width are dynamic."""
    import logging

    import onnx
    import torch

    for name, value, allowed in (("target", target, TARGETS), ("msda", msda, MSDA_PLUGINS), ("dtype", dtype, DTYPES)):
        if value not in allowed:
            raise ValueError(f"export: {name} must be one of {allowed}, got {value!r}")
    spec = models.module(model_name)
    ckpt = models.checkpoint_path(model_name, checkpoint)
    model = models.load(model_name, ckpt)
    inputs = spec.example_inputs(batch=_TRACE_BATCH)
    if dtype == "fp16":
        model = model.half()
        inputs = tuple(t.half() if t.is_floating_point() else t for t in inputs)

    dims: dict[str, torch.export.Dim] = {}
    dynamic_shapes = {
        name: {axis: dims.setdefault(label, torch.export.Dim(label, min=1)) for axis, label in
               spec.DYNAMIC_AXES[name].items()} if name in spec.DYNAMIC_AXES else None
        for name in spec.INPUTS
    }
    # The exporter warns once per missing torchvision op it could have registered; we use none of them.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with _structured_trace_off(), _unactionable_warnings_off(), console.step(f"export: {model_name} (torch.export)"):
        program = torch.onnx.export(
            model, inputs, dynamo=True, verbose=False, opset_version=OPSET,
            input_names=list(spec.INPUTS), output_names=list(spec.OUTPUTS), dynamic_shapes=dynamic_shapes,
            custom_translation_table=ops.custom_translation_table(msda=msda),
        )
    if program is None:  # only the TorchScript exporter returns nothing
        raise RuntimeError("torch.onnx.export(dynamo=True) returned no ONNX program")
    graph = program.model_proto
    onnx.checker.check_model(graph, full_check=True)
    if target == "onnxruntime":
        graph = surgery.decompose(graph)
    _describe(graph, model=model_name, checkpoint_sha256=sha256_file(ckpt), target=target, msda=msda, dtype=dtype)

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(graph, str(out))
    return out


@contextlib.contextmanager
def _unactionable_warnings_off():
    """torch's exporter warns on every export about its own use of pytree internals (LeafSpec,
    treespec): nothing a plugserve user can change."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*(LeafSpec|treespec|TreeSpec).*")
        yield


@contextlib.contextmanager
def _structured_trace_off():
    """Detach handlers from torch's structured trace log while exporting, unless TORCH_TRACE asks for it.

    torch emits that log (every graph and symbolic-shape event, serialised) whenever the
    "torch.__trace" logger has any handler. pytest >= 9 attaches its log capture to every
    non-propagating logger, which made exporting the deformable encoder 10x slower under pytest.
    """
    import logging

    trace = logging.getLogger("torch.__trace")
    saved = list(trace.handlers)
    if not os.environ.get("TORCH_TRACE"):
        trace.handlers.clear()
    try:
        yield
    finally:
        trace.handlers[:] = saved


def _describe(graph, **fields: str) -> None:
    """Record where the graph came from in its metadata (read by the repository builder's manifest)."""
    del graph.metadata_props[:]
    for key, value in fields.items():
        graph.metadata_props.add(key=f"plugserve.{key}", value=value)


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", choices=models.NAMES, help="model name")
    parser.add_argument("output", type=Path, help="ONNX file to write")
    parser.add_argument("--target", choices=TARGETS, default="tensorrt",
                        help="tensorrt: plugin nodes (default); onnxruntime: plugin nodes decomposed to standard ops")
    parser.add_argument("--msda", choices=MSDA_PLUGINS, default="plugserve",
                        help="which TensorRT plugin the deformable attention node names (default: plugserve)")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32", help="precision of the graph's float tensors")
    parser.add_argument("--checkpoint", type=Path, help="weights to export (default: the model's own)")


def run_export(args: argparse.Namespace) -> int:
    out = export_onnx(args.model, args.output, checkpoint=args.checkpoint, target=args.target, msda=args.msda,
                      dtype=args.dtype)
    print(f"export: {args.model} -> {out} (target {args.target}, msda {args.msda}, {args.dtype})")
    return 0
