"""Graph rewrites over the exported ONNX: `decompose` (plugin nodes -> standard ONNX ops).

The ONNX with plugin nodes is the single source of truth; a runtime without our plugins (ONNX
Runtime) gets the same graph with each plugin node replaced by its decomposition, which lives
beside the op in `plugserve.ops.<op>.decompose`. `pluginize` goes the other way: runtime-sized
Resize nodes and tutorial-era plugin nodes become our plugin nodes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plugserve.ops import DOMAIN, SHAPE_INPUT_ATTRIBUTE, plugin_attributes
from plugserve.ops.common import attr_text

if TYPE_CHECKING:
    import onnx

# (domain, op type) of each node `decompose` rewrites -> (op module, function). NVIDIA's
# MSDA plugin node is matched on its op type alone: tools put it under "", "trt.plugins" or others.
_DECOMPOSITIONS = {
    ("plugserve", "DynamicResize"): ("plugserve.ops.dynamic_resize", "decompose"),
    ("plugserve", "MSDeformAttn"): ("plugserve.ops.ms_deform_attn", "decompose"),
    (None, "MultiscaleDeformableAttnPlugin_TRT"): ("plugserve.ops.ms_deform_attn", "decompose"),
}


def _decomposition(domain: str, op_type: str):
    """(the op module, its decompose function) for a node we decompose, else None."""
    import importlib

    target = _DECOMPOSITIONS.get((domain, op_type)) or _DECOMPOSITIONS.get((None, op_type))
    if target is None:
        return None
    module, function = target
    loaded = importlib.import_module(module)
    return loaded, getattr(loaded, function)


def _standard_opset(model: onnx.ModelProto) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _opset_for_decompositions(model: onnx.ModelProto, log) -> onnx.ModelProto:
    """The model itself, or converted with onnx.version_converter to the lowest opset every
    decomposition it needs can emit (GridSample, which MSDA decomposes into, is opset 16)."""
    import onnx.helper
    import onnx.version_converter

    opset = _standard_opset(model)
    needs = {}
    for node in model.graph.node:
        found = _decomposition(node.domain or "", node.op_type)
        if found is not None:
            needs[f"{node.domain + '::' if node.domain else ''}{node.op_type}"] = found[0].DECOMPOSE_OPSET
    needed = max(needs.values(), default=0)
    if opset is None or opset >= needed:
        return model
    why = ", ".join(f"{op} needs {v}" for op, v in sorted(needs.items()) if v > opset)
    converted = onnx.version_converter.convert_version(model, needed)
    # The converter keeps the IR version, which may predate the new opset.
    converted.ir_version = max(converted.ir_version,
                               onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", needed)]))
    log(f"decompose: the graph imports opset {opset}; converted it to opset {needed} with onnx.version_converter "
        f"({why})")
    return converted


def decompose(model: onnx.ModelProto, *, log=print) -> onnx.ModelProto:
    """Replace every plugin node we know with standard ONNX ops valid at the graph's opset (raised
    with onnx.version_converter where a decomposition needs more, said through `log`); refuse
    other custom-domain nodes."""
    import onnx
    import onnx_graphsurgeon as gs

    model = _opset_for_decompositions(model, log)
    graph = gs.import_onnx(model)
    for node in list(graph.nodes):
        found = _decomposition(node.domain or "", node.op)
        if found is not None:
            found[1](graph, node)
    graph.cleanup().toposort()
    leftover = sorted({f"{n.domain}::{n.op}" for n in graph.nodes if n.domain not in ("", "ai.onnx", None)})
    if leftover:
        raise ValueError(f"decompose: no decomposition for custom nodes {leftover}")
    out = gs.export_onnx(graph)
    # Keep only the standard opset imports: the plugin domains are gone from the graph.
    kept = [o for o in out.opset_import if o.domain in ("", "ai.onnx")]
    del out.opset_import[:]
    out.opset_import.extend(kept)
    out.ir_version = model.ir_version
    # The export's provenance stays; only the runtime the graph is for changes.
    for prop in model.metadata_props:
        out.metadata_props.add(key=prop.key, value="onnxruntime" if prop.key == "plugserve.target" else prop.value)
    onnx.checker.check_model(out)
    return onnx.shape_inference.infer_shapes(out, strict_mode=True)


def add_decompose_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="ONNX with plugserve (or NVIDIA MSDA) plugin nodes")
    parser.add_argument("output", type=Path, help="where to write the ONNX with standard ops only")


def run_decompose(args: argparse.Namespace) -> int:
    import onnx

    if not args.input.is_file():
        raise FileNotFoundError(2, "input does not exist", str(args.input))
    model = onnx.load(str(args.input))
    decomposed = decompose(model)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(decomposed, str(args.output))
    replaced = len(model.graph.node) - sum(1 for n in model.graph.node if n.domain in ("", "ai.onnx"))
    print(f"decompose: {args.input} -> {args.output} ({replaced} plugin node(s) rewritten into standard ops)")
    return 0


# ---------------------------------------------------------------------------------------------
# pluginize: recognised nodes -> plugserve plugin nodes (the inverse of decompose on our ops).

# Resize attributes under which each ONNX mode computes what PyTorch's F.interpolate computes, and
# so what DynamicResize computes: the attribute values that must hold, and the coordinate modes
# accepted with the align_corners value each means.
_RESIZE_MODES: dict[str, tuple[str, dict[str, object]]] = {
    "cubic": ("bicubic", {"cubic_coeff_a": -0.75, "exclude_outside": 0}),
    "linear": ("bilinear", {"exclude_outside": 0}),
    "nearest": ("nearest", {"nearest_mode": "floor"}),
}
# Nearest with round_prefer_ceil is PyTorch's nearest-exact (at half_pixel coordinates only).
_NEAREST_EXACT = "round_prefer_ceil"
_COORDINATE_MODES = {
    "bicubic": {"half_pixel": 0, "pytorch_half_pixel": 0, "align_corners": 1},
    "bilinear": {"half_pixel": 0, "pytorch_half_pixel": 0, "align_corners": 1},
    "nearest": {"asymmetric": 0},
    "nearest-exact": {"half_pixel": 0},
}
# ONNX Resize defaults (opset 11+) for the attributes checked above.
_RESIZE_DEFAULTS = {
    "coordinate_transformation_mode": "half_pixel",
    "cubic_coeff_a": -0.75,
    "exclude_outside": 0,
    "nearest_mode": "round_prefer_floor",
    "antialias": 0,
    "keep_aspect_ratio_policy": "stretch",
}
_MSDA_LEGACY = "MultiscaleDeformableAttnPlugin_TRT"
# mmdeploy's node for mmcv's MultiScaleDeformableAttnFunction: the same five inputs, output [N, Lq, M*D].
# Its im2col_step only sets how many images mmcv's CUDA kernel takes at a time, not the numbers.
_MSDA_MMDEPLOY = ("mmdeploy", "MMCVMultiScaleDeformableAttention")
_MSDA_MMDEPLOY_ATTRIBUTES = ("im2col_step",)
_RESIZE_LEGACY = ("Test", "DynamicTRTResize")
# Attributes a legacy MSDA node may carry that say where its plugin lives, not what it computes.
_PLUGIN_LOOKUP_ATTRIBUTES = ("plugin_version", "plugin_namespace")


class PluginizeError(ValueError):
    """Nodes pluginize recognised but cannot map faithfully; the message gives each node and why."""



def _is_runtime(tensor) -> bool:
    """True for a tensor computed while the graph runs (not an initializer, Constant or absent)."""
    import onnx_graphsurgeon as gs

    if isinstance(tensor, gs.Constant) or tensor.name == "":
        return False
    producers = tensor.inputs
    return not (producers and producers[0].op == "Constant")


# The way out of a refusal: the Resize can stay as it is where the runtime resizes it itself.
_KEEP_RESIZE = "or give this Resize constant sizes/scales, which pluginize leaves to TensorRT's own resize"


def _resize_plan(node) -> tuple[str, int] | str:
    """(DynamicResize mode, align_corners) for a Resize node, or why it cannot be mapped and the way out."""
    attrs = {key: attr_text(value) for key, value in node.attrs.items()}
    mode = attrs.get("mode", "nearest")
    if mode not in _RESIZE_MODES:
        return f"mode {mode!r} has no DynamicResize equivalent (it has {sorted(_RESIZE_MODES)}); {_KEEP_RESIZE}"
    ours, required = _RESIZE_MODES[mode]
    if mode == "nearest" and attrs.get("nearest_mode", _RESIZE_DEFAULTS["nearest_mode"]) == _NEAREST_EXACT:
        ours, required = "nearest-exact", {}
    # First what no attribute of DynamicResize expresses: an antialiased export also sets
    # cubic_coeff_a=-0.5 and exclude_outside=1, which are not its cause.
    if attrs.get("antialias", 0) != 0:
        return (f"antialias={attrs['antialias']!r}: DynamicResize resizes without antialiasing (F.interpolate's "
                f"antialias=False); export with antialias=False, {_KEEP_RESIZE}")
    policy = attrs.get("keep_aspect_ratio_policy", _RESIZE_DEFAULTS["keep_aspect_ratio_policy"])
    if policy != _RESIZE_DEFAULTS["keep_aspect_ratio_policy"]:
        return (f"keep_aspect_ratio_policy={policy!r}: DynamicResize stretches to the size it is given; "
                f"compute the kept-aspect size in the graph and pass it as sizes, {_KEEP_RESIZE}")
    if "axes" in attrs:
        return ("the axes attribute is not supported (DynamicResize resizes the last two axes of NCHW); give "
                f"sizes for all four axes, {_KEEP_RESIZE}")
    for key, want in required.items():
        got = attrs.get(key, _RESIZE_DEFAULTS[key])
        if got != want:
            return (f"{key}={got!r}: DynamicResize reproduces F.interpolate, which has {key}={want!r} for {ours}; "
                    f"export from F.interpolate(mode={ours!r}), {_KEEP_RESIZE}")
    coordinates = attrs.get("coordinate_transformation_mode", _RESIZE_DEFAULTS["coordinate_transformation_mode"])
    if coordinates not in _COORDINATE_MODES[ours]:
        return (f"coordinate_transformation_mode={coordinates!r} with mode {mode!r} is not one of "
                f"{sorted(_COORDINATE_MODES[ours])}, the ones F.interpolate(mode={ours!r}) uses; {_KEEP_RESIZE}")
    x = node.inputs[0]
    if x.shape is not None and len(x.shape) != 4:
        return f"input {x.name!r} has rank {len(x.shape)}; DynamicResize takes NCHW (rank 4); {_KEEP_RESIZE}"
    return ours, _COORDINATE_MODES[ours][coordinates]


def _constant_values(tensor):
    """The values of a tensor that is an initializer, a Constant's output or a Concat/Cast of
    those, else None."""
    import numpy as np
    import onnx_graphsurgeon as gs

    if isinstance(tensor, gs.Constant):
        return tensor.values
    if not tensor.inputs:
        return None
    producer = tensor.inputs[0]
    if producer.op == "Constant":
        return producer.attrs["value"].values
    if producer.op == "Cast":
        return _constant_values(producer.inputs[0])
    if producer.op == "Concat" and producer.attrs.get("axis") == 0:
        parts = [_constant_values(t) for t in producer.inputs]
        return None if any(p is None for p in parts) else np.concatenate(parts)
    return None


def _constant_hw(tensor):
    """The last two entries of a rank-4 Resize's sizes where they are constants inside a runtime
    tensor (TorchScript exports F.interpolate(size=(h, w)) as Concat(Shape(x)[:2], Constant[h, w])),
    else None."""
    import onnx_graphsurgeon as gs

    if isinstance(tensor, gs.Constant) or not tensor.inputs or tensor.inputs[0].op != "Concat":
        return None
    found: list = []
    for part in reversed(tensor.inputs[0].inputs):  # the parts that hold entries 2:4 are the last ones
        values = _constant_values(part)
        if values is None:
            return None
        found[:0] = values.tolist()
        if len(found) >= 2:
            return tuple(found[-2:])
    return None


def _scales_plan(node, scales) -> tuple[str, int] | str:
    """_resize_plan for a Resize with runtime scales, which must leave N and C unscaled where the graph
    says what they are (Concat([1, 1], ...), as exporters write it)."""
    import numpy as np

    plan = _resize_plan(node)
    if isinstance(plan, str) or not scales.inputs or scales.inputs[0].op != "Concat":
        return plan
    leading = _constant_values(scales.inputs[0].inputs[0])
    if leading is not None and leading.size >= 2 and not np.array_equal(leading[:2], [1, 1]):
        return (f"its scales for N and C are {leading[:2].tolist()}; DynamicResize scales H and W only; "
                f"{_KEEP_RESIZE}")
    return plan


def _resize_target(node) -> tuple[object, str]:
    """The input that sets a Resize's output size, and which it is: "sizes" or "scales"."""
    if len(node.inputs) == 2:  # opset 10: (X, scales)
        return node.inputs[1], "scales"
    if len(node.inputs) == 4 and node.inputs[3].name != "":
        return node.inputs[3], "sizes"
    return node.inputs[2], "scales"


