"""What TensorRT work depends on here: the TensorRT installation, the GPU, the plugin library.

TensorRT is imported inside functions only (`require_tensorrt` first): `plugserve --help`, the
other runtimes and the graph tests run without it.
"""

from __future__ import annotations

import ctypes
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plugserve.repository import sha256_file

if TYPE_CHECKING:
    import tensorrt as trt


class TensorRTUnavailable(RuntimeError):
    """TensorRT (or a GPU for it) is not present; the message says what is missing."""




def require_tensorrt() -> None:
    """Raise `TensorRTUnavailable` with the reason unless TensorRT can be imported.

    Callers then `import tensorrt as trt` themselves, so that mypy checks every call against
    tensorrt-stubs (a module returned from a helper would be untyped).
    """
    try:
        import tensorrt as trt
    except ImportError as error:
        raise TensorRTUnavailable(
            f"the tensorrt Python package is not installed ({error}); use the NGC image in docker/"
        ) from error
    # tensorrt-stubs installs a `tensorrt/` folder of .pyi files only, which imports as an empty
    # namespace package: a real installation has the Builder class.
    if not hasattr(trt, "Builder"):
        raise TensorRTUnavailable(
            "only type stubs for tensorrt are installed, not TensorRT itself; use the NGC image in docker/"
        )


def unavailable_reason() -> str | None:
    """Why TensorRT cannot be used here, or None when it can (for pytest skip reasons)."""
    try:
        require_tensorrt()
    except TensorRTUnavailable as error:
        return str(error)
    return None


def tensorrt_version() -> str | None:
    """The TensorRT version the Python bindings load, else the one libnvinfer reports, else None.

    `plugserve serve` uses the libnvinfer fallback: tritonserver's TensorRT backend links the system
    libnvinfer, which is what must match an engine, whether or not the Python package is installed.
    """
    try:
        require_tensorrt()
        import tensorrt as trt

        return trt.__version__
    except TensorRTUnavailable:
        pass
    for soname in ("libnvinfer.so.11", "libnvinfer.so.10"):
        try:
            library = ctypes.CDLL(soname)
        except OSError:
            continue
        # getInferLibVersion encodes MAJOR*10000 + MINOR*100 + PATCH since TensorRT 10.
        code = int(library.getInferLibVersion())
        return f"{code // 10000}.{code // 100 % 100}.{code % 100}"
    return None


def version_key(version: str) -> str:
    """Major.minor.patch: the build number differs between the Python wheel and the system library."""
    return ".".join(version.split(".")[:3])




@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: str  # "9.0"


@dataclass(frozen=True)
class Environment:
    """What a TensorRT engine is tied to. None means absent (no TensorRT, no GPU, no plugin library)."""

    tensorrt_version: str | None
    gpu: Gpu | None
    plugin_sha256: str | None

    def as_manifest(self) -> dict[str, Any]:
        return {
            "tensorrt_version": self.tensorrt_version,
            "gpu": None
            if self.gpu is None
            else {"name": self.gpu.name, "compute_capability": self.gpu.compute_capability},
            "plugin_library_sha256": self.plugin_sha256,
        }


def detect_gpu() -> Gpu | None:
    """GPU 0 as nvidia-smi reports it (the device tritonserver's instance groups default to)."""
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader", "--id=0"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0 or "," not in result.stdout:
        return None
    name, capability = (part.strip() for part in result.stdout.strip().splitlines()[0].rsplit(",", 1))
    return Gpu(name=name, compute_capability=capability)


def detect_environment(plugin_library: Path | None) -> Environment:
    """The environment on this machine: TensorRT version, GPU 0, sha256 of the plugin library."""
    return Environment(
        tensorrt_version=tensorrt_version(),
        gpu=detect_gpu(),
        plugin_sha256=sha256_file(plugin_library)
        if plugin_library is not None and plugin_library.is_file()
        else None,
    )


_TRT_LOGGER: trt.Logger | None = None


def logger() -> trt.Logger:
    """The process's one TensorRT logger: WARNING keeps builds readable, errors are collected."""
    import tensorrt as trt

    global _TRT_LOGGER
    if _TRT_LOGGER is None:
        _TRT_LOGGER = trt.Logger(trt.Logger.WARNING)
    return _TRT_LOGGER
