"""`plugserve check-plugins`: every plugin node goes through the harness (plugins/harness) the way
TensorRT's ONNX parser, builder and runtime take it, for each TensorRT header set; broken nodes
fail at the step where TensorRT fails, with the fix."""

from __future__ import annotations

import re
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from plugserve import check_plugins
from plugserve.ops.graph import single_node_model
from plugserve.surgery import pluginize

ROOT = Path(__file__).resolve().parents[2]
F32, F16, I32, I64 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.INT32, TensorProto.INT64
RESIZE_PROFILES = [{"x": ([1, 3, 8, 8], [2, 3, 32, 32], [4, 3, 64, 64]), "size": ([8, 8], [64, 64], [256, 256])}]
_evaluations: dict = {}


@pytest.fixture
def harness(include_dir, glue_check) -> Path:
    proc = glue_check(include_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return ROOT / "plugins" / re.search(r"harness: plugins/(\S+)", proc.stdout).group(1)


def report_of(model: onnx.ModelProto, harness: Path, profiles=RESIZE_PROFILES, key=None) -> dict:
    if key is None or key not in _evaluations:
        names = {t for n in check_plugins.plugin_nodes(model) for t in n.input if t}
        evaluation = check_plugins.evaluate(model, profiles, names, shape_tensors={"size"})
        if key is None:
            return check_plugins.check(model, profiles, harness=harness, evaluation=evaluation)
        _evaluations[key] = evaluation
    return check_plugins.check(model, profiles, harness=harness, evaluation=_evaluations[key])


def resize_node(size_shape_input=True, size_type=I64, **attrs) -> onnx.ModelProto:
    defaults = {"mode": "bicubic", "align_corners": 0, "plugin_namespace": "plugserve", "plugin_version": "1"}
    if size_shape_input:
        defaults["tensorrt_plugin_shape_input_indices"] = [1]
    merged = {k: v for k, v in {**defaults, **attrs}.items() if v is not None}
    return single_node_model("DynamicResize", {"x": (F32, ["N", 3, "H", "W"]), "size": (size_type, [2])},
                             {"y": (F32, ["N", 3, "OH", "OW"])}, domain="plugserve", **merged)


def msda_node(op="MSDeformAttn", domain="plugserve", value=F32, shapes=I32, starts=I32, sampling=None,
              **attrs) -> onnx.ModelProto:
    """sampling: the locations' and weights' type (value's when None)."""
    lookup = {"plugin_namespace": "plugserve", "plugin_version": "1"} if op == "MSDeformAttn" else {
        "plugin_namespace": "", "plugin_version": "2"}
    sampling = value if sampling is None else sampling
    out = ["N", "Q", 256] if attrs.get("output_layout") == "flat" else ["N", "Q", 8, 32]
    return single_node_model(op, {"value": (value, ["N", 85, 8, 32]), "shapes": (shapes, [4, 2]), "starts": (starts, [4]),
                                  "locations": (sampling, ["N", "Q", 8, 4, 4, 2]),
                                  "weights": (sampling, ["N", "Q", 8, 4, 4])},
                             {"out": (value, out)}, domain=domain, **{**lookup, **attrs})


def msda_profiles(n=(1, 2, 4), q=(85, 85, 85)):
    levels = ([4, 2],) * 3
    return [{"value": tuple([b, 85, 8, 32] for b in n), "shapes": levels, "starts": ([4],) * 3,
             "locations": tuple([b, lq, 8, 4, 4, 2] for b, lq in zip(n, q, strict=True)),
             "weights": tuple([b, lq, 8, 4, 4] for b, lq in zip(n, q, strict=True))}]


def only_node(report: dict) -> dict:
    (node,) = report["nodes"]
    return node


def step(node: dict, name: str) -> dict:
    return next(s for s in node["steps"] if s["step"] == name)


@pytest.mark.slow
@pytest.mark.parametrize(("model", "options"), [
    ("super_resolution", {"dtype": "fp32"}), ("super_resolution", {"dtype": "fp16"}),
    ("deformable_encoder", {"dtype": "fp32", "msda": "plugserve"}),
    ("deformable_encoder", {"dtype": "fp16", "msda": "plugserve"}),
    ("deformable_encoder", {"dtype": "fp32", "msda": "nvidia"}),
    ("deformable_encoder", {"dtype": "fp16", "msda": "nvidia"}),
], ids=lambda v: v if isinstance(v, str) else "-".join(v.values()))
def test_every_plugin_node_of_the_exported_models_passes_parser_build_and_engine_round_trip(
        model, options, harness, export_path):
    graph = onnx.load(str(export_path(model, **options)))
    profiles, _ = check_plugins.model_profiles(ROOT / "models.yaml", model)
    report = report_of(graph, harness, profiles, key=(model, *options.values()))
    assert report["evaluation_problem"] is None
    assert report["nodes"], "the export has plugin nodes"
    for node in report["nodes"]:
        assert node["failed_step"] is None, check_plugins.format_report(report)
        assert [s["step"] for s in node["steps"]] == ["parser", "build", "runtime"]
        shapes = step(node, "build")["details"]["output_shapes"][0]["profiles"]
        assert len(shapes) == len(profiles) and all(p["max"] for p in shapes)
    if model == "super_resolution":
        (node,) = report["nodes"]
        assert step(node, "parser")["details"]["shape_inputs"] == [1]
        # the output extents are the size input's values, symbolic, evaluated per profile
        assert step(node, "build")["details"]["output_shapes"][0]["profiles"][0]["max"] == [8, 3, 1024, 1024]
    if options.get("msda") == "nvidia":
        for node in report["nodes"]:
            parser = step(node, "parser")["details"]
            # NVIDIA's creator lists no fields (multiscaleDeformableAttnPlugin.cpp: mPluginAttributes.clear())
            assert parser["creator"]["version"] == "2" and parser["creator"]["namespace"] == ""
            assert parser["fields"] == [] and parser["creator"]["field_names"] == []
            assert sorted(parser["ignored_attributes"]) == ["plugin_namespace", "plugin_version"]
            assert parser["device_input_types"][1:3] == ["int32", "int32"]


def test_a_well_formed_resize_node_reports_creator_fields_shape_inputs_shapes_and_formats(harness):
    node = only_node(report_of(resize_node(), harness))
    assert node["failed_step"] is None
    parser = step(node, "parser")["details"]
    assert [(f["name"], f["type"], f["length"]) for f in parser["fields"]] == [("mode", "kCHAR", 8),
                                                                                ("align_corners", "kINT32", 1)]
    assert parser["shape_inputs"] == [1] and parser["device_input_types"] == ["float32"]
    build = step(node, "build")["details"]
    assert build["output_shapes"][0]["expressions"] == ["N", "3", "size_0", "size_1"]
    assert build["output_shapes"][0]["profiles"][0] == {"min": [1, 3, 8, 8], "opt": [2, 3, 64, 64],
                                                        "max": [4, 3, 256, 256]}
    assert build["formats"][1]["accepted"] == ["float32"]
    assert step(node, "runtime")["details"]["on_shape_change"] == ["p0.min", "p0.opt", "p0.max"]


# (model, failing step, words of the error, words of the fix)
BROKEN = {
    "missing attribute": (lambda: resize_node(align_corners=None), "parser",
                          "missing field 'align_corners'", "align_corners (INT)"),
    "wrong attribute type": (lambda: resize_node(align_corners="0"), "parser",
                             "'align_corners' must be kINT32", "align_corners (INT)"),
    "unknown namespace": (lambda: resize_node(plugin_namespace="trt"), "parser",
                          "namespace 'trt'", "namespace 'plugserve'"),
    "unknown version": (lambda: resize_node(plugin_version="2"), "parser",
                        "version '2'", "version '1'"),
    "version given as an int": (lambda: resize_node(plugin_version=1), "parser",
                                "version ''", "STRING attributes plugin_version"),
    "shape input indices as an int": (lambda: resize_node(tensorrt_plugin_shape_input_indices=1), "parser",
                                      "Only AttributeProto::INTS", "list of ints"),
    "shape input index out of range": (lambda: resize_node(tensorrt_plugin_shape_input_indices=[2]), "parser",
                                       "Out-of-range shape input index: 2", "[-2, 1]"),
    "size not marked as shape input": (lambda: resize_node(size_shape_input=False), "build",
                                       "tensorrt_plugin_shape_input_indices=[1]", "message"),
    "float size as shape input": (lambda: resize_node(size_type=F32), "parser",
                                  "INT32/INT64", "tensorrt_plugin_shape_input_indices"),
    "unknown op": (lambda: resize_node().__class__.FromString(
        resize_node().SerializeToString().replace(b"DynamicResize", b"DynamicResise")), "parser",
        "Plugin not found", "no loaded library"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_node_fails_at_the_step_where_tensorrt_fails_and_names_the_fix(case, harness):
    make, where, error, fix = BROKEN[case]
    node = only_node(report_of(make(), harness))
    assert node["failed_step"] == where, node
    failed = step(node, where)
    assert error in failed["error"] + " ".join(failed["log"]), failed
    assert fix in failed["fix"], failed


def test_int64_indices_pass_for_msdeformattn_which_takes_both(harness):
    node = only_node(report_of(msda_node(shapes=I64, starts=I64), harness, msda_profiles()))
    assert node["failed_step"] is None
    assert step(node, "parser")["details"]["device_input_types"][1:3] == ["int64", "int64"]


def test_flat_layout_with_float32_locations_beside_a_float16_value_passes_every_step(harness):
    node = only_node(report_of(msda_node(value=F16, sampling=F32, output_layout="flat"), harness, msda_profiles()))
    assert node["failed_step"] is None, node
    assert [(f["name"], f["type"]) for f in step(node, "parser")["details"]["fields"]] == [("output_layout", "kCHAR")]
    build = step(node, "build")["details"]
    assert build["output_shapes"][0]["profiles"][0]["max"] == [4, 85, 256]
    assert sorted(build["formats"][3]["accepted"]) == ["float16", "float32"] and build["formats"][4]["accepted"] == ["float32"]


def test_mixed_index_types_fail_at_format_negotiation_with_the_types_accepted(harness):
    node = only_node(report_of(msda_node(shapes=I64, starts=I32), harness, msda_profiles()))
    assert node["failed_step"] == "build"
    assert "position 2 (input 2)" in step(node, "build")["error"]
    assert step(node, "build")["details"]["formats"][2]["accepted"] == ["int64"]


def test_the_parser_casts_int64_indices_of_nvidia_msda_to_int32(harness):
    node = only_node(report_of(msda_node("MultiscaleDeformableAttnPlugin_TRT", "trt.plugins", shapes=I64, starts=I64),
                               harness, msda_profiles()))
    assert node["failed_step"] is None
    parser = step(node, "parser")
    assert parser["details"]["device_input_types"][1:3] == ["int32", "int32"]
    assert any("will cast to INT32" in line for line in parser["log"])


def test_nvidia_msda_refuses_bfloat16_at_format_negotiation(harness):
    node = only_node(report_of(msda_node("MultiscaleDeformableAttnPlugin_TRT", "trt.plugins",
                                         value=TensorProto.BFLOAT16), harness, msda_profiles()))
    assert node["failed_step"] == "build" and "refuses bfloat16" in step(node, "build")["error"]


def test_a_profile_beyond_the_kernel_limits_fails_at_configure_plugin(harness):
    import numpy as np

    # Extents only (broadcast views): running a graph this large is not needed to check its profile.
    shapes = {"min": ([1, 3, 8, 8], [8, 8]), "opt": ([1, 3, 8, 8], [8, 8]), "max": ([64, 64, 1024, 1024], [8192, 8192])}
    evaluation = check_plugins.Evaluation(
        points=[f"p0.{p}" for p in shapes],
        tensors=[{"x": np.broadcast_to(np.float32(0), x), "size": np.array(size)} for x, size in shapes.values()])
    node = only_node(check_plugins.check(resize_node(), harness=harness, evaluation=evaluation))
    assert node["failed_step"] == "build" and "configurePlugin refuses profile 0" in step(node, "build")["error"]
    assert "2^31-1" in step(node, "build")["error"]


def tutorial_resize_graph() -> onnx.ModelProto:
    """The tutorial's Test::DynamicTRTResize: output size = the last two dims of a 4-D tensor."""
    graph = helper.make_graph(
        [helper.make_node("DynamicTRTResize", ["x", "like"], ["y"], domain="Test", align_corners=0, mode="bicubic")],
        "tutorial", [helper.make_tensor_value_info("x", F32, ["N", 3, "H", "W"]),
                     helper.make_tensor_value_info("like", F32, [1, 1, "OH", "OW"])],
        [helper.make_tensor_value_info("y", F32, ["N", 3, "OH", "OW"])])
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 18),
                                                                  helper.make_opsetid("Test", 1)])


