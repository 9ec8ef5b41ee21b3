"""Build `model_repository/<model>/<version>/` from models.yaml through the model's runtime lowering.

`build_model` stages one new version (plugserve.repository), asks the runtime's lowering
(plugserve.lowering) for its artifacts, writes config.pbtxt and manifest.json, and commits the
version by renames; `build` does that for the models of a models.yaml; `run_build` is the CLI.

With a running server (`--load URL`) the committed version is loaded into it and must become ready;
a version the server refuses is taken back out (plugserve.repository.uncommit) after the server has
gone back to the versions it served, so a failed build leaves both as they were.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugserve import config, console, lowering, models, repository, repository_api
from plugserve.config import ConfigError, ModelSpec
from plugserve.repository_api import LiveServer, LoadRefused

DEFAULT_CONFIG = Path("models.yaml")
DEFAULT_REPOSITORY = Path("model_repository")


@dataclass
class BuildResult:
    model: str
    version: int
    path: Path
    manifest: dict[str, Any]
    seconds: float


def source_file(spec: ModelSpec) -> Path:
    """The file a build starts from (its hash goes into the manifest): the ONNX, or the checkpoint."""
    if spec.onnx is not None:
        return spec.onnx
    return models.checkpoint_path(spec.model_name(), spec.checkpoint)


def build_model(
    spec: ModelSpec,
    repository_dir: Path,
    *,
    runtime: str | None = None,
    precision: str | None = None,
    keep: int | None = None,
    server: LiveServer | None = None,
    log: Callable[[str], None] = print,
) -> BuildResult:
    """Build one new version of `spec` into the repository, load it into `server` if given; prune to
    the newest `keep` versions (never one a running server holds). Builds of one repository take
    turns (`build_lock`)."""
    started = time.perf_counter()
    where = "--runtime" if runtime else f"{spec.label}: models.{spec.name}.runtime"
    runtime = runtime or spec.runtime
    lowering_module = lowering.load(runtime, where)
    reason = lowering_module.unavailable()
    if reason is not None:
        raise lowering.RuntimeUnavailable(f"runtime {runtime} cannot build {spec.name} here: {reason}")
    precision = precision or spec.precisions[0]
    if precision not in spec.precisions:
        raise ConfigError(
            f"{spec.label}: models.{spec.name}.precisions: {precision!r} is not listed ({', '.join(spec.precisions)})"
        )
    for field_name, given in (("onnx", spec.onnx), ("checkpoint", spec.checkpoint)):
        if given is not None and not given.is_file():
            raise ConfigError(f"{spec.label}: models.{spec.name}.source.{field_name}: file {given} does not exist")
    source = source_file(spec)

    with repository.build_lock(repository_dir, lambda path: log(f"build: waiting for another build of "
                                                                 f"{repository_dir} (lock {path})")):
        result = _build_locked(spec, repository_dir, lowering_module, runtime, precision, source, server, log)
        if keep is not None:
            _prune(spec.name, repository_dir, keep, server, log)
    result.seconds = time.perf_counter() - started
    return result


def _build_locked(spec: ModelSpec, repository_dir: Path, lowering_module: Any, runtime: str, precision: str,
                  source: Path, server: LiveServer | None, log: Callable[[str], None]) -> BuildResult:
    model_dir = repository_dir / spec.name
    version = max(repository.versions(model_dir), default=0) + 1
    root = repository.staging_root(repository_dir)
    repository.clean_stale_staging(root)
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f"build-{os.getpid()}-{spec.name}-{version}"
    staged_model = staging / spec.name
    staged_version = staged_model / str(version)
    try:
        staged_version.mkdir(parents=True)
        with console.step(f"build: {spec.name} version {version} ({runtime}, {precision})"):
            lowered = lowering_module.lower(spec, staged_version, precision)
        # Where commit() will have moved the staged version: config.pbtxt may name its files absolutely.
        updates = repository.resolve_version_files(lowered.config_updates, staged_version,
                                                   repository_dir.resolve() / spec.name / str(version))
        if "model_warmup" not in updates:  # every runtime warms up at the profiles' opt shapes
            updates["model_warmup"] = repository.warmup_requests(spec, staged_model / repository.WARMUP_DIR,
                                                                 str(version))
        # The runtime goes into the served config so that clients (bench) can read it from the server.
        parameters = {repository.RUNTIME_PARAMETER: runtime, **lowered.parameters}
        config = repository.config_dict(spec, lowered.backend, parameters, updates)
        staged_config = repository.write_config(config, staged_model / repository.CONFIG_NAME)
        shutil.copyfile(staged_config, staged_version / repository.SERVED_CONFIG_NAME)
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
        previous_config = None
        if server is not None and (model_dir / repository.CONFIG_NAME).is_file():
            previous_config = Path(shutil.copy2(model_dir / repository.CONFIG_NAME, staging / "previous_config.pbtxt"))
        repository.commit(staged_model, model_dir, version)
        if server is not None:
            _load(server, model_dir, version, previous_config, root, log)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        repository.remove_if_empty(root)
    return BuildResult(spec.name, version, model_dir / str(version), manifest, 0.0)


def _load(server: LiveServer, model_dir: Path, version: int, previous_config: Path | None, trash_root: Path,
          log: Callable[[str], None]) -> None:
    """Load the committed `version` into the server and wait until it is ready; when it is not, the
    server falls back to the older versions (as `plugserve serve` would) and the version is taken out."""
    chosen: list[int] = []
    reasons: list[str] = []
    ready = False
    try:
        with console.step(f"build: loading {model_dir.name} version {version} into {server.url}"):
            chosen, reasons = repository_api.load_newest(server, model_dir, say=lambda _line: None)
            ready = version in chosen and server.version_ready(model_dir.name, version)
            if ready:
                server.wait_unloaded(model_dir.name, chosen)
    finally:
        if not ready:
            repository.uncommit(model_dir, version, previous_config, trash_root)
    if not ready:
        why = "; ".join(reasons) or f"version {version} is not ready"
        raise LoadRefused(f"{model_dir.name} version {version} did not load into {server.url}, and was taken back "
                          f"out of {model_dir.parent} (the server serves {chosen or 'none of it'}): {why}",
                          f"see the server log{f' {server.log}' if server.log else ''} for the model's error, "
                          "fix it, then build again")
    log(f"build: {model_dir.name} version {version} is ready on {server.url} (serving version(s) {chosen})")


def _prune(model: str, repository_dir: Path, keep: int, server: LiveServer | None,
           log: Callable[[str], None]) -> None:
    """--keep: the newest `keep` versions stay, and every version a running server holds."""
    model_dir = repository_dir / model
    in_use = repository_api.loaded_by_servers(repository_dir).get(model, {})
    if server is not None:
        in_use.update(dict.fromkeys(server.loaded().get(model, []), f"the server at {server.url}"))
    older = repository.versions(model_dir)[:-keep]
    removed = repository.prune(model_dir, keep, repository.staging_root(repository_dir), in_use)
    repository.remove_if_empty(repository.staging_root(repository_dir))
    kept = [f"version {v} (loaded by {who})" for v, who in sorted(in_use.items()) if v in older]
    log(f"build: --keep {keep} removed {model} version(s) {removed or 'none'}"
        + (f"; kept {', '.join(kept)}" if kept else ""))


def build(
    config_path: Path = DEFAULT_CONFIG,
    repository_dir: Path = DEFAULT_REPOSITORY,
    models: list[str] | None = None,
    *,
    runtime: str | None = None,
    precision: str | None = None,
    keep: int | None = None,
    server: LiveServer | None = None,
    log: Callable[[str], None] = print,
) -> list[BuildResult]:
    specs = config.load(config_path)
    unknown = [m for m in models or [] if m not in specs]
    if unknown:
        raise ConfigError(f"{config_path.name}: no model(s) {unknown} under `models` (known: {', '.join(specs)})")
    results = []
    for name in models or list(specs):
        result = build_model(specs[name], repository_dir, runtime=runtime, precision=precision, keep=keep,
                             server=server, log=log)
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
    parser.add_argument("--runtime", help=f"override models.yaml's runtime ({', '.join(lowering.LOWERINGS)})")
    parser.add_argument("--precision", help="override models.yaml's first precision")
    parser.add_argument("--keep", type=int, help="keep only the newest N versions of each built model, and every "
                                                  "version a running server has loaded")
    parser.add_argument("--load", metavar="URL",
                        help="HTTP address of a running server (e.g. localhost:8000) on this repository, started "
                             "with `plugserve serve` (model control explicit): load each new version into it")


def run_build(args: argparse.Namespace) -> int:
    if args.keep is not None and args.keep < 1:
        raise console.UsageError(f"--keep must be >= 1, got {args.keep}")
    server = None
    if args.load is not None:
        server = repository_api.server_at(args.load, args.repository)
        server.check_loads()  # before building: no server there, or one that refuses loads, fails in a second
    build(args.config, args.repository, args.models, runtime=args.runtime, precision=args.precision, keep=args.keep,
          server=server)
    return 0
