"""`plugserve::ms_deform_attn`: multi-scale deformable attention (Deformable DETR).

Inputs (N batch, S = sum of level H*W, M heads, D channels per head, L levels, Lq queries, P points):
value [N, S, M, D], spatial_shapes [L, 2] int (H, W per level), level_start_index [L] int,
sampling_locations [N, Lq, M, L, P, 2] (x, y in [0, 1]), attention_weights [N, Lq, M, L, P]; the last two
in value's dtype, or float32 beside a float16/bfloat16 value (mixed precision; the output is value's dtype).
Output [N, Lq, M, D] (`output_layout="heads_channels"`, NVIDIA's plugin) or the same numbers as
[N, Lq, M*D] (`output_layout="flat"`, Deformable DETR, mmcv, mmdeploy). The numbers are the grid_sample formulation of Deformable DETR's
`ms_deform_attn_core_pytorch`: bilinear sampling, zeros outside the map, align_corners=False.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from plugserve import native
from plugserve.ops.common import attr_text, plugin_attributes, plugin_op, use_kernels

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs

OP_TYPE = "MSDeformAttn"
NVIDIA_OP_TYPE = "MultiscaleDeformableAttnPlugin_TRT"
NVIDIA_DOMAIN = "trt.plugins"
# The lowest opset the decomposition emits valid ops for: GridSample is opset 16.
DECOMPOSE_OPSET = 16
# The output's shapes: [N, Lq, M, D] and [N, Lq, M*D] (the same bytes).
OUTPUT_LAYOUTS = ("heads_channels", "flat")


def check_output_layout(output_layout: str) -> None:
    if output_layout not in OUTPUT_LAYOUTS:
        raise ValueError(f"ms_deform_attn: output_layout must be 'heads_channels' ([N, Lq, M, D]) or 'flat' "
                         f"([N, Lq, M*D]), got {output_layout!r}")


def _laid_out(out: torch.Tensor, output_layout: str) -> torch.Tensor:
    """The [N, Lq, M, D] result in the given layout."""
    return out.flatten(2) if output_layout == "flat" else out


def check_arguments(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                    sampling_locations: torch.Tensor, attention_weights: torch.Tensor) -> None:
    """Errors naming the problem for inconsistent shapes and dtypes (no data read)."""
    if value.dim() != 4:
        raise ValueError(f"ms_deform_attn: value must be [N, S, M, D], got shape {tuple(value.shape)}")
    n, _, m, _ = value.shape
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(f"ms_deform_attn: sampling_locations must be [N, Lq, M, L, P, 2], "
                         f"got shape {tuple(sampling_locations.shape)}")
    _, lq, _, levels, points, _ = sampling_locations.shape
    if tuple(sampling_locations.shape[:3]) != (n, lq, m):
        raise ValueError(f"ms_deform_attn: sampling_locations {tuple(sampling_locations.shape)} does not match "
                         f"value {tuple(value.shape)} in N or M")
    if tuple(attention_weights.shape) != (n, lq, m, levels, points):
        raise ValueError(f"ms_deform_attn: attention_weights must be {(n, lq, m, levels, points)}, "
                         f"got {tuple(attention_weights.shape)}")
    for name, t, shape in (("spatial_shapes", spatial_shapes, (levels, 2)),
                           ("level_start_index", level_start_index, (levels,))):
        if tuple(t.shape) != shape or t.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"ms_deform_attn: {name} must be int32/int64 of shape {shape}, "
                             f"got {t.dtype} {tuple(t.shape)}")


def reference(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
              sampling_locations: torch.Tensor, attention_weights: torch.Tensor,
              output_layout: str = "heads_channels") -> torch.Tensor:
    """The op's definition: per level, bilinear grid_sample of the value map, then the weighted sum."""
    check_arguments(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    check_output_layout(output_layout)
    n, s, m, d = value.shape
    _, lq, _, levels, points, _ = sampling_locations.shape
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    starts = [int(i) for i in level_start_index.tolist()]
    for (h, w), start in zip(shapes, starts, strict=True):
        if h < 1 or w < 1 or start < 0 or start + h * w > s:
            raise ValueError(f"ms_deform_attn: level of shape ({h}, {w}) starting at {start} "
                             f"does not fit in value's S={s}")
    # Mixed precision (a half value, float32 locations and weights): computed in float32, returned in value's dtype.
    out_dtype = value.dtype
    value = value.to(torch.promote_types(value.dtype, sampling_locations.dtype))
    grids = 2 * sampling_locations.to(value.dtype) - 1  # grid_sample's [-1, 1] coordinates
    samples = []
    for level, ((h, w), start) in enumerate(zip(shapes, starts, strict=True)):
        # [N, H*W, M, D] -> [N*M, D, H, W]
        value_l = value[:, start:start + h * w].permute(0, 2, 3, 1).reshape(n * m, d, h, w)
        # [N, Lq, M, P, 2] -> [N*M, Lq, P, 2]
        grid_l = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        samples.append(F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False))
    # [N*M, D, Lq, L*P] weighted by [N*M, 1, Lq, L*P]
    weights = attention_weights.to(value.dtype).transpose(1, 2).reshape(n * m, 1, lq, levels * points)
    out = (torch.stack(samples, dim=-2).flatten(-2) * weights).sum(-1)
    return _laid_out(out.view(n, m, d, lq).permute(0, 3, 1, 2).to(out_dtype).contiguous(), output_layout)


