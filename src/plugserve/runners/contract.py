"""The request contract of a served model: what every runner, and the in-process bench twin, checks and feeds.

Standard library and numpy only: the build copies this file beside each runner's `model.py`, so a
version directory is servable by any tritonserver whose Python has numpy and the runtime, whether
or not plugserve is installed there. The contract comes from models.yaml through the config.pbtxt
parameter `plugserve_spec` (see `plugserve.repository.runner_spec`): the inputs with their Triton
dtypes and dims, the outputs, the shape profiles (full shapes, batch first when batching, or a shape
tensor's values) and max_batch_size.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import numpy as np

# Key of the config.pbtxt parameter that carries the contract (JSON) to a runner.
SPEC_PARAMETER = "plugserve_spec"
# Key of the parameter with the torch runner's options (program file, precision, ops, acceleration).
TORCH_OPTIONS_PARAMETER = "plugserve_torch"
# Key of the parameter with the onnxruntime runner's options (JSON): {"ops": "native" | "decomposed"},
# and with native ops "library", the custom-op library's file name in the version directory.
ONNXRUNTIME_OPTIONS_PARAMETER = "plugserve_onnxruntime"

# Triton data type names (config.pbtxt `TYPE_<name>`) -> numpy dtype names (bfloat16 has no numpy
# dtype: torch and ONNX know it by this name).
DTYPES: dict[str, str] = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
    "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64", "BF16": "bfloat16",
}


class RequestError(ValueError):
    """A request breaks the model's contract; the message goes back to the client."""


class Received(NamedTuple):
    """What a runner got for one input: its dtype name (numpy's), its shape, and for a shape tensor its values."""

    dtype: str
    shape: tuple[int, ...]
    values: np.ndarray | None = None


def received(array: np.ndarray) -> Received:
    """A numpy input as the contract reads it (values kept: only shape tensors' are looked at)."""
    return Received(array.dtype.name, tuple(int(d) for d in array.shape), array)


def spec_from_config(config: dict[str, Any]) -> dict[str, Any]:
    """The contract from a model config in its JSON form (what `initialize` and the HTTP API give)."""
    return json.loads(config["parameters"][SPEC_PARAMETER]["string_value"])


def shape(values) -> str:
    return "[" + ", ".join(str(int(v)) for v in values) + "]"


def batching(spec: dict[str, Any]) -> bool:
    return spec["max_batch_size"] > 0


def check_input(spec: dict[str, Any], tensor: dict[str, Any], got: Received) -> tuple[int, ...]:
    """One input against its declaration; returns what the shape profiles bound for it: the full
    shape, or a shape tensor's values (with batching every row of the request must carry the same ones)."""
    name, batched = tensor["name"], batching(spec)
    if got.dtype != DTYPES[tensor["dtype"]]:
        raise RequestError(f"input '{name}': expected dtype {tensor['dtype']}, got {got.dtype}")
    rank = len(tensor["dims"]) + (1 if batched else 0)
    if len(got.shape) != rank:
        raise RequestError(f"input '{name}': expected rank {rank}, got shape {shape(got.shape)}")
    if 0 in got.shape:
        raise RequestError(f"input '{name}' is empty (shape {shape(got.shape)})")
    for axis, (want, size) in enumerate(zip(tensor["dims"], got.shape[1:] if batched else got.shape, strict=True)):
        if want != -1 and want != size:
            raise RequestError(f"input '{name}': dimension {axis} must be {want}, got shape {shape(got.shape)}")
    if not tensor["shape_tensor"]:
        return got.shape
    if got.values is None:
        raise RequestError(f"input '{name}': a shape tensor's values are needed")
    rows = np.asarray(got.values).reshape(-1, tensor["dims"][0])
    if (rows != rows[0]).any():
        raise RequestError(f"input '{name}': all rows must be equal within one request, got {rows.tolist()}")
    if (rows[0] <= 0).any():
        raise RequestError(f"input '{name}': requested output size must be positive, got {shape(rows[0])}")
    return tuple(int(v) for v in rows[0])


def _fits(limits: dict[str, list[int]], got: tuple[int, ...]) -> bool:
    return len(got) == len(limits["min"]) and all(
        lo <= v <= hi for v, lo, hi in zip(got, limits["min"], limits["max"], strict=True))


def check_request(spec: dict[str, Any], inputs: dict[str, Received]) -> dict[str, tuple[int, ...]]:
    """Check one request's inputs against the declarations and the shape profiles.

    Returns what each input contributes to its profile check: the full shape, or a shape tensor's values.
    """
    bounds = {}
    for tensor in spec["inputs"]:
        if tensor["name"] not in inputs:
            raise RequestError(f"missing input '{tensor['name']}'")
        bounds[tensor["name"]] = check_input(spec, tensor, inputs[tensor["name"]])
    profiles = spec["profiles"]
    if any(all(_fits(profile[name], got) for name, got in bounds.items()) for profile in profiles):
        return bounds
    for tensor in spec["inputs"]:
        name = tensor["name"]
        if not any(_fits(profile[name], bounds[name]) for profile in profiles):
            what = "requested output size" if tensor["shape_tensor"] else "shape"
            limits = "; ".join(f"min {shape(p[name]['min'])} max {shape(p[name]['max'])}" for p in profiles)
            raise RequestError(f"input '{name}': {what} {shape(bounds[name])} is outside the model's profiles ({limits})")
    raise RequestError("the inputs fit no single shape profile together: "
                       + ", ".join(f"{name} {shape(got)}" for name, got in bounds.items()))


def group_key(spec: dict[str, Any], bounds: dict[str, tuple[int, ...]]) -> tuple:
    """Requests with equal keys run as one batch: same per-item shapes and same shape-tensor values."""
    skip = 1 if batching(spec) else 0
    return tuple(bounds[t["name"]] if t["shape_tensor"] else bounds[t["name"]][skip:] for t in spec["inputs"])


def batch_size(spec: dict[str, Any], bounds: dict[str, tuple[int, ...]]) -> int:
    """Items in one request: the batch dimension of its first ordinary input (1 without batching)."""
    if not batching(spec):
        return 1
    return bounds[next(t["name"] for t in spec["inputs"] if not t["shape_tensor"])][0]


def feed(spec: dict[str, Any], requests: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The session inputs for requests of one group: batched inputs concatenated, a shape tensor
    as the single row of values the graph reads."""
    inputs = {}
    for tensor in spec["inputs"]:
        name = tensor["name"]
        if tensor["shape_tensor"]:
            inputs[name] = requests[0][name].reshape(-1)[: tensor["dims"][0]]
        elif batching(spec) and len(requests) > 1:
            inputs[name] = np.concatenate([request[name] for request in requests], axis=0)
        else:
            inputs[name] = requests[0][name]
    return inputs


def output_names(spec: dict[str, Any]) -> list[str]:
    return [t["name"] for t in spec["outputs"]]
