"""`pluginize` turns runtime-sized Resize and tutorial-era plugin nodes into plugserve plugin nodes.

Round trip: ONNX Runtime on decompose(pluginize(g)) gives what g gives. Where g itself holds a
plugin node ONNX Runtime cannot run (the tutorial's Test::DynamicTRTResize, NVIDIA's MSDA plugin),
"what g gives" is the PyTorch forward the tutorial exported it from.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper

from plugserve.ops import ms_deform_attn
from plugserve.surgery import PluginizeError, decompose, pluginize

torch.set_num_threads(2)

# Tutorials export at opset 11; exporters since at 13, 16, 17 and 18 (the dynamo exporter's default).
OPSETS = [11, 13, 16, 17, 18]


def run(model: onnx.ModelProto, **inputs: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, inputs)


def ops(model: onnx.ModelProto) -> list[str]:
    return [f"{n.domain}::{n.op_type}" if n.domain else n.op_type for n in model.graph.node]


def legacy_export(module: torch.nn.Module, args: tuple, path: Path, names: list[str], dynamic: dict,
                  opset: int = 18) -> onnx.ModelProto:
    """The tutorial way: the TorchScript exporter, custom nodes from autograd.Function.symbolic."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset, input_names=names,
                          output_names=["output"], dynamic_axes=dynamic)
    model = onnx.load(str(path))
    assert _opset(model) == opset
    return model


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


# --- Resize with sizes computed at run time (the modern exporter, and TorchScript) ----------------


class ResizeLike(torch.nn.Module):
    """Three resizes to the spatial size of `like`: one per mode pluginize maps."""

    def forward(self, x: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        size = like.shape[-2:]
        return (F.interpolate(x, size=size, mode="bicubic", align_corners=False),
                F.interpolate(x, size=size, mode="bilinear", align_corners=True),
                F.interpolate(x, size=size, mode="nearest"))


def modern_resize_graph(opset: int | None) -> onnx.ModelProto:
    """The dynamo exporter's graph, at `opset` or (None) at its own default."""
    x, like = torch.rand(1, 3, 8, 8), torch.rand(1, 1, 16, 12)
    dim = torch.export.Dim
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            ResizeLike(), (x, like), dynamo=True, verbose=False, input_names=["x", "like"],
            dynamic_shapes={"x": {0: dim("n"), 2: dim("h"), 3: dim("w")}, "like": {2: dim("oh"), 3: dim("ow")}},
            **({} if opset is None else {"opset_version": opset}),
        )
    return program.model_proto


def legacy_resize_graph(opset: int, path: Path) -> onnx.ModelProto:
    return legacy_export(ResizeLike(), (torch.rand(1, 3, 8, 8), torch.rand(1, 1, 16, 12)), path / "resize.onnx",
                         ["x", "like"], {"x": {0: "n", 2: "h", 3: "w"}, "like": {2: "oh", 3: "ow"}}, opset)


@pytest.mark.parametrize(("exporter", "opset"),
                         [("dynamo", None), ("dynamo", 20), *(("torchscript", opset) for opset in OPSETS)])
def test_runtime_sized_resizes_become_dynamic_resize_and_round_trip(exporter, opset, tmp_path, capsys):
    graph = modern_resize_graph(opset) if exporter == "dynamo" else legacy_resize_graph(opset, tmp_path)
    pluginized = pluginize(graph)
    assert [o for o in ops(pluginized) if o.startswith("plugserve::")] == ["plugserve::DynamicResize"] * 3
    assert "Resize" not in ops(pluginized)
    modes = sorted(helper.get_attribute_value(a) for n in pluginized.graph.node for a in n.attribute if a.name == "mode")
    assert modes == [b"bicubic", b"bilinear", b"nearest"]
    assert capsys.readouterr().out.count("-> plugserve::DynamicResize") == 3
    onnx.checker.check_model(pluginized, full_check=True)
    decomposed = decompose(pluginized)
    onnx.checker.check_model(decomposed, full_check=True)
    assert _opset(pluginized) == _opset(decomposed) == _opset(graph)  # DynamicResize decomposes at every opset
    rng = np.random.default_rng(0)
    for (n, h, w), (oh, ow) in [((1, 8, 8), (16, 12)), ((2, 5, 7), (11, 3)), ((3, 16, 9), (4, 4))]:
        x = rng.random((n, 3, h, w), dtype=np.float32)
        like = np.zeros((1, 1, oh, ow), np.float32)
        with torch.no_grad():
            reference = [t.numpy() for t in ResizeLike()(torch.from_numpy(x), torch.from_numpy(like))]
        for want, expected, got in zip(reference, run(graph, x=x, like=like), run(decomposed, x=x, like=like),
                                       strict=True):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


