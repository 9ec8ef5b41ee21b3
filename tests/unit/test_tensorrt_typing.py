"""mypy checks every TensorRT call of plugserve.trt and the tensorrt lowering against tensorrt-stubs (what `make lint` runs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("mypy", reason="mypy is in the dev extra: pip install -e '.[dev]'")
pytest.importorskip("tensorrt_stubs", reason="pip install --no-deps 'tensorrt-stubs>=10.13' (see make venv)")


def _mypy(stubs: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "typing_stubs.py"), str(stubs)], check=True)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--no-incremental",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "MYPYPATH": str(stubs)},
    )


def test_tensorrt_module_type_checks_against_the_stubs(tmp_path: Path) -> None:
    package = ROOT / "src" / "plugserve"
    result = _mypy(tmp_path / "typing", *sorted((package / "trt").glob("*.py")), package / "lowering" / "tensorrt.py")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_repaired_stubs_reject_a_wrong_tensorrt_call(tmp_path: Path) -> None:
    # Guards against the stubs silently degrading to Any, which would make the check above vacuous.
    wrong = tmp_path / "wrong.py"
    wrong.write_text(
        "import tensorrt as trt\n"
        "config = trt.Builder(trt.Logger()).create_builder_config()\n"
        "config.builder_optimization_level = 'high'\n"
    )
    result = _mypy(tmp_path / "typing", wrong)
    assert result.returncode == 1 and "builder_optimization_level" not in result.stderr, result.stdout
    assert 'expression has type "str", variable has type "int"' in result.stdout
