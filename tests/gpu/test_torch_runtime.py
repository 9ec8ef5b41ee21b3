"""The torch runtime served by tritonserver on the GPU, against the local PyTorch model (run on the device).

Both headline models are built with KIND_GPU instances and CUDA graphs, once with our kernels and
once with the pure-PyTorch operators, and asked over HTTP and gRPC.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from plugserve import config, models, native, ops  # noqa: E402
from plugserve.build import build_model  # noqa: E402
from plugserve.client import Client  # noqa: E402
from plugserve.server import TritonServer  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.triton,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(not native.available(), reason="libplugserve.so not built (make plugins)"),
]

SR = {
    "source": {"model": "super_resolution"},
    "inputs": [{"name": "image", "dtype": "FP32", "dims": [3, -1, -1]},
               {"name": "size", "dtype": "INT64", "dims": [2], "shape_tensor": True}],
    "outputs": [{"name": "upscaled", "dtype": "FP32", "dims": [3, -1, -1]}],
    "profiles": [{"image": {"min": [1, 3, 8, 8], "opt": [2, 3, 64, 64], "max": [4, 3, 256, 256]},
                  "size": {"min": [8, 8], "opt": [256, 256], "max": [1024, 1024]}}],
    "runtime": "torch",
    "max_batch_size": 4,
    "dynamic_batching": {"max_queue_delay_microseconds": 1000},
    "instance_groups": [{"count": 1, "kind": "KIND_GPU"}],
}
DEFORMABLE = {
    "source": {"model": "deformable_encoder"},
    "inputs": [{"name": "image", "dtype": "FP32", "dims": [3, -1, -1]}],
    "outputs": [{"name": "memory", "dtype": "FP32", "dims": [-1, 256]}],
    "profiles": [{"image": {"min": [1, 3, 65, 65], "opt": [1, 3, 256, 320], "max": [4, 3, 512, 512]}}],
    "runtime": "torch",
    "max_batch_size": 4,
    "dynamic_batching": {"max_queue_delay_microseconds": 1000},
    "instance_groups": [{"count": 1, "kind": "KIND_GPU"}],
}
# name -> (entry, precision, ops)
SERVED = {
    "sr_fp16": (SR, "fp16", "plugserve"),
    "sr_fp16_pytorch": (SR, "fp16", "reference"),
    "deformable_fp16": (DEFORMABLE, "fp16", "plugserve"),
    "deformable_fp32": (DEFORMABLE, "fp32", "plugserve"),
    "deformable_fp16_pytorch": (DEFORMABLE, "fp16", "reference"),
}
# Max abs difference from the local model run on the GPU in the same precision and ops.
TOLERANCE = {"fp16": 2e-2, "fp32": 1e-3}


def entry(base, precision, ops_name):
    # The reference MSDA reads level shapes on the host, which a CUDA graph cannot capture.
    graphs = "none" if ops_name == "reference" and base is DEFORMABLE else "cuda_graphs"
    return {**base, "precisions": [precision], "torch": {"ops": ops_name, "acceleration": graphs}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("torch-gpu")
    tree = {"models": {name: entry(*variant) for name, variant in SERVED.items()}}
    for spec in config.parse(tree, base_dir=directory).values():
        build_model(spec, directory / "repository")
    with TritonServer(directory / "repository", startup_timeout_s=300) as running:
        yield running


def local(name, inputs):
    """The model of `name` run here on the GPU, in its precision, with its ops."""
    base, precision, ops_name = SERVED[name]
    dtype = {"fp16": torch.float16, "fp32": torch.float32}[precision]
    model = models.load(base["source"]["model"]).to("cuda", dtype)
    args = [torch.from_numpy(a).cuda().to(dtype) if a.dtype == np.float32 else torch.from_numpy(a[0]) for a in inputs]
    ops.set_implementation(ops_name)
    try:
        with torch.no_grad():
            return model(*args).float().cpu().numpy()
    finally:
        ops.set_implementation("plugserve")


def ask(server, protocol, name, inputs):
    client = Client(server.http_url if protocol == "http" else server.grpc_url, protocol)
    names = [t["name"] for t in SERVED[name][0]["inputs"]]
    (out,) = client.infer(name, dict(zip(names, inputs, strict=True))).values()
    return out


def sr_inputs(batch=2, seed=0):
    image = np.random.default_rng(seed).random((batch, 3, 64, 80), dtype=np.float32)
    return [image, np.array([[256, 320]] * batch)]


def deformable_inputs(batch=2, seed=0):
    return [np.random.default_rng(seed).random((batch, 3, 256, 320), dtype=np.float32)]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("name", list(SERVED))
def test_served_on_the_gpu_matches_the_local_model(server, protocol, name):
    inputs = sr_inputs() if name.startswith("sr") else deformable_inputs()
    # Twice: the first call captures the CUDA graph, the second replays it.
    for _ in range(2):
        served = ask(server, protocol, name, inputs)
    expected = local(name, inputs)
    assert served.shape == expected.shape
    assert np.abs(served - expected).max() <= TOLERANCE[SERVED[name][1]]


def test_our_kernels_and_the_pytorch_operators_serve_the_same_answers(server):
    for kernels, reference, inputs in (("sr_fp16", "sr_fp16_pytorch", sr_inputs(3, 1)),
                                       ("deformable_fp16", "deformable_fp16_pytorch", deformable_inputs(1, 1))):
        ours, theirs = (ask(server, "grpc", name, inputs) for name in (kernels, reference))
        assert np.abs(ours - theirs).max() <= 5e-2, kernels


def test_a_bad_request_on_the_gpu_gets_an_error_and_the_model_keeps_serving(server):
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match="input 'image': shape \\[1, 3, 600, 64\\] is outside"):
        ask(server, "grpc", "deformable_fp16", [np.zeros((1, 3, 600, 64), np.float32)])
    inputs = deformable_inputs(1, 2)
    served = ask(server, "grpc", "deformable_fp16", inputs)
    assert np.abs(served - local("deformable_fp16", inputs)).max() <= TOLERANCE["fp16"]
