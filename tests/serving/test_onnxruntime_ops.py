"""Served with native ops (libplugserve_ort.so registered by the runner), both headline models answer like
PyTorch and like their decomposed builds on the same server, over HTTP and gRPC."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from plugserve import native
from plugserve.client import TOLERANCES, compare, reference_outputs
from plugserve.runners import contract

pytestmark = [pytest.mark.triton, pytest.mark.skipif(
    native.onnxruntime_library() is None,
    reason="libplugserve_ort.so not built (make -C plugins with ONNX Runtime headers in .onnxruntime/include; "
           "a clean clone has none), so every build is decomposed")]

CASES = {
    "super_resolution": [((1, 3, 24, 40), (61, 97)), ((2, 3, 20, 12), (40, 24))],
    "deformable_encoder": [((1, 3, 72, 100), None), ((2, 3, 64, 96), None)],
}


def inputs(shape: tuple[int, ...], size: tuple[int, int] | None) -> dict[str, np.ndarray]:
    feed = {"image": np.random.default_rng(1).random(shape, dtype=np.float32)}
    if size is not None:
        feed["size"] = np.tile(np.array([size], np.int64), (shape[0], 1))
    return feed


@pytest.mark.parametrize("model", list(CASES))
def test_the_served_config_asks_for_native_ops_and_names_the_library_in_model_operations(client, decomposed_twin,
                                                                                           model):
    served = client.config(model)
    options = json.loads(served["parameters"][contract.ONNXRUNTIME_OPTIONS_PARAMETER]["string_value"])
    assert options == {"ops": "native", "library": native.ORT_LIBRARY_NAME}
    [library] = served["model_operations"]["op_library_filename"]
    assert Path(library).is_absolute() and Path(library).is_file() and Path(library).name == native.ORT_LIBRARY_NAME
    twin = json.loads(client.config(decomposed_twin(model))["parameters"][contract.ONNXRUNTIME_OPTIONS_PARAMETER]
                      ["string_value"])
    assert twin == {"ops": "decomposed"}


@pytest.mark.parametrize("model, case", [(m, c) for m, cases in CASES.items() for c in cases],
                         ids=lambda v: "x".join(map(str, v[0])) if isinstance(v, tuple) else v)
def test_native_ops_answer_like_pytorch_and_like_the_decomposed_build(client, specs, decomposed_twin, model, case):
    feed = inputs(*case)
    answer = client.infer(model, feed)
    errors = compare(answer, reference_outputs(specs[model], feed))
    assert max(errors.values()) <= TOLERANCES[model], errors
    against_decomposed = compare(answer, client.infer(decomposed_twin(model), feed))
    assert max(against_decomposed.values()) <= TOLERANCES[model], against_decomposed
