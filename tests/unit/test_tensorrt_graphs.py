"""The graphs TensorRT gets, checked without TensorRT: exported, pluginized and prepared for a build,
plus the config.pbtxt of a TensorRT model and the plugin-registry check that precedes parsing."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from plugserve import config, repository
from plugserve.lowering import tensorrt as tensorrt_lowering
from plugserve.surgery import decompose, pluginize
from plugserve.trt import engine as trt_engine
from plugserve.trt import environment as trt_environment
from plugserve.trt import graph as trt_graph
from plugserve.trt import registry as trt_registry
from plugserve.trt.registry import CreatorKey, PluginNotRegistered

ROOT = Path(__file__).resolve().parents[2]
torch.set_num_threads(2)


def attributes(node: onnx.NodeProto) -> dict:
    value = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in value.items()}


def plugin_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.domain not in ("", "ai.onnx")]


def elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor ONNX shape inference can type (plugin outputs excepted)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    infos = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    types = {i.name: i.type.tensor_type.elem_type for i in infos}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    return types


def io(values) -> dict[str, tuple[int, list]]:
    return {
        v.name: (
            v.type.tensor_type.elem_type,
            [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim],
        )
        for v in values
    }


def run(model: onnx.ModelProto, **inputs: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, inputs
    )


@pytest.fixture(scope="module")
def specs() -> dict[str, config.ModelSpec]:
    return config.load(ROOT / "models.yaml")


@pytest.fixture(scope="module")
def sr(exported) -> dict[str, onnx.ModelProto]:
    """super_resolution exported for TensorRT in fp32 and fp16 (conftest's session-wide exports)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graphs = {"fp32": exported("super_resolution"), "fp16": exported("super_resolution", dtype="fp16")}
    graphs["onnxruntime"] = decompose(graphs["fp32"])  # what export_onnx(target="onnxruntime") writes
    return graphs


@pytest.fixture(scope="module")
def deformable(exported) -> onnx.ModelProto:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return exported("deformable_encoder")


def msda_export(msda: str) -> onnx.ModelProto:
    """One ms_deform_attn call exported with the project's translation table (fast, unlike the encoder)."""
    from plugserve import ops

    class One(torch.nn.Module):
        def forward(self, value, locations, weights):
            shapes = torch.tensor([[4, 4], [2, 2]])
            starts = torch.tensor([0, 16])
            return torch.ops.plugserve.ms_deform_attn(value, shapes, starts, locations, weights)

    args = (torch.rand(2, 20, 2, 4), torch.rand(2, 20, 2, 2, 2, 2), torch.rand(2, 20, 2, 2, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            One(),
            args,
            dynamo=True,
            verbose=False,
            opset_version=20,
            input_names=["value", "locations", "weights"],
            custom_translation_table=ops.custom_translation_table(msda=msda),
        )
    return program.model_proto


@pytest.fixture(scope="module")
def msda_graphs() -> dict[str, onnx.ModelProto]:
    return {msda: msda_export(msda) for msda in ("plugserve", "nvidia")}


def assert_no_scatternd(model: onnx.ModelProto) -> None:
    # TensorRT computes shape tensors with shape ops; a ScatterND on the way to a shape fails to parse.
    assert "ScatterND" not in {n.op_type for n in model.graph.node}


# --- exported graphs ---------------------------------------------------------------------------------


def test_exported_super_resolution_has_one_dynamic_resize_node_the_parser_can_find(sr):
    graph = sr["fp32"]
    onnx.checker.check_model(graph, full_check=True)
    [node] = plugin_nodes(graph)
    assert (node.domain, node.op_type) == ("plugserve", "DynamicResize")
    assert attributes(node) == {
        "plugin_namespace": "plugserve",
        "plugin_version": "1",
        "mode": "bicubic",
        "align_corners": 0,
        "tensorrt_plugin_shape_input_indices": [1],
    }
    assert list(node.input) == ["image", "size"]
    assert io(graph.graph.input)["size"] == (TensorProto.INT64, [2])
    assert_no_scatternd(graph)


def test_fp16_export_types_the_plugin_io_in_fp16(sr):
    graph = sr["fp16"]
    [node] = plugin_nodes(graph)
    types = elem_types(graph)
    assert types[node.input[0]] == TensorProto.FLOAT16
    assert trt_engine.graph_precision(graph) == "fp16"
    assert trt_engine.graph_precision(sr["fp32"]) == "fp32"


@pytest.mark.slow
def test_exported_deformable_encoder_feeds_int32_indices_to_every_msda_node(deformable):
    onnx.checker.check_model(deformable, full_check=True)
    nodes = plugin_nodes(deformable)
    assert {(n.domain, n.op_type) for n in nodes} == {("plugserve", "MSDeformAttn")} and len(nodes) == 6
    types = elem_types(deformable)
    for node in nodes:
        assert attributes(node) == {"output_layout": "heads_channels", "plugin_namespace": "plugserve",
                                    "plugin_version": "1"}
        assert [types.get(name) for name in node.input[1:3]] == [TensorProto.INT32, TensorProto.INT32]
    assert_no_scatternd(deformable)


@pytest.mark.parametrize(
    ("msda", "domain", "op_type", "lookup"),
    [
        ("plugserve", "plugserve", "MSDeformAttn",
         {"output_layout": "heads_channels", "plugin_namespace": "plugserve", "plugin_version": "1"}),
        (
            "nvidia",
            "trt.plugins",
            "MultiscaleDeformableAttnPlugin_TRT",
            {"plugin_namespace": "", "plugin_version": "2"},
        ),
    ],
)
def test_msda_export_targets_our_plugin_or_nvidias_with_int32_indices(
    msda_graphs, msda, domain, op_type, lookup
):
    graph = msda_graphs[msda]
    onnx.checker.check_model(graph)
    [node] = plugin_nodes(graph)
    assert (node.domain, node.op_type) == (domain, op_type)
    assert attributes(node) == lookup
    types = elem_types(graph)
    assert [types.get(name) for name in node.input[1:3]] == [TensorProto.INT32, TensorProto.INT32]
    assert_no_scatternd(graph)


# --- pluginized graphs -------------------------------------------------------------------------------


def test_pluginize_restores_the_plugin_node_decompose_removed(sr):
    standard = sr["onnxruntime"]
    assert not plugin_nodes(standard)
    restored = pluginize(standard)
    onnx.checker.check_model(restored)
    [node] = plugin_nodes(restored)
    [original] = plugin_nodes(sr["fp32"])
    assert (node.domain, node.op_type) == (original.domain, original.op_type)
    # the export marks `size` as a shape input too, so pluginize is its exact inverse
    assert attributes(node) == attributes(original)
    assert_no_scatternd(restored)
    image, size = np.random.default_rng(0).random((2, 3, 9, 7), dtype=np.float32), np.array([20, 13])
    np.testing.assert_allclose(
        run(decompose(restored), image=image, size=size)[0],
        run(standard, image=image, size=size)[0],
        rtol=1e-5,
        atol=1e-6,
    )


def test_pluginize_turns_nvidia_msda_into_ours_and_keeps_int32_indices(msda_graphs):
    restored = pluginize(msda_graphs["nvidia"])
    [node] = plugin_nodes(restored)
    assert (node.domain, node.op_type) == ("plugserve", "MSDeformAttn")
    assert attributes(node) == {"output_layout": "heads_channels", "plugin_namespace": "plugserve",
                                "plugin_version": "1"}
    types = elem_types(restored)
    assert [types.get(name) for name in node.input[1:3]] == [TensorProto.INT32, TensorProto.INT32]


# --- graphs prepared for a TensorRT build ---------------------------------------------------------------


def test_prepared_graph_takes_the_size_as_a_batched_shape_tensor(sr, specs):
    spec = specs["super_resolution"]
    prepared = tensorrt_lowering.prepare_onnx(sr["fp32"], spec)
    onnx.checker.check_model(prepared, full_check=True)
    assert io(prepared.graph.input)["size"] == (TensorProto.INT64, [3])  # Triton prepends the batch size
    [node] = plugin_nodes(prepared)
    assert attributes(node)[trt_graph.SHAPE_INPUT_ATTRIBUTE] == [1]
    assert_no_scatternd(prepared)
    # Same numbers as the unprepared graph, given [batch, H, W] instead of [H, W].
    image = np.random.default_rng(1).random((2, 3, 10, 6), dtype=np.float32)
    expected = run(decompose(sr["fp32"]), image=image, size=np.array([25, 15]))[0]
    got = run(decompose(prepared), image=image, size=np.array([2, 25, 15]))[0]
    np.testing.assert_array_equal(got, expected)


def test_prepared_fp16_graph_keeps_the_fp32_client_interface(sr, specs):
    prepared = tensorrt_lowering.prepare_onnx(sr["fp16"], specs["super_resolution"])
    onnx.checker.check_model(prepared, full_check=True)
    assert io(prepared.graph.input)["image"][0] == TensorProto.FLOAT
    assert io(prepared.graph.output)["upscaled"][0] == TensorProto.FLOAT
    [node] = plugin_nodes(prepared)
    assert elem_types(prepared)[node.input[0]] == TensorProto.FLOAT16
    assert trt_engine.graph_precision(prepared) == "fp16"  # what the engine computes in


def test_unbatched_model_keeps_its_shape_tensor_as_exported(sr, specs):
    spec = replace(specs["super_resolution"], max_batch_size=0, dynamic_batching=None)
    prepared = tensorrt_lowering.prepare_onnx(sr["fp32"], spec)
    assert io(prepared.graph.input)["size"] == (TensorProto.INT64, [2])
    assert "Slice" not in {n.op_type for n in prepared.graph.node}


def test_engine_profiles_bound_the_batch_value_of_shape_tensors_like_the_batch_dimension(specs):
    [first, second] = tensorrt_lowering.engine_profiles(specs["super_resolution"])
    assert first["image"] == specs["super_resolution"].profiles[0]["image"]
    assert (first["size"].min, first["size"].opt, first["size"].max) == (
        (1, 8, 8),
        (4, 256, 256),
        (8, 1024, 1024),
    )
    assert second["size"].max == (2, 2048, 2048)


# --- precision ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("major", "requested", "graph", "strongly_typed", "flags"),
    [
        (10, "fp32", "fp32", True, ()),
        (10, "fp16", "fp16", True, ()),
        (10, "fp16", "fp32", False, ("FP16",)),
        (10, "bf16", "fp32", False, ("BF16",)),
        (11, "fp16", "fp16", True, ()),
        (11, "fp32", "fp32", True, ()),
    ],
)
def test_precision_comes_from_onnx_types_or_a_tensorrt10_builder_flag(
    major, requested, graph, strongly_typed, flags
):
    plan = trt_engine.plan_precision(major, requested, graph)
    assert (plan.strongly_typed, plan.builder_flags) == (strongly_typed, flags)


def test_tensorrt11_refuses_reduced_precision_of_an_fp32_graph_and_names_the_export():
    with pytest.raises(ValueError, match=r"strongly typed.*plugserve export --dtype fp16"):
        trt_engine.plan_precision(11, "fp16", "fp32")
    with pytest.raises(ValueError, match="typed fp16 but precision fp32"):
        trt_engine.plan_precision(10, "fp32", "fp16")


# --- the plugin registry check ------------------------------------------------------------------------


def test_plugin_nodes_without_a_registered_creator_fail_with_the_registered_list_and_the_fix(sr):
    registered = [
        CreatorKey("MSDeformAttn", "1", "plugserve"),
        CreatorKey("InstanceNormalization_TRT", "1", ""),
    ]
    assert trt_registry.required_plugins(sr["fp32"]) == {
        CreatorKey("DynamicResize", "1", "plugserve"): ["node_dynamic_resize"]
    }
    with pytest.raises(PluginNotRegistered) as error:
        trt_registry.check_plugins_registered(sr["fp32"], registered, Path("plugins/build/libplugserve.so"))
    message = str(error.value)
    assert "plugserve::DynamicResize v1 needed by node_dynamic_resize" in message
    assert "registered plugserve creators: plugserve::MSDeformAttn v1" in message
    assert "make plugins" in message and "PLUGSERVE_PLUGIN_LIBRARY" in message
    trt_registry.check_plugins_registered(
        sr["fp32"], [*registered, CreatorKey("DynamicResize", "1", "plugserve")], None
    )


def test_nvidia_msda_needs_nvidias_version_2_creator_in_the_empty_namespace(msda_graphs):
    assert list(trt_registry.required_plugins(msda_graphs["nvidia"])) == [
        CreatorKey("MultiscaleDeformableAttnPlugin_TRT", "2", "")
    ]


def test_building_needs_tensorrt_and_says_so_where_it_is_absent(tmp_path):
    if trt_environment.unavailable_reason() is None:
        pytest.skip("TensorRT is installed here; tests/tensorrt builds real engines")
    with pytest.raises(trt_environment.TensorRTUnavailable, match="NGC image"):
        trt_engine.build_engine(
            tmp_path / "x.onnx", tmp_path / "x.plan", trt_engine.BuildOptions(profiles=[]), None
        )


# --- config.pbtxt of a TensorRT model ------------------------------------------------------------------


def test_tensorrt_config_round_trips_through_tritons_schema(specs, tmp_path):
    spec = specs["super_resolution"]
    warmup = repository.warmup_requests(spec, tmp_path / "warmup", "7", data="random_data")
    updates = tensorrt_lowering.config_updates(spec, spec.tensorrt, warmup)
    config_path = repository.write_config(
        repository.config_dict(spec, "tensorrt", None, updates), tmp_path / "config.pbtxt"
    )
    message = repository.read_config(config_path)
    assert message == repository.to_message(repository.config_dict(spec, "tensorrt", None, updates))
    assert message.platform == "tensorrt_plan"
    assert {i.name: i.is_shape_tensor for i in message.input} == {"image": False, "size": True}
    assert list(message.input[1].dims) == [2] and message.max_batch_size == 8
    assert [g.kind for g in message.instance_group] == [message.instance_group[0].KIND_GPU]
    assert list(message.dynamic_batching.preferred_batch_size) == list(spec.dynamic_batching.preferred_batch_size)
    first = message.model_warmup[0]
    assert first.batch_size == 4 and list(first.inputs["image"].dims) == [3, 128, 128]
    assert first.inputs["image"].random_data
    assert first.inputs["size"].input_data_file == "v7_profile0_size"
    assert np.fromfile(tmp_path / "warmup" / "v7_profile0_size", dtype=np.int64).tolist() == [256, 256]


def test_tensorrt_instances_run_on_the_gpus_models_yaml_lists(specs):
    spec = replace(specs["super_resolution"], instance_groups=(config.InstanceGroup(1, "KIND_GPU", (1, 3)),
                                                               config.InstanceGroup(2, "KIND_CPU")))
    message = repository.to_message(repository.config_dict(
        spec, "tensorrt", None, tensorrt_lowering.config_updates(spec, spec.tensorrt, [])))
    gpu = message.instance_group[0].KIND_GPU
    assert [(g.count, g.kind, list(g.gpus)) for g in message.instance_group] == [(1, gpu, [1, 3]), (2, gpu, [])]


def test_cuda_graphs_are_configured_per_profile_and_refused_with_shape_tensors(specs):
    encoder = specs["deformable_encoder"]
    settings = replace(encoder.tensorrt, cuda_graphs=True)
    updates = tensorrt_lowering.config_updates(encoder, settings, [])
    message = repository.to_message(repository.config_dict(encoder, "tensorrt", None, updates))
    assert message.optimization.cuda.graphs
    assert message.optimization.cuda.graph_spec[0].batch_size == 2
    assert list(message.optimization.cuda.graph_spec[0].input["image"].dim) == [3, 256, 256]
    with pytest.raises(ValueError, match=r"cuda_graphs.*shape tensor input\(s\) \['size'\]"):
        tensorrt_lowering.config_updates(specs["super_resolution"], settings, [])


def test_tensorrt_settings_in_models_yaml_are_checked_by_field(tmp_path):
    import yaml

    tree = yaml.safe_load((ROOT / "models.yaml").read_text())
    entry = tree["models"]["deformable_encoder"]
    entry["tensorrt"] = {
        "workspace_mib": 2048,
        "optimization_level": 5,
        "cuda_graphs": True,
        "timing_cache_dir": "cache/trt",
    }
    settings = config.parse(tree, tmp_path)["deformable_encoder"].tensorrt
    assert settings == config.TensorRTSettings(2048, 5, True, tmp_path / "cache/trt")
    for bad, field in (
        ({"optimization_level": 6}, "optimization_level"),
        ({"workspace": 1}, "workspace"),
        ({"cuda_graphs": "yes"}, "cuda_graphs"),
    ):
        entry["tensorrt"] = bad
        with pytest.raises(config.ConfigError, match=rf"models\.deformable_encoder\.tensorrt\.{field}"):
            config.parse(tree, tmp_path)


def test_timing_cache_is_kept_per_tensorrt_release_and_gpu(tmp_path):
    gpu = trt_environment.Gpu("NVIDIA H100 80GB HBM3", "9.0")
    assert (
        trt_engine.timing_cache_path(tmp_path, "10.13.0.35", gpu).name
        == "timing-10.13.0-NVIDIA-H100-80GB-HBM3.cache"
    )


def test_warmup_files_of_a_new_version_join_the_models_warmup_folder(tmp_path):
    model_dir = tmp_path / "repo" / "super_resolution"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "warmup").mkdir()
    (model_dir / "warmup" / "v1_profile0_size").write_bytes(b"old")
    staged = tmp_path / "staging" / "super_resolution"
    (staged / "2").mkdir(parents=True)
    (staged / "config.pbtxt").write_text('name: "super_resolution"\n')
    (staged / "warmup").mkdir()
    (staged / "warmup" / "v2_profile0_size").write_bytes(b"new")
    repository.commit(staged, model_dir, 2)
    assert sorted(p.name for p in (model_dir / "warmup").iterdir()) == [
        "v1_profile0_size",
        "v2_profile0_size",
    ]
    assert (model_dir / "2").is_dir() and (model_dir / "config.pbtxt").is_file()