@torch.library.custom_op("plugserve::ms_deform_attn", mutates_args=())
def ms_deform_attn(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                   sampling_locations: torch.Tensor, attention_weights: torch.Tensor,
                   output_layout: str = "heads_channels") -> torch.Tensor:
    """One implementation for every device: the compiled kernel once libplugserve.so is loadable
    (and selected, see `plugserve.ops.use_kernels`); else the reference."""
    check_arguments(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    check_output_layout(output_layout)
    # Both the value and the sampling tensors in a dtype the kernels take (float64 is refused as the C ABI does).
    if use_kernels("ms_deform_attn", value) and use_kernels("ms_deform_attn", sampling_locations):
        try:
            # The kernels write [N, Lq, M, D], which is [N, Lq, M*D] byte for byte.
            return _laid_out(native.ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations,
                                                   attention_weights), output_layout)
        except native.PluginError as error:
            if error.code == native.INVALID_ARGUMENT:  # the same ValueError the reference raises
                raise ValueError(f"ms_deform_attn: {error}") from error
            raise
    return reference(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, output_layout)


@ms_deform_attn.register_fake
def _(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, output_layout="heads_channels"):
    check_arguments(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    check_output_layout(output_layout)
    n, _, m, d = value.shape
    return _laid_out(value.new_empty((n, sampling_locations.shape[1], m, d)), output_layout)


def _int32(index):
    from onnxscript import opset18 as op

    # TensorRT's MSDA plugins (NVIDIA's and ours) read int32 indices.
    return op.Cast(index, to=6)


# S: T, or float32 beside a half T (mixed precision).
_INPUTS = {"value": "T", "spatial_shapes": "tensor(int32)", "level_start_index": "tensor(int32)",
           "sampling_locations": "S", "attention_weights": "S"}


def onnx_translation(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                     output_layout="heads_channels"):
    """The exporter's translation: one `plugserve::MSDeformAttn` node with int32 index inputs."""
    check_output_layout(output_layout)
    node = plugin_op(OP_TYPE, _INPUTS, {"output": "T"}, {"output_layout": "string"})
    return node(value, _int32(spatial_shapes), _int32(level_start_index), sampling_locations, attention_weights,
                output_layout=output_layout, **plugin_attributes())


def onnx_translation_nvidia(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                            output_layout="heads_channels"):
    """The same node as NVIDIA's TensorRT plugin (`MultiscaleDeformableAttnPlugin_TRT` version "2"),
    which returns [N, Lq, M, D] only: a Reshape follows it for the flat layout.

    The TensorRT parser finds a plugin by op type whatever the domain; a domain of its own keeps
    onnx.checker from looking the op up among the standard ops.
    """
    from onnxscript import opset18 as op

    check_output_layout(output_layout)
    node = plugin_op(NVIDIA_OP_TYPE, _INPUTS, {"output": "T"}, {}, domain=NVIDIA_DOMAIN)
    out = node(value, _int32(spatial_shapes), _int32(level_start_index), sampling_locations, attention_weights,
               plugin_namespace="", plugin_version="2")
    return op.Reshape(out, op.Constant(value_ints=[0, 0, -1])) if output_layout == "flat" else out


def decompose(graph: gs.Graph, node: gs.Node) -> None:
    """Rewrite an MSDA plugin node into per-level Slice, Reshape and GridSample, then the weighted sum.

    The number of levels must be static (it unrolls the loop); level sizes and offsets are read from
    the index tensors at run time, so one graph serves every image size.
    """
    import numpy as np
    import onnx

    from plugserve.ops.graph import Emitter, detach

    value, spatial_shapes, level_start_index, sampling_locations, attention_weights = node.inputs
    output = node.outputs[0]
    # NVIDIA's node has no such attribute: its layout is ours by default.
    output_layout = attr_text(node.attrs.get("output_layout", "heads_channels"))
    try:
        check_output_layout(output_layout)
    except ValueError as error:
        raise ValueError(f"{node.name}: {error}") from None
    levels = _static_dim(spatial_shapes, 0) or _static_dim(sampling_locations, 3)
    if not levels:
        raise ValueError(f"{node.name}: decomposing {node.op} needs a static number of levels "
                         f"(spatial_shapes dim 0 or sampling_locations dim 3)")
    if int(graph.opset) < DECOMPOSE_OPSET:
        raise ValueError(f"{node.name}: decomposing {node.op} needs opset >= {DECOMPOSE_OPSET} (GridSample), "
                         f"the graph imports opset {graph.opset}; plugserve decompose converts it")
    detach(node)
    emit = Emitter(graph, node)
    i64 = emit.int64
    # GridSample spells bilinear "linear" from opset 20 on.
    bilinear = "linear" if int(graph.opset) >= 20 else "bilinear"
    float_type = np.dtype(sampling_locations.dtype) if sampling_locations.dtype is not None else np.float32
    # Mixed precision (a half value, float32 locations and weights): sampled and summed in float32, as the
    # kernels do, and the output cast back to value's dtype.
    value_type = np.dtype(value.dtype) if value.dtype is not None else float_type
    mixed = value_type != float_type
    if mixed:
        value = emit("Cast", value, to=onnx.helper.np_dtype_to_tensor_dtype(float_type))

    shapes = emit("Cast", spatial_shapes, to=7)
    starts = emit("Cast", level_start_index, to=7)
    value_shape = emit("Shape", value)  # [N, S, M, D]
    n, m, d = (emit("Slice", value_shape, i64(k), i64(k + 1)) for k in (0, 2, 3))
    lq = emit("Slice", emit("Shape", sampling_locations), i64(1), i64(2))
    batch_heads = emit("Mul", n, m)
    two, one = np.array(2.0, dtype=float_type), np.array(1.0, dtype=float_type)
    grids = emit("Sub", emit("Mul", sampling_locations, two), one)
    # [N, Lq, M, L, P, 2] -> [N, M, Lq, L, P, 2] once for all levels
    grids = emit("Transpose", grids, perm=[0, 2, 1, 3, 4, 5])
    samples = []
    for level in range(levels):
        hw = emit("Gather", shapes, np.array(level, dtype=np.int64), axis=0)  # [2]
        start = emit("Gather", starts, i64(level), axis=0)  # [1]
        end = emit("Add", start, emit.reduce("ReduceProd", hw, [0], keepdims=1))
        value_l = emit("Slice", value, start, end, i64(1))  # [N, H*W, M, D]
        value_l = emit("Transpose", value_l, perm=[0, 2, 3, 1])  # [N, M, D, H*W]
        value_l = emit("Reshape", value_l, emit("Concat", batch_heads, d, hw, axis=0))  # [N*M, D, H, W]
        grid_l = emit("Gather", grids, np.array(level, dtype=np.int64), axis=3)  # [N, M, Lq, P, 2]
        grid_l = emit("Reshape", grid_l, emit("Concat", batch_heads, lq, i64(-1, 2), axis=0))  # [N*M, Lq, P, 2]
        samples.append(emit("GridSample", value_l, grid_l, mode=bilinear, padding_mode="zeros", align_corners=0))
    stacked = emit("Concat", *samples, axis=-1)  # [N*M, D, Lq, L*P]
    weights = emit("Transpose", attention_weights, perm=[0, 2, 1, 3, 4])  # [N, M, Lq, L, P]
    weights = emit("Reshape", weights, emit("Concat", batch_heads, i64(1), lq, i64(-1), axis=0))
    summed = emit.reduce("ReduceSum", emit("Mul", stacked, weights), [-1], keepdims=0)  # [N*M, D, Lq]
    summed = emit("Reshape", summed, emit("Concat", n, m, d, lq, axis=0))
    flat = output_layout == "flat"
    # The last of Transpose, Reshape (flat), Cast (mixed) writes the node's output.
    result = emit("Transpose", summed, perm=[0, 3, 1, 2], outputs=None if flat or mixed else [output])  # [N, Lq, M, D]
    if flat:
        result = emit("Reshape", result, i64(0, 0, -1), outputs=None if mixed else [output])  # [N, Lq, M*D]
    if mixed:
        emit("Cast", result, to=onnx.helper.np_dtype_to_tensor_dtype(value_type), outputs=[output])


def _static_dim(tensor: gs.Tensor, axis: int) -> int | None:
    shape = tensor.shape
    if shape is None or len(shape) <= axis or not isinstance(shape[axis], int):
        return None
    return shape[axis]
