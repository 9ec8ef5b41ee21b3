"""Fixtures shared by the unit tests."""

from __future__ import annotations

import onnx
import pytest


@pytest.fixture(scope="session")
def exported(export_path):
    """`exported(model, **export_options)`: the exported ONNX graph, each variant exported once per session
    (through tests/conftest.py's `export_path`, shared with the serving tests)."""
    graphs: dict[tuple, onnx.ModelProto] = {}

    def get(model: str, **options: str) -> onnx.ModelProto:
        key = (model, *sorted(options.items()))
        if key not in graphs:
            graphs[key] = onnx.load(str(export_path(model, **options)))
        return graphs[key]

    return get
