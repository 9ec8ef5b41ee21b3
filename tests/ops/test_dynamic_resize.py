"""plugserve::dynamic_resize: the torch op, its export translation, and its decomposition to ONNX Resize."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto

from plugserve.ops import dynamic_resize
from plugserve.ops.graph import single_node_model
from plugserve.surgery import decompose

MODES = [("bicubic", False), ("bicubic", True), ("bilinear", False), ("bilinear", True), ("nearest", False),
         ("nearest-exact", False)]
# (in_h, in_w, out_h, out_w): up, down, non-integer ratios, identity, 1x1 in and out.
SIZES = [(17, 23, 40, 50), (5, 7, 13, 11), (12, 10, 5, 4), (9, 6, 9, 6), (3, 4, 1, 1), (1, 1, 4, 3), (10, 10, 37, 29)]


@pytest.mark.parametrize(("mode", "align_corners"), MODES)
def test_op_computes_f_interpolate_at_the_size_given_as_a_tensor(mode, align_corners):
    x = torch.rand(2, 3, 9, 13)
    corners = {} if mode.startswith("nearest") else {"align_corners": align_corners}
    expected = F.interpolate(x, size=(20, 7), mode=mode, **corners)
    got = torch.ops.plugserve.dynamic_resize(x, torch.tensor([20, 7]), mode, align_corners)
    # The op runs libplugserve.so's CPU kernel when the library is built: same math, other rounding.
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_op_accepts_int32_sizes():
    x = torch.rand(1, 1, 4, 4)
    got = torch.ops.plugserve.dynamic_resize(x, torch.tensor([8, 6], dtype=torch.int32), "bilinear", False)
    assert got.shape == (1, 1, 8, 6)


@pytest.mark.parametrize(("x", "size", "mode", "align_corners", "message"), [
    (torch.rand(3, 4, 4), torch.tensor([8, 8]), "bicubic", False, "4-D"),
    (torch.rand(1, 3, 4, 4), torch.tensor([8, 8, 8]), "bicubic", False, "shape \\[2\\]"),
    (torch.rand(1, 3, 4, 4), torch.tensor([8.0, 8.0]), "bicubic", False, "int32/int64"),
    (torch.rand(1, 3, 4, 4), torch.tensor([0, 8]), "bicubic", False, ">= 1"),
    (torch.rand(1, 3, 4, 4), torch.tensor([8, 8]), "area", False, "mode must be one of"),
    (torch.rand(1, 3, 4, 4), torch.tensor([8, 8]), "nearest", True, "align_corners"),
    (torch.ones(1, 3, 4, 4, dtype=torch.int64), torch.tensor([8, 8]), "nearest", False, "floating point"),
])
def test_op_rejects_bad_input_naming_the_problem(x, size, mode, align_corners, message):
    with pytest.raises(ValueError, match=message):
        torch.ops.plugserve.dynamic_resize(x, size, mode, align_corners)


def test_float64_is_refused_as_the_c_abi_refuses_it_and_runs_on_the_reference_when_selected():
    from plugserve import ops

    x = torch.rand(1, 3, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="dtype must be one of .* got float64.*set_implementation\\('reference'\\)"):
        torch.ops.plugserve.dynamic_resize(x, torch.tensor([8, 8]), "bilinear", False)
    ops.set_implementation("reference")
    try:
        got = torch.ops.plugserve.dynamic_resize(x, torch.tensor([8, 8]), "bilinear", False)
    finally:
        ops.set_implementation("plugserve")
    torch.testing.assert_close(got, F.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False))


def test_op_passes_torch_library_opcheck():
    torch.library.opcheck(torch.ops.plugserve.dynamic_resize.default,
                          (torch.rand(2, 3, 5, 6), torch.tensor([9, 4]), "bicubic", False),
                          test_utils=("test_schema", "test_faketensor"))


def test_export_sees_the_output_size_as_data_dependent():
    class Upscale(torch.nn.Module):
        def forward(self, x, size):
            return torch.ops.plugserve.dynamic_resize(x, size, "bicubic", False)

    program = torch.export.export(Upscale(), (torch.rand(1, 3, 8, 8), torch.tensor([16, 16])))
    out = program.graph_module.graph.find_nodes(op="output")[0].args[0][0].meta["val"]
    assert out.shape[:2] == (1, 3)
    assert all(isinstance(dim, torch.SymInt) for dim in out.shape[2:])


def _plugin_model(mode: str, align_corners: bool, size_type: int = TensorProto.INT64, opset: int = 20):
    return single_node_model(
        "DynamicResize", {"x": (TensorProto.FLOAT, ["n", "c", "h", "w"]), "size": (size_type, [2])},
        {"y": (TensorProto.FLOAT, ["n", "c", "oh", "ow"])}, domain="plugserve", opset=opset,
        mode=mode, align_corners=int(align_corners), plugin_namespace="plugserve", plugin_version="1")


@pytest.mark.parametrize("opset", range(11, onnx.defs.onnx_opset_version() + 1))
def test_decomposition_is_valid_and_exact_at_every_opset_from_11(opset, capsys):
    for mode, align_corners in MODES:
        model = decompose(_plugin_model(mode, align_corners, opset=opset))
        onnx.checker.check_model(model, full_check=True)
        assert model.opset_import[0].version == opset and "version_converter" not in capsys.readouterr().out
        session = ort.InferenceSession(model.SerializeToString())
        x = np.random.default_rng(opset).random((2, 3, 17, 23), dtype=np.float32)
        for size in ([40, 50], [5, 4]):
            (got,) = session.run(None, {"x": x, "size": np.array(size)})
            expected = dynamic_resize.reference(torch.from_numpy(x), torch.tensor(size), mode, align_corners)
            np.testing.assert_allclose(got, expected.numpy(), rtol=0, atol=1e-5, err_msg=f"{mode} {size}")


@pytest.mark.parametrize(("mode", "align_corners"), MODES)
def test_decomposition_matches_the_reference_in_onnx_runtime(mode, align_corners):
    session = ort.InferenceSession(decompose(_plugin_model(mode, align_corners)).SerializeToString())
    rng = np.random.default_rng(0)
    for in_h, in_w, out_h, out_w in SIZES:
        x = rng.random((2, 3, in_h, in_w), dtype=np.float32)
        size = np.array([out_h, out_w], dtype=np.int64)
        (got,) = session.run(None, {"x": x, "size": size})
        expected = dynamic_resize.reference(torch.from_numpy(x), torch.from_numpy(size), mode, align_corners)
        np.testing.assert_allclose(got, expected.numpy(), rtol=0, atol=1e-5, err_msg=f"{(in_h, in_w, out_h, out_w)}")


def test_decomposition_is_one_resize_with_sizes_from_shape_and_size_input():
    graph = decompose(_plugin_model("bicubic", False, TensorProto.INT32)).graph
    resize = next(node for node in graph.node if node.op_type == "Resize")
    attrs = {a.name: a for a in resize.attribute}
    assert attrs["mode"].s == b"cubic"
    assert attrs["coordinate_transformation_mode"].s == b"half_pixel"
    assert attrs["cubic_coeff_a"].f == pytest.approx(-0.75)
    assert {node.domain for node in graph.node} == {""}
    assert sorted(node.op_type for node in graph.node) == ["Cast", "Concat", "Resize", "Shape"]


@pytest.mark.parametrize(("nearest_mode", "equal"), [("round_prefer_ceil", True), ("round_prefer_floor", False)])
def test_pytorch_nearest_exact_is_onnx_nearest_round_prefer_ceil_at_half_pixel(nearest_mode, equal):
    graph = decompose(_plugin_model("nearest-exact", False))
    resize = next(node for node in graph.graph.node if node.op_type == "Resize")
    for attribute in resize.attribute:
        if attribute.name == "nearest_mode":
            attribute.s = nearest_mode.encode()
    session = ort.InferenceSession(graph.SerializeToString())
    x = np.random.default_rng(3).random((1, 2, 12, 10), dtype=np.float32)
    worst = 0.0
    for size in ([5, 4], [18, 15], [3, 3], [24, 20]):
        (got,) = session.run(None, {"x": x, "size": np.array(size)})
        expected = F.interpolate(torch.from_numpy(x), size=tuple(size), mode="nearest-exact").numpy()
        worst = max(worst, float(np.abs(got - expected).max()))
    assert (worst == 0.0) == equal


def test_decompose_refuses_an_unknown_mode_naming_it():
    model = _plugin_model("area", False)
    with pytest.raises(ValueError, match="'area'"):
        decompose(model)


# --- coordinate_scale="scales": coordinates by the given scales, as F.interpolate(scale_factor=...) --------

# (scale_h, scale_w): up and down, not whole at these input sizes (in * scale fractional), and mixed.
# F.interpolate samples at 1 / 2.3 in double, the op at 1 / 2.3f (its scales are float32, as ONNX
# Resize's): nearest's floor then differs first at output 69 (69 / 2.3 = 30), beyond these sizes.
SCALES = [(2.3, 2.3), (0.7, 0.7), (1.5, 1.5), (2.3, 0.7), (0.45, 1.5)]


def _by_scale_factor(x: torch.Tensor, scales: tuple[float, float], mode: str, align_corners: bool) -> torch.Tensor:
    corners = {} if mode.startswith("nearest") else {"align_corners": align_corners}
    return F.interpolate(x, scale_factor=scales, mode=mode, recompute_scale_factor=False, **corners)


@pytest.mark.parametrize("implementation", ["plugserve", "reference"])
@pytest.mark.parametrize(("mode", "align_corners"), MODES)
def test_op_with_scales_samples_as_f_interpolate_by_scale_factor_without_recomputing(mode, align_corners,
                                                                                     implementation):
    from plugserve import ops

    x = torch.rand(2, 3, 10, 7)
    ops.set_implementation(implementation)
    try:
        for scales in SCALES:
            expected = _by_scale_factor(x, scales, mode, align_corners)
            size = torch.tensor(expected.shape[-2:])
            got = torch.ops.plugserve.dynamic_resize(x, size, mode, align_corners, torch.tensor(scales))
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-5, msg=f"{scales}")
            if not align_corners and not mode.startswith("nearest"):  # the scales matter: by size differs
                by_size = torch.ops.plugserve.dynamic_resize(x, size, mode, align_corners)
                assert (by_size - expected).abs().max() > 1e-3
    finally:
        ops.set_implementation("plugserve")


@pytest.mark.parametrize(("scales", "message"), [
    (torch.tensor([2.0, 2.0, 2.0]), "shape \\[2\\]"),
    (torch.tensor([2, 2]), "float tensor"),
    (torch.tensor([0.0, 2.0]), "finite and > 0"),
    (torch.tensor([float("inf"), 2.0]), "finite and > 0"),
])
@pytest.mark.parametrize("implementation", ["plugserve", "reference"])
def test_op_rejects_bad_scales_naming_the_problem(scales, message, implementation):
    from plugserve import ops

    ops.set_implementation(implementation)
    try:
        with pytest.raises(ValueError, match=message):
            torch.ops.plugserve.dynamic_resize(torch.rand(1, 3, 4, 4), torch.tensor([8, 8]), "bilinear", False, scales)
    finally:
        ops.set_implementation("plugserve")


def test_op_with_scales_passes_torch_library_opcheck():
    torch.library.opcheck(torch.ops.plugserve.dynamic_resize.default,
                          (torch.rand(2, 3, 5, 6), torch.tensor([11, 4]), "bicubic", False, torch.tensor([2.3, 0.7])),
                          test_utils=("test_schema", "test_faketensor"))


def test_export_of_the_op_with_scales_is_a_three_input_node_marked_coordinate_scale_scales():
    from plugserve.ops import custom_translation_table

    class Upscale(torch.nn.Module):
        def forward(self, x, size, scales):
            return torch.ops.plugserve.dynamic_resize(x, size, "bicubic", False, scales)

    program = torch.onnx.export(Upscale().eval(), (torch.rand(1, 3, 8, 8), torch.tensor([18, 18]), torch.tensor([2.3, 2.3])),
                                dynamo=True, verbose=False, custom_translation_table=custom_translation_table())
    [node] = [n for n in program.model_proto.graph.node if n.op_type == "DynamicResize"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert len(node.input) == 3 and attrs["coordinate_scale"] == b"scales" and attrs["mode"] == b"bicubic"


def _scales_model(mode: str, align_corners: bool, opset: int = 20):
    return single_node_model(
        "DynamicResize", {"x": (TensorProto.FLOAT, ["n", "c", "h", "w"]), "size": (TensorProto.INT64, [2]),
                          "scales": (TensorProto.FLOAT, [2])},
        {"y": (TensorProto.FLOAT, ["n", "c", "oh", "ow"])}, domain="plugserve", opset=opset,
        mode=mode, align_corners=int(align_corners), coordinate_scale="scales", plugin_namespace="plugserve",
        plugin_version="1")


@pytest.mark.parametrize("opset", range(11, onnx.defs.onnx_opset_version() + 1))
def test_decomposition_with_scales_is_a_resize_by_scales_valid_and_exact_at_every_opset_from_11(opset):
    x = torch.rand(2, 3, 10, 7)
    for mode, align_corners in MODES:
        model = decompose(_scales_model(mode, align_corners, opset))
        onnx.checker.check_model(model, full_check=True)
        assert model.opset_import[0].version == opset
        assert [n.op_type for n in model.graph.node].count("Resize") == 1
        session = ort.InferenceSession(model.SerializeToString())
        for scales in SCALES:
            expected = _by_scale_factor(x, scales, mode, align_corners)
            (got,) = session.run(None, {"x": x.numpy(), "size": np.array(expected.shape[-2:]),
                                        "scales": np.array(scales, np.float32)})
            np.testing.assert_allclose(got, expected.numpy(), rtol=0, atol=1e-5, err_msg=f"{mode} {scales}")


def test_decompose_refuses_scales_without_coordinate_scale_scales():
    model = _scales_model("bilinear", False)
    del model.graph.node[0].attribute[[a.name for a in model.graph.node[0].attribute].index("coordinate_scale")]
    with pytest.raises(ValueError, match="coordinate_scale"):
        decompose(model)
