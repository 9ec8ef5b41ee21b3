"""Both headline models built as TensorRT engines, served by tritonserver, checked over HTTP and gRPC
against the PyTorch models they were exported from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from plugserve import build, models, repository
from plugserve.client import Client
from plugserve.server import TritonServer
from plugserve.trt import environment as trt_environment
from plugserve.trt import provenance as trt_provenance

pytestmark = [pytest.mark.tensorrt, pytest.mark.triton, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    repo = tmp_path_factory.mktemp("tensorrt") / "model_repository"
    results = build.build(ROOT / "models.yaml", repo, runtime="tensorrt")
    for result in results:
        section = result.manifest[trt_provenance.MANIFEST_KEY]
        assert section["tensorrt_version"] and section["gpu"]["compute_capability"]
        assert (result.path / repository.PLAN_FILE).is_file()
    assert trt_provenance.stale_engines(repo, trt_environment.detect_environment(_library())) == []
    with TritonServer(repo) as server:
        yield server


def _library() -> Path | None:
    from plugserve import native

    return native.library_path()


def request(client: Client, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # Triton takes a batched model's shape tensors without the batch dimension (it prepends the
    # batch size itself), so `size` goes as [2] where the python-backend runtimes take [1, 2].
    config = client.config(model)
    shape_tensors = {i["name"] for i in config["input"] if i.get("is_shape_tensor")}
    return client.infer(model, {k: v.reshape(-1) if k in shape_tensors else v for k, v in inputs.items()})


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_super_resolution_engine_serves_what_the_pytorch_model_computes(served, protocol):
    model = models.load("super_resolution").cuda()
    client = Client(served.http_url if protocol == "http" else served.grpc_url, protocol)
    for batch, (height, width), scale in [(1, (32, 48), 2.0), (3, (64, 40), 3.0)]:
        image, size = models.example_inputs(
            "super_resolution", batch=batch, height=height, width=width, scale=scale
        )
        with torch.no_grad():
            expected = model(image.cuda(), size).cpu().numpy()
        got = request(client, "super_resolution", {"image": image.numpy(), "size": size.numpy()[None]})[
            "upscaled"
        ]
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_deformable_encoder_engine_serves_what_the_pytorch_model_computes(served, protocol):
    model = models.load("deformable_encoder").cuda()
    client = Client(served.http_url if protocol == "http" else served.grpc_url, protocol)
    for batch, height, width in [(1, 128, 160), (2, 200, 96)]:
        (image,) = models.example_inputs("deformable_encoder", batch=batch, height=height, width=width)
        with torch.no_grad():
            expected = model(image.cuda()).cpu().numpy()
        got = request(client, "deformable_encoder", {"image": image.numpy()})["memory"]
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)


def test_served_configs_are_tensorrt_plans_with_the_size_as_a_shape_tensor(served):
    config = repository.to_dict(
        repository.read_config(served.repository / "super_resolution" / "config.pbtxt")
    )
    assert config["platform"] == "tensorrt_plan"
    assert [i.get("is_shape_tensor", False) for i in config["input"]] == [False, True]
