"""Step 4 of the plugin harness on the GPU: each plugin node of the exported models, through the
harness's enqueue (the runtime plugin TensorRT would hold after deserialization, real device
buffers, a stream, exactly the workspace getWorkspaceSize asked for), against the PyTorch reference
at the ops' README tolerances; and compute-sanitizer memcheck on the same run.

Inputs are the tensors the graph computes at each profile's min, opt and max (ONNX Runtime on the
decomposed graph, as `plugserve check-plugins --enqueue` gets them), cast to the node's dtype.
Run with `make test-gpu` after plugins/check_glue.sh has built the harness.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from plugserve import check_plugins  # noqa: E402
from plugserve.ops import dynamic_resize, ms_deform_attn  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
HARNESSES = check_plugins.harnesses()

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(not HARNESSES, reason="no harness: make plugins, then plugins/check_glue.sh"),
]
NP_TYPES = {1: np.float32, 10: np.float16, 6: np.int32, 7: np.int64}


def run_enqueue(model: onnx.ModelProto, profiles, shape_tensors, data_dir: Path, wrapper=()) -> dict:
    names = {t for n in check_plugins.plugin_nodes(model) for t in n.input if t}
    evaluation = check_plugins.evaluate(model, profiles, names, shape_tensors)
    assert evaluation.problem is None, evaluation.problem
    description = check_plugins.describe(model, evaluation, data_dir)
    (data_dir / "description.txt").write_text(description)
    harness = list(HARNESSES.values())[-1]
    proc = subprocess.run([*wrapper, str(harness), "--enqueue", str(data_dir / "description.txt")],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return {"report": json.loads(proc.stdout.splitlines()[-1]) if not wrapper else None,
            "evaluation": evaluation, "stdout": proc.stdout, "stderr": proc.stderr}


def node_dir(data_dir: Path, name: str) -> Path:
    return data_dir / re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def typed_inputs(model, node, tensors, point) -> list[np.ndarray]:
    infos = {i.name: i for i in [*onnx.shape_inference.infer_shapes(model).graph.value_info, *model.graph.input]}
    out = []
    for name in node.input:
        elem = infos[name].type.tensor_type.elem_type if name in infos else 1
        out.append(np.asarray(tensors[point][name]).astype(NP_TYPES.get(elem, np.float32)))
    return out


def reference(node, inputs, device="cuda"):
    t = [torch.from_numpy(np.ascontiguousarray(x)).to(device) for x in inputs]
    if node.op_type == "DynamicResize":
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        return dynamic_resize.reference(t[0].float(), t[1].to(torch.int64), attrs["mode"].decode(),
                                        bool(attrs["align_corners"]))
    return ms_deform_attn.reference(t[0].float(), t[1], t[2], t[3].float(), t[4].float())


@pytest.mark.parametrize(("model", "options"), [
    ("super_resolution", {"dtype": "fp32"}), ("super_resolution", {"dtype": "fp16"}),
    ("deformable_encoder", {"dtype": "fp32", "msda": "plugserve"}),
    ("deformable_encoder", {"dtype": "fp16", "msda": "plugserve"}),
], ids=lambda v: v if isinstance(v, str) else "-".join(v.values()))
def test_enqueue_of_every_plugin_node_matches_pytorch_at_every_profile_point(model, options, export_path, tmp_path):
    graph = onnx.load(str(export_path(model, **options)))
    profiles, shape_tensors = check_plugins.model_profiles(ROOT / "models.yaml", model)
    ran = run_enqueue(graph, profiles, shape_tensors, tmp_path)
    evaluation = ran["evaluation"]
    for node, result in zip(check_plugins.plugin_nodes(graph), ran["report"]["nodes"], strict=True):
        assert result["failed_step"] is None, result
        enqueue = next(s for s in result["steps"] if s["step"] == "enqueue")
        assert enqueue["details"]["ran"] == evaluation.points
        for k, point in enumerate(evaluation.points):
            inputs = typed_inputs(graph, node, evaluation.tensors, k)
            expected = reference(node, inputs)
            raw = np.fromfile(node_dir(tmp_path, node.name) / f"out0.{point}.bin", dtype=inputs[0].dtype)
            got = torch.from_numpy(raw.reshape(tuple(expected.shape))).cuda().float()
            if inputs[0].dtype == np.float32:
                torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)  # README: fp32 <= 1e-5
            else:
                # README: fp16 is the fp32 result rounded once (plus the input rounding already in `inputs`)
                tolerance = torch.finfo(torch.float16).eps * expected.abs().clamp(min=1) * 2
                assert ((got - expected).abs() <= tolerance).all(), f"{node.name} at {point}"


@pytest.mark.skipif(shutil.which("compute-sanitizer") is None, reason="compute-sanitizer not on PATH")
def test_enqueue_under_memcheck_reports_no_errors(export_path, tmp_path):
    graph = onnx.load(str(export_path("super_resolution", dtype="fp16")))
    profiles, shape_tensors = check_plugins.model_profiles(ROOT / "models.yaml", "super_resolution")
    # Odd shapes: one small profile with extents that fit no vector width.
    odd = [{"image": ([1, 3, 7, 5], [3, 3, 13, 11], [5, 3, 31, 29]), "size": ([1, 1], [17, 3], [97, 61])}]
    for profile_set in (profiles[:1], odd):
        ran = run_enqueue(graph, profile_set, shape_tensors, tmp_path,
                          wrapper=("compute-sanitizer", "--tool", "memcheck", "--error-exitcode", "9"))
        assert "ERROR SUMMARY: 0 errors" in ran["stdout"] + ran["stderr"]
