"""Triton python-backend runners: generic `model.py` files that plugserve.build copies into version directories.

A runner is configured entirely by its model's config.pbtxt (the `plugserve_spec` parameter written
from models.yaml), so one file serves every model of a runtime. Runners never import plugserve:
a repository must stay servable by any tritonserver whose Python has the runtime installed.
"""

from __future__ import annotations

from pathlib import Path

RUNNERS_DIR = Path(__file__).parent


def runner_path(runtime: str) -> Path:
    """The runner file for a runtime, e.g. runners/onnxruntime_runner.py."""
    return RUNNERS_DIR / f"{runtime}_runner.py"