class ScaleBy(torch.nn.Module):
    """F.interpolate by scale_factor, one per mode: with recompute_scale_factor the exporters compute
    the output size from the input's (a runtime size, pluginized); without it they emit constant scales,
    which pluginize leaves to the runtime's own Resize."""

    def __init__(self, recompute: bool):
        super().__init__()
        self.recompute = recompute

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (F.interpolate(x, scale_factor=2.3, mode="bicubic", recompute_scale_factor=self.recompute),
                F.interpolate(x, scale_factor=0.7, mode="bilinear", recompute_scale_factor=self.recompute),
                F.interpolate(x, scale_factor=1.5, mode="nearest", recompute_scale_factor=self.recompute))


def scale_graph(exporter: str, opset: int | None, recompute: bool, path: Path) -> onnx.ModelProto:
    x, module = torch.rand(1, 3, 8, 8), ScaleBy(recompute)
    if exporter == "torchscript":
        assert opset is not None
        return legacy_export(module, (x,), path / "scale.onnx", ["x"], {"x": {0: "n", 2: "h", 3: "w"}}, opset)
    dim = torch.export.Dim
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.onnx.export(module, (x,), dynamo=True, verbose=False, input_names=["x"],
                                 dynamic_shapes={"x": {0: dim("n"), 2: dim("h"), 3: dim("w")}},
                                 **({} if opset is None else {"opset_version": opset})).model_proto


