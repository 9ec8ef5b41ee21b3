"""Request inputs generated from a served model's config and the shape profiles its build recorded."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from plugserve.runners.contract import DTYPES, SPEC_PARAMETER


def profile_shapes(config: dict[str, Any], profile: int, point: str = "opt") -> dict[str, list[int]]:
    """A point (`min`, `opt`, `max`) of a models.yaml shape profile, from the spec the build writes into the config.

    For ordinary inputs: dims without the batch dimension; for shape tensors: their values.
    Empty when the model was not built by plugserve (no `plugserve_spec` parameter).
    """
    text = config.get("parameters", {}).get(SPEC_PARAMETER, {}).get("string_value")
    if not text:
        return {}
    spec = json.loads(text)
    profiles = spec.get("profiles", [])
    if not 0 <= profile < len(profiles):
        raise ValueError(f"model {config.get('name')!r} has {len(profiles)} shape profiles; --profile {profile} is not one")
    batched = int(spec.get("max_batch_size", 0)) > 0
    shape_tensors = {t["name"] for t in spec.get("inputs", []) if t.get("shape_tensor")}
    return {name: list(r[point]) if name in shape_tensors or not batched else list(r[point][1:])
            for name, r in profiles[profile].items()}


def generate_inputs(config: dict[str, Any], batch_size: int, shapes: dict[str, list[int]],
                    values: dict[str, str], profile: int = 0, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for every input of a Triton model config (the JSON form of `ModelConfig`).

    Variable dims come from `shapes`, else from the opt point of the model's shape profile;
    integer inputs (sizes, indices: random numbers would miss their meaning) from `values`, else
    from that profile. `values` maps a name to a .npy file (the whole request tensor) or to
    comma-separated numbers (one item, repeated over the batch). Floats are uniform in [0, 1),
    like images.
    """
    rng = np.random.default_rng(seed)
    batched = int(config.get("max_batch_size", 0)) > 0
    if batch_size > 1 and not batched:
        raise ValueError(f"model {config.get('name')!r} does not batch (max_batch_size 0); use --batch-size 1")
    known = {spec["name"] for spec in config.get("input", [])}
    for name in [*shapes, *values]:
        if name not in known:
            raise ValueError(f"model {config.get('name')!r} has no input {name!r}; its inputs: {sorted(known)}")
    opt = profile_shapes(config, profile)
    inputs = {}
    for spec in config.get("input", []):
        name, type_name = spec["name"], str(spec["data_type"]).removeprefix("TYPE_")
        if type_name not in DTYPES or type_name == "BF16":  # numpy has no bfloat16
            raise ValueError(f"input {name!r}: cannot generate data of type {type_name}; pass it with --input")
        dtype = np.dtype(DTYPES[type_name])
        dims = [int(d) for d in spec["dims"]]
        if name in values and values[name].endswith(".npy"):
            inputs[name] = np.load(values[name]).astype(dtype, copy=False)
            continue
        if name in values:
            try:
                item = np.array([float(v) for v in values[name].split(",")], dtype=dtype)
                item = item.reshape([d if d > 0 else -1 for d in dims])
            except ValueError as error:
                raise ValueError(f"--input {name}={values[name]}: not numbers of the config dims {dims}: {error}") from None
            inputs[name] = np.repeat(item[None], batch_size, axis=0) if batched else item
            continue
        if not np.issubdtype(dtype, np.floating):
            if name not in opt:
                raise ValueError(f"input {name!r} is {type_name}: give its values with --input {name}=1,2 or FILE.npy")
            # With batching on, Triton gives every input a batch dimension, shape tensors too (one row each).
            array = np.array(opt[name], dtype=dtype).reshape(dims)
            inputs[name] = np.repeat(array[None], batch_size, axis=0) if batched else array
            continue
        shape = shapes.get(name, opt.get(name, dims))
        if len(shape) != len(dims) or any(d not in (-1, s) for d, s in zip(dims, shape, strict=True)):
            raise ValueError(f"input {name!r}: shape {shape} does not match the config dims {dims}")
        if any(d < 0 for d in shape):
            raise ValueError(f"input {name!r} has variable dims {dims}: give them with --shape {name}=...")
        array = rng.random(shape, dtype=np.float32).astype(dtype)
        inputs[name] = np.repeat(array[None], batch_size, axis=0) if batched else array
    return inputs