def tutorial_msda_graph() -> onnx.ModelProto:
    """NVIDIA's plugin node as tutorials export it: int64 indices, output [N, Lq, M*D]."""
    model = msda_node("MultiscaleDeformableAttnPlugin_TRT", "com.microsoft", shapes=I64, starts=I64)
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("out", F32, ["N", "Q", 256]))
    return model


def test_pluginized_tutorial_graphs_pass_every_step(harness):
    resize = pluginize(tutorial_resize_graph(), log=lambda _: None)
    profiles = [{"x": ([1, 3, 8, 8], [2, 3, 16, 16], [4, 3, 32, 32]),
                 "like": ([1, 1, 16, 16], [1, 1, 40, 30], [1, 1, 128, 96])}]
    node = only_node(report_of(resize, harness, profiles))
    assert node["failed_step"] is None, node
    assert step(node, "build")["details"]["output_shapes"][0]["profiles"][0]["max"] == [4, 3, 128, 96]
    msda = pluginize(tutorial_msda_graph(), log=lambda _: None)
    node = only_node(report_of(msda, harness, msda_profiles()))
    assert node["failed_step"] is None, node
    assert node["op"] == "MSDeformAttn"


def test_a_pluginized_resize_by_runtime_scales_passes_every_step_with_scales_as_a_float_device_input(
        harness, resize_by_runtime_scales):
    graph = resize_by_runtime_scales("linear", opset=17)
    model = pluginize(graph, log=lambda _: None)
    profiles = [{"x": ([1, 3, 8, 8], [2, 3, 16, 16], [4, 3, 32, 32]), "s": ([2.0, 2.0], [2.3, 1.7], [3.0, 0.7])}]
    names = {t for n in check_plugins.plugin_nodes(model) for t in n.input if t}
    evaluation = check_plugins.evaluate(model, profiles, names, shape_tensors={"s"})  # the profile holds s's values
    node = only_node(check_plugins.check(model, profiles, harness=harness, evaluation=evaluation))
    assert node["failed_step"] is None, node
    parser = step(node, "parser")["details"]
    assert [f["name"] for f in parser["fields"]] == ["mode", "align_corners", "coordinate_scale"]
    assert parser["shape_inputs"] == [1] and parser["device_input_types"] == ["float32", "float32"]
    assert step(node, "build")["details"]["output_shapes"][0]["profiles"][0]["max"] == [4, 3, 96, 22]


def test_the_cli_prints_each_node_and_fails_on_a_broken_one(tmp_path, capsys, include_dir, harness):
    from plugserve.cli import main

    onnx.save(resize_node(size_shape_input=False), str(tmp_path / "broken.onnx"))
    assert main(["check-plugins", str(tmp_path / "broken.onnx"), "--tensorrt", harness.parent.name]) == 1
    out = capsys.readouterr().out
    assert "(DynamicResize): FAILS at the build step" in out and "fix:" in out