@pytest.mark.parametrize("recompute", [True, False])
@pytest.mark.parametrize(("exporter", "opset"), [("dynamo", None), *(("torchscript", opset) for opset in OPSETS)])
def test_scale_factor_resizes_round_trip_at_every_opset(exporter, opset, recompute, tmp_path, capsys):
    graph = scale_graph(exporter, opset, recompute, tmp_path)
    pluginized = pluginize(graph)
    onnx.checker.check_model(pluginized, full_check=True)
    # Recomputed scales are runtime sizes (DynamicResize); given ones are constants (left as Resize).
    assert ops(pluginized).count("plugserve::DynamicResize") == (3 if recompute else 0)
    assert ops(pluginized).count("Resize") == (0 if recompute else 3)
    decomposed = decompose(pluginized)
    onnx.checker.check_model(decomposed, full_check=True)
    assert _opset(decomposed) == _opset(graph)
    capsys.readouterr()
    rng = np.random.default_rng(5)
    for shape in [(1, 3, 8, 8), (2, 3, 10, 7), (1, 3, 13, 21)]:
        x = rng.random(shape, dtype=np.float32)
        with torch.no_grad():
            reference = [t.numpy() for t in ScaleBy(recompute)(torch.from_numpy(x))]
        for want, got in zip(reference, run(decomposed, x=x), strict=True):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("mode", "attrs", "torch_mode"), [
    ("linear", {"coordinate_transformation_mode": "half_pixel"}, "bilinear"),
    ("cubic", {}, "bicubic"),
    ("nearest", {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}, "nearest"),
    ("nearest", {"coordinate_transformation_mode": "half_pixel", "nearest_mode": "round_prefer_ceil"}, "nearest-exact"),
])
@pytest.mark.parametrize("opset", [11, 13, 20])
def test_resize_with_runtime_scales_becomes_dynamic_resize_by_scales_and_keeps_its_meaning(mode, attrs, torch_mode,
                                                                                             opset, capsys,
                                                                                             resize_by_runtime_scales):
    graph = resize_by_runtime_scales(mode, opset=opset, **attrs)
    pluginized = pluginize(graph)
    onnx.checker.check_model(pluginized, full_check=True)
    [node] = [n for n in pluginized.graph.node if n.domain == "plugserve"]
    node_attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert len(node.input) == 3 and node_attrs["coordinate_scale"] == b"scales"
    assert node_attrs["mode"] == torch_mode.encode()
    assert "coordinates by scales[2:4]" in capsys.readouterr().out
    decomposed = decompose(pluginized)
    onnx.checker.check_model(decomposed, full_check=True)
    assert _opset(pluginized) == _opset(decomposed) == opset
    x = np.random.default_rng(1).random((2, 3, 6, 5), dtype=np.float32)
    # 2.3 and 0.7 at these sizes are where sampling by output size was off (by up to 0.5 and more).
    for scales in ([2.0, 3.0], [2.3, 1.7], [0.45, 1.0], [0.7, 2.3], [1.5, 0.7]):
        s = np.array(scales, np.float32)
        expected = F.interpolate(torch.from_numpy(x), scale_factor=scales, mode=torch_mode,
                                 recompute_scale_factor=False).numpy()
        [original], [got] = run(graph, x=x, s=s), run(decomposed, x=x, s=s)
        np.testing.assert_allclose(original, expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_resize_with_scales_computed_from_constants_stays_with_a_note_on_runtime_scales(capsys):
    # Concat(Constant[1, 1], Constant[2.3, 2.3]): computed in the graph, yet constant.
    graph = helper.make_model(
        helper.make_graph(
            [helper.make_node("Constant", [], ["ones"], value=helper.make_tensor("o", TensorProto.FLOAT, [2], [1, 1])),
             helper.make_node("Constant", [], ["hw"], value=helper.make_tensor("f", TensorProto.FLOAT, [2], [2.3, 2.3])),
             helper.make_node("Concat", ["ones", "hw"], ["scales"], axis=0),
             helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", mode="linear")],
            "baked", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "OH", "OW"])]),
        opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    assert ops(pluginize(graph)) == ["Constant", "Constant", "Concat", "Resize"]
    out = capsys.readouterr().out
    assert "left as Resize: its scales" in out and "constants baked into the graph" in out
    assert "pass the scales as a graph input" in out


def test_resize_with_runtime_scales_of_n_or_c_is_refused(resize_by_runtime_scales):
    with pytest.raises(PluginizeError, match=r"scales for N and C are \[1.0, 2.0\]"):
        pluginize(resize_by_runtime_scales("linear", leading=(1.0, 2.0)))


class FixedSize(torch.nn.Module):
    def forward(self, x):
        return F.interpolate(x, size=(32, 24), mode="bilinear")


def test_torchscript_constant_size_is_rewritten_with_a_warning_that_it_is_fixed(tmp_path, capsys):
    # TorchScript writes sizes = Concat(Shape(x)[:2], Constant[32, 24]): computed, yet the size is fixed.
    graph = legacy_export(FixedSize(), (torch.rand(1, 3, 8, 8),), tmp_path / "fixed.onnx", ["x"],
                          {"x": {0: "n", 2: "h", 3: "w"}}, 11)
    decomposed = decompose(pluginize(graph))
    out = capsys.readouterr().out
    assert "warning" in out and "constant size (32, 24)" in out and "now fixed" in out
    x = np.random.default_rng(2).random((2, 3, 5, 7), dtype=np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(run(decomposed, x=x)[0], FixedSize()(torch.from_numpy(x)).numpy(), atol=1e-5)


class Antialiased(torch.nn.Module):
    def forward(self, x, like):
        return F.interpolate(x, size=like.shape[-2:], mode="bicubic", antialias=True)


def test_antialiased_export_is_refused_as_antialias():
    dim = torch.export.Dim
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = torch.onnx.export(Antialiased(), (torch.rand(1, 3, 8, 8), torch.rand(1, 1, 16, 12)), dynamo=True,
                                  verbose=False, input_names=["x", "like"],
                                  dynamic_shapes={"x": {2: dim("h")}, "like": {2: dim("oh"), 3: dim("ow")}}).model_proto
    with pytest.raises(PluginizeError, match="antialias=1") as error:
        pluginize(graph)
    assert "cubic_coeff_a" not in str(error.value) and "export with antialias=False" in str(error.value)


def test_resize_with_constant_size_is_left_to_tensorrt(capsys):
    graph = helper.make_model(
        helper.make_graph(
            [helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="cubic")],
            "static",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, "oh", "ow"])],
            [helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])],
        ),
        opset_imports=[helper.make_opsetid("", 20)], ir_version=10,
    )
    assert ops(pluginize(graph)) == ["Resize"]
    assert "nothing to rewrite" in capsys.readouterr().out


