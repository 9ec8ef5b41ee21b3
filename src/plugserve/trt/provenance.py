"""Engine provenance: what a TensorRT engine was built with, recorded in manifest.json at build time
and compared with the machine at serve time (`plugserve serve` refuses engines that cannot run here)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plugserve.repository import MANIFEST_NAME, PLAN_FILE, served_version_dirs, sha256_file
from plugserve.trt.environment import Environment, detect_environment, version_key

if TYPE_CHECKING:
    from plugserve.trt.engine import Profile


@dataclass(frozen=True)
class StaleEngine:
    model: str
    version: str
    reasons: tuple[str, ...]  # human sentences, one per mismatch

    def __str__(self) -> str:
        return f"{self.model}/{self.version}: " + "; ".join(self.reasons)


MANIFEST_KEY = "tensorrt"


def manifest_fields(
    environment: Environment,
    *,
    onnx_path: Path,
    profiles: Sequence[Profile],
    precision: str,
    plugin_library: Path | None,
) -> dict[str, Any]:
    """The manifest.json section of a TensorRT engine, read back by `stale_engines`."""
    return {
        **environment.as_manifest(),
        "plugin_library": None if plugin_library is None else str(plugin_library),
        "onnx_sha256": sha256_file(onnx_path),
        "precision": precision,
        "profiles": [{name: r.as_dict() for name, r in profile.items()} for profile in profiles],
    }


def _mismatches(recorded: Mapping[str, Any], present: Environment) -> list[str]:
    reasons = []
    built_with = recorded.get("tensorrt_version")
    if present.tensorrt_version is None:
        reasons.append(f"built with TensorRT {built_with}, but no TensorRT is installed here")
    elif built_with is None or version_key(str(built_with)) != version_key(present.tensorrt_version):
        reasons.append(
            f"built with TensorRT {built_with}, but TensorRT {present.tensorrt_version} is installed"
        )
    gpu = recorded.get("gpu") or {}
    built_for = f"{gpu.get('name')} (compute capability {gpu.get('compute_capability')})"
    if present.gpu is None:
        reasons.append(f"built for {built_for}, but no GPU is visible here")
    elif (
        gpu.get("name") != present.gpu.name or gpu.get("compute_capability") != present.gpu.compute_capability
    ):
        reasons.append(
            f"built for {built_for}, but this GPU is {present.gpu.name} "
            f"(compute capability {present.gpu.compute_capability})"
        )
    built_sha = recorded.get("plugin_library_sha256")
    if built_sha is not None and present.plugin_sha256 is None:
        reasons.append("built with libplugserve.so, but no plugin library is present (run `make plugins`)")
    elif built_sha is not None and built_sha != present.plugin_sha256:
        reasons.append(
            f"built with plugin library sha256 {built_sha[:12]}…, but the present one is {str(present.plugin_sha256)[:12]}…"
        )
    return reasons


def stale_engines(repository: Path, present: Environment) -> list[StaleEngine]:
    """The served TensorRT engines of `repository` that do not match `present`.

    A version directory holds a TensorRT engine when it has model.plan; its manifest.json must then
    carry the `tensorrt` section written at build time. Versions without model.plan are not checked.
    """
    if not repository.is_dir():
        raise FileNotFoundError(f"model repository {repository} does not exist")
    stale = []
    for version_dir in served_version_dirs(repository):
        if not (version_dir / PLAN_FILE).is_file():
            continue
        model, version = version_dir.parent.name, version_dir.name
        manifest_path = version_dir / MANIFEST_NAME
        try:
            recorded = json.loads(manifest_path.read_text())[MANIFEST_KEY]
        except FileNotFoundError:
            stale.append(
                StaleEngine(
                    model, version, (f"{manifest_path} is missing, so the engine's origin is unknown",)
                )
            )
            continue
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            stale.append(
                StaleEngine(
                    model, version, (f"{manifest_path} has no readable '{MANIFEST_KEY}' section ({error!r})",)
                )
            )
            continue
        reasons = _mismatches(recorded, present)
        if reasons:
            stale.append(StaleEngine(model, version, tuple(reasons)))
    return stale


def check_repository(
    repository: Path, plugin_library: Path | None, *, force: bool = False
) -> list[StaleEngine]:
    """Refuse (RuntimeError) to serve stale TensorRT engines; with `force`, warn and return them.

    Called once by `plugserve serve` before tritonserver starts. Detecting the environment runs
    nvidia-smi, so it happens only when the repository holds at least one engine.
    """
    if not repository.is_dir() or not any(
        (d / PLAN_FILE).is_file() for d in served_version_dirs(repository)
    ):
        return []  # nothing to check (a missing repository is reported by the server start)
    stale = stale_engines(repository, detect_environment(plugin_library))
    if not stale:
        return []
    models = " ".join(sorted({s.model for s in stale}))
    listing = "\n".join(f"  {s}" for s in stale)
    advice = f"rebuild them here: plugserve build --runtime tensorrt {models}"
    if force:
        print(f"warning: serving stale TensorRT engines because of --force:\n{listing}", file=sys.stderr)
        return stale
    raise RuntimeError(
        f"{repository} holds TensorRT engines that do not match this machine:\n{listing}\n{advice}  "
        "(or pass --force to serve them anyway)"
    )


def models_to_build(repository: Path, models: Iterable[str], present: Environment) -> list[str]:
    """Of `models`, those with no served TensorRT engine in `repository` or a stale one: what the NGC
    image's entrypoint builds before it serves."""
    served = {d.parent.name for d in served_version_dirs(repository) if (d / PLAN_FILE).is_file()}
    stale = {s.model for s in stale_engines(repository, present)} if served else set()
    return [m for m in models if m not in served or m in stale]
