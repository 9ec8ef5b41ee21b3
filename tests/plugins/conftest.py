"""plugins/check_glue.sh run once per TensorRT header set and session: the glue test reads its
output, the harness tests use the harness it links."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# TensorRT's headers may not be committed: a checkout's .tensorrt/<version>/include, else a machine-wide
# folder of them (a fresh clone, e.g. CI's, finds the ones extracted there once), one set per version.
HEADER_ROOTS = [ROOT / ".tensorrt",
                Path(os.environ.get("PLUGSERVE_TENSORRT_HEADERS", Path.home() / ".cache" / "plugserve" / "tensorrt-headers"))]
HEADER_SETS = next((sets for root in HEADER_ROOTS if (sets := sorted(p.parent for p in root.glob("*/include/NvInfer.h")))),
                   [])
_runs: dict[Path, subprocess.CompletedProcess] = {}


def skip_reason() -> str | None:
    if not HEADER_SETS:
        return (f"no TensorRT headers under {' or '.join(f'{r}/*/include' for r in HEADER_ROOTS)} "
                "(see plugins/check_glue.sh)")
    if shutil.which("g++") is None:
        return "g++ not found"
    if not list((ROOT / "plugins" / "build").glob("*/kernel.cu.o")):
        return "kernels not built: run `make plugins` first"
    return None


def pytest_generate_tests(metafunc):
    """`include_dir`: each TensorRT header set (none: the test is skipped with the reason)."""
    if "include_dir" in metafunc.fixturenames:
        metafunc.parametrize("include_dir", HEADER_SETS or [pytest.param(None, marks=pytest.mark.skip(
            reason=skip_reason()))], ids=[p.parent.name for p in HEADER_SETS] or ["none"])


@pytest.fixture(scope="session")
def glue_check():
    """`glue_check(include_dir)`: the finished check_glue.sh run for that header set."""

    def run(include_dir: Path) -> subprocess.CompletedProcess:
        if reason := skip_reason():
            pytest.skip(reason)
        if include_dir not in _runs:
            _runs[include_dir] = subprocess.run([str(ROOT / "plugins" / "check_glue.sh"), str(include_dir)],
                                                capture_output=True, text=True, timeout=900)
        return _runs[include_dir]

    return run
