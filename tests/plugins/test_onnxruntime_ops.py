"""libplugserve_ort.so: ONNX Runtime runs our plugin-node ONNX itself, with our CPU kernels.

Each graph is run three ways and compared: ONNX Runtime with the library (native), ONNX Runtime on
`decompose` of the same graph (standard ops), and PyTorch's reference ops (`ops.set_implementation
("reference")`, so libplugserve.so is not what the native run is compared with).
"""

from __future__ import annotations

import subprocess

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper

from plugserve import native, ops
from plugserve.ops import ms_deform_attn
from plugserve.ops.graph import single_node_model
from plugserve.surgery import decompose, pluginize

ort = pytest.importorskip("onnxruntime")
LIBRARY = native.onnxruntime_library()
pytestmark = pytest.mark.skipif(LIBRARY is None, reason="libplugserve_ort.so not built (make plugins with ORT headers)")
PLUGIN_ATTRS = {"plugin_namespace": "plugserve", "plugin_version": "1"}

torch.set_num_threads(2)


def session(model: onnx.ModelProto, *, native: bool = True, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if native:
        options.register_custom_ops_library(str(LIBRARY))
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def both(model: onnx.ModelProto, **inputs: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(native, decomposed) outputs of one graph."""
    return session(model).run(None, inputs), session(decompose(model), native=False).run(None, inputs)


@pytest.fixture
def reference_ops():
    ops.set_implementation("reference")
    yield
    ops.set_implementation("plugserve")


def resize_model(mode: str = "bicubic", align_corners: int = 0, size_type: int = TensorProto.INT64,
                 x_type: int = TensorProto.FLOAT, **attrs) -> onnx.ModelProto:
    return single_node_model("DynamicResize", {"x": (x_type, ["N", "C", "H", "W"]), "size": (size_type, [2])},
                             {"y": (x_type, ["N", "C", "OH", "OW"])}, domain="plugserve",
                             **{"mode": mode, "align_corners": align_corners, **PLUGIN_ATTRS, **attrs})


def msda_model(levels: int, index_type: int = TensorProto.INT32, output_layout: str | None = None,
               value_type: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """One MSDeformAttn node; output_layout None leaves the (optional) attribute out. value_type other than
    float: mixed precision, with float32 locations and weights."""
    f, v = TensorProto.FLOAT, value_type
    layout = {} if output_layout is None else {"output_layout": output_layout}
    return single_node_model(
        "MSDeformAttn",
        {"value": (v, ["N", "S", "M", "D"]), "spatial_shapes": (index_type, [levels, 2]),
         "level_start_index": (index_type, [levels]), "sampling_locations": (f, ["N", "Q", "M", levels, "P", 2]),
         "attention_weights": (f, ["N", "Q", "M", levels, "P"])},
        {"output": (v, ["N", "Q", "MD"] if output_layout == "flat" else ["N", "Q", "M", "D"])}, domain="plugserve",
        **PLUGIN_ATTRS, **layout)


def msda_inputs(rng, levels: list[tuple[int, int]], n=2, m=2, d=4, q=5, p=3, index=np.int32) -> dict[str, np.ndarray]:
    shapes = np.array(levels, index)
    areas = shapes.prod(1)
    starts = np.concatenate([[0], np.cumsum(areas)[:-1]]).astype(index)
    return {"value": rng.standard_normal((n, int(areas.sum()), m, d), dtype=np.float32),
            "spatial_shapes": shapes, "level_start_index": starts,
            # Beyond [0, 1] too: corners outside the map read zero.
            "sampling_locations": rng.uniform(-0.1, 1.1, (n, q, m, len(levels), p, 2)).astype(np.float32),
            "attention_weights": rng.random((n, q, m, len(levels), p), dtype=np.float32)}


def test_the_library_is_found_and_exports_only_register_custom_ops():
    assert LIBRARY.name == "libplugserve_ort.so" and LIBRARY.is_file()
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(LIBRARY)], capture_output=True, text=True, check=True)
    assert [line.split()[-1] for line in symbols.stdout.splitlines()] == ["RegisterCustomOps"]


@pytest.mark.parametrize(("mode", "align_corners"), [("bicubic", 0), ("bicubic", 1), ("bilinear", 0), ("bilinear", 1),
                                                     ("nearest", 0), ("nearest-exact", 0)])
@pytest.mark.parametrize("size_type", [TensorProto.INT64, TensorProto.INT32])
def test_dynamic_resize_matches_interpolate_and_the_decomposed_graph(mode, align_corners, size_type):
    model = resize_model(mode, align_corners, size_type)
    rng = np.random.default_rng(0)
    index = helper.tensor_dtype_to_np_dtype(size_type)
    for (n, c, h, w), (oh, ow) in [((1, 3, 8, 8), (16, 16)), ((2, 3, 17, 13), (40, 29)), ((1, 2, 30, 20), (7, 11)),
                                   ((3, 1, 5, 9), (5, 9))]:
        x = rng.random((n, c, h, w), dtype=np.float32)
        [native], [decomposed] = both(model, x=x, size=np.array([oh, ow], index))
        corners = {} if mode.startswith("nearest") else {"align_corners": bool(align_corners)}
        expected = F.interpolate(torch.from_numpy(x), size=(oh, ow), mode=mode, **corners).numpy()
        assert native.shape == (n, c, oh, ow)
        np.testing.assert_allclose(native, expected, rtol=0, atol=1e-5)
        np.testing.assert_allclose(native, decomposed, rtol=0, atol=1e-5)


def scales_model(mode: str, align_corners: int, **attrs) -> onnx.ModelProto:
    f = TensorProto.FLOAT
    return single_node_model("DynamicResize", {"x": (f, ["N", "C", "H", "W"]), "size": (TensorProto.INT64, [2]),
                                               "scales": (f, ["K"])},
                             {"y": (f, ["N", "C", "OH", "OW"])}, domain="plugserve",
                             **{"mode": mode, "align_corners": align_corners, "coordinate_scale": "scales",
                                **PLUGIN_ATTRS, **attrs})


@pytest.mark.parametrize(("mode", "align_corners"), [("bicubic", 0), ("bicubic", 1), ("bilinear", 0), ("bilinear", 1),
                                                     ("nearest", 0), ("nearest-exact", 0)])
def test_dynamic_resize_with_scales_matches_interpolate_by_scale_factor_and_the_decomposed_graph(mode, align_corners):
    model = scales_model(mode, align_corners)
    x = np.random.default_rng(7).random((2, 3, 10, 7), dtype=np.float32)
    corners = {} if mode.startswith("nearest") else {"align_corners": bool(align_corners)}
    for scales in ([2.3, 2.3], [0.7, 0.7], [1.5, 1.5], [2.3, 0.7], [0.45, 1.5]):
        expected = F.interpolate(torch.from_numpy(x), scale_factor=scales, mode=mode, recompute_scale_factor=False,
                                 **corners).numpy()
        [native], [decomposed] = both(model, x=x, size=np.array(expected.shape[-2:]),
                                      scales=np.array(scales, np.float32))
        np.testing.assert_allclose(native, expected, rtol=0, atol=1e-5, err_msg=f"{scales}")
        np.testing.assert_allclose(native, decomposed, rtol=0, atol=1e-5)


def test_dynamic_resize_with_bad_scales_fails_with_the_reason():
    x, size = np.zeros((1, 3, 4, 4), np.float32), np.array([8, 8])
    with pytest.raises(Exception, match="scales must be finite and > 0"):
        session(scales_model("bilinear", 0)).run(None, {"x": x, "size": size, "scales": np.array([-2, 2], np.float32)})
    with pytest.raises(Exception, match=r"scales must be float32 \[2\]"):
        session(scales_model("bilinear", 0)).run(None, {"x": x, "size": size, "scales": np.ones(3, np.float32)})
    by_size = resize_model()
    by_size.graph.node[0].input.append("scales")
    by_size.graph.input.append(helper.make_tensor_value_info("scales", TensorProto.FLOAT, [2]))
    with pytest.raises(Exception, match="needs coordinate_scale='scales'"):
        session(by_size).run(None, {"x": x, "size": size, "scales": np.ones(2, np.float32)})
    with pytest.raises(Exception, match="coordinate_scale must be 'size' or 'scales'"):
        session(resize_model(coordinate_scale="factors"))


def test_dynamic_resize_in_float16_is_the_float32_result_rounded_once():
    x = np.random.default_rng(1).random((1, 3, 9, 7), dtype=np.float32)
    size = np.array([20, 15], np.int64)
    [half] = session(resize_model(x_type=TensorProto.FLOAT16)).run(None, {"x": x.astype(np.float16), "size": size})
    [full] = session(resize_model()).run(None, {"x": x.astype(np.float16).astype(np.float32), "size": size})
    assert half.dtype == np.float16
    np.testing.assert_array_equal(half, full.astype(np.float16))


@pytest.mark.parametrize(("index_type", "output_layout"), [(TensorProto.INT32, None), (TensorProto.INT64, None),
                                                           (TensorProto.INT32, "heads_channels"),
                                                           (TensorProto.INT64, "flat")])
def test_ms_deform_attn_matches_the_reference_and_the_decomposed_graph(index_type, output_layout):
    rng = np.random.default_rng(2)
    index = helper.tensor_dtype_to_np_dtype(index_type)
    for levels, sizes in [([(4, 4), (2, 2)], {}), ([(5, 3), (3, 2), (1, 1)], {"m": 3, "d": 8, "p": 4}),
                          ([(16, 20)], {"n": 1, "q": 64, "m": 8, "d": 32, "p": 4})]:
        inputs = msda_inputs(rng, levels, index=index, **sizes)
        [native], [decomposed] = both(msda_model(len(levels), index_type, output_layout), **inputs)
        expected = ms_deform_attn.reference(*(torch.from_numpy(inputs[k]) for k in inputs),
                                            output_layout=output_layout or "heads_channels").numpy()
        assert native.shape == expected.shape
        np.testing.assert_allclose(native, expected, rtol=0, atol=1e-5)
        np.testing.assert_allclose(native, decomposed, rtol=0, atol=1e-5)


def test_results_do_not_depend_on_the_intra_op_thread_count():
    rng = np.random.default_rng(3)
    inputs = msda_inputs(rng, [(12, 10), (6, 5)], n=2, q=300, m=8, d=32, p=4)
    model = msda_model(2)
    one, two = (session(model, threads=t).run(None, inputs)[0] for t in (1, 2))
    np.testing.assert_array_equal(one, two)
    x, size = rng.random((2, 3, 31, 23), dtype=np.float32), np.array([70, 50], np.int64)
    one, two = (session(resize_model(), threads=t).run(None, {"x": x, "size": size})[0] for t in (1, 2))
    np.testing.assert_array_equal(one, two)


# --- errors: an ORT status naming the problem, never a crash ------------------------------------


@pytest.mark.parametrize(("attrs", "message"), [
    ({"mode": "lanczos"}, "mode must be bicubic, bilinear, nearest or nearest-exact, got 'lanczos'"),
    ({"mode": "nearest", "align_corners": 1}, "align_corners is only defined for bilinear and bicubic"),
    ({"align_corners": 2}, "'align_corners' must be 0 or 1, got 2"),
])
def test_bad_resize_attributes_fail_session_creation_with_the_reason(attrs, message):
    with pytest.raises(Exception, match=message):
        session(resize_model(**attrs))


@pytest.mark.parametrize("missing", ["mode", "align_corners"])
def test_a_missing_resize_attribute_is_named(missing):
    model = resize_model()
    [node] = model.graph.node
    kept = [a for a in node.attribute if a.name != missing]
    del node.attribute[:]
    node.attribute.extend(kept)
    with pytest.raises(Exception, match=f"DynamicResize: the node has no .*'{missing}'"):
        session(model)


@pytest.mark.parametrize(("x_shape", "size", "message"), [
    ((1, 3, 4, 4), [0, 8], r"output size must be >= 1, got \[0, 8\]"),
    ((1, 3, 4, 4), [8, 8, 8], r"size must have shape \[2\]"),
])
def test_bad_resize_inputs_fail_the_run_with_the_reason(x_shape, size, message):
    model = resize_model()
    model.graph.input[1].type.tensor_type.shape.dim[0].dim_param = "K"  # let a wrong size length reach the kernel
    s = session(model)
    with pytest.raises(Exception, match=message):
        s.run(None, {"x": np.zeros(x_shape, np.float32), "size": np.array(size, np.int64)})


def test_ms_deform_attn_of_a_float16_value_with_float32_locations_runs_natively():
    rng = np.random.default_rng(7)
    inputs = msda_inputs(rng, [(5, 3), (3, 2)], m=3, d=8, p=4)
    inputs["value"] = inputs["value"].astype(np.float16)
    [native] = session(msda_model(2, value_type=TensorProto.FLOAT16)).run(None, inputs)
    assert native.dtype == np.float16
    t = {k: torch.from_numpy(a) for k, a in inputs.items()}
    expected = ms_deform_attn.reference(t["value"].float(), *list(t.values())[1:]).half().numpy()
    np.testing.assert_allclose(native.astype(np.float32), expected.astype(np.float32), rtol=0, atol=2e-3)


def test_an_unknown_msda_output_layout_fails_session_creation_naming_the_choices():
    with pytest.raises(Exception, match=r"output_layout must be 'heads_channels' \(\[N, Lq, M, D\]\) or 'flat'"):
        session(msda_model(2, output_layout="rows"))


def test_pluginized_resize_by_runtime_scales_runs_natively_like_pytorch(resize_by_runtime_scales):
    graph = resize_by_runtime_scales("cubic", cubic_coeff_a=-0.75)
    pluginized = pluginize(graph, log=lambda _: None)
    assert [n.op_type for n in pluginized.graph.node if n.domain == "plugserve"] == ["DynamicResize"]
    x = np.random.default_rng(8).random((2, 3, 9, 6), dtype=np.float32)
    for scales in ([2.3, 2.3], [0.7, 1.5]):
        expected = F.interpolate(torch.from_numpy(x), scale_factor=scales, mode="bicubic",
                                 recompute_scale_factor=False).numpy()
        [native], [decomposed] = both(pluginized, x=x, s=np.array(scales, np.float32))
        np.testing.assert_allclose(native, expected, rtol=0, atol=1e-5)
        np.testing.assert_allclose(decomposed, expected, rtol=0, atol=1e-5)


def test_bad_msda_inputs_fail_the_run_with_the_reason():
    rng = np.random.default_rng(4)
    s = session(msda_model(2))
    inputs = msda_inputs(rng, [(4, 4), (2, 2)])
    bad_level = {**inputs, "spatial_shapes": np.array([[4, 4], [5, 5]], np.int32)}
    with pytest.raises(Exception, match=r"MSDeformAttn: level 1 \(shape 5x5, start 16\) does not fit in value's 20"):
        s.run(None, bad_level)
    mismatched = {**inputs, "attention_weights": inputs["attention_weights"][:, :4]}
    with pytest.raises(Exception, match=r"attention_weights must be \[2, 5, 2, 2, 3\], got \[2, 4, 2, 2, 3\]"):
        s.run(None, mismatched)
    no_channels = msda_inputs(rng, [(4, 4), (2, 2)], d=0)
    with pytest.raises(Exception, match="head dim must be >= 1, got 0"):
        s.run(None, no_channels)
    # The session is still usable after the failures.
    assert s.run(None, inputs)[0].shape == (2, 5, 2, 4)


# --- pluginized tutorial-style graphs ----------------------------------------------------------


def test_pluginized_tutorial_resize_runs_natively_like_pytorch(reference_ops):
    # The tutorial's Test::DynamicTRTResize: the output size is the last two dims of a 4-D tensor.
    graph = helper.make_model(helper.make_graph(
        [helper.make_node("DynamicTRTResize", ["x", "like"], ["y"], domain="Test", align_corners=0)], "tutorial",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"]),
         helper.make_tensor_value_info("like", TensorProto.FLOAT, [1, 1, "oh", "ow"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, "oh", "ow"])]),
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("Test", 1)], ir_version=10)
    pluginized = pluginize(graph)
    rng = np.random.default_rng(5)
    for (n, h, w), (oh, ow) in [((1, 8, 8), (16, 16)), ((2, 6, 10), (15, 31))]:
        x, like = rng.random((n, 3, h, w), dtype=np.float32), np.zeros((1, 1, oh, ow), np.float32)
        [native], [decomposed] = both(pluginized, x=x, like=like)
        expected = F.interpolate(torch.from_numpy(x), size=(oh, ow), mode="bicubic", align_corners=False).numpy()
        np.testing.assert_allclose(native, expected, rtol=0, atol=1e-5)
        np.testing.assert_allclose(native, decomposed, rtol=0, atol=1e-5)


def test_pluginized_nvidia_msda_node_runs_natively_like_pytorch():
    graph = helper.make_model(helper.make_graph(
        [helper.make_node("MultiscaleDeformableAttnPlugin_TRT", ["value", "shapes", "starts", "loc", "attn"], ["out"],
                          domain="com.microsoft")], "tutorial",
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, ["n", "s", 2, 4]),
         helper.make_tensor_value_info("shapes", TensorProto.INT64, [2, 2]),
         helper.make_tensor_value_info("starts", TensorProto.INT64, [2]),
         helper.make_tensor_value_info("loc", TensorProto.FLOAT, ["n", "q", 2, 2, 3, 2]),
         helper.make_tensor_value_info("attn", TensorProto.FLOAT, ["n", "q", 2, 2, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", "q", 2, 4])]),
        opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("com.microsoft", 1)], ir_version=10)
    pluginized = pluginize(graph)
    rng = np.random.default_rng(6)
    for levels in ([(4, 4), (2, 2)], [(5, 3), (3, 2)]):
        named = msda_inputs(rng, levels, index=np.int64)
        inputs = dict(zip(["value", "shapes", "starts", "loc", "attn"], named.values(), strict=True))
        [native], [decomposed] = both(pluginized, **inputs)
        expected = ms_deform_attn.reference(*(torch.from_numpy(a) for a in named.values())).numpy()
        np.testing.assert_allclose(native, expected, rtol=0, atol=1e-5)
        np.testing.assert_allclose(native, decomposed, rtol=0, atol=1e-5)


# --- the exported models ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("model_name", "shapes", "tolerance"), [
    ("super_resolution", [(1, 32, 48, 2.0), (2, 17, 23, 3.0), (1, 64, 40, 1.5)], 1e-4),
    ("deformable_encoder", [(1, 128, 160), (2, 64, 96), (1, 96, 64)], 1e-3),
])
def test_exported_models_run_natively_like_pytorch_and_the_decomposed_graph(export_path, reference_ops, model_name,
                                                                            shapes, tolerance):
    from plugserve import models

    graph = onnx.load(str(export_path(model_name)))
    assert {n.domain for n in graph.graph.node} >= {"plugserve"}
    native, decomposed = session(graph, threads=2), session(decompose(graph), native=False, threads=2)
    spec, model = models.module(model_name), models.load(model_name)
    for shape in shapes:
        kwargs = dict(zip(("batch", "height", "width", "scale")[:len(shape)], shape, strict=True))
        inputs = models.example_inputs(model_name, **kwargs)
        with torch.no_grad():
            expected = model(*inputs)
        feed = {name: t.numpy() for name, t in zip(spec.INPUTS, inputs, strict=True)}
        [got], [standard] = native.run(None, feed), decomposed.run(None, feed)
        np.testing.assert_allclose(got, expected.numpy(), rtol=0, atol=tolerance)
        np.testing.assert_allclose(got, standard, rtol=0, atol=tolerance)
