"""The request contract of a served model: what every runner, and the in-process bench twin, checks and feeds.

Standard library and numpy only: the build copies this file beside each runner's `model.py`, so a
version directory is servable by any tritonserver whose Python has numpy and the runtime, whether
or not plugserve is installed there. The contract comes from models.yaml through the config.pbtxt
parameter `plugserve_spec` (see `plugserve.repository.runner_spec`): the inputs with their Triton
dtypes and dims, the outputs, the shape profiles (full shapes, batch first when batching, or a shape
tensor's values) and max_batch_size.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
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
    # Whether every value is finite, where the runner computed it itself (e.g. on a GPU tensor);
    # None: from `values` when given.
    finite: bool | None = None


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


def elements(shape_: tuple[int, ...] | list[int]) -> int:
    """Element count in Python ints: a product of client-given dims can exceed any machine integer."""
    count = 1
    for size in shape_:
        count *= int(size)
    return count


def _first_ordinary(spec: dict[str, Any]) -> str:
    """The input whose first axis is the batch: the first one that is not a shape tensor."""
    return next(t["name"] for t in spec["inputs"] if not t["shape_tensor"])


def _profile_limits(spec: dict[str, Any], name: str) -> str:
    return "; ".join(f"min {shape(p[name]['min'])} max {shape(p[name]['max'])}" for p in spec["profiles"])


def _item_dims(spec: dict[str, Any], tensor: dict[str, Any]) -> list[tuple[int, int]]:
    """Per axis of an ordinary input's full shape, the smallest and largest size any profile allows."""
    profiles = [p[tensor["name"]] for p in spec["profiles"]]
    return [(min(p["min"][axis] for p in profiles), max(p["max"][axis] for p in profiles))
            for axis in range(len(profiles[0]["min"]))]


