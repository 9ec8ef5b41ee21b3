"""What an ONNX file says about its inputs and outputs, against models.yaml: `plugserve init` writes a
models.yaml entry from it, and every build checks the entry's names, dtypes, ranks and dims with it.

    plugserve init model.onnx --name my_model            # prints the entry
    plugserve init model.onnx --output models.yaml       # appends it under `models:`
"""

from __future__ import annotations

import argparse
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugserve.config import ConfigError, ModelSpec, TensorSpec
from plugserve.ops.common import SHAPE_INPUT_ATTRIBUTE

# onnx.TensorProto element types -> the Triton names models.yaml uses (config.TENSOR_DTYPES).
TRITON_DTYPES = {1: "FP32", 10: "FP16", 7: "INT64", 6: "INT32", 2: "UINT8", 9: "BOOL"}
# Ops a shape tensor's values pass through on their way to a size input (the decomposed
# DynamicResize is Resize(sizes=Concat(Shape(x)[:2], Cast(size)))).
_PASS_THROUGH = {"Cast", "Concat", "Identity", "Unsqueeze", "Squeeze", "Reshape", "Slice"}
STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")
RESIZE_SIZES = 3  # Resize's input index of `sizes`
# What `init` proposes for a dynamic axis and for the batch, to be edited: min, opt, max.
PROPOSED_AXIS = (1, 256, 1024)
PROPOSED_BATCH = 8


@dataclass(frozen=True)
class Tensor:
    name: str
    elem_type: int
    dims: tuple[int | str | None, ...]  # an int is fixed; a str a named (symbolic) axis; None unknown
    shape_tensor: bool = False

    @property
    def dtype(self) -> str:
        return TRITON_DTYPES.get(self.elem_type, f"onnx type {self.elem_type}")


@dataclass(frozen=True)
class Signature:
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    plugin_nodes: tuple[str, ...]  # "op_type (node name)" of each plugserve or legacy plugin node

    @property
    def batched(self) -> bool:
        """Whether every ordinary input's first axis is symbolic: Triton's batch dimension."""
        ordinary = [t for t in self.inputs if not t.shape_tensor]
        return bool(ordinary) and all(t.dims and not isinstance(t.dims[0], int) for t in ordinary)


def read(source: Path | Any) -> Signature:
    """The signature of an ONNX file (or a loaded ModelProto)."""
    import onnx

    model = onnx.load(str(source), load_external_data=False) if isinstance(source, (str, Path)) else source
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    shape_inputs = _shape_tensor_inputs(graph)

    def tensor(value, shape_tensor: bool = False) -> Tensor:
        kind = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param or None for d in kind.shape.dim)
        return Tensor(value.name, kind.elem_type, dims, shape_tensor)

    inputs = tuple(tensor(i, i.name in shape_inputs) for i in graph.input if i.name not in initializers)
    plugins = tuple(f"{n.op_type} ({n.name})" for n in graph.node
                    if n.domain not in STANDARD_DOMAINS or any(a.name == "plugin_namespace" for a in n.attribute))
    return Signature(inputs, tuple(tensor(o) for o in graph.output), plugins)


def _shape_tensor_inputs(graph) -> set[str]:
    """1-D integer inputs whose values reach a plugin node's shape input or a Resize's sizes."""
    consumers: dict[str, list[tuple[Any, int]]] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, index))
    found = set()
    for value in graph.input:
        kind = value.type.tensor_type
        if kind.elem_type not in (6, 7) or len(kind.shape.dim) != 1:
            continue
        queue, seen = deque([value.name]), {value.name}
        while queue:
            for node, index in consumers.get(queue.popleft(), []):
                shape_indices = next((list(a.ints) for a in node.attribute if a.name == SHAPE_INPUT_ATTRIBUTE), [])
                if index in shape_indices or (node.op_type == "Resize" and index == RESIZE_SIZES):
                    found.add(value.name)
                elif node.op_type in _PASS_THROUGH:
                    queue.extend(o for o in node.output if o not in seen)
                    seen.update(node.output)
    return found


def check(spec: ModelSpec, source: Path | Any, precision: str = "fp32") -> None:
    """models.yaml's inputs and outputs of `spec` against the ONNX `source`: names, then each
    tensor's dtype (float width only at fp32: other precisions export narrower floats), rank and dims.
    Messages name what the user gave (the ONNX file, or the model exported), not the staged copy."""
    where = str(spec.onnx) if spec.onnx is not None else f"the export of {spec.source_model}"
    signature = read(source)
    for kind, declared, actual in (("inputs", spec.inputs, signature.inputs),
                                   ("outputs", spec.outputs, signature.outputs)):
        names, found = [t.name for t in declared], [t.name for t in actual]
        if sorted(names) != sorted(found):
            raise ConfigError(f"{spec.label}: models.{spec.name}.{kind}: names {names} do not match "
                              f"the {kind} {found} of {where}")
        by_name = {t.name: t for t in actual}
        for index, tensor in enumerate(declared):
            problem = _mismatch(tensor, by_name[tensor.name], spec.max_batch_size > 0, precision)
            if problem:
                raise ConfigError(f"{spec.label}: models.{spec.name}.{kind}[{index}] ({tensor.name}): {problem} "
                                  f"in {where}")


