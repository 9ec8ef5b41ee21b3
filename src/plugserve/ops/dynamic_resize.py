"""`plugserve::dynamic_resize`: resize an NCHW batch to an output size that arrives at run time.

`size` is an int tensor [2] (output height, width), an input of the served model rather than a
constant of the graph, so one engine serves every scale. The numbers are PyTorch's
`F.interpolate` (antialias off) for modes "nearest", "bilinear", "bicubic" and "nearest-exact".

With `scales` (a float tensor [2], h and w) source coordinates scale by 1/scale rather than by
in/out, as `F.interpolate(scale_factor=..., recompute_scale_factor=False)` and ONNX Resize with
scales sample; the output size is still `size`, which should be floor(in * scale) as theirs is
(TensorRT shape tensors are integer, so the size cannot be derived from float scales in the plugin).
The plugin node then carries `coordinate_scale="scales"` and a third input.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from plugserve import native
from plugserve.ops.common import SHAPE_INPUT_ATTRIBUTE, attr_text, plugin_attributes, plugin_op, use_kernels

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs

OP_TYPE = "DynamicResize"
MODES = native.RESIZE_MODES
# The lowest opset the decomposition emits valid ops for (Resize with a sizes input).
DECOMPOSE_OPSET = 11


def check_arguments(x: torch.Tensor, size: torch.Tensor, mode: str, align_corners: bool,
                    scales: torch.Tensor | None = None) -> None:
    """Errors naming the problem for what every implementation refuses (shapes only, no data read)."""
    if x.dim() != 4:
        raise ValueError(f"dynamic_resize: x must be 4-D [N, C, H, W], got shape {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"dynamic_resize: x must be floating point, got {x.dtype}")
    if size.shape != (2,) or size.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"dynamic_resize: size must be an int32/int64 tensor of shape [2] (out_h, out_w), "
                         f"got {size.dtype} {tuple(size.shape)}")
    if mode not in MODES:
        raise ValueError(f"dynamic_resize: mode must be one of {MODES}, got {mode!r}")
    if mode.startswith("nearest") and align_corners:
        raise ValueError(f"dynamic_resize: align_corners applies to bilinear and bicubic, not {mode}")
    if scales is not None and (scales.shape != (2,) or not scales.dtype.is_floating_point):
        raise ValueError(f"dynamic_resize: scales must be a float tensor of shape [2] (scale_h, scale_w), "
                         f"got {scales.dtype} {tuple(scales.shape)}")


def given_scales(scales: torch.Tensor) -> tuple[float, float]:
    """The two scales as the kernels read them (float32), refused unless finite and > 0."""
    scale_h, scale_w = (float(v) for v in scales.to(torch.float32).tolist())
    if not all(math.isfinite(s) and s > 0 for s in (scale_h, scale_w)):
        raise ValueError(f"dynamic_resize: scales must be finite and > 0, got ({scale_h}, {scale_w})")
    return scale_h, scale_w


def output_size(size: torch.Tensor) -> tuple[int, int]:
    out_h, out_w = (int(v) for v in size.tolist())
    if out_h < 1 or out_w < 1:
        raise ValueError(f"dynamic_resize: output size must be >= 1, got ({out_h}, {out_w})")
    return out_h, out_w


def reference(x: torch.Tensor, size: torch.Tensor, mode: str = "bicubic", align_corners: bool = False,
              scales: torch.Tensor | None = None) -> torch.Tensor:
    """The op's definition: `F.interpolate` to the size held in `size`; with `scales`, PyTorch's
    upsample kernels given both that size and the scales, which is what `F.interpolate(scale_factor=s,
    recompute_scale_factor=False)` runs with size floor(in * s)."""
    check_arguments(x, size, mode, align_corners, scales)
    if scales is None:
        corners = {} if mode.startswith("nearest") else {"align_corners": align_corners}
        return F.interpolate(x, size=output_size(size), mode=mode, **corners)
    hw, (scale_h, scale_w) = list(output_size(size)), given_scales(scales)
    aten = torch.ops.aten
    if mode == "bicubic":
        return aten.upsample_bicubic2d.default(x, hw, align_corners, scale_h, scale_w)
    if mode == "bilinear":
        return aten.upsample_bilinear2d.default(x, hw, align_corners, scale_h, scale_w)
    nearest = aten.upsample_nearest2d if mode == "nearest" else aten._upsample_nearest_exact2d
    return nearest.default(x, hw, scale_h, scale_w)


@torch.library.custom_op("plugserve::dynamic_resize", mutates_args=())
def dynamic_resize(x: torch.Tensor, size: torch.Tensor, mode: str, align_corners: bool,
                   scales: torch.Tensor | None = None) -> torch.Tensor:
    """One implementation for every device: the compiled kernel once libplugserve.so is loadable
    (and selected, see `plugserve.ops.use_kernels`); else the reference."""
    check_arguments(x, size, mode, align_corners, scales)
    if use_kernels("dynamic_resize", x):
        if scales is not None:
            given_scales(scales)  # the GPU path cannot check them
        return native.dynamic_resize(x, *output_size(size), mode, align_corners, scales)
    return reference(x, size, mode, align_corners, scales)


@dynamic_resize.register_fake
def _(x: torch.Tensor, size: torch.Tensor, mode: str, align_corners: bool,
      scales: torch.Tensor | None = None) -> torch.Tensor:
    # The output size is data (a tensor's values), so the exporter sees two fresh symbolic sizes.
    check_arguments(x, size, mode, align_corners, scales)
    ctx = torch.library.get_ctx()
    return x.new_empty((x.shape[0], x.shape[1], ctx.new_dynamic_size(min=1), ctx.new_dynamic_size(min=1)))


# `size` is a shape input: without the attribute the parser passes it as a 1-D device tensor,
# whose values getOutputShapes never sees.
SHAPE_INPUTS = [1]


def onnx_translation(x, size, mode: str, align_corners: bool, scales=None):
    """The exporter's translation: one `plugserve::DynamicResize` node, `size` marked as a shape input;
    with scales, their third input and coordinate_scale="scales" (the attribute is left out otherwise,
    so graphs of the size form read as they always have)."""
    attributes = {"mode": "string", "align_corners": "int", SHAPE_INPUT_ATTRIBUTE: "ints"}
    values = {"mode": mode, "align_corners": int(align_corners), **plugin_attributes(),
              SHAPE_INPUT_ATTRIBUTE: SHAPE_INPUTS}
    if scales is None:
        return plugin_op(OP_TYPE, {"x": "T", "size": "I"}, {"y": "T"}, attributes)(x, size, **values)
    node = plugin_op(OP_TYPE, {"x": "T", "size": "I", "scales": "tensor(float)"}, {"y": "T"},
                     {**attributes, "coordinate_scale": "string"})
    return node(x, size, scales, coordinate_scale="scales", **values)


def decompose(graph: gs.Graph, node: gs.Node) -> None:
    """Rewrite a DynamicResize node into a standard Resize with sizes = Concat(Shape(x)[:2], size), or
    with coordinate_scale="scales" one with scales = Concat([1, 1], scales) (whose output size is
    floor(in * scale), which the node's size input is meant to be).

    The attributes reproduce PyTorch's sampling: cubic a=-0.75 with edge clamping (exclude_outside=0),
    "half_pixel" (or "align_corners") source coordinates, for nearest PyTorch's floor(dst * in/out), and
    for nearest-exact round_prefer_ceil at half_pixel coordinates, which is PyTorch's floor((dst + 0.5) * in/out).
    """
    import numpy as np
    import onnx_graphsurgeon as gs

    from plugserve.ops.graph import Emitter, detach

    x, size, *scales = node.inputs
    output = node.outputs[0]
    mode = attr_text(node.attrs.get("mode", "bicubic"))
    by_scales = attr_text(node.attrs.get("coordinate_scale", "size"))
    if by_scales not in ("size", "scales") or (by_scales == "scales") != bool(scales):
        raise ValueError(f"{node.name}: DynamicResize takes (x, size) with coordinate_scale 'size' (the default) or "
                         f"(x, size, scales) with 'scales'; got {len(node.inputs)} inputs and {by_scales!r}")
    align_corners = bool(node.attrs.get("align_corners", 0))
    if mode not in MODES:
        raise ValueError(f"{node.name}: DynamicResize mode must be one of {MODES}, got {mode!r}")
    if int(graph.opset) < DECOMPOSE_OPSET:
        raise ValueError(f"{node.name}: decomposing DynamicResize needs opset >= {DECOMPOSE_OPSET} (Resize with "
                         f"sizes), the graph imports opset {graph.opset}; plugserve decompose converts it")
    detach(node)

    emit = Emitter(graph, node)
    attrs: dict = {"mode": {"nearest": "nearest", "bilinear": "linear", "bicubic": "cubic",
                            "nearest-exact": "nearest"}[mode]}
    if mode == "nearest":
        attrs.update(coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    elif mode == "nearest-exact":
        attrs.update(coordinate_transformation_mode="half_pixel", nearest_mode="round_prefer_ceil")
    else:
        attrs["coordinate_transformation_mode"] = "align_corners" if align_corners else "half_pixel"
    if mode == "bicubic":
        attrs.update(cubic_coeff_a=-0.75, exclude_outside=0)
    # Resize's roi and scales, unused when sizes is given: absent from opset 13 on, before that
    # required inputs that must be given as empty tensors.
    skipped = gs.Variable.empty() if emit.opset >= 13 else np.zeros(0, np.float32)
    if scales:
        factors = emit("Concat", np.ones(2, np.float32), emit("Cast", scales[0], to=1), axis=0)
        emit("Resize", x, skipped, factors, outputs=[output], **attrs)
        return
    sizes = emit("Concat", emit.shape(x, 0, 2), emit("Cast", size, to=7), axis=0)
    emit("Resize", x, skipped, skipped, sizes, outputs=[output], **attrs)
