"""Triton python-backend runner: serves the version directory's model.pt2 (a torch.export program) with PyTorch.

plugserve.build copies this file as `<model>/<version>/model.py` for `runtime: torch`. Unlike the
other runners it imports plugserve: the program calls the `torch.ops.plugserve.*` ops, which the
package registers and runs on libplugserve.so. Loading, ops selection and CUDA graphs live in
plugserve.torch_runtime; this file is the Triton glue.

- `initialize` loads the program once onto the instance's device: `cuda:<model_instance_device_id>`
  for KIND_GPU instances, the CPU otherwise, with the precision, ops and acceleration recorded in
  config.pbtxt (`plugserve_torch`) and the manifest.
- Tensors cross by DLPack in both directions: inputs Triton placed in GPU memory stay there, outputs
  go back as device tensors, and no numpy array is made (the stub's numpy interface predates numpy 2).
- `execute` returns exactly one response per request. A request that breaks the contract, or a batch
  that fails in PyTorch, gets a TritonError naming the problem; the model stays loaded.
"""

import json
import os
import site
import sys


def _use_launcher_site_packages():
    """Put the launching environment's packages first on sys.path (see plugserve.server: the stub's
    embedded Python ignores PYTHONPATH, so the server passes them in PLUGSERVE_SITE_PACKAGES)."""
    before = list(sys.path)
    for entry in os.environ.get("PLUGSERVE_SITE_PACKAGES", "").split(os.pathsep):
        if entry:
            site.addsitedir(entry)
    sys.path[:] = [p for p in sys.path if p not in before] + before


_use_launcher_site_packages()

import torch  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from plugserve import torch_runtime  # noqa: E402

SPEC_PARAMETER = "plugserve_spec"


def _error(message, code=None):
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(error=error)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.spec = json.loads(parameters[SPEC_PARAMETER])
        options = json.loads(parameters[torch_runtime.OPTIONS_PARAMETER])
        self.batching = self.spec["max_batch_size"] > 0
        self.rules = torch_runtime.input_rules(self.spec)
        self.output_names = [t["name"] for t in self.spec["outputs"]]
        if args["model_instance_kind"] == "GPU":
            device = torch.device("cuda", int(args["model_instance_device_id"]))
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        path = os.path.join(args["model_repository"], args["model_version"], options["program"])
        self.program = torch_runtime.Program(path, device, ops=options["ops"], acceleration=options["acceleration"],
                                             max_graphs=options["max_graphs"])
        pb_utils.Logger.log_info(f"{args['model_name']} instance {args['model_instance_name']}: "
                                 f"{json.dumps(self.program.describe())}")

    def execute(self, requests):
        responses = [None] * len(requests)
        groups = {}
        for index, request in enumerate(requests):
            try:
                tensors = self._read(request)
                bounds = torch_runtime.check_request(self.spec, tensors)
            except torch_runtime.RequestError as error:
                # INVALID_ARG: the client's fault (HTTP 400 / gRPC INVALID_ARGUMENT), not the server's.
                responses[index] = _error(str(error), pb_utils.TritonError.INVALID_ARG)
                continue
            groups.setdefault(torch_runtime.group_key(self.spec, bounds), []).append((index, tensors))
        for members in groups.values():
            try:
                outputs = self.program(self._batch(members), [rule.shape_tensor for rule in self.rules])
            except Exception as error:  # noqa: BLE001 - a failed batch becomes error responses, never a crash
                message = torch_runtime.describe_failure(error, [rule.name for rule in self.rules])
                for index, _ in members:
                    responses[index] = _error(message)
                continue
            start = 0
            for index, tensors in members:
                stop = start + (self._count(tensors) if self.batching else 1)
                responses[index] = pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor.from_dlpack(name, out[start:stop] if self.batching else out)
                    for name, out in zip(self.output_names, outputs, strict=True)])
                start = stop
        return responses

    def _read(self, request):
        tensors = {}
        for rule in self.rules:
            tensor = pb_utils.get_input_tensor_by_name(request, rule.name)
            if tensor is None:
                raise torch_runtime.RequestError(f"missing input '{rule.name}'")
            tensors[rule.name] = torch.from_dlpack(tensor.to_dlpack())
        return tensors

    def _count(self, tensors):
        first = next(rule for rule in self.rules if not rule.shape_tensor)
        return tensors[first.name].shape[0]

    def _batch(self, members):
        """One tensor per input for the whole group: batched inputs concatenated on the instance's
        device, a shape tensor as the single row of values the ops read on the host."""
        batch = []
        for rule in self.rules:
            parts = [tensors[rule.name] for _, tensors in members]
            if rule.shape_tensor:
                batch.append(parts[0].reshape(-1, rule.width)[0].cpu() if self.batching else parts[0].cpu())
            elif len(parts) == 1 or not self.batching:
                batch.append(parts[0])
            else:
                batch.append(torch.cat([p.to(self.program.device, non_blocking=True) for p in parts]))
        return batch
