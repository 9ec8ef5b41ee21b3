"""One model's instances on every GPU of the host: outputs match PyTorch on each GPU, and each
instance's memory stays on the GPU Triton gave it (run on a machine with two or more GPUs).

Both headline models as bench/torch_h100.yaml serves them, one instance per GPU through models.yaml's
`gpus: [0, 1, ...]`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")

from plugserve import config, models, native  # noqa: E402
from plugserve.build import build_model  # noqa: E402
from plugserve.client import Client  # noqa: E402
from plugserve.server import TritonServer  # noqa: E402

GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.triton,
    pytest.mark.skipif(GPUS < 2, reason=f"needs 2 or more CUDA GPUs, {GPUS} visible"),
    pytest.mark.skipif(not native.available(), reason="libplugserve.so not built (make plugins)"),
]

ROOT = Path(__file__).resolve().parents[2]
# The models the README's multi-GPU measurement serves (torch runtime, our kernels, fp16, CUDA
# graphs), here with one instance on each GPU listed explicitly.
BENCH_CONFIG = ROOT / "bench" / "torch_h100.yaml"
SERVED = {"sr": "super_resolution_fp16", "deformable": "deformable_encoder_fp16"}
TOLERANCE = 2e-2  # fp16, against the local model in fp16 on the same GPU
# Concurrent requests per GPU: enough that Triton keeps every instance busy at once.
REQUESTS_PER_GPU = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("multi-gpu")
    entries = yaml.safe_load(BENCH_CONFIG.read_text())["models"]
    groups = [{"count": 1, "kind": "KIND_GPU", "gpus": list(range(GPUS))}]
    tree = {"models": {name: {**entries[source], "instance_groups": groups} for name, source in SERVED.items()}}
    for spec in config.parse(tree, base_dir=BENCH_CONFIG.parent).values():
        build_model(spec, directory / "repository")
    with TritonServer(directory / "repository", startup_timeout_s=300) as running:
        yield running


def inputs_of(name):
    image = np.random.default_rng(0).random((2, 3, 64, 80) if name == "sr" else (2, 3, 256, 320), dtype=np.float32)
    return {"image": image, "size": np.array([[256, 320]] * 2)} if name == "sr" else {"image": image}


def local(name, inputs, device):
    model = models.load("super_resolution" if name == "sr" else "deformable_encoder").to(device, torch.float16)
    args = [torch.from_numpy(inputs["image"]).to(device, torch.float16)]
    if name == "sr":
        args.append(torch.from_numpy(inputs["size"][0]))
    with torch.no_grad():
        return model(*args).float().cpu().numpy()


@pytest.mark.parametrize("name", list(SERVED))
def test_every_gpus_instance_answers_as_pytorch_does_on_that_gpu(server, name):
    inputs = inputs_of(name)
    count = REQUESTS_PER_GPU * GPUS
    with ThreadPoolExecutor(count) as pool:
        # Two waves: the first captures each instance's CUDA graph, the second replays it.
        for _ in range(2):
            served = list(pool.map(lambda _: Client(server.grpc_url, "grpc").infer(name, inputs), range(count)))
    for device in range(GPUS):
        expected = local(name, inputs, torch.device("cuda", device))
        for answer in served:
            (out,) = answer.values()
            assert np.abs(out - expected).max() <= TOLERANCE, f"{name} against PyTorch on cuda:{device}"


def _descendants(pid: int) -> set[int]:
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name is in parentheses and may hold spaces: fields after the last ')'.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def test_each_instance_holds_memory_on_its_own_gpu_only(server):
    pynvml = pytest.importorskip("pynvml", reason="needs nvidia-ml-py for the per-process GPU memory")
    for name in SERVED:  # every instance has run (and allocated) by now, whatever the test order
        Client(server.grpc_url, "grpc").infer(name, inputs_of(name))
    assert server.process is not None
    stubs = _descendants(server.process.pid)  # the python-backend stubs, one per model instance
    pynvml.nvmlInit()
    try:
        on_gpu = {}
        for device in range(GPUS):
            # NVML counts GPUs its own way; the CUDA device's UUID names the same one.
            handle = pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{torch.cuda.get_device_properties(device).uuid}")
            on_gpu[device] = {p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)} & stubs
    finally:
        pynvml.nvmlShutdown()
    if not any(on_gpu.values()):
        pytest.skip(f"NVML reports no process of tritonserver's (PID namespace of another container? "
                    f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')})")
    for device, pids in on_gpu.items():
        assert len(pids) == len(SERVED), f"cuda:{device} holds {len(pids)} instances, expected one per model"
        for other, others in on_gpu.items():
            assert other == device or not pids & others, f"an instance on cuda:{device} also holds cuda:{other}"
