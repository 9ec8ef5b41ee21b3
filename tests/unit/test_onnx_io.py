"""`plugserve init` proposes a models.yaml entry from an ONNX file; `build` checks every entry field
against the ONNX and names the one that does not fit."""

from __future__ import annotations

import pytest

from plugserve import build, config, onnx_io
from plugserve.cli import main
from plugserve.config import ConfigError


def quiet(_line: str) -> None:
    pass


def test_init_reads_names_dtypes_dims_the_batch_axis_and_the_shape_tensor(tiny_models_yaml, capsys):
    assert main(["init", str(tiny_models_yaml.parent / "tiny.onnx"), "--name", "tiny"]) == 0
    printed = capsys.readouterr().out
    assert "{name: image, dtype: FP32, dims: [3, -1, -1]}" in printed
    assert "{name: size, dtype: INT64, dims: [2], shape_tensor: true}" in printed
    assert "{name: upscaled, dtype: FP32, dims: [3, -1, -1]}" in printed
    assert "max_batch_size: 8" in printed
    assert "image: {min: [1, 3, 1, 1], opt: [4, 3, 256, 256], max: [8, 3, 1024, 1024]}" in printed


def test_an_init_entry_is_a_models_yaml_that_builds(tiny_models_yaml, tmp_path, capsys):
    written = tmp_path / "new.yaml"
    assert main(["init", str(tmp_path / "tiny.onnx"), "--output", str(written)]) == 0
    assert "init: wrote models.tiny" in capsys.readouterr().out
    spec = config.load(written)["tiny"]
    assert spec.source_model is None and spec.onnx == tmp_path / "tiny.onnx"
    assert [t.shape_tensor for t in spec.inputs] == [False, True]
    assert build.build(written, tmp_path / "repo", log=quiet)[0].version == 1
    assert main(["init", str(tmp_path / "tiny.onnx"), "--output", str(written)]) == 3  # the name is taken


def test_init_lists_plugin_nodes_and_finds_a_plugins_shape_input(export_path, capsys):
    assert main(["init", str(export_path("super_resolution"))]) == 0
    printed = capsys.readouterr().out
    assert "# plugin nodes: DynamicResize" in printed
    assert "{name: size, dtype: INT64, dims: [2], shape_tensor: true}" in printed


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("{name: image, dtype: FP32", "{name: image, dtype: FP16",
         r"models.tiny.inputs\[0\] \(image\): dtype FP16 is FP32 in .*tiny.onnx"),
        ("{name: upscaled, dtype: FP32, dims: [3, -1, -1]}", "{name: upscaled, dtype: FP32, dims: [3, -1]}",
         r"models.tiny.outputs\[0\] \(upscaled\): rank 2 \(dims \[3, -1\]\) is 3"),
        ("{name: upscaled, dtype: FP32, dims: [3, -1, -1]}", "{name: upscaled, dtype: FP32, dims: [4, -1, -1]}",
         r"models.tiny.outputs\[0\] \(upscaled\): dims\[0\] 4 is fixed to 3"),
        ("{name: upscaled, dtype: FP32, dims: [3, -1, -1]}", "{name: upscaled, dtype: FP32, dims: [-1, -1, -1]}",
         r"dims\[0\] is -1 \(any size\) but fixed to 3"),
    ],
)
def test_build_names_a_field_that_does_not_fit_the_onnx(tiny_models_yaml, tmp_path, old, new, message):
    tiny_models_yaml.write_text(tiny_models_yaml.read_text().replace(old, new))
    with pytest.raises(ConfigError, match=message):
        build.build(tiny_models_yaml, tmp_path / "repo", log=quiet)


def test_a_batched_entry_needs_a_dynamic_first_axis(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "fixed",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph), str(tmp_path / "fixed.onnx"))
    spec = config.parse({"models": {"fixed": {
        "source": {"onnx": "fixed.onnx"}, "max_batch_size": 2,
        "inputs": [{"name": "x", "dtype": "FP32", "dims": [4]}], "outputs": [{"name": "y", "dtype": "FP32", "dims": [4]}],
        "profiles": [{"x": {"min": [1, 4], "opt": [1, 4], "max": [2, 4]}}]}}}, tmp_path, "fixed.yaml")["fixed"]
    with pytest.raises(ConfigError, match=r"fixed.yaml: models.fixed.inputs\[0\] \(x\): max_batch_size > 0 needs"):
        onnx_io.check(spec, tmp_path / "fixed.onnx")
