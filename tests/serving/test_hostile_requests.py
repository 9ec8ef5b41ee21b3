"""Requests a hostile-but-fair client may send: none kills or wedges an instance for good, none costs
more than the model's budget, and each is refused with an error that names the input.

Raw requests are built by hand (HTTP binary with Inference-Header-Content-Length, HTTP JSON, a gRPC
ModelInferRequest through the service stub): tritonclient refuses to send most of them.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import time

import grpc
import numpy as np
import pytest
import yaml
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from plugserve import build
from plugserve.client import Client
from plugserve.server import TritonServer
from plugserve.watchdog import SHM, stubs

pytestmark = pytest.mark.triton

GOOD = {"image": np.ones((1, 3, 8, 8), np.float32), "size": np.array([[16, 16]], np.int64)}
# Triton 2.51's byte size of this FP32 shape wraps around 2^64 to exactly the 49,152 bytes sent
# (HTTP binary, gRPC); its element count wraps to 49,152 for [1, 3, 16384, 2^50 + 1] (HTTP JSON).
POISON_DIMS, POISON_BYTES = [1, 3, 4096, 2**50 + 1], 49_152
POISON_JSON_DIMS, POISON_JSON_COUNT = [1, 3, 16384, 2**50 + 1], 49_152
RECOVERY_S = 10


def http_binary(url: str, model: str, image_dims, image: bytes, size=(16, 16)) -> tuple[int, str]:
    header = json.dumps({"inputs": [
        {"name": "image", "shape": list(image_dims), "datatype": "FP32", "parameters": {"binary_data_size": len(image)}},
        {"name": "size", "shape": [1, 2], "datatype": "INT64", "parameters": {"binary_data_size": 16}}]}).encode()
    body = header + image + np.array([size], np.int64).tobytes()
    return _post(url, model, body, {"Inference-Header-Content-Length": str(len(header)),
                                    "Content-Type": "application/octet-stream"})


def http_json(url: str, model: str, image_dims, image_values, size=(16, 16)) -> tuple[int, str]:
    body = {"inputs": [{"name": "image", "shape": list(image_dims), "datatype": "FP32", "data": image_values},
                       {"name": "size", "shape": [1, 2], "datatype": "INT64", "data": list(size)}]}
    return _post(url, model, json.dumps(body).encode(), {"Content-Type": "application/json"})


def _post(url: str, model: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    host, port = url.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request("POST", f"/v2/models/{model}/infer", body, headers)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def grpc_raw(url: str, model: str, image_dims, image: bytes, extra_buffers: int = 0) -> tuple[str, str]:
    with grpc.insecure_channel(url) as channel:
        request = service_pb2.ModelInferRequest(model_name=model)
        for name, datatype, dims in (("image", "FP32", image_dims), ("size", "INT64", [1, 2])):
            tensor = request.inputs.add()
            tensor.name, tensor.datatype = name, datatype
            tensor.shape.extend(dims)
        request.raw_input_contents.extend([image, np.array([[16, 16]], np.int64).tobytes(),
                                           *[b"\0" * 8] * extra_buffers])
        try:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
        except grpc.RpcError as error:
            return error.code().name, error.details()
        return "OK", ""


def wait_until_every_request_succeeds(server, within_s: float = RECOVERY_S) -> float:
    """Seconds until four requests in a row succeed; fails the test past `within_s`."""
    started = time.monotonic()
    client = Client(server.http_url)
    streak = 0
    while streak < 4:
        assert time.monotonic() - started < within_s, f"not recovered after {within_s} s: {server.said}"
        try:
            client.infer("tiny", GOOD)
            streak += 1
        except InferenceServerException:
            streak = 0
            time.sleep(0.1)
    return time.monotonic() - started


@pytest.mark.parametrize("protocol", ["http-binary", "http-json", "grpc"])
def test_a_request_whose_byte_size_wraps_around_is_refused_and_the_instance_serves_again(tiny_server, protocol):
    if protocol == "http-binary":
        status, message = http_binary(tiny_server.http_url, "tiny", POISON_DIMS, b"\0" * POISON_BYTES)
        assert status != 200, message
    elif protocol == "http-json":
        status, message = http_json(tiny_server.http_url, "tiny", POISON_JSON_DIMS, [0.0] * POISON_JSON_COUNT)
        assert status != 200, message
    else:
        code, message = grpc_raw(tiny_server.grpc_url, "tiny", POISON_DIMS, b"\0" * POISON_BYTES)
        assert code != "OK", message
    wait_until_every_request_succeeds(tiny_server)


def test_an_instance_killed_with_sigkill_is_reloaded_and_its_shared_memory_removed(tiny_server):
    (victim,) = stubs(tiny_server.process.pid).values()
    assert (SHM / victim.region).exists()
    os.kill(victim.pid, signal.SIGKILL)
    assert wait_until_every_request_succeeds(tiny_server) < RECOVERY_S
    assert not (SHM / victim.region).exists()
    assert any("tiny_0_0" in line and "died" in line for line in tiny_server.said), tiny_server.said
    assert any("reload done" in line for line in tiny_server.said), tiny_server.said


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_nan_or_infinite_pixel_is_refused_naming_the_input(tiny_server, protocol):
    url = tiny_server.http_url if protocol == "http" else tiny_server.grpc_url
    for bad in (np.nan, np.inf):
        image = GOOD["image"].copy()
        image[0, 1, 2, 3] = bad
        with pytest.raises(InferenceServerException) as error:
            Client(url, protocol).infer("tiny", {**GOOD, "image": image})
        assert "input 'image' contains NaN or infinite values" in error.value.message()
        if protocol == "http":
            assert error.value.status() == "400"
    assert Client(url, protocol).infer("tiny", GOOD)["upscaled"].shape == (1, 3, 16, 16)


def test_an_output_size_beyond_the_budget_is_refused_before_any_work(tiny_models_yaml, tmp_path):
    tree = yaml.safe_load(tiny_models_yaml.read_text())
    tree["models"]["tiny"]["budget"] = {"request_elements": 3 * 64 * 64}
    tiny_models_yaml.write_text(yaml.safe_dump(tree))
    build.build(tiny_models_yaml, tmp_path / "repo", log=lambda _: None)
    with TritonServer(tmp_path / "repo") as server:
        for protocol, url in (("http", server.http_url), ("grpc", server.grpc_url)):
            with pytest.raises(InferenceServerException) as error:
                Client(url, protocol).infer("tiny", {**GOOD, "size": np.array([[128, 128]])})
            assert "needs 49152 elements, more than the model's budget of 12288 per request" in error.value.message()
            assert Client(url, protocol).infer("tiny", {**GOOD, "size": np.array([[64, 64]])})["upscaled"].shape == (
                1, 3, 64, 64)
