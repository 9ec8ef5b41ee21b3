"""What a perf run sends to: the served model through plugserve.client, or the same ONNX Runtime session in this process."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

from plugserve.client import Client
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
        try:
            self.config = self.control.config(model)
        except Exception as error:  # the server's message says what is wrong (unknown model, not ready)
            raise ValueError(f"cannot read the config of model {model!r} at {url} over {protocol}: {error}") from None
        self.output_names = [output["name"] for output in self.config.get("output", [])]
        self.inputs: dict[str, np.ndarray] = {}
        self.output_bytes: dict[str, int] | None = None
        self._lock = threading.Lock()
        # Per sender index: input and output region arguments of `Client.infer_shared_memory`.
        self._shm: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
        self._regions: list[tuple[str, Any]] = []

    def prepare(self, inputs: dict[str, np.ndarray], *, shared_memory: bool) -> None:
        self.inputs = {name: np.ascontiguousarray(array) for name, array in inputs.items()}
        if shared_memory:
            try:
                outputs = self.control.infer(self.model, self.inputs, self.output_names)
            except Exception as error:
                raise ValueError(f"the probe request that sizes the output regions failed: {error}") from None
            self.output_bytes = {name: array.nbytes for name, array in outputs.items()}

    @contextlib.contextmanager
    def make_sender(self, index: int) -> Iterator[Sender]:
        model, names = self.model, self.output_names
        with Client(self.url, self.protocol) as client:
            if self.output_bytes is None:
                yield client.request(model, self.inputs, names)
                return
            with self._lock:
                if index not in self._shm:
                    self._shm[index] = self._shared_memory(index, client, self.output_bytes)
            shm_inputs, shm_outputs = self._shm[index]
            yield lambda: client.infer_shared_memory(model, shm_inputs, shm_outputs)

    def _shared_memory(self, index: int, client: Any, output_bytes: dict[str, int]
                       ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Regions for one sender index, kept across steps; registered by the sender's own client
        (registration is server-wide, so `close` can unregister them through the control client)."""
        from tritonclient.utils import np_to_triton_dtype
        from tritonclient.utils import shared_memory as shm

        def region(kind: str, name: str, byte_size: int) -> tuple[str, Any]:
            # Unique per process and sender: two harnesses on one server must not share a region.
            region_name = f"plugserve_bench_{os.getpid()}_{index}_{kind}_{name}"
            handle = shm.create_shared_memory_region(region_name, "/" + region_name, byte_size)
            client.register_system_shared_memory(region_name, "/" + region_name, byte_size)
            self._regions.append((region_name, handle))
            return region_name, handle

        shm_inputs, shm_outputs = {}, {}
        for name, array in self.inputs.items():
            region_name, handle = region("in", name, array.nbytes)
            shm.set_shared_memory_region(handle, [array])
            shm_inputs[name] = (region_name, list(array.shape), np_to_triton_dtype(array.dtype), array.nbytes)
        for name, byte_size in output_bytes.items():
            shm_outputs[name] = (region("out", name, byte_size)[0], byte_size)
        return shm_inputs, shm_outputs

    def statistics(self) -> dict[str, Any]:
        return self.control.statistics(self.model)

    def close(self) -> None:
        from tritonclient.utils import shared_memory as shm

        for region_name, handle in self._regions:
            self.control.unregister_system_shared_memory(region_name)
            shm.destroy_shared_memory_region(handle)
        self.control.close()
        self._regions, self._shm = [], {}


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
