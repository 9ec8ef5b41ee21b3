"""Triton python-backend runner: serves the version directory's model.pt2 (a torch.export program) with PyTorch.

The torch lowering copies this file as `<model>/<version>/model.py` for `runtime: torch`, with
contract.py beside it. Unlike the onnxruntime runner it needs plugserve installed: the program calls
the `torch.ops.plugserve.*` ops, which the package registers and runs on libplugserve.so. Loading,
ops selection and CUDA graphs live in plugserve.runners.torch_program; this file is the Triton glue.

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

# tritonserver imports this file as `<version>.model`, with the helper modules beside it.
from . import launcher_paths

launcher_paths.use_launcher_site_packages()

import torch  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from plugserve.runners import torch_program  # noqa: E402

from . import contract  # noqa: E402


def _error(message, code=None):
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(error=error)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.spec = contract.spec_from_config(config)
        options = json.loads(config["parameters"][contract.TORCH_OPTIONS_PARAMETER]["string_value"])
        self.batching = contract.batching(self.spec)
        self.inputs = self.spec["inputs"]
        self.output_names = contract.output_names(self.spec)
        device = torch_program.instance_device(args["model_instance_kind"], args["model_instance_device_id"])
        if device.type == "cuda":
            # Each instance is its own stub process: its default device is the one Triton gave it.
            torch.cuda.set_device(device)
        path = os.path.join(args["model_repository"], args["model_version"], options["program"])
        self.program = torch_program.Program(path, device, ops=options["ops"], acceleration=options["acceleration"],
                                             max_graphs=options["max_graphs"])
        pb_utils.Logger.log_info(f"{args['model_name']} instance {args['model_instance_name']}: "
                                 f"{json.dumps(self.program.describe())}")

    def execute(self, requests):
        responses = [None] * len(requests)
        checked, read = [], {}
        for index, request in enumerate(requests):
            try:
                read[index] = self._read(request)
                checked.append((index, contract.check_request(self.spec, {t["name"]: self._received(t, read[index][t["name"]])
                                                                          for t in self.inputs})))
            except contract.RequestError as error:
                # INVALID_ARG: the client's fault (HTTP 400 / gRPC INVALID_ARGUMENT), not the server's.
                responses[index] = _error(str(error), pb_utils.TritonError.INVALID_ARG)
            except Exception as error:  # noqa: BLE001 - an unreadable request gets an error, the instance lives on
                responses[index] = _error(f"cannot read the request: {error}")
        bounds = dict(checked)
        for members in contract.batches(self.spec, checked):
            try:
                outputs = self.program(self._batch([read[i] for i in members]), [t["shape_tensor"] for t in self.inputs])
                start = 0
                for index in members:
                    stop = start + contract.batch_size(self.spec, bounds[index])
                    responses[index] = pb_utils.InferenceResponse(output_tensors=[
                        pb_utils.Tensor.from_dlpack(name, out[start:stop] if self.batching else out)
                        for name, out in zip(self.output_names, outputs, strict=True)])
                    start = stop
            except Exception as error:  # noqa: BLE001 - a failed batch becomes error responses, never a crash
                message = torch_program.describe_failure(error, [t["name"] for t in self.inputs])
                for index in members:
                    responses[index] = _error(message)
        return responses

    def _read(self, request):
        """The request's inputs as tensors, taken only once their headers passed the contract."""
        tensors = contract.header_checked(self.spec, lambda name: pb_utils.get_input_tensor_by_name(request, name))
        return {name: torch.from_dlpack(tensor.to_dlpack()) for name, tensor in tensors.items()}

    @staticmethod
    def _received(declared, tensor):
        """A tensor as the contract reads it; a shape tensor's few values come to the host, and a
        float input that must be finite is checked where it lies."""
        values = tensor.cpu().numpy() if declared["shape_tensor"] else None
        finite = bool(torch.isfinite(tensor).all()) if declared.get("reject_non_finite") else None
        return contract.Received(str(tensor.dtype).removeprefix("torch."), tuple(tensor.shape), values, finite)

    def _batch(self, members):
        """One tensor per input for the whole group: batched inputs concatenated on the instance's
        device, a shape tensor as the single row of values the ops read on the host."""
        batch = []
        for t in self.inputs:
            parts = [tensors[t["name"]] for tensors in members]
            if t["shape_tensor"]:
                batch.append(parts[0].reshape(-1, t["dims"][0])[0].cpu() if self.batching else parts[0].cpu())
            elif len(parts) == 1 or not self.batching:
                batch.append(parts[0])
            else:
                batch.append(torch.cat([p.to(self.program.device, non_blocking=True) for p in parts]))
        return batch
