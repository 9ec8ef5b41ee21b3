"""libplugserve.so from Python: find it, load it with ctypes, call its C ABI on numpy arrays and torch tensors.

The library is looked up in this order: `$PLUGSERVE_PLUGIN_LIBRARY`, `plugins/build/libplugserve.so`
of the source checkout this module lives in, then `libplugserve.so` next to this module (an installed
package). `onnxruntime_library()` finds the ONNX Runtime custom-op library the same way. Torch and numpy are imported only when a kernel is called, so importing this module is cheap.

Failures of the library come back as `PluginError` carrying the library's message and status code.
"""

from __future__ import annotations

import ctypes
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np
    import torch

ENV_VAR = "PLUGSERVE_PLUGIN_LIBRARY"
LIBRARY_NAME = "libplugserve.so"
# The ONNX Runtime custom-op library (plugins/ort/), built beside LIBRARY_NAME when ORT's headers are found.
ORT_ENV_VAR = "PLUGSERVE_ORT_LIBRARY"
ORT_LIBRARY_NAME = "libplugserve_ort.so"
RESIZE_MODES = ("nearest", "bilinear", "bicubic", "nearest-exact")

# Codes of the C ABI's enums (plugins/capi/plugserve.h).
OK, INVALID_ARGUMENT, CUDA_ERROR, INTERNAL = 0, 1, 2, 3
_DTYPE_CODES = {"float32": 0, "float16": 1, "bfloat16": 2}
_INDEX_CODES = {"int32": 0, "int64": 1}


# Status code of an argument the library refuses (plugins/common/status.h StatusCode::kInvalidArgument).
INVALID_ARGUMENT = 1


class PluginError(RuntimeError):
    """A libplugserve.so call returned a non-zero status; `code` is that status."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class GpuUnavailable(RuntimeError):
    """A command or option that needs a CUDA GPU ran where none is visible; the message names it."""


def gpu_count() -> int:
    """CUDA devices this process sees (after CUDA_VISIBLE_DEVICES), asked of the driver itself: no
    torch, and 0 without a driver or a device."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def require_gpu(what: str) -> None:
    """Raise GpuUnavailable naming `what` unless a CUDA GPU is visible."""
    if gpu_count() == 0:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        hidden = f", CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
        raise GpuUnavailable(f"{what} needs a CUDA GPU, and this machine shows none (no NVIDIA driver or device"
                             f"{hidden})")


def _find(name: str, env_var: str) -> Path | None:
    override = os.environ.get(env_var)
    if override:
        return Path(override)
    here = Path(__file__).resolve().parent
    for candidate in (here.parents[1] / "plugins" / "build" / name, here / name):
        if candidate.is_file():
            return candidate
    return None


def library_path() -> Path | None:
    """The library that `load()` opens, or None when no candidate exists."""
    return _find(LIBRARY_NAME, ENV_VAR)


def onnxruntime_library() -> Path | None:
    """libplugserve_ort.so, for `SessionOptions.register_custom_ops_library` and Triton's
    `model_operations.op_library_filename`: `$PLUGSERVE_ORT_LIBRARY`, then the same places as
    `library_path()`; None when it was not built."""
    return _find(ORT_LIBRARY_NAME, ORT_ENV_VAR)


@lru_cache(maxsize=1)
def load() -> ctypes.CDLL:
    """Open the library once and declare the C ABI's signatures."""
    path = library_path()
    if path is None:
        raise FileNotFoundError(f"{LIBRARY_NAME} not found: build it with `make plugins` or set ${ENV_VAR}")
    if not path.is_file():
        raise FileNotFoundError(f"{LIBRARY_NAME} not found at {path} (from ${ENV_VAR})")
    lib = ctypes.CDLL(str(path))
    i64, i32, ptr, text = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p
    for name in ("plugserve_version", "plugserve_build_info", "plugserve_last_error"):
        getattr(lib, name).restype = text
        getattr(lib, name).argtypes = []
    resize: list[Any] = [i64] * 6 + [text, i32, ptr, i32, ptr, ptr]
    lib.plugserve_dynamic_resize.argtypes = [*resize, ptr]
    lib.plugserve_dynamic_resize_cpu.argtypes = resize
    msda: list[Any] = [i64] * 7 + [i32, i32, i32] + [ptr] * 6  # sizes, dtype, sampling dtype, index type
    lib.plugserve_ms_deform_attn.argtypes = [*msda, ptr]
    lib.plugserve_ms_deform_attn_cpu.argtypes = msda
    for name in ("plugserve_dynamic_resize", "plugserve_dynamic_resize_cpu", "plugserve_ms_deform_attn",
                 "plugserve_ms_deform_attn_cpu"):
        getattr(lib, name).restype = i32
    return lib


