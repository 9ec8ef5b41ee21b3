"""Shared by the TensorRT tests: why they cannot run here, and a runner for built engines.

They need TensorRT, a CUDA GPU and libplugserve.so built with its TensorRT glue; each test is
skipped with the missing piece as its reason. Run them in the NGC image: `make test-tensorrt`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from plugserve import native
from plugserve.trt import environment as trt_environment
from plugserve.trt import registry as trt_registry


def missing_requirement() -> str | None:
    reason = trt_environment.unavailable_reason()
    if reason is not None:
        return reason
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU visible to torch"
    library = native.library_path()
    if library is None or not library.is_file():
        return "libplugserve.so is not built (make plugins, against TensorRT headers)"
    ours = [c for c in trt_registry.load_plugins(library) if c.namespace == trt_registry.PLUGIN_NAMESPACE]
    if not ours:
        return f"{library} registers no plugserve creators: it was built without TensorRT headers"
    return None


@pytest.fixture(autouse=True, scope="session")
def _tensorrt_ready() -> None:
    reason = missing_requirement()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def plugin_library() -> Path:
    from plugserve import native

    library = native.library_path()
    assert library is not None
    return library


@pytest.fixture(scope="session")
def run_engine():
    """`run_engine(plan, inputs, profile=0) -> outputs`, see `_run_engine`."""
    return _run_engine


def _run_engine(plan: Path, inputs: dict, profile: int = 0) -> dict:
    """Run a serialized engine once on CUDA torch tensors; shape-tensor inputs are read from the host."""
    import tensorrt as trt
    import torch

    torch_dtypes = {
        "FLOAT": torch.float32,
        "HALF": torch.float16,
        "BF16": torch.bfloat16,
        "INT32": torch.int32,
        "INT64": torch.int64,
    }

    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan.read_bytes())
    assert engine is not None, f"TensorRT could not deserialize {plan}"
    context = engine.create_execution_context()
    stream = torch.cuda.current_stream()
    context.set_optimization_profile_async(profile, stream.cuda_stream)
    keep = []  # host copies must outlive the launch
    for name, tensor in inputs.items():
        if engine.get_tensor_location(name) == trt.TensorLocation.HOST:
            host = tensor.detach().cpu().contiguous()
            keep.append(host)
            context.set_tensor_address(name, host.data_ptr())
        else:
            device = tensor.detach().cuda().contiguous()
            keep.append(device)
            assert context.set_input_shape(name, tuple(device.shape)), (
                f"{name} {tuple(device.shape)} is outside the profile"
            )
            context.set_tensor_address(name, device.data_ptr())
    outputs = {}
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        if engine.get_tensor_mode(name) != trt.TensorIOMode.OUTPUT:
            continue
        dtype = torch_dtypes[engine.get_tensor_dtype(name).name]
        outputs[name] = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtype, device="cuda")
        context.set_tensor_address(name, outputs[name].data_ptr())
    assert context.execute_async_v3(stream.cuda_stream), "execute_async_v3 failed (see the TensorRT log)"
    stream.synchronize()
    return outputs
