"""What a perf run sends to: the served model through plugserve.client, or the same ONNX Runtime session in this process."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

from plugserve.client import Client, RequestRefused, answered
from plugserve.perf.load import Sender, SenderFactory
from plugserve.runners import contract


class TritonTarget:
    """The served model through `plugserve.client`: one client (one connection) per sender.

    With system shared memory each sender index owns a region per input, written once, and a region
    per output, sized from one probe request; the requests then carry only region names.
    """

    def __init__(self, url: str, protocol: str, model: str):
        self.url, self.protocol, self.model = url, protocol, model
        self.control = Client(url, protocol)
        with answered(url, protocol, model):  # no server, an unknown model: one line each (plugserve.cli)
            self.config = self.control.config(model)
        self.output_names = [output["name"] for output in self.config.get("output", [])]
        self.inputs: dict[str, np.ndarray] = {}
        self.output_bytes: dict[str, int] | None = None
        self.shared_memory = "none"
        self._lock = threading.Lock()
        # Per sender index: input and output region arguments of `Client.infer_shared_memory`, and
        # the registration of each region.
        self._shm: dict[int, tuple[dict[str, Any], dict[str, Any], list[Callable[[Client], None]]]] = {}
        self._regions: list[Any] = []

    def prepare(self, inputs: dict[str, np.ndarray], *, shared_memory: str = "none") -> None:
        """Keep the inputs; with shared memory ("system" or "cuda") size the output regions from one probe request."""
        self.inputs = {name: np.ascontiguousarray(array) for name, array in inputs.items()}
        self.shared_memory = shared_memory
        if shared_memory != "none":
            with answered(self.url, self.protocol, self.model):  # the probe request that sizes the output regions
                outputs = self.control.infer(self.model, self.inputs, self.output_names)
            self.output_bytes = {name: array.nbytes for name, array in outputs.items()}
            self._check_registration()

    def _check_registration(self) -> None:
        """Register sender 0's regions once now: a server that restricts shared memory (plugserve
        serve's default) then stops the bench in one line, before either engine starts."""
        assert self.output_bytes is not None
        self._shm[0] = self._shared_memory(0, self.output_bytes)
        shm_inputs, shm_outputs, registrations = self._shm[0]
        try:
            for register in registrations:
                register(self.control)
        except Exception as error:
            raise RequestRefused(f"the server at {self.url} refused to register {self.shared_memory} shared memory "
                                 f"({error})", "serve with `plugserve serve --allow-shared-memory`") from None
        for region_name, *_ in [*shm_inputs.values(), *shm_outputs.values()]:
            self.control.unregister_shared_memory(region_name, self.shared_memory)

    @contextlib.contextmanager
    def make_sender(self, index: int) -> Iterator[Sender]:
        model, names = self.model, self.output_names
        with Client(self.url, self.protocol) as client:
            if self.output_bytes is None:
                yield client.load_request(model, self.inputs, names)
                return
            with self._lock:
                if index not in self._shm:
                    self._shm[index] = self._shared_memory(index, self.output_bytes)
            shm_inputs, shm_outputs, registrations = self._shm[index]
            # Registered for this round only: perf_analyzer, run between our rounds, unregisters
            # every region of the server when it starts.
            for register in registrations:
                register(client)
            try:
                yield lambda: client.infer_shared_memory(model, shm_inputs, shm_outputs)
            finally:
                for region_name, *_ in [*shm_inputs.values(), *shm_outputs.values()]:
                    client.unregister_shared_memory(region_name, self.shared_memory)

    def _shared_memory(self, index: int, output_bytes: dict[str, int]
                       ) -> tuple[dict[str, Any], dict[str, Any], list[Callable[[Client], None]]]:
        """Regions for one sender index, made once and kept across steps, and how to register each
        with the server. CUDA regions live on device 0: the client shares the server's GPU (same host)."""
        from tritonclient.utils import np_to_triton_dtype

        module = _shared_memory_module(self.shared_memory)
        registrations: list[Callable[[Client], None]] = []

        def region(kind: str, name: str, byte_size: int) -> tuple[str, Any]:
            # Unique per process and sender: two harnesses on one server must not share a region.
            region_name = f"plugserve_bench_{os.getpid()}_{index}_{kind}_{name}"
            if self.shared_memory == "cuda":
                handle = module.create_shared_memory_region(region_name, byte_size, 0)
                raw = module.get_raw_handle(handle)
                registrations.append(lambda client: client.register_cuda_shared_memory(region_name, raw, 0, byte_size))
            else:
                handle = module.create_shared_memory_region(region_name, "/" + region_name, byte_size)
                registrations.append(
                    lambda client: client.register_system_shared_memory(region_name, "/" + region_name, byte_size))
            self._regions.append(handle)
            return region_name, handle

        shm_inputs, shm_outputs = {}, {}
        for name, array in self.inputs.items():
            region_name, handle = region("in", name, array.nbytes)
            module.set_shared_memory_region(handle, [array])
            shm_inputs[name] = (region_name, list(array.shape), np_to_triton_dtype(array.dtype), array.nbytes)
        for name, byte_size in output_bytes.items():
            shm_outputs[name] = (region("out", name, byte_size)[0], byte_size)
        return shm_inputs, shm_outputs, registrations

    def statistics(self) -> dict[str, Any]:
        return self.control.statistics(self.model)

    def close(self) -> None:
        if self._regions:
            module = _shared_memory_module(self.shared_memory)
            for handle in self._regions:
                module.destroy_shared_memory_region(handle)
        self.control.close()
        self._regions, self._shm = [], {}


def _shared_memory_module(kind: str) -> Any:
    """tritonclient's helpers for system or CUDA shared memory (the CUDA ones need cuda-python)."""
    if kind == "cuda":
        from tritonclient.utils import cuda_shared_memory

        return cuda_shared_memory
    from tritonclient.utils import shared_memory

    return shared_memory


def in_process_sender(onnx_path: Path, config: dict[str, Any], inputs: dict[str, np.ndarray]) -> SenderFactory:
    """Senders that call one ONNX Runtime session from this process with the served model's inputs.

    The session is made as one instance of the onnxruntime runner makes it (CPU provider, the
    instance's share of the cores, with native ops the version directory's custom-op library) and
    is fed as the runner feeds it: a shape tensor's batch rows collapse to its one row of values.
    """
    import onnxruntime as ort

    from plugserve.runners.onnxruntime_runner import session_options

    session = ort.InferenceSession(str(onnx_path), session_options(config, str(onnx_path.parent)),
                                   providers=["CPUExecutionProvider"])
    spec = contract.spec_from_config(config)
    feed = contract.feed(spec, [inputs])
    output_names = contract.output_names(spec)

    def make_sender(_index: int) -> AbstractContextManager[Sender]:
        return contextlib.nullcontext(lambda: session.run(output_names, feed))

    return make_sender
