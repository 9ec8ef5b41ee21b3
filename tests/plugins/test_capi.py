"""libplugserve.so's C ABI: bad input is an error status with a message, never a crash."""

from __future__ import annotations

import ctypes
import re

import numpy as np
import pytest

from plugserve import native

pytestmark = pytest.mark.skipif(not native.available(), reason="libplugserve.so not built (make plugins)")

INVALID_ARGUMENT = native.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def lib():
    return native.load()


def test_version_and_build_info_describe_the_library(lib):
    assert re.fullmatch(r"\d+\.\d+\.\d+", native.version())
    info = native.build_info()
    assert info.startswith(f"plugserve {native.version()}; CUDA runtime ")
    assert "sm_90" in info and "TensorRT glue: " in info


def resize_cpu(lib, dims=(1, 1, 4, 4, 8, 8), mode=b"bicubic", align_corners=0, dtype=0, x=None, y=None):
    x = np.zeros(16, np.float32) if x is None else x
    y = np.zeros(64, np.float32) if y is None else y
    return lib.plugserve_dynamic_resize_cpu(*dims, mode, align_corners, None, dtype,
                                            x.ctypes.data if x.size else None, y.ctypes.data if y.size else None)


@pytest.mark.parametrize("kwargs,message", [
    ({"dtype": 3}, "unsupported dtype code 3"),
    ({"dtype": -1}, "unsupported dtype code -1"),
    ({"dims": (1, 1, 4, 4, 0, 8)}, "sizes must be >= 1"),
    ({"dims": (1, 1, -4, 4, 8, 8)}, "sizes must be >= 1"),
    ({"dims": (-1, 1, 4, 4, 8, 8)}, "must be >= 0"),
    ({"dims": (1 << 16, 1 << 16, 4, 4, 8, 8)}, "2^31-1"),
    ({"dims": (1, 1, 4, 4, 1 << 16, 1 << 16)}, "2^31-1"),
    ({"mode": b"lanczos"}, "got 'lanczos'"),
    ({"mode": None}, "mode name is null"),
    ({"mode": b"nearest", "align_corners": 1}, "align_corners"),
])
def test_bad_resize_arguments_return_invalid_argument_and_a_message(lib, kwargs, message):
    assert resize_cpu(lib, **kwargs) == INVALID_ARGUMENT
    assert message in lib.plugserve_last_error().decode()


def test_null_data_pointers_are_rejected_unless_the_tensor_is_empty(lib):
    assert resize_cpu(lib, x=np.zeros(0, np.float32)) == INVALID_ARGUMENT
    assert "null" in lib.plugserve_last_error().decode()
    assert resize_cpu(lib, dims=(0, 3, 4, 4, 8, 8), x=np.zeros(0, np.float32), y=np.zeros(0, np.float32)) == 0


def test_a_successful_call_clears_the_last_error(lib):
    resize_cpu(lib, dtype=9)
    assert lib.plugserve_last_error() != b""
    assert resize_cpu(lib) == 0
    assert lib.plugserve_last_error() == b""


def msda_cpu(lib, sizes=(1, 16, 1, 2, 1, 3, 1), dtype=0, index_type=1, shapes=(4, 4), starts=(0,), sampling_dtype=None):
    n, s, m, d, levels, lq, p = sizes
    index = np.int32 if index_type == 0 else np.int64
    # Sizes the library must refuse get token buffers: a call that read them would overrun.
    def buffer(count, fill):
        return np.full(min(max(count, 1), 1 << 16), fill, np.float32)

    value, out = buffer(n * s * m * d, 0.0), buffer(n * lq * m * d, 0.0)
    loc, weights = buffer(n * lq * m * levels * p * 2, 0.5), buffer(n * lq * m * levels * p, 1.0)
    shapes_a, starts_a = np.array(shapes, index), np.array(starts, index)
    sampling = dtype if sampling_dtype is None else sampling_dtype
    return lib.plugserve_ms_deform_attn_cpu(*sizes, dtype, sampling, index_type, value.ctypes.data, shapes_a.ctypes.data,
                                            starts_a.ctypes.data, loc.ctypes.data, weights.ctypes.data,
                                            out.ctypes.data)


