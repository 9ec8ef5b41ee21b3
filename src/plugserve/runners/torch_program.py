"""The serve side of the `torch` runtime: a model.pt2 loaded onto one device and run per batch.

Used by runners/torch_runner.py inside tritonserver. Loads the torch.export program, selects the
ops' implementation (our kernels, or the pure-PyTorch reference for side-by-side measurements) and
runs batches eagerly, through CUDA graphs captured per input shape, or through torch.compile.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.export.passes import move_to_device_pass

from plugserve import ops as plugserve_ops
from plugserve.ops import dynamic_resize, ms_deform_attn  # noqa: F401 - the program calls the ops they register

ACCELERATIONS = ("none", "cuda_graphs", "compile")
# CUDA graphs kept per model instance (one per batch size and input shape seen); a key beyond
# these runs eagerly, so an unbounded variety of shapes cannot exhaust GPU memory.
MAX_GRAPHS = 32
# Eager runs on a side stream before a capture: cuDNN/cuBLAS pick their algorithms and allocate
# workspaces there, outside the graph.
WARMUP_RUNS = 2

log = logging.getLogger(__name__)


def describe_failure(error: Exception, input_names: list[str]) -> str:
    """A PyTorch failure as the client should read it: the program's guards call the inputs
    `inputs_0`, `inputs_1`, ... (positional, models.yaml order); put the tensor names back."""
    message = f"{type(error).__name__}: {error}"
    for index in reversed(range(len(input_names))):  # inputs_10 before inputs_1
        message = message.replace(f"inputs_{index}", f"input '{input_names[index]}'")
    return f"PyTorch failed: {message}"


def instance_device(kind: str, device_id: int | str) -> torch.device:
    """The device of a Triton model instance: `cuda:<model_instance_device_id>` for a GPU instance
    (the id Triton assigns from the instance group's `gpus`), the CPU otherwise."""
    return torch.device("cuda", int(device_id)) if kind == "GPU" else torch.device("cpu")


def device_scope(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """`device` as CUDA's current device, for the calls that take it from there rather than from a
    tensor: new streams, graph capture and its memory pool, the caching allocator's workspaces."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


class _GraphCache:
    """One CUDA graph per input signature, replayed on copies of the inputs into static buffers.

    The graphs share one memory pool; that is safe because one instance replays one graph at a time
    and outputs are cloned out of the pool before the next replay.
    """

    def __init__(self, module, device: torch.device, max_graphs: int):
        self.module = module
        self.device = device
        self.max_graphs = max_graphs
        # Only an id: the pool itself is made on the device current at the first capture, which
        # Program.__call__ makes this instance's.
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: dict[tuple, tuple[Any, list[torch.Tensor], tuple[torch.Tensor, ...]]] = {}
        self.disabled: str | None = None  # why capture is off for this instance, once it failed

    @staticmethod
    def signature(args: list[torch.Tensor]) -> tuple:
        # Host tensors are shape tensors: their values are baked into the graph at capture.
        return tuple((tuple(a.shape), a.dtype) if a.is_cuda else (tuple(a.tolist()), a.dtype) for a in args)

    def __call__(self, args: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        key = self.signature(args)
        entry = self.graphs.get(key)
        if entry is None:
            if self.disabled is not None or len(self.graphs) >= self.max_graphs:
                return self.module(*args)
            entry = self._capture(key, args)
            if entry is None:
                return self.module(*args)
        graph, static, outputs = entry
        for buffer, arg in zip(static, args, strict=True):
            if buffer.is_cuda:
                buffer.copy_(arg)
        graph.replay()
        return tuple(out.clone() for out in outputs)

    def _capture(self, key: tuple, args: list[torch.Tensor]):
        static = [a.clone() for a in args]
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        # Outside the try: a request the program refuses fails here, as it would eagerly, and
        # leaves capture on for the next one.
        with torch.cuda.stream(stream):
            for _ in range(WARMUP_RUNS):
                self.module(*static)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        try:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool, stream=stream):
                outputs = self.module(*static)
        except Exception as error:  # noqa: BLE001 - any capture failure means: run this instance eagerly
            torch.cuda.synchronize(self.device)
            self.disabled = f"{type(error).__name__}: {error}"
            log.warning("CUDA graph capture failed, running eagerly from now on: %s", self.disabled)
            return None
        self.graphs[key] = (graph, static, outputs)
        return self.graphs[key]


class Program:
    """A model.pt2 loaded for serving on one device: `program(inputs)` -> outputs, in models.yaml order."""

    def __init__(self, path: str | Path, device: str | torch.device, *, ops: str = "plugserve",
                 acceleration: str = "none", max_graphs: int = MAX_GRAPHS):
        if acceleration not in ACCELERATIONS:
            raise ValueError(f"acceleration must be one of {ACCELERATIONS}, got {acceleration!r}")
        self.device = torch.device(device)
        if acceleration == "cuda_graphs" and self.device.type != "cuda":
            raise ValueError(f"acceleration cuda_graphs needs a CUDA device, got {self.device}")
        if self.device.type == "cuda":
            # Served shapes repeat (one per batch size), so cuDNN's per-shape algorithm search pays
            # off; with CUDA graphs it runs in the eager warm-up before each capture.
            torch.backends.cudnn.benchmark = True
        plugserve_ops.set_implementation(ops)
        self.ops = ops
        self.kernels = plugserve_ops.use_kernels()
        self.acceleration = acceleration
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"torch program {path} does not exist")
        program = torch.export.load(str(path))
        if self.device.type != "cpu":
            program = move_to_device_pass(program, self.device)
        module: Callable[..., Any] = program.module()
        self._graphs = None
        if acceleration == "compile":
            module = torch.compile(module, dynamic=False)
        elif acceleration == "cuda_graphs":
            self._graphs = _GraphCache(module, self.device, max_graphs)
        self.module = module

    def describe(self) -> dict[str, Any]:
        """What this instance actually runs (for the log): kernels or reference, and graphs' state."""
        state = {"device": str(self.device), "ops": self.ops, "kernels": self.kernels,
                 "acceleration": self.acceleration}
        if self._graphs is not None:
            state["graphs"] = len(self._graphs.graphs)
            state["graphs_disabled"] = self._graphs.disabled
        return state

    def __call__(self, inputs: list[torch.Tensor], host: list[bool]) -> tuple[torch.Tensor, ...]:
        """Run one batch; `host[i]` keeps input i on the CPU (shape tensors the ops read on the host)."""
        args = [t if on_host else t.to(self.device, non_blocking=True) for t, on_host in zip(inputs, host, strict=True)]
        # Under this instance's device, so that what PyTorch places by the current device (graph
        # capture, its pool, side streams' work, cuBLAS/cuDNN workspaces) stays on it as well.
        with torch.inference_mode(), device_scope(self.device):
            if self._graphs is not None:
                return self._graphs(args)
            return tuple(self.module(*args))
