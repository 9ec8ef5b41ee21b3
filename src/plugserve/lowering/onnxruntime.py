"""The "onnxruntime" lowering: model.onnx served by the generic python-backend runner.

The python backend rather than Triton's onnxruntime backend: the tritonserver of the nvidia-pytriton
wheel ships the python backend only. The plugin nodes run one of two ways (models.yaml
`onnxruntime: {ops: ...}`): native, the plugin-node graph with libplugserve_ort.so copied into the
version directory and registered by the runner; or decomposed into standard ops, for an ONNX
Runtime that cannot load the library. Native versions also carry `model_operations` in
config.pbtxt, so Triton's own onnxruntime backend (the NGC image) can serve the same directory.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from plugserve import native, onnx_io, repository, runners
from plugserve.config import ConfigError, ModelSpec
from plugserve.export import export_onnx
from plugserve.lowering import Lowered, RuntimeUnavailable, package_versions, to_json
from plugserve.runners.contract import ONNXRUNTIME_OPTIONS_PARAMETER, SPEC_PARAMETER
from plugserve.surgery import decompose, pluginize


def unavailable() -> str | None:
    if importlib.util.find_spec("onnxruntime") is None:
        return "the onnxruntime package is not installed (pip install onnxruntime)"
    return None


def custom_op_library() -> Path | None:
    """libplugserve_ort.so as this build would copy it, or None when it was not built."""
    found = native.onnxruntime_library()
    return found if found is not None and found.is_file() else None


def resolve_ops(spec: ModelSpec) -> tuple[str, Path | None]:
    """models.yaml's `onnxruntime.ops` (unset: native if the library is here, else decomposed), with
    the library that native ops copy."""
    library = custom_op_library()
    ops = spec.onnxruntime.ops or ("native" if library is not None else "decomposed")
    if ops == "native" and library is None:
        raise RuntimeUnavailable(
            f"{spec.label}: models.{spec.name}.onnxruntime.ops: native needs {native.ORT_LIBRARY_NAME}, which is not "
            f"built: run `make -C plugins` with ONNX Runtime's headers in .onnxruntime/include (plugins/ort/README.md), "
            f"set ${native.ORT_ENV_VAR}, or choose ops: decomposed")
    return ops, library if ops == "native" else None


def export_runtime_onnx(spec: ModelSpec, out_path: Path, precision: str, ops: str) -> Path:
    """The model as ONNX from its source: with plugserve plugin nodes (ops native) or standard ops only."""
    import onnx

    if spec.onnx is not None:
        model = onnx.load(str(spec.onnx))
        if ops == "native":
            # What the tensorrt lowering does: legacy plugin nodes and run-time-sized Resizes become ours.
            model = pluginize(model)
        elif any(node.domain not in ("", "ai.onnx") for node in model.graph.node):
            model = decompose(model)
        onnx.save(model, str(out_path))
    else:
        target = "tensorrt" if ops == "native" else "onnxruntime"  # the plugin-node graph, or decomposed
        export_onnx(spec.model_name(), out_path, checkpoint=spec.checkpoint, target=target, dtype=precision)
    onnx_io.check(spec, out_path, precision)
    return out_path


def lower(spec: ModelSpec, version_dir: Path, precision: str) -> Lowered:
    if precision != "fp32":
        raise ConfigError(f"{spec.label}: models.{spec.name}: runtime onnxruntime serves fp32 only (CPU); "
                          f"got precision {precision!r}")
    ops, library = resolve_ops(spec)
    export_runtime_onnx(spec, version_dir / repository.ONNX_FILE, precision, ops)
    runners.install("onnxruntime", version_dir)
    options = {"ops": ops}
    recorded: dict[str, str] = {"ops": ops}
    config_updates = {}
    if library is not None:
        shutil.copyfile(library, version_dir / library.name)
        options["library"] = recorded["library"] = library.name
        recorded |= {"library_sha256": repository.sha256_file(library), "library_built_from": str(library)}
        config_updates["model_operations"] = {"op_library_filename": [repository.VersionFile(library.name)]}
    return Lowered(
        backend="python",
        versions=package_versions("plugserve", "torch", "onnx", "onnxscript", "onnxruntime"),
        parameters={SPEC_PARAMETER: to_json(repository.runner_spec(spec)),
                    ONNXRUNTIME_OPTIONS_PARAMETER: to_json(options)},
        config_updates=config_updates,
        manifest={"onnxruntime": recorded},
    )
