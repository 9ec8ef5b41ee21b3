"""Triton python-backend runner: serves the version directory's model.onnx with ONNX Runtime.

plugserve.build copies this file as `<model>/<version>/model.py`. Everything model-specific
(tensor names, dtypes, dims, shape profiles) comes from the `plugserve_spec` parameter of
config.pbtxt, read once in `initialize`. `execute` returns exactly one response per request:
a request that breaks the contract gets a TritonError naming the problem and the others in the
same batch are still served. Requests with identical shapes (and identical shape-tensor values,
e.g. the requested output size) are concatenated into one ONNX Runtime run.
"""

import json
import os
import site
import sys


def _use_launcher_site_packages():
    """Put the launching environment's site-packages first on sys.path.

    The python backend stub embeds the system Python, which ignores PYTHONPATH and sees only the
    system's paths. plugserve.server passes the venv's site-packages in PLUGSERVE_SITE_PACKAGES.
    An environment variable rather than a config.pbtxt parameter because numpy must import at
    module load, before `initialize` sees the config, and because the path belongs to the
    machine that runs the server, not the one that built the repository. Prepended, so the venv's
    numpy 1.x wins over a system numpy 2 (the stub's `as_numpy` gives empty arrays with numpy 2).
    Without the variable (e.g. an NGC tritonserver image with packages installed system-wide)
    nothing changes. `site.addsitedir` also runs the directories' .pth files.
    """
    before = list(sys.path)
    for entry in os.environ.get("PLUGSERVE_SITE_PACKAGES", "").split(os.pathsep):
        if entry:
            site.addsitedir(entry)
    added = [p for p in sys.path if p not in before]
    sys.path[:] = added + before


_use_launcher_site_packages()

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

try:
    import triton_python_backend_utils as pb_utils
except ModuleNotFoundError:  # imported outside Triton by `plugserve bench --in-process`, for session_options
    pb_utils = None

MODEL_FILE = "model.onnx"
SPEC_PARAMETER = "plugserve_spec"
NUMPY_DTYPES = {"FP32": np.float32, "FP16": np.float16, "INT64": np.int64, "INT32": np.int32,
                "UINT8": np.uint8, "BOOL": np.bool_}


def session_options(model_config):
    """ONNX Runtime options for one instance of the model: the machine's cores shared out among its
    instances. Instances that each take every core oversubscribe them; and on a few cores, requests
    run side by side on one thread each outrun one request on all of them (super_resolution on 2
    cores: 24.4 against 19.8 images/s), which is why models.yaml gives CPU models 2 instances.
    """
    instances = sum(int(group.get("count", 1)) for group in model_config.get("instance_group", [])) or 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, cores // instances)
    return options


class RequestError(ValueError):
    """The request breaks the model's contract; the message goes back to the client."""