def _hw(emit, nchw) -> object:
    """Elements 2:4 (H, W) of an NCHW-ordered 1-D tensor: a Resize's sizes or scales, a shape."""
    return emit("Slice", nchw, emit.int64(2), emit.int64(4), emit.int64(0))


def _dynamic_resize_node(emit, inputs: list, output, mode: str, align_corners: int) -> None:
    """DynamicResize(x, size) or, given scales as a third input, DynamicResize(x, size, scales)."""
    scales = {"coordinate_scale": "scales"} if len(inputs) == 3 else {}
    emit.graph.nodes.append(_plugin_node(emit, "DynamicResize", inputs, [output],
                                         {"mode": mode, "align_corners": align_corners, **scales,
                                          **plugin_attributes(),
                                          # the parser then gives the size to the plugin as a shape input
                                          SHAPE_INPUT_ATTRIBUTE: [1]}, DOMAIN))


def _plugin_node(emit, op: str, inputs: list, outputs: list, attrs: dict, domain: str):
    import onnx_graphsurgeon as gs

    return gs.Node(op=op, name=f"{emit.prefix}/{op}", domain=domain, attrs=attrs, inputs=inputs, outputs=outputs)


def _int32(emit, index) -> object:
    import numpy as np

    if index.dtype is not None and np.dtype(index.dtype) == np.int32:
        return index
    cast = emit("Cast", index, to=6)  # TensorRT's MSDA plugins (NVIDIA's and ours) read int32 indices
    cast.dtype, cast.shape = np.int32, index.shape  # typed, so checks and decompose see [L, 2] int32
    return cast


