"""`plugserve decompose`: plugin nodes rewritten into standard ops give the PyTorch model's numbers in ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from plugserve import cli, models
from plugserve.ops.graph import single_node_model
from plugserve.surgery import decompose


def session(graph: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(graph.SerializeToString(), options)


@pytest.fixture(scope="module")
def torch_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.mark.usefixtures("torch_threads")
def test_decomposed_super_resolution_matches_pytorch_within_1e_4(exported):
    model = models.load("super_resolution")
    runtime = session(decompose(exported("super_resolution")))
    # (batch, height, width, out_height, out_width): x2, x3, x4, non-integer, anisotropic, downscale.
    for batch, h, w, oh, ow in [(1, 24, 32, 48, 64), (2, 17, 13, 51, 39), (1, 16, 16, 64, 64), (1, 20, 30, 47, 71),
                                (2, 9, 40, 30, 80), (1, 40, 40, 25, 25)]:
        image, size = torch.rand(batch, 3, h, w), torch.tensor([oh, ow])
        with torch.no_grad():
            expected = model(image, size).numpy()
        (got,) = runtime.run(None, {"image": image.numpy(), "size": size.numpy()})
        assert got.shape == (batch, 3, oh, ow)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4, err_msg=f"{(batch, h, w, oh, ow)}")


@pytest.mark.usefixtures("torch_threads")
def test_decomposed_deformable_encoder_matches_pytorch_within_1e_3(exported):
    model = models.load("deformable_encoder")
    runtime = session(decompose(exported("deformable_encoder")))
    for batch, h, w in [(1, 64, 64), (2, 40, 72), (1, 72, 40), (1, 30, 50)]:
        image = torch.rand(batch, 3, h, w)
        with torch.no_grad():
            expected = model(image).numpy()
        (got,) = runtime.run(None, {"image": image.numpy()})
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3, err_msg=f"{(batch, h, w)}")


@pytest.mark.parametrize("model", ["super_resolution", "deformable_encoder"])
def test_decompose_leaves_only_standard_ops_and_a_valid_graph(exported, model):
    graph = decompose(exported(model))
    assert {node.domain for node in graph.graph.node} == {""}
    assert [o.domain for o in graph.opset_import] == [""]
    assert not [node for node in graph.graph.node if node.op_type == "ScatterND"]
    onnx.checker.check_model(graph, full_check=True)


def test_decompose_refuses_custom_nodes_it_does_not_know_naming_them():
    graph = single_node_model("Mystery", {"x": (onnx.TensorProto.FLOAT, [2])}, {"y": (onnx.TensorProto.FLOAT, [2])},
                              domain="acme")
    with pytest.raises(ValueError, match="acme::Mystery"):
        decompose(graph)


def test_decompose_cli_rewrites_a_file(exported, tmp_path, capsys):
    source, target = tmp_path / "plugins.onnx", tmp_path / "standard.onnx"
    onnx.save(exported("super_resolution"), str(source))
    assert cli.main(["decompose", str(source), str(target)]) == 0
    written = onnx.load(str(target))
    assert {node.op_type for node in written.graph.node} >= {"Resize", "Conv"}
    meta = {p.key: p.value for p in written.metadata_props}
    assert (meta["plugserve.model"], meta["plugserve.target"]) == ("super_resolution", "onnxruntime")
    assert "1 plugin node(s)" in capsys.readouterr().out


def test_decompose_cli_names_a_missing_input(tmp_path, capsys):
    assert cli.main(["decompose", str(tmp_path / "missing.onnx"), str(tmp_path / "out.onnx")]) == 4
    assert f"input does not exist: {tmp_path / 'missing.onnx'}" in capsys.readouterr().err
