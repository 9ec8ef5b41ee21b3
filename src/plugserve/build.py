"""Build `model_repository/<model>/<version>/` from models.yaml through a runtime lowering.

One export, several lowerings: `LOWERINGS` maps a runtime name to a function
`lower(spec, version_dir, precision) -> Lowered` that writes the runtime's artifacts into
`version_dir` and says which Triton backend serves them. Other modules register their runtime
here (e.g. "tensorrt" -> a wrapper that imports plugserve.tensorrt when called).

Every build makes a new version. It is written into a staging directory beside the repository
(same filesystem, outside the tree tritonserver scans) and moved in with `rename`, so a failed or
killed build leaves the repository exactly as it was; the next build removes stale staging
directories of processes that no longer run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plugserve import repository
from plugserve.config import ConfigError, ModelSpec

DEFAULT_CONFIG = Path("models.yaml")
DEFAULT_REPOSITORY = Path("model_repository")
ONNX_FILE = "model.onnx"  # the name the onnxruntime runner loads
RUNNER_FILE = "model.py"  # the python backend loads this file of a version directory


@dataclass
class Lowered:
    """What a lowering produced, for config.pbtxt and manifest.json."""

    backend: str  # Triton backend that serves the artifacts: "python", "tensorrt", ...
    versions: dict[str, str]  # exporter / runtime versions that made the artifacts
    parameters: dict[str, str] = field(default_factory=dict)  # config.pbtxt `parameters`
    config_updates: dict[str, Any] = field(default_factory=dict)  # top-level config fields to replace
    manifest: dict[str, Any] = field(default_factory=dict)  # extra manifest fields (e.g. GPU model)


Lowering = Callable[[ModelSpec, Path, str], Lowered]


@dataclass
class BuildResult:
    model: str
    version: int
    path: Path
    manifest: dict[str, Any]
    seconds: float


def _package_versions(*names: str) -> dict[str, str]:
    from importlib import metadata

    found = {"python": sys.version.split()[0]}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def check_io_names(spec: ModelSpec, onnx_path: Path) -> None:
    """The exported graph must have exactly the tensor names models.yaml promises to clients."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    for kind, declared, actual in (
        ("inputs", [t.name for t in spec.inputs], [i.name for i in graph.input if i.name not in initializers]),
        ("outputs", [t.name for t in spec.outputs], [o.name for o in graph.output]),
    ):
        if sorted(declared) != sorted(actual):
            raise ConfigError(
                f"models.yaml: models.{spec.name}.{kind}: names {declared} do not match the exported ONNX {kind} {actual}"
            )


def export_standard_onnx(spec: ModelSpec, out_path: Path, precision: str) -> Path:
    """The model as ONNX with standard ops only (plugin nodes decomposed), from its source."""
    import onnx

    if spec.onnx is not None:
        from plugserve.surgery import decompose

        model = onnx.load(str(spec.onnx))
        if any(node.domain not in ("", "ai.onnx") for node in model.graph.node):
            model = decompose(model)
        onnx.save(model, str(out_path))
    else:
        from plugserve.export import export_onnx

        export_onnx(spec.model_name(), out_path, checkpoint=spec.checkpoint, target="onnxruntime", dtype=precision)
    check_io_names(spec, out_path)
    return out_path


def lower_onnxruntime(spec: ModelSpec, version_dir: Path, precision: str) -> Lowered:
    """model.onnx (standard ops) served by the generic python-backend runner with ONNX Runtime.

    The python backend rather than Triton's onnxruntime backend: the tritonserver of the
    nvidia-pytriton wheel ships the python backend only.
    """
    from plugserve.runners import runner_path

    if precision != "fp32":
        raise ValueError(f"runtime onnxruntime serves fp32 only (CPU); got precision {precision!r}")
    export_standard_onnx(spec, version_dir / ONNX_FILE, precision)
    shutil.copyfile(runner_path("onnxruntime"), version_dir / RUNNER_FILE)
    return Lowered(
        backend="python",
        versions=_package_versions("plugserve", "torch", "onnx", "onnxscript", "onnxruntime"),
        parameters={repository.SPEC_PARAMETER: _json(repository.runner_spec(spec))},
    )