def pluginize(model: onnx.ModelProto, *, log=print) -> onnx.ModelProto:
    """Rewrite into plugserve plugin nodes: Resize nodes whose sizes are computed at run time, the
    tutorial-era `Test::DynamicTRTResize` (output size = the last two dims of a 4-D size tensor),
    `MultiscaleDeformableAttnPlugin_TRT` under any domain and mmdeploy's
    `MMCVMultiScaleDeformableAttention`. `log` gets one line per rewrite, and a warning where a
    "runtime" size is a constant baked in at export or where pytorch_half_pixel coordinates become
    half_pixel ones.

    Refuses (PluginizeError, graph unchanged) when a recognised node cannot be mapped faithfully.
    Resize nodes with constant sizes or scales stay: TensorRT resizes those natively, said in `log`.
    A Resize with runtime scales becomes DynamicResize with coordinate_scale="scales": its size is
    Resize's floor(in * scale) and its coordinates scale by the scales, so its meaning is kept.
    """
    import onnx
    import onnx_graphsurgeon as gs

    from plugserve.ops.graph import Emitter, detach

    graph = gs.import_onnx(model)
    refused: list[str] = []
    rewrites: list[tuple[str, Any, Any, str]] = []
    for node in list(graph.nodes):
        label = f"{node.domain + '::' if node.domain else ''}{node.op} {node.name or node.outputs[0].name!r}"
        if node.op == "Resize" and node.domain in ("", "ai.onnx", None):
            computed = [t for t in node.inputs[1:] if _is_runtime(t)]
            if not computed:
                continue
            target, kind = _resize_target(node)
            if kind == "scales" and (fixed := _constant_hw(target)) is not None:
                log(f"pluginize: {label} left as Resize: its scales {fixed} are constants baked into the graph, "
                    f"which TensorRT resizes natively; to scale by a runtime factor, pass the scales as a graph "
                    f"input (or export F.interpolate(size=...) with the size computed from an input)")
                continue
            plan = _resize_plan(node) if kind == "sizes" else _scales_plan(node, target)
            if isinstance(plan, str):
                refused.append(f"{label}: {plan}")
                continue
            rewrites.append((f"resize_by_{kind}", node, plan, label))
        elif (node.domain, node.op) == _RESIZE_LEGACY:
            extra = set(node.attrs) - {"align_corners", "mode", *_PLUGIN_LOOKUP_ATTRIBUTES}
            mode = attr_text(node.attrs.get("mode", "bicubic"))
            if extra or len(node.inputs) != 2 or mode not in _COORDINATE_MODES:
                refused.append(f"{label}: expected inputs (input, size_tensor) and attributes align_corners[, mode], "
                               f"got {len(node.inputs)} inputs and attributes {sorted(node.attrs)}")
                continue
            rewrites.append(("legacy_resize", node, (mode, int(node.attrs.get("align_corners", 0))), label))
        elif node.op == _MSDA_LEGACY or (node.domain, node.op) == _MSDA_MMDEPLOY:
            mmdeploy = node.op != _MSDA_LEGACY
            own = _MSDA_MMDEPLOY_ATTRIBUTES if mmdeploy else ()
            extra = set(node.attrs) - {*_PLUGIN_LOOKUP_ATTRIBUTES, *own}
            if extra or len(node.inputs) != 5 or len(node.outputs) != 1:
                refused.append(f"{label}: expected 5 inputs (value, spatial_shapes, level_start_index, sampling "
                               f"locations, attention weights), 1 output and "
                               f"{f'no attributes but {list(own)}' if own else 'no attributes of its own'}; got "
                               f"{len(node.inputs)} inputs, {len(node.outputs)} outputs, attributes {sorted(extra)}")
                continue
            rewrites.append(("msda", node, mmdeploy, label))
    if refused:
        raise PluginizeError("pluginize: cannot map these nodes faithfully, nothing was rewritten:\n  "
                             + "\n  ".join(refused))


    for kind, node, plan, label in rewrites:
        emit = Emitter(graph, node)
        output = node.outputs[0]
        if kind.startswith("resize_by_"):
            x = node.inputs[0]
            target, _ = _resize_target(node)
            mode, align_corners = plan
            fixed = _constant_hw(target) if kind == "resize_by_sizes" else None
            if fixed is not None:
                log(f"pluginize: warning: {label} resizes to the constant size {fixed} baked into the graph at "
                    f"export; the DynamicResize node keeps it, so its output size is now fixed: re-export with the "
                    f"size computed from an input (e.g. F.interpolate(size=like.shape[-2:]) with dynamic axes) to "
                    f"serve other sizes")
            if attr_text(node.attrs.get("coordinate_transformation_mode")) == "pytorch_half_pixel":
                log(f"pluginize: warning: {label} has coordinate_transformation_mode='pytorch_half_pixel', rewritten "
                    f"as 'half_pixel' (F.interpolate's and DynamicResize's): the two differ only where an output "
                    f"dim is 1, which pytorch_half_pixel samples at source coordinate 0 and half_pixel at the "
                    f"input's centre")
            if kind == "resize_by_sizes":
                inputs, how = [x, emit("Cast", _hw(emit, target), to=7)], "size from sizes[2:4]"
            else:
                # Resize's own output size, floor(in * scale), as the size; the scales for the coordinates.
                hw_scales = _hw(emit, target)
                in_hw = emit("Cast", emit.shape(x, 2, 4), to=1)
                hw = emit("Cast", emit("Floor", emit("Mul", in_hw, hw_scales)), to=7)
                inputs, how = [x, hw, hw_scales], "size floor(in * scales[2:4]), coordinates by scales[2:4]"
            detach(node)
            _dynamic_resize_node(emit, inputs, output, mode, align_corners)
            log(f"pluginize: {label} ({how}) -> {DOMAIN}::DynamicResize mode={mode} align_corners={align_corners}"
                + (" coordinate_scale=scales" if len(inputs) == 3 else ""))
        elif kind == "legacy_resize":
            x, size_tensor = node.inputs
            mode, align_corners = plan
            detach(node)
            hw = _hw(emit, emit("Shape", size_tensor))
            _dynamic_resize_node(emit, [x, hw], output, mode, align_corners)
            log(f"pluginize: {label} (size from the shape of {size_tensor.name!r}) -> {DOMAIN}::DynamicResize "
                f"mode={mode} align_corners={align_corners}")
        else:
            value, shapes, starts, locations, weights = node.inputs
            detach(node)
            indices = [_int32(emit, shapes), _int32(emit, starts)]
            # mmdeploy's output is [N, Lq, M*D], and some exports declare NVIDIA's so: the same bytes as
            # [N, Lq, M, D], which MSDeformAttn gives that shape itself.
            flat = plan or (output.shape is not None and len(output.shape) == 3)
            layout = "flat" if flat else "heads_channels"
            graph.nodes.append(_plugin_node(emit, "MSDeformAttn", [value, *indices, locations, weights], [output],
                                            {"output_layout": layout, **plugin_attributes()}, DOMAIN))
            casts = sum(1 for new, old in zip(indices, (shapes, starts), strict=True) if new is not old)
            log(f"pluginize: {label} -> {DOMAIN}::MSDeformAttn output_layout={layout} ({casts} int64->int32 "
                f"index cast(s))")

    graph.cleanup().toposort()
    out = gs.export_onnx(graph)
    out.ir_version = model.ir_version
    kept = [o for o in out.opset_import if o.domain in ("", "ai.onnx")]
    del out.opset_import[:]
    out.opset_import.extend(kept)
    if any(n.domain == DOMAIN for n in out.graph.node):
        out.opset_import.append(onnx.helper.make_opsetid(DOMAIN, 1))
    custom = sorted({o.domain for o in model.opset_import} - {"", "ai.onnx", DOMAIN})
    left = {n.domain for n in out.graph.node}
    out.opset_import.extend(onnx.helper.make_opsetid(d, 1) for d in custom if d in left)
    out.metadata_props.extend(model.metadata_props)
    onnx.checker.check_model(out)
    if not rewrites:
        log("pluginize: nothing to rewrite (no runtime-sized Resize, DynamicTRTResize or MSDA plugin node)")
    return out


def add_pluginize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="ONNX with Resize nodes or legacy plugin nodes")
    parser.add_argument("output", type=Path, help="where to write the ONNX with plugserve plugin nodes")


def run_pluginize(args: argparse.Namespace) -> int:
    import sys

    import onnx

    if not args.input.is_file():
        raise FileNotFoundError(2, "input does not exist", str(args.input))
    try:
        rewritten = pluginize(onnx.load(str(args.input)))
    except PluginizeError as error:
        print(error, file=sys.stderr)
        return 2
    args.output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(rewritten, str(args.output))
    print(f"pluginize: {args.input} -> {args.output}")
    return 0