def _runtime_resize(**attrs) -> onnx.ModelProto:
    return helper.make_model(
        helper.make_graph(
            [helper.make_node("Shape", ["like"], ["sizes"]),
             helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], name="up", **attrs)],
            "refused",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"]),
             helper.make_tensor_value_info("like", TensorProto.FLOAT, ["n", 3, "oh", "ow"])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, "oh", "ow"])],
        ),
        opset_imports=[helper.make_opsetid("", 20)], ir_version=10,
    )


@pytest.mark.parametrize(
    ("attrs", "reason"),
    [({"mode": "cubic", "cubic_coeff_a": -0.5}, "cubic_coeff_a=-0.5"),
     ({"mode": "cubic", "exclude_outside": 1}, "exclude_outside=1"),
     ({"mode": "nearest", "coordinate_transformation_mode": "half_pixel", "nearest_mode": "round_prefer_floor"},
      "nearest_mode='round_prefer_floor'"),
     ({"mode": "linear", "coordinate_transformation_mode": "asymmetric"}, "coordinate_transformation_mode='asymmetric'"),
     ({"mode": "linear", "antialias": 1}, "antialias=1"),
     ({"mode": "cubic", "antialias": 1, "cubic_coeff_a": -0.5, "exclude_outside": 1}, "antialias=1"),
     ({"mode": "linear", "axes": [2, 3]}, "axes"),
     ({"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "round_prefer_ceil"},
      "coordinate_transformation_mode='asymmetric'")],
)
def test_resize_it_cannot_reproduce_is_refused_with_the_reason(attrs, reason):
    with pytest.raises(PluginizeError, match="nothing was rewritten") as error:
        pluginize(_runtime_resize(**attrs))
    assert "Resize 'up'" in str(error.value) and reason in str(error.value)
    assert "constant sizes/scales" in str(error.value)  # the way out


# --- The tutorial's Test::DynamicTRTResize (output size = the last two dims of a 4-D tensor) --------


class DynamicTRTResize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, size_tensor, align_corners=False):
        return F.interpolate(x, size=size_tensor.shape[-2:], mode="bicubic", align_corners=align_corners)

    @staticmethod
    def symbolic(g, x, size_tensor, align_corners=False):
        return g.op("Test::DynamicTRTResize", x, size_tensor, align_corners_i=int(align_corners))