def available() -> bool:
    """Whether the library exists and loads (never raises)."""
    try:
        load()
    except OSError:
        return False
    return True


def version() -> str:
    return load().plugserve_version().decode()


def build_info() -> str:
    """One line: version, CUDA runtime, target architectures, whether the TensorRT glue is in."""
    return load().plugserve_build_info().decode()


def _check(lib: ctypes.CDLL, status: int) -> None:
    if status != 0:
        raise PluginError(status, lib.plugserve_last_error().decode())


def _dtype_code(name: str, op: str) -> int:
    if name not in _DTYPE_CODES:
        raise ValueError(f"{op}: dtype must be float32, float16 or bfloat16, got {name}")
    return _DTYPE_CODES[name]


def _index_code(name: str) -> int:
    if name not in _INDEX_CODES:
        raise ValueError(f"ms_deform_attn: spatial_shapes and level_start_index must be int32 or int64, got {name}")
    return _INDEX_CODES[name]


def _sampling_code(value: str, locations: str, weights: str) -> int:
    """The C ABI's sampling dtype: value's, or float32 beside a half value (mixed precision)."""
    if locations != weights or locations not in (value, "float32"):
        raise ValueError(f"ms_deform_attn: sampling_locations and attention_weights must share value's dtype or be "
                         f"float32 (coordinates are computed in float32 either way), got value {value}, "
                         f"sampling_locations {locations}, attention_weights {weights}")
    return _dtype_code(locations, "ms_deform_attn")


def _resize_args(shape: tuple[int, ...], out_h: int, out_w: int, mode: str, align_corners: bool,
                 scales: int | None) -> list[Any]:
    """The C ABI's arguments up to the dtype; `scales` is the address of two float32 or None."""
    if len(shape) != 4:
        raise ValueError(f"dynamic_resize: x must be 4-D [N, C, H, W], got shape {shape}")
    if mode not in RESIZE_MODES:
        raise ValueError(f"dynamic_resize: mode must be one of {RESIZE_MODES}, got {mode!r}")
    return [*shape, int(out_h), int(out_w), mode.encode(), int(bool(align_corners)), scales]


def _msda_sizes(value: tuple[int, ...], locations: tuple[int, ...], weights: tuple[int, ...],
                shapes: tuple[int, ...], starts: tuple[int, ...]) -> list[int]:
    """[N, S, M, D, L, Lq, P] after checking that the five shapes agree (the C ABI trusts them)."""
    if len(value) != 4 or len(locations) != 6 or locations[-1] != 2:
        raise ValueError(f"ms_deform_attn: value must be [N, S, M, D] and sampling_locations [N, Lq, M, L, P, 2], "
                         f"got {value} and {locations}")
    n, s, m, d = value
    _, lq, _, levels, points, _ = locations
    if locations[0] != n or locations[2] != m:
        raise ValueError(f"ms_deform_attn: sampling_locations {locations} does not match value {value} in N or M")
    if weights != (n, lq, m, levels, points):
        raise ValueError(f"ms_deform_attn: attention_weights must be {(n, lq, m, levels, points)}, got {weights}")
    if shapes != (levels, 2) or starts != (levels,):
        raise ValueError(f"ms_deform_attn: spatial_shapes must be {(levels, 2)} and level_start_index "
                         f"{(levels,)}, got {shapes} and {starts}")
    return [n, s, m, d, levels, lq, points]


# numpy entry points (CPU; numpy has no bfloat16)

def dynamic_resize_numpy(x: np.ndarray, out_h: int, out_w: int, mode: str = "bicubic",
                         align_corners: bool = False, scales: Sequence[float] | None = None) -> np.ndarray:
    """With `scales` (h, w), source coordinates scale by 1/scale instead of in/out."""
    import numpy as np

    lib = load()
    x = np.ascontiguousarray(x)
    given = None if scales is None else np.ascontiguousarray(scales, dtype=np.float32)
    if given is not None and given.shape != (2,):
        raise ValueError(f"dynamic_resize: scales must be 2 values (h, w), got shape {given.shape}")
    args = _resize_args(x.shape, out_h, out_w, mode, align_corners, None if given is None else given.ctypes.data)
    dtype = _dtype_code(x.dtype.name, "dynamic_resize")
    y = np.empty((x.shape[0], x.shape[1], max(int(out_h), 0), max(int(out_w), 0)), dtype=x.dtype)
    _check(lib, lib.plugserve_dynamic_resize_cpu(*args, dtype, x.ctypes.data, y.ctypes.data))
    return y