def _mismatch(declared: TensorSpec, actual: Tensor, batched: bool, precision: str) -> str | None:
    if precision == "fp32" and declared.dtype != actual.dtype:
        return f"dtype {declared.dtype} is {actual.dtype}"
    if declared.dtype.startswith("FP") != actual.dtype.startswith("FP"):
        return f"dtype {declared.dtype} is {actual.dtype}"
    if not actual.dims and not declared.dims:
        return None
    dims = actual.dims
    if batched and not declared.shape_tensor:
        if not dims:
            return f"the ONNX has no shape, but max_batch_size > 0 needs a batch axis before dims {list(declared.dims)}"
        if isinstance(dims[0], int):
            return f"max_batch_size > 0 needs a dynamic first (batch) axis; the ONNX fixes it to {dims[0]}"
        dims = dims[1:]
    if len(dims) != len(declared.dims):
        return f"rank {len(declared.dims)} (dims {list(declared.dims)}) is {len(dims)} ({_show(dims)})"
    for axis, (want, have) in enumerate(zip(declared.dims, dims, strict=True)):
        if isinstance(have, int) and want not in (-1, have):
            return f"dims[{axis}] {want} is fixed to {have} ({_show(dims)})"
        if isinstance(have, int) and want == -1:
            return f"dims[{axis}] is -1 (any size) but fixed to {have} ({_show(dims)}): declare {have}"
    return None


def _show(dims: tuple[int | str | None, ...]) -> str:
    return "dims [" + ", ".join("?" if d is None else str(d) for d in dims) + "] without the batch axis"


def entry(signature: Signature, name: str, source: str) -> str:
    """A models.yaml entry (YAML text, indented for `models:`) proposing what the file says."""
    batched = signature.batched
    lines = [f"  {name}:", f"    source: {{onnx: {source}}}", "    inputs:"]

    def yaml_dims(tensor: Tensor) -> list[int]:
        dims = tensor.dims[1:] if batched and not tensor.shape_tensor else tensor.dims
        return [d if isinstance(d, int) else -1 for d in dims]

    for tensor in signature.inputs:
        flag = ", shape_tensor: true" if tensor.shape_tensor else ""
        lines.append(f"      - {{name: {tensor.name}, dtype: {tensor.dtype}, dims: {yaml_dims(tensor)}{flag}}}")
    lines.append("    outputs:")
    lines += [f"      - {{name: {t.name}, dtype: {t.dtype}, dims: {yaml_dims(t)}}}" for t in signature.outputs]
    lines.append("    profiles:  # proposed from the dynamic axes: edit min/opt/max to the sizes you serve")
    for index, tensor in enumerate(signature.inputs):
        bounds = [_bounds(tensor, axis, batched) for axis in range(len(tensor.dims))]
        if tensor.shape_tensor:  # values, not dims
            count = tensor.dims[0] if isinstance(tensor.dims[0], int) else 1
            bounds = [PROPOSED_AXIS] * count
        row = {key: [b[k] for b in bounds] for k, key in enumerate(("min", "opt", "max"))}
        lead = "      - " if index == 0 else "        "
        lines.append(f"{lead}{tensor.name}: {{min: {row['min']}, opt: {row['opt']}, max: {row['max']}}}")
    lines.append(f"    max_batch_size: {PROPOSED_BATCH if batched else 0}")
    if signature.plugin_nodes:
        lines.append(f"    # plugin nodes: {', '.join(signature.plugin_nodes)}")
    lines.append("    runtime: onnxruntime")
    return "\n".join(lines) + "\n"


def _bounds(tensor: Tensor, axis: int, batched: bool) -> tuple[int, int, int]:
    dim = tensor.dims[axis]
    if isinstance(dim, int):
        return (dim, dim, dim)
    if axis == 0 and batched:
        return (1, PROPOSED_BATCH // 2, PROPOSED_BATCH)
    return PROPOSED_AXIS


def add_init_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("onnx", type=Path, help="the ONNX file the entry serves")
    parser.add_argument("--name", help="the model's repository name (default: the file's stem)")
    parser.add_argument("--output", type=Path,
                        help="models.yaml to append the entry to (created if missing); default: print it")


def run_init(args: argparse.Namespace) -> int:
    if not args.onnx.is_file():
        raise FileNotFoundError(2, "ONNX file does not exist", str(args.onnx))
    name = args.name or args.onnx.stem
    target = args.output
    # models.yaml resolves `source.onnx` relative to its own folder.
    base = target.resolve().parent if target is not None else Path.cwd()
    source = Path(args.onnx).resolve()
    relative = source.relative_to(base) if source.is_relative_to(base) else source
    text = entry(read(args.onnx), name, str(relative))
    if target is None:
        sys.stdout.write("models:\n" + text)
        return 0
    existing = target.read_text() if target.is_file() else ""
    if not existing.strip():
        existing = "models:\n"
    elif f"\n  {name}:" in f"\n{existing}":
        raise ConfigError(f"{target}: models.{name} exists already; choose another --name")
    target.write_text(existing.rstrip("\n") + "\n\n" + text if existing.strip() != "models:" else existing + text)
    print(f"init: wrote models.{name} to {target}: check its profiles, then `plugserve build --config {target}`")
    return 0