class TutorialSuperResolution(torch.nn.Module):
    def __init__(self, align_corners: bool):
        super().__init__()
        torch.manual_seed(0)
        self.align_corners = align_corners
        self.conv1 = torch.nn.Conv2d(3, 8, 5, padding=2)
        self.conv2 = torch.nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x, factor):
        x = DynamicTRTResize.apply(x, factor, self.align_corners)
        return self.conv2(torch.relu(self.conv1(x)))


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("align_corners", [False, True])
def test_tutorial_dynamic_trt_resize_round_trips(tmp_path, align_corners, opset, capsys):
    model = TutorialSuperResolution(align_corners).eval()
    graph = legacy_export(model, (torch.rand(1, 3, 8, 8), torch.rand(1, 1, 16, 16)), tmp_path / "sr.onnx",
                          ["input", "factor"], {"input": {0: "n", 2: "h", 3: "w"}, "factor": {2: "oh", 3: "ow"}},
                          opset)
    assert "Test::DynamicTRTResize" in ops(graph)
    pluginized = pluginize(graph)
    [node] = [n for n in pluginized.graph.node if n.domain == "plugserve"]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["mode"] == b"bicubic" and attrs["align_corners"] == int(align_corners)
    assert "size from the shape of 'factor'" in capsys.readouterr().out
    decomposed = decompose(pluginized)
    assert _opset(decomposed) == opset
    for (h, w), (oh, ow) in [((8, 8), (16, 16)), ((6, 10), (15, 31))]:
        x, factor = torch.rand(2, 3, h, w), torch.zeros(1, 1, oh, ow)
        with torch.no_grad():
            expected = model(x, factor).numpy()
        [got] = run(decomposed, input=x.numpy(), factor=factor.numpy())
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


# --- NVIDIA's MultiscaleDeformableAttnPlugin_TRT under any domain, mmdeploy's MSDA node ----------------

NVIDIA_MSDA = "MultiscaleDeformableAttnPlugin_TRT"


def _msda_function(op_name: str, flat_output: bool, extra_attrs: dict | None = None):

    class LegacyMSDA(torch.autograd.Function):
        @staticmethod
        def forward(ctx, value, shapes, starts, locations, weights):
            out = ms_deform_attn.reference(value, shapes, starts, locations, weights)
            return out.flatten(2) if flat_output else out

        @staticmethod
        def symbolic(g, value, shapes, starts, locations, weights):
            out = g.op(op_name, value, shapes, starts, locations, weights, **(extra_attrs or {}))
            n, _, m, d = value.type().varyingSizes()
            lq = locations.type().varyingSizes()[1]
            return out.setType(value.type().with_sizes([n, lq, m * d] if flat_output else [n, lq, m, d]))

    return LegacyMSDA


class TutorialEncoderLayer(torch.nn.Module):
    """value projection, MSDA through the legacy plugin node, output projection."""

    def __init__(self, function, heads=2, head_dim=4, levels=2, points=2):
        super().__init__()
        torch.manual_seed(0)
        self.function, self.heads, self.head_dim, self.levels, self.points = function, heads, head_dim, levels, points
        self.value = torch.nn.Linear(heads * head_dim, heads * head_dim)
        self.offsets = torch.nn.Linear(heads * head_dim, heads * levels * points * 2)
        self.weights = torch.nn.Linear(heads * head_dim, heads * levels * points)

    def forward(self, src, shapes, starts):
        n, s, _ = src.shape
        value = self.value(src).view(n, s, self.heads, self.head_dim)
        locations = torch.sigmoid(self.offsets(src)).view(n, s, self.heads, self.levels, self.points, 2)
        weights = self.weights(src).view(n, s, self.heads, self.levels * self.points).softmax(-1)
        weights = weights.view(n, s, self.heads, self.levels, self.points)
        out = self.function.apply(value, shapes, starts, locations, weights)
        return out.reshape(n, s, self.heads * self.head_dim)


def _levels(sizes: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    shapes = torch.tensor(sizes, dtype=torch.int64)
    areas = shapes.prod(1)
    return shapes, torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])


# (domain, op type, output [N, Lq, M*D] rather than [N, Lq, M, D], attributes): NVIDIA's plugin as the
# tutorials export it, and mmdeploy's node for mmcv's MultiScaleDeformableAttnFunction.
MSDA_NODES = [("com.microsoft", NVIDIA_MSDA, False, {}), ("nvinfer1.plugin", NVIDIA_MSDA, True, {}),
              ("", NVIDIA_MSDA, False, {}),
              ("mmdeploy", "MMCVMultiScaleDeformableAttention", True, {"im2col_step_i": 64})]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize(("domain", "op_type", "flat_output", "attrs"), MSDA_NODES)
