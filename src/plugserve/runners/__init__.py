"""Code that runs inside tritonserver: generic `model.py` files that the lowerings copy into version directories.

A runner is configured entirely by its model's config.pbtxt (the `plugserve_spec` parameter written
from models.yaml), so one file serves every model of a runtime. Each runner is copied with the
helper modules it imports relatively (`HELPERS`): contract.py (the request contract, stdlib + numpy)
and launcher_paths.py. The onnxruntime runner needs nothing else, so its versions are servable by
any tritonserver whose Python has numpy and onnxruntime; the torch runner also needs plugserve, for
the ops its program calls (torch_program.py).

contract.py, launcher_paths.py and this file are the bottom layer of plugserve: they import nothing of
plugserve. torch_program.py and torch_runner.py sit above the ops (see plugserve/__init__.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

RUNNERS_DIR = Path(__file__).parent
RUNNER_FILE = "model.py"  # the python backend loads this file of a version directory
HELPERS = ("contract.py", "launcher_paths.py")


def runner_path(runtime: str) -> Path:
    """The runner file for a runtime, e.g. runners/onnxruntime_runner.py."""
    return RUNNERS_DIR / f"{runtime}_runner.py"


def install(runtime: str, version_dir: Path) -> None:
    """Copy the runtime's runner into a version directory as model.py, with the helpers it imports."""
    shutil.copyfile(runner_path(runtime), version_dir / RUNNER_FILE)
    for helper in HELPERS:
        shutil.copyfile(RUNNERS_DIR / helper, version_dir / helper)