@pytest.mark.parametrize("kwargs,message", [
    ({"dtype": 5}, "unsupported dtype code 5"),
    ({"index_type": 2}, "unsupported index type code 2"),
    ({"sampling_dtype": 5}, "MSDeformAttn (sampling_dtype): unsupported dtype code 5"),
    ({"dtype": 1, "sampling_dtype": 2}, "must be value's dtype (float16) or float32, got bfloat16; cast them to float32"),
    ({"dtype": 0, "sampling_dtype": 1}, "must be value's dtype (float32) or float32, got float16"),
    ({"sizes": (1, 16, 1, 0, 1, 3, 1)}, "head dim must be >= 1, got 0"),
    ({"sizes": (1, 16, 1, 2, 9, 3, 1), "shapes": [(1, 1)] * 9, "starts": [0] * 9}, "levels must be in [1, 8]"),
    ({"sizes": (1, 16, 1, 2, 1, 3, 0)}, "points must be >= 1, got 0"),
    ({"sizes": (1, 16, 0, 2, 1, 3, 1)}, "heads must be >= 1"),
    ({"sizes": (1, -16, 1, 2, 1, 3, 1)}, "must be >= 0"),
    ({"sizes": (1 << 12, 1 << 12, 1 << 8, 2, 1, 3, 1)}, "2^31-1"),
    ({"sizes": (1, 16, 1, 2, 1, 3, 1), "shapes": (4, 5)}, "does not fit in value's 16 rows"),
    ({"sizes": (1, 16, 1, 2, 1, 3, 1), "starts": (1,)}, "does not fit"),
    ({"sizes": (1, 16, 1, 2, 1, 3, 1), "index_type": 0, "shapes": (-4, -4)}, "does not fit"),
])
def test_bad_msda_arguments_return_invalid_argument_and_a_message(lib, kwargs, message):
    assert msda_cpu(lib, **kwargs) == INVALID_ARGUMENT
    assert message in lib.plugserve_last_error().decode()


def test_a_consistent_msda_call_succeeds(lib):
    assert msda_cpu(lib) == 0


def test_float32_sampling_tensors_beside_a_half_value_are_accepted(lib):
    # The buffers are float32-sized, more than a float16 value needs.
    assert msda_cpu(lib, dtype=1, sampling_dtype=0) == 0, lib.plugserve_last_error()


def test_the_python_wrapper_raises_plugin_error_with_the_library_message():
    with pytest.raises(native.PluginError, match="sizes must be >= 1") as err:
        native.dynamic_resize_numpy(np.zeros((1, 1, 4, 4), np.float32), 0, 4)
    assert err.value.code == INVALID_ARGUMENT


def test_an_unsupported_numpy_dtype_is_named_before_reaching_the_library():
    with pytest.raises(ValueError, match="float64"):
        native.dynamic_resize_numpy(np.zeros((1, 1, 4, 4)), 8, 8)


def test_the_library_path_can_be_overridden_by_the_environment(monkeypatch, tmp_path):
    missing = tmp_path / "libplugserve.so"
    monkeypatch.setenv(native.ENV_VAR, str(missing))
    assert native.library_path() == missing


def test_a_missing_library_is_reported_as_unavailable(monkeypatch, tmp_path):
    monkeypatch.setenv(native.ENV_VAR, str(tmp_path / "nowhere.so"))
    native.load.cache_clear()
    try:
        assert not native.available()
        with pytest.raises(FileNotFoundError, match="nowhere.so"):
            native.load()
    finally:
        monkeypatch.delenv(native.ENV_VAR)
        native.load.cache_clear()


def test_importing_the_loader_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, plugserve.native; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == \
        "False"


def test_ctypes_signatures_take_64_bit_sizes(lib):
    assert lib.plugserve_dynamic_resize_cpu.argtypes[0] is ctypes.c_int64
