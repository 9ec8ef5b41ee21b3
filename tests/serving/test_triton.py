"""Both headline models served by a real tritonserver answer like PyTorch, over HTTP and gRPC,
reject bad requests with errors that name the problem, and keep serving."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from plugserve.client import TOLERANCES, Client, compare, reference_outputs

pytestmark = pytest.mark.triton


def sr_inputs(batch: int, height: int, width: int, out_h: int, out_w: int, seed: int = 0) -> dict[str, np.ndarray]:
    image = np.random.default_rng(seed).random((batch, 3, height, width), dtype=np.float32)
    return {"image": image, "size": np.tile(np.array([[out_h, out_w]], dtype=np.int64), (batch, 1))}


def encoder_inputs(batch: int, height: int, width: int, seed: int = 0) -> dict[str, np.ndarray]:
    return {"image": np.random.default_rng(seed).random((batch, 3, height, width), dtype=np.float32)}


def assert_matches_pytorch(client, specs, model, inputs):
    assert_answer_matches_pytorch(specs, model, inputs, client.infer(model, inputs))


def assert_answer_matches_pytorch(specs, model, inputs, outputs):
    errors = compare(outputs, reference_outputs(specs[model], inputs))
    assert max(errors.values()) <= TOLERANCES[model], errors


@pytest.mark.parametrize(
    "shape",
    [(1, 16, 16, 32, 32), (1, 24, 40, 61, 97), (2, 20, 12, 40, 24), (1, 8, 8, 1024, 8)],
    ids=["x2", "non-integer-scale", "batch-2", "extreme-aspect"],
)
def test_super_resolution_answers_like_pytorch(client, specs, shape):
    assert_matches_pytorch(client, specs, "super_resolution", sr_inputs(*shape))


@pytest.mark.parametrize("shape", [(1, 64, 64), (1, 72, 100), (2, 64, 96)], ids=["square", "odd-levels", "batch-2"])
def test_deformable_encoder_answers_like_pytorch(client, specs, shape):
    assert_matches_pytorch(client, specs, "deformable_encoder", encoder_inputs(*shape))


def test_a_prepared_request_is_sent_by_each_call(client, specs):
    def successes():
        stats = client.statistics("super_resolution")["model_stats"][0]["inference_stats"]
        return int(stats.get("success", {}).get("count", 0))

    inputs = sr_inputs(1, 16, 16, 32, 32, seed=3)
    send = client.request("super_resolution", inputs)
    before = successes()
    first, second = send(), send()
    # Triton counts a success after the response has gone out: give the counter a moment to settle.
    deadline = time.monotonic() + 5
    while successes() - before < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert successes() - before == 2
    np.testing.assert_array_equal(first["upscaled"], second["upscaled"])
    assert_answer_matches_pytorch(specs, "super_resolution", inputs, first)


GOOD = sr_inputs(1, 16, 16, 32, 32)
BAD_REQUESTS = {
    "output size zero": ({**GOOD, "size": np.array([[0, 32]], dtype=np.int64)},
                         "input 'size': requested output size must be positive, got [0, 32]"),
    "negative output size": ({**GOOD, "size": np.array([[32, -5]], dtype=np.int64)},
                             "input 'size': requested output size must be positive"),
    "absurd output size": ({**GOOD, "size": np.array([[10**9, 10**9]], dtype=np.int64)},
                           "input 'size': requested output size [1000000000, 1000000000] is outside the model's profiles"),
    "image below the profile": (sr_inputs(1, 4, 4, 32, 32), "input 'image': shape [1, 3, 4, 4] is outside the model's profiles"),
    "different sizes in one request": ({"image": sr_inputs(2, 16, 16, 32, 32)["image"],
                                        "size": np.array([[32, 32], [64, 64]], dtype=np.int64)},
                                       "input 'size': all rows must be equal"),
    "wrong image dtype": ({**GOOD, "image": GOOD["image"].astype(np.float64)}, "input 'image' data-type is 'FP64'"),
    "wrong size dtype": ({**GOOD, "size": GOOD["size"].astype(np.int32)}, "input 'size' data-type is 'INT32'"),
    "wrong image rank": ({**GOOD, "image": GOOD["image"][:, :, 0]}, "unexpected shape for input 'image'"),
    "empty image": ({**GOOD, "image": np.zeros((1, 3, 0, 16), np.float32)}, "input 'image' is empty"),
    "missing input": ({"image": GOOD["image"]}, "missing required input(s) ['size']"),
    "empty body": ({}, "expected 2 inputs but got 0 inputs"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_bad_request_gets_an_error_naming_the_problem_and_the_server_keeps_serving(client, case):
    inputs, message = BAD_REQUESTS[case]
    with pytest.raises(InferenceServerException) as error:
        client.infer("super_resolution", inputs, outputs=["upscaled"])
    assert message in error.value.message()
    assert client.infer("super_resolution", GOOD)["upscaled"].shape == (1, 3, 32, 32)


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(server, specs):
    """Requests that find every instance busy run as one batch; a bad request in the crowd fails alone.

    Requests go straight to an idle instance (models.yaml has no queue delay), so these are large
    enough (~0.3 s each on one core) that the crowd arrives while the first two run.
    """
    good = [sr_inputs(1, 128, 128, 512, 512, seed=s) for s in range(6)] + [sr_inputs(1, 128, 128, 384, 640, seed=9)]
    bad = [BAD_REQUESTS["output size zero"][0], BAD_REQUESTS["absurd output size"][0]]
    model = "super_resolution"

    def send(inputs):
        with Client(server.http_url, "http") as own:  # tritonclient's HTTP client is not thread-safe
            try:
                return own.infer(model, inputs)
            except InferenceServerException as error:
                return error

    with Client(server.grpc_url, "grpc") as stats:
        before = int(stats.statistics(model)["model_stats"][0].get("execution_count", 0))
        with ThreadPoolExecutor(len(good) + len(bad)) as pool:
            answers = list(pool.map(send, good + bad))
        executions = int(stats.statistics(model)["model_stats"][0].get("execution_count", 0)) - before
    for inputs, answer in zip(good, answers, strict=False):
        errors = compare(answer, reference_outputs(specs[model], inputs))
        assert max(errors.values()) <= TOLERANCES[model]
    assert all(isinstance(a, InferenceServerException) for a in answers[len(good):])
    assert executions < len(good) + len(bad)


def test_the_served_config_carries_batching_and_instance_groups_from_models_yaml(client, specs):
    for model, spec in specs.items():
        served = client.config(model)
        assert int(served["max_batch_size"]) == spec.max_batch_size
        batching = served["dynamic_batching"]  # protobuf's JSON leaves out empty and zero fields
        # Triton fills in max_batch_size where models.yaml names no preferred size.
        assert [int(s) for s in batching["preferred_batch_size"]] == list(
            spec.dynamic_batching.preferred_batch_size or [spec.max_batch_size])
        assert int(batching.get("max_queue_delay_microseconds", 0)) == spec.dynamic_batching.max_queue_delay_microseconds
        assert served["instance_group"][0]["kind"] == "KIND_CPU"
        assert client.ready(model)