def _json(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def lower_tensorrt(spec: ModelSpec, version_dir: Path, precision: str) -> Lowered:
    """model.plan built by TensorRT with libplugserve.so, served by Triton's TensorRT backend."""
    from plugserve import tensorrt

    return tensorrt.lower(spec, version_dir, precision)


def lower_torch(spec: ModelSpec, version_dir: Path, precision: str) -> Lowered:
    """model.pt2 (torch.export) served by PyTorch with the plugin kernels, on the instance's GPU or CPU."""
    from plugserve import torch_runtime

    return torch_runtime.lower(spec, version_dir, precision)


LOWERINGS: dict[str, Lowering] = {"onnxruntime": lower_onnxruntime, "tensorrt": lower_tensorrt, "torch": lower_torch}


def source_file(spec: ModelSpec) -> Path:
    """The file a build starts from (its hash goes into the manifest): the ONNX, or the checkpoint."""
    if spec.onnx is not None:
        return spec.onnx
    from plugserve import models

    return models.checkpoint_path(spec.model_name(), spec.checkpoint)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def staging_root(repository_dir: Path) -> Path:
    """Beside the repository: same filesystem (rename is atomic), not scanned by tritonserver."""
    return repository_dir.parent / f".{repository_dir.name}.staging"


def _clean_stale_staging(root: Path) -> None:
    if not root.is_dir():
        return
    for entry in root.iterdir():
        pid = entry.name.split("-")[1] if entry.name.startswith("build-") else ""
        if not pid.isdigit() or not _pid_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def build_model(
    spec: ModelSpec,
    repository_dir: Path,
    *,
    runtime: str | None = None,
    precision: str | None = None,
    keep: int | None = None,
) -> BuildResult:
    """Build one new version of `spec` into the repository; prune to the newest `keep` versions."""
    import datetime

    started = time.perf_counter()
    runtime = runtime or spec.runtime
    if runtime not in LOWERINGS:
        raise ConfigError(
            f"models.yaml: models.{spec.name}.runtime: unknown runtime {runtime!r} (known: {', '.join(LOWERINGS)})"
        )
    precision = precision or spec.precisions[0]
    if precision not in spec.precisions:
        raise ConfigError(
            f"models.yaml: models.{spec.name}.precisions: {precision!r} is not listed ({', '.join(spec.precisions)})"
        )
    for field_name, given in (("onnx", spec.onnx), ("checkpoint", spec.checkpoint)):
        if given is not None and not given.is_file():
            raise ConfigError(f"models.yaml: models.{spec.name}.source.{field_name}: file {given} does not exist")
    source = source_file(spec)

    model_dir = repository_dir / spec.name
    version = max(repository.versions(model_dir), default=0) + 1
    root = staging_root(repository_dir)
    _clean_stale_staging(root)
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f"build-{os.getpid()}-{spec.name}-{version}"
    staged_model = staging / spec.name
    staged_version = staged_model / str(version)
    try:
        staged_version.mkdir(parents=True)
        lowered = LOWERINGS[runtime](spec, staged_version, precision)
        config = repository.config_dict(spec, lowered.backend, lowered.parameters, lowered.config_updates)
        staged_config = repository.write_config(config, staged_model / repository.CONFIG_NAME)
        manifest = repository.write_manifest(
            staged_version,
            staged_config,
            {
                "model": spec.name,
                "version": version,
                "runtime": runtime,
                "precision": precision,
                "backend": lowered.backend,
                "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "source": {"model": spec.source_model, "file": str(source), "sha256": repository.sha256_file(source)},
                "versions": lowered.versions,
                **lowered.manifest,
            },
        )
        _commit(staged_model, model_dir, version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_if_empty(root)
    if keep is not None:
        prune(model_dir, keep, root)
        _remove_if_empty(root)
    return BuildResult(spec.name, version, model_dir / str(version), manifest, time.perf_counter() - started)


def _remove_if_empty(root: Path) -> None:
    with contextlib.suppress(OSError):
        root.rmdir()  # fails unless empty: another build may be staging there


def _commit(staged_model: Path, model_dir: Path, version: int) -> None:
    """Move a staged build into the repository with renames only.

    A new model moves in as one directory. An existing one takes the version directory first,
    then config.pbtxt (`os.replace`); each step is atomic, and between them the repository holds
    the new version beside the previous, still valid, config.
    """
    if not model_dir.exists():
        model_dir.parent.mkdir(parents=True, exist_ok=True)
        staged_model.rename(model_dir)
        return
    # model_warmup input files live in <model>/warmup/, shared by versions (named per version).
    warmup = staged_model / "warmup"
    if warmup.is_dir():
        (model_dir / "warmup").mkdir(exist_ok=True)
        for item in warmup.iterdir():
            os.replace(item, model_dir / "warmup" / item.name)
    (staged_model / str(version)).rename(model_dir / str(version))
    os.replace(staged_model / repository.CONFIG_NAME, model_dir / repository.CONFIG_NAME)


def prune(model_dir: Path, keep: int, trash_root: Path) -> list[int]:
    """Remove all but the newest `keep` versions; each leaves the tree with one rename, then is deleted."""
    if keep < 1:
        raise ValueError(f"--keep must be >= 1, got {keep}")
    removed = repository.versions(model_dir)[:-keep]
    for version in removed:
        trash = trash_root / f"build-{os.getpid()}-prune-{model_dir.name}-{version}"
        trash_root.mkdir(parents=True, exist_ok=True)
        (model_dir / str(version)).rename(trash)
        shutil.rmtree(trash)
    return removed


def build(
    config_path: Path = DEFAULT_CONFIG,
    repository_dir: Path = DEFAULT_REPOSITORY,
    models: list[str] | None = None,
    *,
    runtime: str | None = None,
    precision: str | None = None,
    keep: int | None = None,
    log: Callable[[str], None] = print,
) -> list[BuildResult]:
    from plugserve import config

    specs = config.load(config_path)
    unknown = [m for m in models or [] if m not in specs]
    if unknown:
        raise ConfigError(f"{config_path.name}: no model(s) {unknown} under `models` (known: {', '.join(specs)})")
    results = []
    for name in models or list(specs):
        result = build_model(specs[name], repository_dir, runtime=runtime, precision=precision, keep=keep)
        log(
            f"build: {name} version {result.version} ({result.manifest['runtime']}, {result.manifest['precision']})"
            f" -> {result.path} in {result.seconds:.1f} s"
        )
        results.append(result)
    return results


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="models.yaml (default: %(default)s)")
    parser.add_argument(
        "--repository", type=Path, default=DEFAULT_REPOSITORY, help="model repository (default: %(default)s)"
    )
    parser.add_argument("--model", action="append", dest="models", help="build only this model (repeatable)")
    parser.add_argument("--runtime", help=f"override models.yaml's runtime ({', '.join(LOWERINGS)})")
    parser.add_argument("--precision", help="override models.yaml's first precision")
    parser.add_argument("--keep", type=int, help="keep only the newest N versions of each built model")


def run_build(args: argparse.Namespace) -> int:
    if args.keep is not None and args.keep < 1:
        raise SystemExit(f"build: --keep must be >= 1, got {args.keep}")
    try:
        build(args.config, args.repository, args.models, runtime=args.runtime, precision=args.precision, keep=args.keep)
    except ConfigError as error:
        print(f"build: {error}", file=sys.stderr)
        return 2
    return 0
