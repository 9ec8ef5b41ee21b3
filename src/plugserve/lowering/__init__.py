"""Lowerings: one module per models.yaml `runtime:`, each with the same face, registered by name.

A lowering module `plugserve.lowering.<runtime>` defines

- `unavailable() -> str | None`: why it cannot build on this machine (a missing package), or None;
- `lower(spec, version_dir, precision) -> Lowered`: write the runtime's artifacts into `version_dir`
  and say which Triton backend serves them, with the config.pbtxt and manifest fields it adds.

`load(runtime)` imports the module only when a build asks for it, so the heavy packages of one
runtime (TensorRT, torch) are never needed by another.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import sys
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from plugserve.config import RUNTIMES, ConfigError

LOWERINGS = RUNTIMES


class RuntimeUnavailable(RuntimeError):
    """A runtime's lowering cannot run on this machine; the message says what is missing."""


@dataclass
class Lowered:
    """What a lowering produced, for config.pbtxt and manifest.json."""

    backend: str  # Triton backend that serves the artifacts: "python", "tensorrt", ...
    versions: dict[str, str]  # exporter / runtime versions that made the artifacts
    parameters: dict[str, str] = field(default_factory=dict)  # config.pbtxt `parameters`
    config_updates: dict[str, Any] = field(default_factory=dict)  # top-level config fields to replace
    manifest: dict[str, Any] = field(default_factory=dict)  # extra manifest fields (e.g. GPU model)


def load(runtime: str, where: str = "runtime") -> ModuleType:
    """The lowering module of `runtime`; an unknown name is a ConfigError naming the known ones."""
    if runtime not in LOWERINGS:
        raise ConfigError(f"{where}: unknown runtime {runtime!r} (known: {', '.join(LOWERINGS)})")
    return importlib.import_module(f"plugserve.lowering.{runtime}")


def package_versions(*names: str) -> dict[str, str]:
    """Python's and the named distributions' versions, for the manifest."""
    from importlib import metadata

    found = {"python": sys.version.split()[0]}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def to_json(value: Any) -> str:
    """Compact, key-sorted JSON: a config.pbtxt parameter's value."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
