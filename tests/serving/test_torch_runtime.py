"""The torch runner inside a real tritonserver, on CPU instances: answers, errors, and that the model stays loaded."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from tritonclient.utils import InferenceServerException

from plugserve import config, models
from plugserve.build import build_model
from plugserve.client import Client
from plugserve.server import TritonServer

pytestmark = [pytest.mark.triton, pytest.mark.slow]

MODEL = "super_resolution"
ENTRY = {
    "source": {"model": "super_resolution", "checkpoint": "srcnn.pt"},
    # Any channel count passes Triton and the profile; the program was exported for 3: a request with
    # 4 makes PyTorch itself fail inside the runner.
    "inputs": [{"name": "image", "dtype": "FP32", "dims": [-1, -1, -1]},
               {"name": "size", "dtype": "INT64", "dims": [2], "shape_tensor": True}],
    "outputs": [{"name": "upscaled", "dtype": "FP32", "dims": [3, -1, -1]}],
    "profiles": [{"image": {"min": [1, 1, 8, 8], "opt": [2, 3, 16, 16], "max": [4, 4, 64, 64]},
                  "size": {"min": [8, 8], "opt": [32, 32], "max": [128, 128]}}],
    "precisions": ["fp32"],
    "runtime": "torch",
    "max_batch_size": 4,
    "dynamic_batching": {"max_queue_delay_microseconds": 20000},
    "instance_groups": [{"count": 1, "kind": "KIND_CPU"}],
}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(server, local model): a repository with one torch-runtime model, served on CPU instances."""
    directory = tmp_path_factory.mktemp("torch-serving")
    torch.manual_seed(0)
    model = models.module(MODEL).build().eval()
    torch.save(model.state_dict(), directory / "srcnn.pt")
    spec = config.parse({"models": {MODEL: ENTRY}}, base_dir=directory)[MODEL]
    build_model(spec, directory / "repository")
    with TritonServer(directory / "repository") as server:
        yield server, model


def local(model, image: np.ndarray, size) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(image), torch.tensor(size)).numpy()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_served_answers_match_the_local_model_over_both_protocols(served, protocol):
    server, model = served
    client = Client(server.http_url if protocol == "http" else server.grpc_url, protocol)
    image = np.random.default_rng(0).random((2, 3, 16, 20), dtype=np.float32)
    out = client.infer(MODEL, {"image": image, "size": np.array([[40, 52]] * 2)})["upscaled"]
    assert out.shape == (2, 3, 40, 52)
    np.testing.assert_allclose(out, local(model, image, [40, 52]), atol=1e-5, rtol=0)


def test_concurrent_requests_for_different_sizes_each_get_their_own_answer(served):
    """The dynamic batcher hands them to one execute(); the runner must not run them as one batch."""
    server, model = served
    rng = np.random.default_rng(1)
    cases = [(rng.random((1, 3, 12, 12), dtype=np.float32), size) for size in ([24, 24], [36, 20], [24, 24], [9, 50])]
    answers: dict[int, np.ndarray] = {}

    def send(index: int) -> None:
        image, size = cases[index]
        answers[index] = Client(server.http_url, "http").infer(MODEL, {"image": image, "size": np.array([size])})["upscaled"]

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(cases))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, (image, size) in enumerate(cases):
        np.testing.assert_allclose(answers[index], local(model, image, size), atol=1e-5, rtol=0)


@pytest.mark.parametrize("inputs,status,message", [
    # The client's fault: INVALID_ARGUMENT.
    ({"image": np.zeros((1, 3, 16, 16), np.float32), "size": np.array([[400, 40]])}, "INVALID_ARGUMENT",
     "input 'size': requested output size [400, 40] is outside the model's profiles"),
    # Passed every check but failed in PyTorch: INTERNAL.
    ({"image": np.zeros((1, 4, 16, 16), np.float32), "size": np.array([[32, 32]])}, "INTERNAL",
     "PyTorch failed: AssertionError: Guard failed: input 'image'.size()[1] == 3"),
])
def test_a_bad_request_gets_an_error_response_and_the_model_keeps_serving(served, inputs, status, message):
    server, model = served
    client = Client(server.grpc_url, "grpc")
    with pytest.raises(InferenceServerException) as error:
        client.infer(MODEL, inputs)
    assert error.value.status() == f"StatusCode.{status}"
    assert message in str(error.value)
    image = np.full((1, 3, 8, 8), 0.5, np.float32)
    out = client.infer(MODEL, {"image": image, "size": np.array([[16, 16]])})["upscaled"]
    np.testing.assert_allclose(out, local(model, image, [16, 16]), atol=1e-5, rtol=0)
