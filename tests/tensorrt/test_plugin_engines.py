"""One-plugin networks built by TensorRT from ONNX and compared with the PyTorch reference.

Every engine has one profile with min != opt != max, and the loops run shapes at the profile's
bounds and between them, in each dtype the plugins support.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from onnx import TensorProto, helper

from plugserve.config import Range
from plugserve.ops import dynamic_resize, ms_deform_attn, plugin_attributes
from plugserve.trt import engine as trt_engine
from plugserve.trt import registry as trt_registry

pytestmark = pytest.mark.tensorrt

ONNX_TYPES = {
    torch.float32: TensorProto.FLOAT,
    torch.float16: TensorProto.FLOAT16,
    torch.bfloat16: TensorProto.BFLOAT16,
}
PRECISIONS = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def build(graph, path: Path, profile: dict[str, Range], dtype: torch.dtype, library: Path) -> Path:
    import onnx

    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("plugserve", 1)]
    )
    onnx.checker.check_model(model)
    onnx.save(model, str(path.with_suffix(".onnx")))
    # The graph is typed in `dtype`: a strongly typed network on TensorRT 10 and 11 alike.
    options = trt_engine.BuildOptions(profiles=[profile], precision=PRECISIONS[dtype], show_progress=False)
    trt_engine.build_engine(path.with_suffix(".onnx"), path, options, library, graph_dtype=PRECISIONS[dtype])
    return path


RESIZE_PROFILE = {
    "x": Range((1, 3, 4, 4), (2, 3, 16, 16), (4, 3, 64, 64)),
    "size": Range((1, 1), (32, 32), (128, 128)),
}
RESIZE_CASES = [
    ((1, 3, 4, 4), (1, 1)),
    ((2, 3, 16, 16), (32, 48)),
    ((4, 3, 64, 37), (128, 5)),
    ((3, 3, 7, 64), (13, 128)),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: PRECISIONS[d])
@pytest.mark.parametrize(
    ("mode", "align_corners"),
    [("nearest", 0), ("bilinear", 0), ("bilinear", 1), ("bicubic", 0), ("bicubic", 1)],
)
def test_dynamic_resize_engine_matches_the_pytorch_reference(
    tmp_path, plugin_library, run_engine, mode, align_corners, dtype
):
    node = helper.make_node(
        "DynamicResize",
        ["x", "size"],
        ["y"],
        domain="plugserve",
        mode=mode,
        align_corners=align_corners,
        tensorrt_plugin_shape_input_indices=[1],
        **plugin_attributes(),
    )
    graph = helper.make_graph(
        [node],
        "dynamic_resize",
        [
            helper.make_tensor_value_info("x", ONNX_TYPES[dtype], ["n", 3, "h", "w"]),
            helper.make_tensor_value_info("size", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info("y", ONNX_TYPES[dtype], ["n", 3, "oh", "ow"])],
    )
    plan = build(graph, tmp_path / "resize.plan", RESIZE_PROFILE, dtype, plugin_library)
    for shape, out_size in RESIZE_CASES:
        x = torch.rand(shape, device="cuda").to(dtype)
        size = torch.tensor(out_size, dtype=torch.int64)
        got = run_engine(plan, {"x": x, "size": size})["y"]
        expected = dynamic_resize.reference(x.float(), size, mode, bool(align_corners))
        assert got.shape == expected.shape
        torch.testing.assert_close(got.float(), expected, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


def _levels(sizes: list[tuple[int, int]], index_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    shapes = torch.tensor(sizes, dtype=index_dtype)
    areas = shapes.prod(1)
    return shapes, torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]]).to(index_dtype)


HEADS, HEAD_DIM, LEVELS, POINTS = 8, 32, 4, 4
MSDA_CASES = [  # (batch, level sizes, queries)
    (1, [(1, 1), (1, 1), (1, 1), (1, 1)], 1),
    (2, [(16, 20), (8, 10), (4, 5), (2, 3)], 430),
    (4, [(32, 32), (16, 16), (8, 8), (4, 4)], 1360),
    (3, [(7, 33), (4, 17), (2, 9), (1, 5)], 64),
]


def msda_profile(index_dtype: torch.dtype) -> dict[str, Range]:
    values = Range((1, 4, HEADS, HEAD_DIM), (2, 430, HEADS, HEAD_DIM), (4, 1360, HEADS, HEAD_DIM))
    queries = Range(
        (1, 1, HEADS, LEVELS, POINTS, 2),
        (2, 430, HEADS, LEVELS, POINTS, 2),
        (4, 1360, HEADS, LEVELS, POINTS, 2),
    )
    return {
        "value": values,
        "sampling_locations": queries,
        "attention_weights": Range(queries.min[:-1], queries.opt[:-1], queries.max[:-1]),
    }


# (float32 sampling tensors beside a half value, output_layout): mixed precision as fp16 engines with
# fp32 offsets have it, with the peers' [N, Lq, M*D] output.
MSDA_VARIANTS = {"same-types": (False, "heads_channels"), "mixed-flat": (True, "flat")}


@pytest.mark.parametrize("variant", list(MSDA_VARIANTS))
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64], ids=["int32", "int64"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: PRECISIONS[d])
def test_ms_deform_attn_engine_matches_the_pytorch_reference(
    tmp_path, plugin_library, run_engine, dtype, index_dtype, variant
):
    mixed, output_layout = MSDA_VARIANTS[variant]
    if mixed and dtype == torch.float32:
        pytest.skip("float32 sampling tensors beside a float32 value are the same-types case")
    sampling_dtype = torch.float32 if mixed else dtype
    index_type = TensorProto.INT32 if index_dtype == torch.int32 else TensorProto.INT64
    node = helper.make_node(
        "MSDeformAttn",
        ["value", "spatial_shapes", "level_start_index", "sampling_locations", "attention_weights"],
        ["output"],
        domain="plugserve",
        output_layout=output_layout,
        **plugin_attributes(),
    )
    output_shape = ["n", "q", HEADS * HEAD_DIM] if output_layout == "flat" else ["n", "q", HEADS, HEAD_DIM]
    graph = helper.make_graph(
        [node],
        "ms_deform_attn",
        [
            helper.make_tensor_value_info("value", ONNX_TYPES[dtype], ["n", "s", HEADS, HEAD_DIM]),
            helper.make_tensor_value_info("spatial_shapes", index_type, [LEVELS, 2]),
            helper.make_tensor_value_info("level_start_index", index_type, [LEVELS]),
            helper.make_tensor_value_info(
                "sampling_locations", ONNX_TYPES[sampling_dtype], ["n", "q", HEADS, LEVELS, POINTS, 2]
            ),
            helper.make_tensor_value_info(
                "attention_weights", ONNX_TYPES[sampling_dtype], ["n", "q", HEADS, LEVELS, POINTS]
            ),
        ],
        [helper.make_tensor_value_info("output", ONNX_TYPES[dtype], output_shape)],
    )
    plan = build(graph, tmp_path / "msda.plan", msda_profile(index_dtype), dtype, plugin_library)
    for batch, sizes, queries in MSDA_CASES:
        shapes, starts = _levels(sizes, index_dtype)
        total = int(shapes.prod(1).sum())
        value = torch.randn(batch, total, HEADS, HEAD_DIM, device="cuda")
        # Some locations outside [0, 1]: the zero padding at the borders is part of the op.
        locations = torch.rand(batch, queries, HEADS, LEVELS, POINTS, 2, device="cuda") * 1.2 - 0.1
        weights = torch.rand(batch, queries, HEADS, LEVELS, POINTS, device="cuda").softmax(-1)
        inputs = {
            "value": value.to(dtype),
            "spatial_shapes": shapes,
            "level_start_index": starts,
            "sampling_locations": locations.to(sampling_dtype),
            "attention_weights": weights.to(sampling_dtype),
        }
        got = run_engine(plan, inputs)["output"]
        assert got.dtype == dtype
        expected = ms_deform_attn.reference(
            *(t.float() if t.is_floating_point() else t.cuda() for t in inputs.values()), output_layout=output_layout
        )
        torch.testing.assert_close(got.float(), expected, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


def test_engine_build_names_a_plugin_no_library_registered(tmp_path, plugin_library):
    node = helper.make_node(
        "DynamicResize",
        ["x", "size"],
        ["y"],
        domain="plugserve",
        mode="bicubic",
        align_corners=0,
        plugin_namespace="plugserve",
        plugin_version="9",
    )
    graph = helper.make_graph(
        [node],
        "unregistered",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4]),
            helper.make_tensor_value_info("size", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, "oh", "ow"])],
    )
    with pytest.raises(
        trt_registry.PluginNotRegistered,
        match=r"plugserve::DynamicResize v9.*registered plugserve creators: "
        r".*plugserve::DynamicResize v1",
    ):
        build(
            graph,
            tmp_path / "never.plan",
            {"size": Range((1, 1), (8, 8), (16, 16))},
            torch.float32,
            plugin_library,
        )