def check_shapes(spec: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> None:
    """What a runner checks from the request's header alone, before it reads any tensor's data.

    Triton 2.51 computes a tensor's byte size in 64-bit arithmetic that wraps: [1, 3, 4096, 2^50+1]
    FP32 claims exactly the 49,152 bytes sent, and reading it (`as_numpy`, `to_dlpack`) aborts the
    stub. Each ordinary input's dims must lie inside the profiles' per-axis bounds and a shape
    tensor must have one row per item; sizes are compared as Python ints, which do not wrap.
    """
    batched = batching(spec)
    for tensor in spec["inputs"]:
        name = tensor["name"]
        if name not in shapes:
            raise RequestError(f"missing input '{name}'")
        got = tuple(int(d) for d in shapes[name])
        rank = len(tensor["dims"]) + (1 if batched else 0)
        if len(got) != rank:
            raise RequestError(f"input '{name}': expected rank {rank}, got shape {shape(got)}")
        if 0 in got:
            raise RequestError(f"input '{name}' is empty (shape {shape(got)})")
        for axis, (want, size) in enumerate(zip(tensor["dims"], got[1:] if batched else got, strict=True)):
            if want != -1 and want != size:
                raise RequestError(f"input '{name}': dimension {axis} must be {want}, got shape {shape(got)}")
        if tensor["shape_tensor"]:
            continue
        for axis, (size, (lo, hi)) in enumerate(zip(got, _item_dims(spec, tensor), strict=True)):
            if not lo <= size <= hi:
                raise RequestError(f"input '{name}': shape {shape(got)} is outside the model's profiles "
                                   f"({_profile_limits(spec, name)}), axis {axis}")
    items = batch_size(spec, shapes)
    for tensor in spec["inputs"]:
        if tensor["shape_tensor"] and batched and tuple(shapes[tensor["name"]]) != (items, tensor["dims"][0]):
            raise RequestError(f"input '{tensor['name']}': expected shape {shape((items, tensor['dims'][0]))} "
                               f"(one row per item of the batch), got {shape(shapes[tensor['name']])}")


def header_checked(spec: dict[str, Any], get: Any) -> dict[str, Any]:
    """A request's input tensors, by name, once `check_shapes` passed on their headers; `get(name)`
    is the backend's lookup (pb_utils.get_input_tensor_by_name), returning an object with `shape()` or None."""
    tensors = {}
    for tensor in spec["inputs"]:
        found = get(tensor["name"])
        if found is None:
            raise RequestError(f"missing input '{tensor['name']}'")
        tensors[tensor["name"]] = found
    check_shapes(spec, {name: tuple(found.shape()) for name, found in tensors.items()})
    return tensors


def check_input(spec: dict[str, Any], tensor: dict[str, Any], got: Received) -> tuple[int, ...]:
    """One input against its declaration; returns what the shape profiles bound for it: the full
    shape, or a shape tensor's values (with batching every row of the request must carry the same ones)."""
    name = tensor["name"]
    if got.dtype != DTYPES[tensor["dtype"]]:
        raise RequestError(f"input '{name}': expected dtype {tensor['dtype']}, got {got.dtype}")
    if tensor.get("reject_non_finite") and not (
            got.finite if got.finite is not None else got.values is None or bool(np.isfinite(got.values).all())):
        raise RequestError(f"input '{name}' contains NaN or infinite values")
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
    """Check one request's inputs against the declarations, the shape profiles and the budget.

    Returns what each input contributes to its profile check: the full shape, or a shape tensor's values.
    """
    check_shapes(spec, {name: got.shape for name, got in inputs.items()})
    bounds = {tensor["name"]: check_input(spec, tensor, inputs[tensor["name"]]) for tensor in spec["inputs"]}
    profiles = spec["profiles"]
    if any(all(_fits(profile[name], got) for name, got in bounds.items()) for profile in profiles):
        cost, budget = request_elements(spec, bounds), spec.get("budget", {}).get("request_elements")
        if budget is not None and cost > budget:
            raise RequestError(f"the request needs {cost} elements, more than the model's budget of {budget} per request"
                               f" (models.yaml budget.request_elements)")
        return bounds
    for tensor in spec["inputs"]:
        name = tensor["name"]
        if not any(_fits(profile[name], bounds[name]) for profile in profiles):
            what = "requested output size" if tensor["shape_tensor"] else "shape"
            raise RequestError(f"input '{name}': {what} {shape(bounds[name])} is outside the model's profiles "
                               f"({_profile_limits(spec, name)})")
    raise RequestError("the inputs fit no single shape profile together: "
                       + ", ".join(f"{name} {shape(got)}" for name, got in bounds.items()))


def request_elements(spec: dict[str, Any], bounds: dict[str, tuple[int, ...]]) -> int:
    """What a request costs, in elements: its largest input, or its largest output where the output's
    free dims are the values of a shape tensor of the same length (e.g. `size` -> [N, 3, H, W])."""
    items = batch_size(spec, bounds)
    costs = [elements(bounds[t["name"]]) for t in spec["inputs"] if not t["shape_tensor"]]
    values = [bounds[t["name"]] for t in spec["inputs"] if t["shape_tensor"]]
    for output in spec["outputs"]:
        free = output["dims"].count(-1)
        for given in values:
            if free and len(given) == free:
                sizes = iter(given)
                costs.append(items * elements([next(sizes) if d == -1 else d for d in output["dims"]]))
    return max(costs)


def profile_index(spec: dict[str, Any], bounds: dict[str, tuple[int, ...]]) -> int:
    """The first profile a checked request fits: the one its batch is built for."""
    return next(i for i, profile in enumerate(spec["profiles"]) if all(_fits(profile[n], g) for n, g in bounds.items()))


def group_key(spec: dict[str, Any], bounds: dict[str, tuple[int, ...]]) -> tuple:
    """Requests with equal keys may run as one batch: same profile, same per-item shapes and same
    shape-tensor values."""
    skip = 1 if batching(spec) else 0
    return (profile_index(spec, bounds),
            *(bounds[t["name"]] if t["shape_tensor"] else bounds[t["name"]][skip:] for t in spec["inputs"]))


def batches(spec: dict[str, Any], checked: list[tuple[int, dict[str, tuple[int, ...]]]]) -> list[list[int]]:
    """The runs of one `execute`: indices of checked requests, grouped by `group_key`, each run within
    its profile's largest batch and the model's budget per batch (models.yaml budget.batch_elements)."""
    if not batching(spec):
        return [[index] for index, _ in checked]
    first = _first_ordinary(spec)
    budget = spec.get("budget", {}).get("batch_elements")
    runs: dict[tuple, list[tuple[list[int], int, int]]] = {}
    for index, bounds in checked:
        key = group_key(spec, bounds)
        items, cost = batch_size(spec, bounds), request_elements(spec, bounds)
        limit = spec["profiles"][key[0]][first]["max"][0]
        open_runs = runs.setdefault(key, [])
        if open_runs and open_runs[-1][1] + items <= limit and (budget is None or open_runs[-1][2] + cost <= budget):
            members, total, spent = open_runs[-1]
            open_runs[-1] = ([*members, index], total + items, spent + cost)
        else:
            open_runs.append(([index], items, cost))
    return [members for group in runs.values() for members, _, _ in group]


def batch_size(spec: dict[str, Any], bounds: dict[str, tuple[int, ...]]) -> int:
    """Items in one request: the batch dimension of its first ordinary input (1 without batching)."""
    if not batching(spec):
        return 1
    return int(bounds[_first_ordinary(spec)][0])


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


# A run this large (elements) leaves freed pages in glibc's heap that `trim_heap` gives back.
TRIM_AFTER_ELEMENTS = 1 << 20


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's malloc_trim, or None; looked up once (find_library runs ldconfig)."""
    name = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(name), "malloc_trim", None) if name is not None else None


def trim_heap() -> None:
    """Return the heap's free pages to the system (glibc malloc_trim): without it an instance keeps
    the peak of its largest request resident (2.2 GB after one 2048x2048 super-resolution)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def output_names(spec: dict[str, Any]) -> list[str]:
    return [t["name"] for t in spec["outputs"]]