def test_tutorial_msda_plugin_node_round_trips_with_int32_indices(tmp_path, domain, op_type, flat_output, attrs,
                                                                  opset, capsys):
    # TorchScript rejects an op without a domain, so the domain-less variant is exported under a
    # placeholder domain and then moved to the default domain, as hand-edited tutorial graphs have it.
    layer = TutorialEncoderLayer(_msda_function(f"{domain or 'placeholder'}::{op_type}", flat_output, attrs)).eval()
    shapes, starts = _levels([(4, 4), (2, 2)])
    src = torch.rand(1, int(shapes.prod(1).sum()), 8)
    graph = legacy_export(layer, (src, shapes, starts), tmp_path / "msda.onnx", ["src", "shapes", "starts"],
                          {"src": {0: "n", 1: "s"}}, opset)
    if not domain:
        for node in graph.graph.node:
            if node.op_type == op_type:
                node.domain = ""
    assert any(n.op_type == op_type and n.domain == domain for n in graph.graph.node)

    pluginized = pluginize(graph)
    [node] = [n for n in pluginized.graph.node if n.domain == "plugserve"]
    assert node.op_type == "MSDeformAttn"
    # A peer's [N, Lq, M*D] output is MSDeformAttn's flat layout: no Reshape behind it.
    layout = {a.name: helper.get_attribute_value(a) for a in node.attribute}["output_layout"]
    assert layout == (b"flat" if flat_output else b"heads_channels")
    assert ops(pluginized).count("Reshape") == ops(graph).count("Reshape")
    producers = {o: n for n in pluginized.graph.node for o in n.output}
    for index in node.input[1:3]:  # spatial_shapes, level_start_index: Cast to int32 (to=6)
        cast = producers[index]
        assert cast.op_type == "Cast" and helper.get_attribute_value(cast.attribute[0]) == TensorProto.INT32
    assert "2 int64->int32 index cast(s)" in capsys.readouterr().out
    assert _opset(pluginized) == opset

    decomposed = decompose(pluginized)
    # GridSample, which MSDA decomposes into, is opset 16: older graphs are converted, and say so.
    assert _opset(decomposed) == max(opset, ms_deform_attn.DECOMPOSE_OPSET)
    converted = "converted it to opset 16 with onnx.version_converter (plugserve::MSDeformAttn needs 16)"
    assert (converted in capsys.readouterr().out) == (opset < 16)
    for sizes in ([(4, 4), (2, 2)], [(5, 3), (3, 2)]):
        shapes, starts = _levels(sizes)
        src = torch.rand(2, int(shapes.prod(1).sum()), 8)
        with torch.no_grad():
            expected = layer(src, shapes, starts).numpy()
        [got] = run(decomposed, src=src.numpy(), shapes=shapes.numpy(), starts=starts.numpy())
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


class DynamoAttention(torch.nn.Module):
    def forward(self, value, shapes, starts, locations, weights):
        return torch.ops.plugserve.ms_deform_attn(value, shapes, starts, locations, weights)


