"""The TensorRT plugin registry: loading our library's creators and checking a graph's plugin nodes against it."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plugserve.trt.environment import logger, require_tensorrt

if TYPE_CHECKING:
    import onnx

PLUGIN_NAMESPACE = "plugserve"
# The ONNX parser looks a non-standard node up in the plugin registry under these attributes;
# it defaults to version "1" and the empty namespace when they are absent.
PLUGIN_VERSION_ATTRIBUTE = "plugin_version"
PLUGIN_NAMESPACE_ATTRIBUTE = "plugin_namespace"


class PluginNotRegistered(RuntimeError):
    """An ONNX node needs a plugin creator that no loaded library registered."""






@dataclass(frozen=True)
class CreatorKey:
    name: str
    version: str
    namespace: str

    def __str__(self) -> str:
        return (
            f"{self.namespace}::{self.name} v{self.version}"
            if self.namespace
            else f"{self.name} v{self.version}"
        )


# One process registers a library once: TensorRT rejects duplicate creators. NVIDIA's own plugins
# count as the first entry.
_loaded_libraries: dict[Path, Any] = {}
_registry_lock = threading.Lock()


def load_plugins(plugin_library: Path | None) -> list[CreatorKey]:
    """Register TensorRT's own plugins and our library's creators; return every registered creator.

    NVIDIA's plugins (`init_libnvinfer_plugins`) provide MultiscaleDeformableAttnPlugin_TRT for
    graphs exported with `--msda nvidia`. Our library is opened with ctypes only: its static
    initializer registers the creators (a missing CUDA runtime or an unresolved symbol then shows
    dlopen's own message), and a later `registry.load_library` of the same file would find them
    registered already and add none.
    """
    require_tensorrt()
    import tensorrt as trt

    with _registry_lock:
        if not _loaded_libraries:
            trt.init_libnvinfer_plugins(logger(), "")
            _loaded_libraries[Path("libnvinfer_plugin")] = None
        registry = trt.get_plugin_registry()
        if plugin_library is not None:
            path = plugin_library.resolve()
            if path not in _loaded_libraries:
                if not path.is_file():
                    raise FileNotFoundError(
                        f"plugin library {path} does not exist; build it with `make plugins`"
                    )
                _loaded_libraries[path] = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
        return [
            CreatorKey(str(c.name), str(c.plugin_version), str(c.plugin_namespace))
            for c in registry.all_creators
        ]


def _attribute(node: onnx.NodeProto, name: str, default: str) -> str:
    for attribute in node.attribute:
        if attribute.name == name:
            value = attribute.s
            return value.decode() if isinstance(value, bytes) else str(value)
    return default


def required_plugins(model: onnx.ModelProto) -> dict[CreatorKey, list[str]]:
    """The plugin creators the TensorRT ONNX parser will look up, with the nodes that need each.

    A node needs a plugin when its op is not a standard ONNX op of its domain: the parser then
    asks the registry for (op_type, plugin_version or "1", plugin_namespace or "").
    """
    import onnx.defs

    needed: dict[CreatorKey, list[str]] = {}
    for node in _all_nodes(model.graph):
        domain = node.domain if node.domain not in ("", "ai.onnx") else ""
        if domain in ("", "ai.onnx.ml") and onnx.defs.has(node.op_type, domain):
            continue
        key = CreatorKey(
            node.op_type,
            _attribute(node, PLUGIN_VERSION_ATTRIBUTE, "1"),
            _attribute(node, PLUGIN_NAMESPACE_ATTRIBUTE, ""),
        )
        needed.setdefault(key, []).append(node.name or node.op_type)
    return needed


def _all_nodes(graph: onnx.GraphProto) -> Iterable[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.g.node:
                yield from _all_nodes(attribute.g)
            for subgraph in attribute.graphs:
                yield from _all_nodes(subgraph)


def check_plugins_registered(
    model: onnx.ModelProto, registered: Iterable[CreatorKey], plugin_library: Path | None
) -> None:
    """Raise `PluginNotRegistered` naming the nodes, the registered plugserve creators and the fix."""
    registered = set(registered)
    missing = {key: nodes for key, nodes in required_plugins(model).items() if key not in registered}
    if not missing:
        return
    ours = sorted(str(k) for k in registered if k.namespace == PLUGIN_NAMESPACE) or ["none"]
    lines = [
        f"  {key} needed by {', '.join(nodes[:3])}{' ...' if len(nodes) > 3 else ''}"
        for key, nodes in missing.items()
    ]
    library = plugin_library or "no plugin library (plugserve.native.library_path() found none)"
    raise PluginNotRegistered(
        "the TensorRT plugin registry has no creator for:\n"
        + "\n".join(lines)
        + f"\nregistered plugserve creators: {', '.join(ours)}\nloaded library: {library}\n"
        "fix: build the plugin library with its TensorRT glue (`make plugins` where the TensorRT headers "
        "are found, e.g. in the NGC image), or point PLUGSERVE_PLUGIN_LIBRARY at one; for NVIDIA's "
        "MultiscaleDeformableAttnPlugin_TRT use a TensorRT whose libnvinfer_plugin ships it"
    )