def _shape(values):
    return "[" + ", ".join(str(int(v)) for v in values) + "]"


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        spec = json.loads(parameters[SPEC_PARAMETER])
        self.inputs = spec["inputs"]
        self.output_names = [t["name"] for t in spec["outputs"]]
        self.profiles = spec["profiles"]
        self.batching = spec["max_batch_size"] > 0
        path = os.path.join(args["model_repository"], args["model_version"], MODEL_FILE)
        self.session = ort.InferenceSession(path, session_options(config), providers=["CPUExecutionProvider"])
        onnx_inputs = {i.name for i in self.session.get_inputs()}
        missing = [t["name"] for t in self.inputs if t["name"] not in onnx_inputs]
        if missing:
            raise pb_utils.TritonModelException(f"{MODEL_FILE} has no input(s) {missing}; it has {sorted(onnx_inputs)}")

    def execute(self, requests):
        responses = [None] * len(requests)
        groups = {}
        for index, request in enumerate(requests):
            try:
                arrays = self._read(request)
            except RequestError as error:
                # INVALID_ARG: the client's fault (HTTP 400 / gRPC INVALID_ARGUMENT), not the server's.
                responses[index] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(str(error), pb_utils.TritonError.INVALID_ARG))
                continue
            groups.setdefault(self._group_key(index, arrays), []).append((index, arrays))
        for members in groups.values():
            try:
                outputs = self._run([arrays for _, arrays in members])
            except Exception as error:  # noqa: BLE001 - any runtime failure must become a response, not a crash
                for index, _ in members:
                    responses[index] = pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"ONNX Runtime failed: {error}"))
                continue
            start = 0
            for index, arrays in members:
                count = self._batch(arrays)
                stop = start + count
                tensors = [pb_utils.Tensor(name, np.ascontiguousarray(out[start:stop] if self.batching else out))
                           for name, out in zip(self.output_names, outputs, strict=True)]
                responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
                start = stop
        return responses

    def _batch(self, arrays):
        first = next(t for t in self.inputs if not t["shape_tensor"])
        return arrays[first["name"]].shape[0] if self.batching else 1

    def _group_key(self, index, arrays):
        if not self.batching:
            return (index,)
        key = []
        for t in self.inputs:
            array = arrays[t["name"]]
            key.append(tuple(array[0].tolist()) if t["shape_tensor"] else array.shape[1:])
        return tuple(key)

    def _read(self, request):
        arrays = {}
        for t in self.inputs:
            name = t["name"]
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise RequestError(f"missing input '{name}'")
            array = tensor.as_numpy()
            expected = np.dtype(NUMPY_DTYPES[t["dtype"]])
            if array.dtype != expected:
                raise RequestError(f"input '{name}': expected dtype {t['dtype']}, got {array.dtype}")
            rank = len(t["dims"]) + (1 if self.batching else 0)
            if array.ndim != rank:
                raise RequestError(f"input '{name}': expected rank {rank}, got shape {_shape(array.shape)}")
            if array.size == 0:
                raise RequestError(f"input '{name}' is empty (shape {_shape(array.shape)})")
            dims = array.shape[1:] if self.batching else array.shape
            for axis, (want, got) in enumerate(zip(t["dims"], dims, strict=True)):
                if want != -1 and want != got:
                    raise RequestError(f"input '{name}': dimension {axis} must be {want}, got shape {_shape(array.shape)}")
            if t["shape_tensor"]:
                rows = array.reshape(-1, t["dims"][0])
                if (rows != rows[0]).any():
                    raise RequestError(f"input '{name}': all rows must be equal within one request, got {rows.tolist()}")
                if (rows[0] <= 0).any():
                    raise RequestError(f"input '{name}': requested output size must be positive, got {_shape(rows[0])}")
            arrays[name] = array
        self._check_profiles(arrays)
        return arrays

    def _bounds(self, t, array):
        """What a profile bounds for this input: the full shape, or a shape tensor's values."""
        return tuple(int(v) for v in (array.reshape(-1)[: t["dims"][0]] if t["shape_tensor"] else array.shape))

    def _check_profiles(self, arrays):
        if any(self._fits(profile, arrays) for profile in self.profiles):
            return
        for t in self.inputs:
            got = self._bounds(t, arrays[t["name"]])
            if not any(self._fits_one(profile[t["name"]], got) for profile in self.profiles):
                what = "requested output size" if t["shape_tensor"] else "shape"
                limits = "; ".join(f"min {_shape(p[t['name']]['min'])} max {_shape(p[t['name']]['max'])}"
                                   for p in self.profiles)
                raise RequestError(f"input '{t['name']}': {what} {_shape(got)} is outside the model's profiles ({limits})")
        raise RequestError("the inputs fit no single shape profile together: "
                           + ", ".join(f"{t['name']} {_shape(self._bounds(t, arrays[t['name']]))}" for t in self.inputs))

    def _fits(self, profile, arrays):
        return all(self._fits_one(profile[t["name"]], self._bounds(t, arrays[t["name"]])) for t in self.inputs)

    @staticmethod
    def _fits_one(bounds, got):
        return len(got) == len(bounds["min"]) and all(
            lo <= v <= hi for v, lo, hi in zip(got, bounds["min"], bounds["max"], strict=True))

    def _run(self, batch):
        feed = {}
        for t in self.inputs:
            name = t["name"]
            if t["shape_tensor"]:
                feed[name] = batch[0][name].reshape(-1)[: t["dims"][0]]
            elif self.batching:
                feed[name] = np.concatenate([arrays[name] for arrays in batch], axis=0)
            else:
                feed[name] = batch[0][name]
        return self.session.run(self.output_names, feed)