@pytest.mark.parametrize("opset", [None, 17])
def test_dynamo_exported_nvidia_msda_node_round_trips(opset, capsys):
    from plugserve.ops import custom_translation_table

    shapes, starts = _levels([(4, 6), (2, 3)])
    args = (torch.rand(2, 30, 2, 4), shapes, starts, torch.rand(2, 5, 2, 2, 3, 2), torch.rand(2, 5, 2, 2, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = torch.onnx.export(DynamoAttention(), args, dynamo=True, verbose=False,
                                  input_names=["value", "shapes", "starts", "locations", "weights"],
                                  custom_translation_table=custom_translation_table(msda="nvidia"),
                                  **({} if opset is None else {"opset_version": opset})).model_proto
    assert NVIDIA_MSDA in ops(graph)[-1]
    decomposed = decompose(pluginize(graph))
    assert "-> plugserve::MSDeformAttn" in capsys.readouterr().out
    assert _opset(decomposed) == _opset(graph)
    [got] = run(decomposed, **{name: t.numpy() for name, t in zip(
        ["value", "shapes", "starts", "locations", "weights"], args, strict=True)})
    np.testing.assert_allclose(got, ms_deform_attn.reference(*args).numpy(), atol=1e-5)


def test_msda_plugin_node_with_unknown_attributes_is_refused(tmp_path):
    layer = TutorialEncoderLayer(_msda_function(f"mmdeploy::{NVIDIA_MSDA}", False, {"im2col_step_i": 64})).eval()
    shapes, starts = _levels([(4, 4), (2, 2)])
    graph = legacy_export(layer, (torch.rand(1, 20, 8), shapes, starts), tmp_path / "mmcv.onnx",
                          ["src", "shapes", "starts"], {"src": {0: "n", 1: "s"}})
    with pytest.raises(PluginizeError, match=r"MultiscaleDeformableAttnPlugin_TRT.*attributes \['im2col_step'\]"):
        pluginize(graph)


def test_nearest_round_prefer_ceil_at_half_pixel_becomes_nearest_exact_and_round_trips():
    graph = _runtime_resize(mode="nearest", coordinate_transformation_mode="half_pixel", nearest_mode="round_prefer_ceil")
    pluginized = pluginize(graph)
    [node] = [n for n in pluginized.graph.node if n.domain == "plugserve"]
    assert {a.name: helper.get_attribute_value(a) for a in node.attribute}["mode"] == b"nearest-exact"
    rng = np.random.default_rng(4)
    decomposed = decompose(pluginized)
    for (h, w), (oh, ow) in [((12, 10), (5, 4)), ((7, 9), (18, 20))]:
        x, like = rng.random((2, 3, h, w), dtype=np.float32), np.zeros((2, 3, oh, ow), np.float32)
        expected = F.interpolate(torch.from_numpy(x), size=(oh, ow), mode="nearest-exact").numpy()
        np.testing.assert_array_equal(run(decomposed, x=x, like=like)[0], expected)
        np.testing.assert_array_equal(run(graph, x=x, like=like)[0], expected)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_pytorch_half_pixel_becomes_half_pixel_with_a_warning_naming_the_size_1_difference(mode, capsys):
    graph = _runtime_resize(mode=mode, coordinate_transformation_mode="pytorch_half_pixel")
    decomposed = decompose(pluginize(graph))
    out = capsys.readouterr().out
    assert "warning" in out and "'pytorch_half_pixel', rewritten as 'half_pixel'" in out and "output dim is 1" in out
    rng = np.random.default_rng(6)
    x = rng.random((2, 3, 9, 7), dtype=np.float32)
    for (oh, ow), same in [((20, 5), True), ((4, 13), True), ((1, 5), False), ((6, 1), False)]:
        like = np.zeros((2, 3, oh, ow), np.float32)
        [got], [original] = run(decomposed, x=x, like=like), run(graph, x=x, like=like)
        torch_mode = {"linear": "bilinear", "cubic": "bicubic"}[mode]
        expected = F.interpolate(torch.from_numpy(x), size=(oh, ow), mode=torch_mode, align_corners=False).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)  # F.interpolate's numbers always
        assert np.allclose(got, original, rtol=1e-5, atol=1e-5) == same  # the graph's unless a dim is 1


def test_pluginize_command_writes_the_graph_and_refuses_with_exit_code_2(tmp_path, capsys):
    from plugserve.cli import main

    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    onnx.save(_runtime_resize(mode="linear"), str(good))
    onnx.save(_runtime_resize(mode="cubic", cubic_coeff_a=-0.5), str(bad))
    assert main(["pluginize", str(good), str(tmp_path / "out.onnx")]) == 0
    assert ops(onnx.load(str(tmp_path / "out.onnx")))[-1] == "plugserve::DynamicResize"
    assert main(["pluginize", str(bad), str(tmp_path / "never.onnx")]) == 2
    assert "cubic_coeff_a=-0.5" in capsys.readouterr().err
    assert not (tmp_path / "never.onnx").exists()
