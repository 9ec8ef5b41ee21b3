"""Fixtures shared across test folders."""

from __future__ import annotations

from pathlib import Path

import pytest

# A model that builds and serves in about a second: a standard-ops graph with the
# super-resolution contract (image + size -> upscaled, bicubic), described by its own models.yaml.
TINY_MODELS_YAML = """\
models:
  tiny:
    source: {onnx: tiny.onnx}
    inputs:
      - {name: image, dtype: FP32, dims: [3, -1, -1]}
      - {name: size, dtype: INT64, dims: [2], shape_tensor: true}
    outputs:
      - {name: upscaled, dtype: FP32, dims: [3, -1, -1]}
    profiles:
      - image: {min: [1, 3, 8, 8], opt: [1, 3, 32, 32], max: [4, 3, 64, 64]}
        size: {min: [8, 8], opt: [64, 64], max: [256, 256]}
    max_batch_size: 4
    dynamic_batching: {preferred_batch_size: [4], max_queue_delay_microseconds: 1000}
"""


def write_tiny_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Shape", ["image"], ["batch_channels"], end=2),
        helper.make_node("Concat", ["batch_channels", "size"], ["sizes"], axis=0),
        helper.make_node("Resize", ["image", "", "", "sizes"], ["upscaled"], mode="cubic", cubic_coeff_a=-0.75),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"]),
         helper.make_tensor_value_info("size", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("upscaled", TensorProto.FLOAT, ["N", 3, "OH", "OW"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9  # readable by the ONNX Runtime in the venv
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def resize_by_runtime_scales_graph(mode: str, *, leading=(1.0, 1.0), opset: int = 20, **attrs):
    """Resize x by the runtime scales s of H and W, as exporters write a tensor scale factor:
    scales = Concat(`leading` (N, C), s). Before opset 13 Resize's roi is a required input (empty)."""
    from onnx import TensorProto, helper

    return helper.make_model(
        helper.make_graph(
            [helper.make_node("Concat", ["ones", "s"], ["scales"], axis=0),
             helper.make_node("Resize", ["x", "" if opset >= 13 else "roi", "scales"], ["y"], name="up", mode=mode,
                              **attrs)],
            "scales",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"]),
             helper.make_tensor_value_info("s", TensorProto.FLOAT, [2])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "OH", "OW"])],
            [helper.make_tensor("ones", TensorProto.FLOAT, [2], list(leading)),
             helper.make_tensor("roi", TensorProto.FLOAT, [0], [])],
        ),
        opset_imports=[helper.make_opsetid("", opset)], ir_version=10 if opset >= 13 else 6,
    )


@pytest.fixture
def resize_by_runtime_scales():
    """`resize_by_runtime_scales(mode, leading=..., opset=..., **attrs)`: resize_by_runtime_scales_graph."""
    return resize_by_runtime_scales_graph


@pytest.fixture
def tiny_models_yaml(tmp_path: Path) -> Path:
    """models.yaml of the `tiny` model (and its tiny.onnx) in a fresh directory."""
    write_tiny_onnx(tmp_path / "tiny.onnx")
    path = tmp_path / "models.yaml"
    path.write_text(TINY_MODELS_YAML)
    return path


@pytest.fixture(scope="session")
def export_path(tmp_path_factory):
    """`export_path(model, **export_options)`: the exported ONNX file, each variant exported once per
    session for all test folders (the deformable encoder takes about a minute to export on 2 cores)."""
    from plugserve.export import export_onnx

    paths: dict[tuple, Path] = {}

    def get(model: str, **options: str) -> Path:
        key = (model, *sorted(options.items()))
        if key not in paths:
            paths[key] = export_onnx(model, tmp_path_factory.mktemp("export") / f"{model}.onnx", **options)
        return paths[key]

    return get
