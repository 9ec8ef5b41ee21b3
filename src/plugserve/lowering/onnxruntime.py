"""The "onnxruntime" lowering: model.onnx with standard ops, served by the generic python-backend runner.

The python backend rather than Triton's onnxruntime backend: the tritonserver of the nvidia-pytriton
wheel ships the python backend only.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from plugserve import repository, runners
from plugserve.config import ModelSpec
from plugserve.export import export_onnx
from plugserve.lowering import Lowered, check_io_names, package_versions, to_json
from plugserve.runners.contract import SPEC_PARAMETER
from plugserve.surgery import decompose


def unavailable() -> str | None:
    if importlib.util.find_spec("onnxruntime") is None:
        return "the onnxruntime package is not installed (pip install onnxruntime)"
    return None


def export_standard_onnx(spec: ModelSpec, out_path: Path, precision: str) -> Path:
    """The model as ONNX with standard ops only (plugin nodes decomposed), from its source."""
    import onnx

    if spec.onnx is not None:
        model = onnx.load(str(spec.onnx))
        if any(node.domain not in ("", "ai.onnx") for node in model.graph.node):
            model = decompose(model)
        onnx.save(model, str(out_path))
    else:
        export_onnx(spec.model_name(), out_path, checkpoint=spec.checkpoint, target="onnxruntime", dtype=precision)
    check_io_names(spec, out_path)
    return out_path


def lower(spec: ModelSpec, version_dir: Path, precision: str) -> Lowered:
    if precision != "fp32":
        raise ValueError(f"runtime onnxruntime serves fp32 only (CPU); got precision {precision!r}")
    export_standard_onnx(spec, version_dir / repository.ONNX_FILE, precision)
    runners.install("onnxruntime", version_dir)
    return Lowered(
        backend="python",
        versions=package_versions("plugserve", "torch", "onnx", "onnxscript", "onnxruntime"),
        parameters={SPEC_PARAMETER: to_json(repository.runner_spec(spec))},
    )