def ms_deform_attn_numpy(value: np.ndarray, spatial_shapes: np.ndarray, level_start_index: np.ndarray,
                         sampling_locations: np.ndarray, attention_weights: np.ndarray) -> np.ndarray:
    import numpy as np

    lib = load()
    value, shapes, starts, locations, weights = (
        np.ascontiguousarray(a) for a in (value, spatial_shapes, level_start_index, sampling_locations,
                                          attention_weights))
    starts = starts.astype(shapes.dtype, copy=False)
    sizes = _msda_sizes(value.shape, locations.shape, weights.shape, shapes.shape, starts.shape)
    sampling = _sampling_code(value.dtype.name, locations.dtype.name, weights.dtype.name)
    n, _, m, d, _, lq, _ = sizes
    out = np.empty((n, lq, m, d), dtype=value.dtype)
    _check(lib, lib.plugserve_ms_deform_attn_cpu(
        *sizes, _dtype_code(value.dtype.name, "ms_deform_attn"), sampling, _index_code(shapes.dtype.name),
        value.ctypes.data,
        shapes.ctypes.data, starts.ctypes.data, locations.ctypes.data, weights.ctypes.data, out.ctypes.data))
    return out


# torch entry points (CPU or CUDA by the tensors' device; CUDA work goes on the current stream)

def _torch_dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _stream(device: torch.device) -> int:
    import torch

    return torch.cuda.current_stream(device).cuda_stream


def _device_guard(device: torch.device):
    import contextlib

    import torch

    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _require_device(t: torch.Tensor, op: str) -> None:
    if t.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{op}: tensors must be on the CPU or a CUDA device, got {t.device}")


def dynamic_resize(x: torch.Tensor, out_h: int, out_w: int, mode: str = "bicubic",
                   align_corners: bool = False, scales: torch.Tensor | None = None) -> torch.Tensor:
    """`F.interpolate(x, size=(out_h, out_w), mode=mode, align_corners=...)` through the library; with
    `scales` (a tensor of 2 values, h and w), source coordinates scale by 1/scale as with
    `F.interpolate(scale_factor=scales, recompute_scale_factor=False)`."""
    import torch

    lib = load()
    _require_device(x, "dynamic_resize")
    x = x.contiguous()
    given = None if scales is None else scales.to(device=x.device, dtype=torch.float32).contiguous()
    if given is not None and given.shape != (2,):
        raise ValueError(f"dynamic_resize: scales must be 2 values (h, w), got shape {tuple(given.shape)}")
    args = _resize_args(tuple(x.shape), out_h, out_w, mode, align_corners,
                        None if given is None else given.data_ptr())
    dtype = _dtype_code(_torch_dtype_name(x), "dynamic_resize")
    y = x.new_empty((x.shape[0], x.shape[1], max(int(out_h), 0), max(int(out_w), 0)))
    with _device_guard(x.device):
        if x.is_cuda:
            status = lib.plugserve_dynamic_resize(*args, dtype, x.data_ptr(), y.data_ptr(), _stream(x.device))
        else:
            status = lib.plugserve_dynamic_resize_cpu(*args, dtype, x.data_ptr(), y.data_ptr())
    _check(lib, status)
    return y


def ms_deform_attn(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                   sampling_locations: torch.Tensor, attention_weights: torch.Tensor) -> torch.Tensor:
    """Multi-scale deformable attention through the library; index tensors may live on either device.

    On CUDA, levels inconsistent with `value` contribute zero (checking them would cost a device
    sync); on the CPU they raise `PluginError`.
    """
    lib = load()
    _require_device(value, "ms_deform_attn")
    device = value.device
    for name, t in (("sampling_locations", sampling_locations), ("attention_weights", attention_weights)):
        if t.device != device:
            raise ValueError(f"ms_deform_attn: {name} is on {t.device}, value on {device}")
    value, locations, weights = (t.contiguous() for t in (value, sampling_locations, attention_weights))
    shapes = spatial_shapes.to(device=device).contiguous()
    starts = level_start_index.to(device=device, dtype=shapes.dtype).contiguous()
    sizes = _msda_sizes(tuple(value.shape), tuple(locations.shape), tuple(weights.shape), tuple(shapes.shape),
                        tuple(starts.shape))
    codes = (_dtype_code(_torch_dtype_name(value), "ms_deform_attn"),
             _sampling_code(_torch_dtype_name(value), _torch_dtype_name(locations), _torch_dtype_name(weights)),
             _index_code(_torch_dtype_name(shapes)))
    n, _, m, d, _, lq, _ = sizes
    out = value.new_empty((n, lq, m, d))
    pointers = (value.data_ptr(), shapes.data_ptr(), starts.data_ptr(), locations.data_ptr(), weights.data_ptr(),
                out.data_ptr())
    with _device_guard(device):
        if value.is_cuda:
            status = lib.plugserve_ms_deform_attn(*sizes, *codes, *pointers, _stream(device))
        else:
            status = lib.plugserve_ms_deform_attn_cpu(*sizes, *codes, *pointers)
    _check(lib, status)
    return out
