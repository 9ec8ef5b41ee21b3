"""Triton python-backend runner: serves the version directory's model.onnx with ONNX Runtime.

The onnxruntime lowering copies this file as `<model>/<version>/model.py` and contract.py beside
it. Everything model-specific (tensor names, dtypes, dims, shape profiles) comes from the
`plugserve_spec` parameter of config.pbtxt, read once in `initialize`, and every request is checked
against it by contract.py before its data is used. `execute` returns exactly one response per request:
a request that breaks the contract gets a TritonError naming the problem and the others in the
same batch are still served. Requests with identical shapes (and identical shape-tensor values,
e.g. the requested output size) are concatenated into one ONNX Runtime run.
"""

import json
import os

# tritonserver imports this file as `<version>.model`, with the helper modules beside it; plugserve (the
# in-process bench twin, tests) imports it as plugserve.runners.onnxruntime_runner: relative either way.
from . import launcher_paths  # noqa: E402

launcher_paths.use_launcher_site_packages()

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

from . import contract  # noqa: E402

try:
    import triton_python_backend_utils as pb_utils
except ModuleNotFoundError:  # imported outside Triton by `plugserve bench --in-process`, for session_options
    pb_utils = None

MODEL_FILE = "model.onnx"


def session_options(model_config, version_dir):
    """ONNX Runtime options for one instance of the model: the machine's cores shared out among its
    instances, and with native ops the version directory's custom-op library registered.

    Instances that each take every core oversubscribe them; and on a few cores, requests run side
    by side on one thread each outrun one request on all of them (super_resolution on 2 cores: 24.4
    against 19.8 images/s), which is why models.yaml gives CPU models 2 instances.
    """
    instances = sum(int(group.get("count", 1)) for group in model_config.get("instance_group", [])) or 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, cores // instances)
    # Without the arena an instance's memory returns to its baseline after a large request (the
    # arena keeps its peak for the process's life); malloc's own reuse keeps small requests as fast.
    options.enable_cpu_mem_arena = False
    parameter = model_config.get("parameters", {}).get(contract.ONNXRUNTIME_OPTIONS_PARAMETER)
    # A version built before the parameter existed has a decomposed graph.
    ops = json.loads(parameter["string_value"]) if parameter else {"ops": "decomposed"}
    if ops["ops"] == "native":
        library = os.path.join(version_dir, ops["library"])
        if not os.path.isfile(library):
            raise RuntimeError(f"ops native: the custom-op library {library} is missing from the version directory")
        try:
            options.register_custom_ops_library(library)
        except Exception as error:  # noqa: BLE001 - ORT raises its own Fail/RuntimeException types
            raise RuntimeError(f"ops native: ONNX Runtime {ort.__version__} cannot register {library}: {error}") \
                from error
    return options


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.spec = contract.spec_from_config(config)
        self.output_names = contract.output_names(self.spec)
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        try:
            self.session = ort.InferenceSession(os.path.join(version_dir, MODEL_FILE),
                                                session_options(config, version_dir),
                                                providers=["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001 - named, so the server log says which model and why
            raise pb_utils.TritonModelException(f"{config['name']}: {error}") from error
        onnx_inputs = {i.name for i in self.session.get_inputs()}
        missing = [t["name"] for t in self.spec["inputs"] if t["name"] not in onnx_inputs]
        if missing:
            raise pb_utils.TritonModelException(f"{MODEL_FILE} has no input(s) {missing}; it has {sorted(onnx_inputs)}")

    def execute(self, requests):
        responses = [None] * len(requests)
        checked, arrays = [], {}
        for index, request in enumerate(requests):
            try:
                arrays[index] = self._read(request)
                checked.append((index, contract.check_request(
                    self.spec, {name: contract.received(a) for name, a in arrays[index].items()})))
            except contract.RequestError as error:
                # INVALID_ARG: the client's fault (HTTP 400 / gRPC INVALID_ARGUMENT), not the server's.
                responses[index] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(str(error), pb_utils.TritonError.INVALID_ARG))
            except Exception as error:  # noqa: BLE001 - an unreadable request gets an error, the instance lives on
                responses[index] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"cannot read the request: {error}"))
        largest, bounds = 0, dict(checked)
        for members in contract.batches(self.spec, checked):
            try:
                outputs = self.session.run(self.output_names, contract.feed(self.spec, [arrays[i] for i in members]))
                largest = max(largest, *(out.size for out in outputs))
                start = 0
                for index in members:
                    stop = start + contract.batch_size(self.spec, bounds[index])
                    tensors = [pb_utils.Tensor(name, np.ascontiguousarray(out[start:stop] if contract.batching(self.spec)
                                                                          else out))
                               for name, out in zip(self.output_names, outputs, strict=True)]
                    responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
                    start = stop
            except Exception as error:  # noqa: BLE001 - any runtime failure must become a response, not a crash
                for index in members:
                    responses[index] = pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"ONNX Runtime failed: {error}"))
        del arrays
        if largest >= contract.TRIM_AFTER_ELEMENTS:
            contract.trim_heap()
        return responses

    def _read(self, request):
        """The request's inputs as arrays, read only once their headers passed the contract."""
        tensors = contract.header_checked(self.spec, lambda name: pb_utils.get_input_tensor_by_name(request, name))
        return {name: tensor.as_numpy() for name, tensor in tensors.items()}
