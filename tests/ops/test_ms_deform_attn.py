"""plugserve::ms_deform_attn: the torch op against a direct per-point definition, and its decomposition."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto

from plugserve.ops import ms_deform_attn
from plugserve.ops.graph import single_node_model
from plugserve.surgery import decompose

LEVEL_SETS = [[(6, 5), (3, 3), (2, 1), (1, 1)], [(4, 7), (2, 4)], [(1, 1)]]


def make_inputs(shapes, batch=2, queries=5, heads=2, channels=4, points=3, index_dtype=torch.int64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(shapes, dtype=index_dtype)
    areas = spatial_shapes.prod(1)
    level_start_index = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]]).to(index_dtype)
    levels = len(shapes)
    value = torch.randn(batch, int(areas.sum()), heads, channels, generator=generator)
    # Locations a little outside [0, 1] too, to exercise the zero padding.
    locations = torch.rand(batch, queries, heads, levels, points, 2, generator=generator) * 1.2 - 0.1
    weights = torch.rand(batch, queries, heads, levels, points, generator=generator)
    return value, spatial_shapes, level_start_index, locations, weights / weights.sum((-1, -2), keepdim=True)


def direct(value, spatial_shapes, level_start_index, locations, weights):
    """MSDA written out point by point: bilinear interpolation at pixel (x*W - 0.5, y*H - 0.5),
    zero outside the map, weighted sum over levels and points."""
    n, _, m, d = value.shape
    _, lq, _, levels, points, _ = locations.shape
    out = np.zeros((n, lq, m, d))
    for b, q, h, lvl, p in np.ndindex(n, lq, m, levels, points):
        height, width = (int(v) for v in spatial_shapes[lvl])
        start = int(level_start_index[lvl])
        x = float(locations[b, q, h, lvl, p, 0]) * width - 0.5
        y = float(locations[b, q, h, lvl, p, 1]) * height - 0.5
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
            if 0 <= yy < height and 0 <= xx < width:
                corner = (1 - abs(x - xx)) * (1 - abs(y - yy))
                out[b, q, h] += float(weights[b, q, h, lvl, p]) * corner * value[b, start + yy * width + xx, h].numpy()
    return out


@pytest.mark.parametrize("shapes", LEVEL_SETS)
def test_op_matches_the_point_by_point_definition(shapes):
    inputs = make_inputs(shapes)
    got = torch.ops.plugserve.ms_deform_attn(*inputs)
    np.testing.assert_allclose(got.numpy(), direct(*inputs), rtol=0, atol=1e-5)


def test_flat_output_layout_is_the_same_numbers_as_n_lq_m_times_d():
    inputs = make_inputs(LEVEL_SETS[0])
    flat = torch.ops.plugserve.ms_deform_attn(*inputs, output_layout="flat")
    assert flat.shape == (2, 5, 2 * 4)
    torch.testing.assert_close(flat, torch.ops.plugserve.ms_deform_attn(*inputs).flatten(2), rtol=0, atol=0)
    torch.testing.assert_close(flat, ms_deform_attn.reference(*inputs, output_layout="flat"), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"output_layout must be 'heads_channels' \(\[N, Lq, M, D\]\) or 'flat'"):
        torch.ops.plugserve.ms_deform_attn(*inputs, output_layout="rows")


def test_op_takes_a_half_value_with_float32_locations_and_returns_value_dtype():
    value, *rest = make_inputs(LEVEL_SETS[0])
    out = torch.ops.plugserve.ms_deform_attn(value.half(), *rest)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out, ms_deform_attn.reference(value.half().float(), *rest).half())


def test_float64_is_refused_as_the_c_abi_refuses_it_and_runs_on_the_reference_when_selected():
    from plugserve import ops

    inputs = make_inputs(LEVEL_SETS[1])
    as_double = [t.double() if t.is_floating_point() else t for t in inputs]
    locations_only = [*inputs[:3], inputs[3].double(), inputs[4].double()]
    for args in (as_double, locations_only):
        with pytest.raises(ValueError, match=r"dtype must be one of .* got float64.*set_implementation\('reference'\)"):
            torch.ops.plugserve.ms_deform_attn(*args)
    ops.set_implementation("reference")
    try:
        torch.testing.assert_close(torch.ops.plugserve.ms_deform_attn(*as_double), ms_deform_attn.reference(*as_double))
    finally:
        ops.set_implementation("plugserve")


def test_op_accepts_int32_indices():
    inputs = make_inputs(LEVEL_SETS[0])
    as_int32 = make_inputs(LEVEL_SETS[0], index_dtype=torch.int32)
    torch.testing.assert_close(torch.ops.plugserve.ms_deform_attn(*as_int32), torch.ops.plugserve.ms_deform_attn(*inputs))


def test_op_passes_torch_library_opcheck():
    for layout in ms_deform_attn.OUTPUT_LAYOUTS:
        torch.library.opcheck(torch.ops.plugserve.ms_deform_attn.default, make_inputs(LEVEL_SETS[1]),
                              {"output_layout": layout}, test_utils=("test_schema", "test_faketensor"))


def _replace(inputs, index, tensor):
    return tuple(tensor if i == index else t for i, t in enumerate(inputs))


@pytest.mark.parametrize(("index", "bad", "message"), [
    (0, torch.rand(2, 10, 8), "value must be"),
    (1, torch.tensor([[6, 5], [3, 3], [2, 1]]), "spatial_shapes must be"),
    (2, torch.tensor([0.0, 30.0, 39.0, 41.0]), "level_start_index must be"),
    (3, torch.rand(2, 5, 2, 4, 3), "sampling_locations must be"),
    (4, torch.rand(2, 5, 2, 4, 2), "attention_weights must be"),
    (1, torch.tensor([[6, 5], [3, 3], [2, 1], [9, 9]]), "does not fit in value"),
])
def test_op_rejects_inconsistent_inputs_naming_the_problem(index, bad, message):
    with pytest.raises(ValueError, match=message):
        torch.ops.plugserve.ms_deform_attn(*_replace(make_inputs(LEVEL_SETS[0]), index, bad))


def _plugin_model(levels: int, op_type: str = "MSDeformAttn", domain: str = "plugserve", opset: int = 20,
                  **attrs):
    float_, int32 = TensorProto.FLOAT, TensorProto.INT32
    flat = attrs.get("output_layout") == "flat"
    return single_node_model(
        op_type,
        {"value": (float_, ["n", "s", 2, 4]), "spatial_shapes": (int32, [levels, 2]), "level_start_index": (int32, [levels]),
         "sampling_locations": (float_, ["n", "q", 2, levels, 3, 2]), "attention_weights": (float_, ["n", "q", 2, levels, 3])},
        {"output": (float_, ["n", "q", 8] if flat else ["n", "q", 2, 4])}, domain=domain, opset=opset,
        plugin_namespace="plugserve" if domain == "plugserve" else "", plugin_version="1" if domain == "plugserve" else "2",
        **attrs)


@pytest.mark.parametrize(("op_type", "domain"), [("MSDeformAttn", "plugserve"),
                                                 ("MultiscaleDeformableAttnPlugin_TRT", "trt.plugins")])
def test_decomposition_matches_the_reference_in_onnx_runtime(op_type, domain):
    for shapes in LEVEL_SETS:
        model = decompose(_plugin_model(len(shapes), op_type, domain))
        assert {node.op_type for node in model.graph.node} >= {"GridSample", "Slice", "ReduceSum"}
        session = ort.InferenceSession(model.SerializeToString())
        for batch, queries in ((1, 7), (2, 5)):
            inputs = make_inputs(shapes, batch=batch, queries=queries, index_dtype=torch.int32)
            names = ["value", "spatial_shapes", "level_start_index", "sampling_locations", "attention_weights"]
            (got,) = session.run(None, {name: t.numpy() for name, t in zip(names, inputs, strict=True)})
            np.testing.assert_allclose(got, ms_deform_attn.reference(*inputs).numpy(), rtol=0, atol=1e-5,
                                       err_msg=f"levels {shapes}, batch {batch}")


@pytest.mark.parametrize("opset", range(11, onnx.defs.onnx_opset_version() + 1))
def test_decomposition_is_valid_and_exact_at_every_opset_from_11(opset, capsys):
    model = decompose(_plugin_model(len(LEVEL_SETS[0]), opset=opset))
    onnx.checker.check_model(model, full_check=True)
    # Below GridSample's opset 16 the graph is converted, and decompose says so.
    assert model.opset_import[0].version == max(opset, ms_deform_attn.DECOMPOSE_OPSET)
    assert ("onnx.version_converter" in capsys.readouterr().out) == (opset < ms_deform_attn.DECOMPOSE_OPSET)
    inputs = make_inputs(LEVEL_SETS[0], batch=2, queries=5, index_dtype=torch.int32)
    names = ["value", "spatial_shapes", "level_start_index", "sampling_locations", "attention_weights"]
    (got,) = ort.InferenceSession(model.SerializeToString()).run(
        None, {name: t.numpy() for name, t in zip(names, inputs, strict=True)})
    np.testing.assert_allclose(got, ms_deform_attn.reference(*inputs).numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("opset", [11, 20])
def test_decomposition_of_the_flat_output_layout_is_n_lq_m_times_d(opset):
    model = decompose(_plugin_model(2, opset=opset, output_layout="flat"))
    inputs = make_inputs(LEVEL_SETS[1], index_dtype=torch.int32)
    names = ["value", "spatial_shapes", "level_start_index", "sampling_locations", "attention_weights"]
    (got,) = ort.InferenceSession(model.SerializeToString()).run(
        None, {name: t.numpy() for name, t in zip(names, inputs, strict=True)})
    np.testing.assert_allclose(got, ms_deform_attn.reference(*inputs, output_layout="flat").numpy(), rtol=0, atol=1e-5)


def test_decomposition_of_a_float16_value_with_float32_locations_computes_in_float32():
    model = _plugin_model(2, output_layout="flat")
    for info in [*model.graph.input, *model.graph.output]:
        if info.name in ("value", "output"):
            info.type.tensor_type.elem_type = TensorProto.FLOAT16
    decomposed = decompose(model)
    value, *rest = make_inputs(LEVEL_SETS[1], index_dtype=torch.int32)
    names = ["value", "spatial_shapes", "level_start_index", "sampling_locations", "attention_weights"]
    (got,) = ort.InferenceSession(decomposed.SerializeToString()).run(
        None, {name: t.numpy() for name, t in zip(names, [value.half(), *rest], strict=True)})
    assert got.dtype == np.float16
    expected = ms_deform_attn.reference(value.half().float(), *rest, output_layout="flat").half()
    np.testing.assert_allclose(got.astype(np.float32), expected.float().numpy(), rtol=0, atol=1e-3)


class _FlatAttention(torch.nn.Module):
    def forward(self, value, spatial_shapes, level_start_index, locations, weights):
        return torch.ops.plugserve.ms_deform_attn(value, spatial_shapes, level_start_index, locations, weights,
                                                  output_layout="flat")


def test_dynamo_export_of_a_flat_mixed_precision_call_carries_both_and_decomposes_to_the_reference():
    import warnings

    from plugserve.ops import custom_translation_table

    value, *rest = make_inputs(LEVEL_SETS[1])
    args = (value.half(), *rest)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = torch.onnx.export(_FlatAttention(), args, dynamo=True, verbose=False,
                                  custom_translation_table=custom_translation_table()).model_proto
    [node] = [n for n in graph.graph.node if n.op_type == "MSDeformAttn"]
    assert {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}["output_layout"] == b"flat"
    session = ort.InferenceSession(decompose(graph).SerializeToString())
    names = [i.name for i in session.get_inputs()]
    (got,) = session.run(None, {name: t.numpy() for name, t in zip(names, args, strict=True)})
    assert got.dtype == np.float16 and got.shape == (2, 5, 8)
    expected = ms_deform_attn.reference(value.half().float(), *rest, output_layout="flat")
    np.testing.assert_allclose(got.astype(np.float32), expected.numpy(), rtol=0, atol=2e-3)


def test_decompose_refuses_an_unknown_output_layout_naming_the_choices():
    with pytest.raises(ValueError, match=r"MSDeformAttn: ms_deform_attn: output_layout must be 'heads_channels'"):
        decompose(_plugin_model(2, output_layout="rows"))


def test_decompose_refuses_a_dynamic_number_of_levels():
    model = _plugin_model(2)
    for value_info in model.graph.input:
        if value_info.name in ("spatial_shapes", "level_start_index", "sampling_locations", "attention_weights"):
            value_info.type.tensor_type.shape.dim[0 if "index" in value_info.name or "shapes" in value_info.name
                                                 else 3].dim_param = "levels"
    with pytest.raises(ValueError, match="static number of levels"):
        decompose(model)
