"""The ONNX Runtime kernels' argument logic, CPU and CUDA paths, checked without ONNX Runtime or a GPU.

tests/plugins/ort_args_check.cpp is linked with the objects `make plugins` built for
libplugserve_ort.so (plugins/ort/args.o and the kernels) and run.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "plugins" / "build"
CUDA_HOME = Path("/usr/local/cuda")

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found")


def test_both_device_paths_check_arguments_alike_and_the_cpu_path_splits_over_a_pool(tmp_path):
    args = BUILD / "ort" / "args.o"
    if not args.is_file():
        pytest.skip("plugins/build/ort/args.o not built (make plugins with ONNX Runtime headers)")
    kernels = sorted(p for p in BUILD.glob("*/*.o") if p.parent.name in ("dynamic_resize", "ms_deform_attn"))
    binary = tmp_path / "ort_args_check"
    subprocess.run(["g++", "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{ROOT / 'plugins'}",
                    f"-I{CUDA_HOME / 'include'}", str(ROOT / "tests" / "plugins" / "ort_args_check.cpp"), str(args),
                    *map(str, kernels), f"-L{CUDA_HOME / 'lib64'}", "-lcudart_static", "-ldl", "-lpthread", "-lrt",
                    "-o", str(binary)], check=True, capture_output=True, text=True, timeout=300)
    proc = subprocess.run([str(binary)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ort args check: OK: 0 failed checks" in proc.stdout
