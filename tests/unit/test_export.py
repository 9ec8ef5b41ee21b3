"""`plugserve export`: graphs with plugin nodes, named dynamic I/O, and what TensorRT needs of them."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto

from plugserve import cli, ops
from plugserve.export import export_onnx
from plugserve.surgery import decompose


def nodes(graph: onnx.ModelProto, op_type: str) -> list[onnx.NodeProto]:
    return [node for node in graph.graph.node if node.op_type == op_type]


def attributes(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def value_types(graph: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(graph).graph
    return {v.name: v.type.tensor_type.elem_type for v in (*inferred.value_info, *inferred.input, *inferred.output)}


def io_signature(values) -> list[tuple]:
    return [(v.name, v.type.tensor_type.elem_type, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
            for v in values]


def test_super_resolution_exports_one_dynamic_resize_plugin_node(exported):
    graph = exported("super_resolution")
    (node,) = nodes(graph, "DynamicResize")
    assert node.domain == "plugserve"
    # The parser routes `size` to the plugin's shape inputs only with the INTS attribute; without it
    # getOutputShapes fails (tests/plugins/test_check_plugins.py runs the exported node through it).
    assert attributes(node) == {"mode": b"bicubic", "align_corners": 0, "tensorrt_plugin_shape_input_indices": [1],
                                "plugin_namespace": b"plugserve", "plugin_version": b"1"}
    assert list(node.input) == ["image", "size"]  # the size input feeds the plugin directly


def test_deformable_encoder_exports_six_msda_plugin_nodes_with_int32_indices(exported):
    graph = exported("deformable_encoder")
    msda = nodes(graph, "MSDeformAttn")
    assert len(msda) == 6
    types = value_types(graph)
    for node in msda:
        assert node.domain == "plugserve"
        assert attributes(node) == {"output_layout": b"heads_channels", "plugin_namespace": b"plugserve", "plugin_version": b"1"}
        assert [types[name] for name in node.input[1:3]] == [TensorProto.INT32, TensorProto.INT32]
        assert types[node.input[0]] == TensorProto.FLOAT


@pytest.mark.parametrize("model", ["super_resolution", "deformable_encoder"])
def test_exported_graph_passes_checker_and_shape_inference_without_scatter_nd(exported, model):
    graph = exported(model)
    onnx.checker.check_model(graph, full_check=True)
    onnx.shape_inference.infer_shapes(graph, strict_mode=True)
    assert not nodes(graph, "ScatterND")
    assert {o.domain for o in graph.opset_import} == {"", "plugserve"}


def test_inputs_and_outputs_carry_repository_names_and_dynamic_axes(exported):
    sr, encoder = exported("super_resolution"), exported("deformable_encoder")
    assert io_signature(sr.graph.input) == [("image", TensorProto.FLOAT, ["batch", 3, "height", "width"]),
                                            ("size", TensorProto.INT64, [2])]
    ((name, dtype, shape),) = io_signature(sr.graph.output)
    assert (name, dtype, shape[:2]) == ("upscaled", TensorProto.FLOAT, ["batch", 3])
    assert all(isinstance(dim, str) for dim in shape[2:])  # output size comes from the size input's values
    assert io_signature(encoder.graph.input) == [("image", TensorProto.FLOAT, ["batch", 3, "height", "width"])]
    ((name, dtype, shape),) = io_signature(encoder.graph.output)
    assert (name, dtype, shape[0], shape[2]) == ("memory", TensorProto.FLOAT, "batch", 256)
    assert "height" in shape[1] and "width" in shape[1]


def test_exported_graph_records_its_origin_in_metadata(exported):
    meta = {p.key: p.value for p in exported("super_resolution").metadata_props}
    assert meta["plugserve.model"] == "super_resolution"
    assert meta["plugserve.target"] == "tensorrt"
    assert len(meta["plugserve.checkpoint_sha256"]) == 64


class _Attention(torch.nn.Module):
    def forward(self, value, spatial_shapes, level_start_index, locations, weights):
        return torch.ops.plugserve.ms_deform_attn(value, spatial_shapes, level_start_index, locations, weights)


def test_msda_nvidia_emits_nvidias_plugin_node_that_decomposes_to_the_same_numbers():
    shapes = torch.tensor([[4, 6], [2, 3]])
    start = torch.tensor([0, 24])
    value, locations, weights = torch.rand(2, 30, 2, 4), torch.rand(2, 5, 2, 2, 3, 2), torch.rand(2, 5, 2, 2, 3)
    program = torch.onnx.export(_Attention().eval(), (value, shapes, start, locations, weights), dynamo=True, verbose=False,
                                custom_translation_table=ops.custom_translation_table(msda="nvidia"))
    graph = program.model_proto
    (node,) = nodes(graph, "MultiscaleDeformableAttnPlugin_TRT")
    assert attributes(node) == {"plugin_namespace": b"", "plugin_version": b"2"}
    types = value_types(graph)
    assert [types[name] for name in node.input[1:3]] == [TensorProto.INT32, TensorProto.INT32]
    onnx.checker.check_model(graph, full_check=True)

    session = ort.InferenceSession(decompose(graph).SerializeToString())
    feeds = dict(zip([i.name for i in session.get_inputs()], (value, shapes, start, locations, weights), strict=True))
    (got,) = session.run(None, {name: t.numpy() for name, t in feeds.items()})
    np.testing.assert_allclose(got, _Attention()(value, shapes, start, locations, weights).numpy(), atol=1e-5)


def test_fp16_export_types_the_image_and_the_plugin_output_as_float16(exported):
    graph = exported("super_resolution", dtype="fp16")
    assert io_signature(graph.graph.input)[0][1] == TensorProto.FLOAT16
    assert value_types(graph)[nodes(graph, "DynamicResize")[0].output[0]] == TensorProto.FLOAT16


def test_export_cli_for_onnxruntime_writes_a_graph_of_standard_ops(tmp_path, capsys):
    out = tmp_path / "sr.onnx"
    assert cli.main(["export", "super_resolution", str(out), "--target", "onnxruntime"]) == 0
    graph = onnx.load(str(out))
    assert {node.domain for node in graph.graph.node} == {""}
    assert nodes(graph, "Resize")
    assert "super_resolution" in capsys.readouterr().out


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"model_name": "resnet"}, "unknown model 'resnet'"),
    ({"target": "tflite"}, "target must be one of"),
    ({"msda": "mmcv"}, "msda must be one of"),
    ({"checkpoint": "/nonexistent.pt"}, "does not exist"),
])
def test_export_rejects_bad_options_naming_them(tmp_path, kwargs, message):
    kwargs = {"model_name": "super_resolution", **kwargs}
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        export_onnx(out_path=tmp_path / "x.onnx", **kwargs)
