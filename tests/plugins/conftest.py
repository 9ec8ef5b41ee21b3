"""plugins/check_glue.sh run once per TensorRT header set and session: the glue test reads its
output, the harness tests use the harness it links."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEADER_SETS = sorted(p.parent for p in ROOT.glob(".tensorrt/*/include/NvInfer.h"))
_runs: dict[Path, subprocess.CompletedProcess] = {}


def skip_reason() -> str | None:
    if not HEADER_SETS:
        return "no TensorRT headers under .tensorrt/*/include (see plugins/check_glue.sh)"
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
