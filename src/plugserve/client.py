"""Talk to a served model over HTTP or gRPC (tritonclient), and check answers against PyTorch.

    client = Client("localhost:8000", "http")
    out = client.infer("super_resolution", {"image": x, "size": np.array([[512, 512]])})

`plugserve infer` wraps this: an image file in, an upscaled PNG out (super-resolution), or
random / saved .npy inputs (any model); `--check` compares with the local PyTorch model, or for
a model built from an ONNX file, with that ONNX (decomposed) in ONNX Runtime.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plugserve import config, models, surgery
from plugserve.console import UsageError
from plugserve.repository_api import LoadRefused, ServerUnreachable

if TYPE_CHECKING:
    import numpy as np

PROTOCOLS = ("http", "grpc")
DEFAULT_URLS = {"http": "localhost:8000", "grpc": "localhost:8001"}
# Max abs error allowed between a served output and PyTorch (fp32), by model; others get DEFAULT_ATOL.
TOLERANCES = {"super_resolution": 1e-4, "deformable_encoder": 1e-3}
DEFAULT_ATOL = 1e-3
# geventhttpclient, under tritonclient.http, reads a response in recv calls of this many bytes and
# parses each in Python. Its 4 KiB default costs a 786 KB super-resolution answer about 190 reads
# and 2.9 ms of client CPU; 4 MiB reads take 1.5 ms, CPU a client on the server's cores takes from the model.
HTTP_READ_BYTES = 4 << 20
# tritonclient's gRPC channel limits (none on message sizes), for the channels made here.
GRPC_CHANNEL_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
GRPC_INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"


class ClientUnavailable(ServerUnreachable):
    """Nothing answers at the server address (HTTP or gRPC)."""

    fix = "start a server with `plugserve serve`, or pass --url"


class RequestRefused(LoadRefused):
    """The server answered a request with an error (unknown model, input it rejects); the message is the server's."""


@contextlib.contextmanager
def answered(url: str, protocol: str, model: str) -> Iterator[None]:
    """tritonclient's connection and server errors as ClientUnavailable and RequestRefused, for the
    CLI (library callers of Client get tritonclient's own exceptions, as its documentation says)."""
    from tritonclient.utils import InferenceServerException

    try:
        yield
    except OSError as error:  # HTTP: the socket's ConnectionRefusedError, an unknown host, ...
        raise ClientUnavailable(f"no server at {url} ({protocol}): {error.strerror or error}") from error
    except InferenceServerException as error:
        # gRPC reports a refused connection as a server error with status UNAVAILABLE.
        if error.status() == "StatusCode.UNAVAILABLE":
            raise ClientUnavailable(f"no server at {url} ({protocol})") from error
        message = error.message() or str(error)
        fix = f"is {model} built? `plugserve build --model {model}`" if "unknown model" in message else None
        raise RequestRefused(f"{model}: the server answered: {message}", fix) from error


class Client:
    """One tritonclient connection; `infer` takes and returns numpy arrays by tensor name.

    tritonclient's HTTP client runs on gevent and must not be shared between threads: give each
    thread its own Client (the gRPC one may be shared).
    """

    def __init__(self, url: str | None = None, protocol: str = "http", *, timeout_s: float = 120.0):
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        self.protocol = protocol
        self.url = url or DEFAULT_URLS[protocol]
        if protocol == "http":
            import tritonclient.http as module

            self._client = module.InferenceServerClient(
                self.url, connection_timeout=timeout_s, network_timeout=timeout_s
            )
            self._client._client_stub.block_size = HTTP_READ_BYTES
        else:
            import tritonclient.grpc as module

            self._client = module.InferenceServerClient(self.url)
        self._module = module
        self._timeout_s = timeout_s
        self._output_names: dict[str, list[str]] = {}
        self._closing: list[Callable[[], None]] = []

    def infer(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """One request; raises tritonclient's InferenceServerException with the server's message on error."""
        return self.request(model, inputs, outputs)()

    def request(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str] | None = None
                ) -> Callable[[], dict[str, np.ndarray]]:
        """A request serialized once, sent by each call (as `infer`): a load generator's clients
        should spend their CPU on sending, not on converting the same arrays again."""
        import numpy as np
        from tritonclient.utils import np_to_triton_dtype

        request_inputs = []
        for name, array in inputs.items():
            array = np.ascontiguousarray(array)
            tensor = self._module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            request_inputs.append(tensor)
        names = list(outputs if outputs is not None else self._outputs(model))
        requested = [self._module.InferRequestedOutput(name) for name in names]

        def send() -> dict[str, np.ndarray]:
            result = self._client.infer(model, request_inputs, outputs=requested, **self._infer_options())
            return {name: result.as_numpy(name) for name in names}

        return send

    def load_request(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str] | None = None
                     ) -> Callable[[], object]:
        """A request for load generation: over gRPC, its message serialized once and its answer left
        as bytes, not decoded; over HTTP, `request`.

        Measured on a 2-core host against a model returning 6.3 MB: tritonclient rebuilds the request
        for every call and copies each answer three times (into bytes, into the parsed message, and
        out again in `as_numpy`), 41 requests/s at 0.8 cores where perf_analyzer sent 87. What a load
        engine must see of an answer is whether it is an error, and gRPC says that in its status.
        """
        if self.protocol == "http":
            return self.request(model, inputs, outputs)
        import grpc
        import numpy as np
        from tritonclient.grpc import service_pb2
        from tritonclient.utils import InferenceServerException, np_to_triton_dtype

        message = service_pb2.ModelInferRequest(model_name=model)
        for name, array in inputs.items():
            array = np.ascontiguousarray(array)
            message.inputs.add(name=name, datatype=np_to_triton_dtype(array.dtype), shape=array.shape)
            message.raw_input_contents.append(array.tobytes())
        for name in outputs if outputs is not None else self._outputs(model):
            message.outputs.add(name=name)
        payload = message.SerializeToString()
        channel = grpc.insecure_channel(self.url, options=GRPC_CHANNEL_OPTIONS)
        self._closing.append(channel.close)
        call = channel.unary_unary(GRPC_INFER_METHOD)  # no (de)serializers: bytes both ways
        timeout_s = self._timeout_s

        def send() -> object:
            try:
                return call(payload, timeout=timeout_s)
            except grpc.RpcError as error:  # as tritonclient reports it
                raise InferenceServerException(msg=error.details(), status=str(error.code())) from None

        return send

    def register_system_shared_memory(self, region: str, key: str, byte_size: int) -> None:
        """Tell the server about a system shared-memory region (made with tritonclient.utils.shared_memory)."""
        self._client.register_system_shared_memory(region, key, byte_size)

    def register_cuda_shared_memory(self, region: str, raw_handle: bytes, device_id: int, byte_size: int) -> None:
        """Tell the server about a CUDA memory region (tritonclient.utils.cuda_shared_memory) on a GPU of its host."""
        self._client.register_cuda_shared_memory(region, raw_handle, device_id, byte_size)

    def unregister_shared_memory(self, region: str, kind: str = "system") -> None:
        """Release a registered region, "system" or "cuda"."""
        if kind == "cuda":
            self._client.unregister_cuda_shared_memory(region)
        else:
            self._client.unregister_system_shared_memory(region)

    def infer_shared_memory(
        self, model: str, inputs: dict[str, tuple[str, list[int], str, int]], outputs: dict[str, tuple[str, int]]
    ) -> None:
        """One request whose tensors stay in registered regions: inputs name -> (region, shape, datatype,
        byte size), outputs name -> (region, byte size). The server writes the outputs into their regions."""
        request_inputs = []
        for name, (region, shape, datatype, byte_size) in inputs.items():
            tensor = self._module.InferInput(name, shape, datatype)
            tensor.set_shared_memory(region, byte_size)
            request_inputs.append(tensor)
        requested = []
        for name, (region, byte_size) in outputs.items():
            output = self._module.InferRequestedOutput(name)
            output.set_shared_memory(region, byte_size)
            requested.append(output)
        self._client.infer(model, request_inputs, outputs=requested, **self._infer_options())

    def _infer_options(self) -> dict[str, Any]:
        # The HTTP client takes its timeouts at construction; the gRPC client per call.
        return {"client_timeout": self._timeout_s} if self.protocol == "grpc" else {}

    def config(self, model: str) -> dict[str, Any]:
        if self.protocol == "grpc":
            return self._client.get_model_config(model, as_json=True)["config"]
        return self._client.get_model_config(model)

    def statistics(self, model: str) -> dict[str, Any]:
        if self.protocol == "grpc":
            return self._client.get_inference_statistics(model, as_json=True)
        return self._client.get_inference_statistics(model)

    def ready(self, model: str | None = None) -> bool:
        return self._client.is_model_ready(model) if model else self._client.is_server_ready()

    def _outputs(self, model: str) -> list[str]:
        if model not in self._output_names:  # asked once per model, not once per request
            self._output_names[model] = [o["name"] for o in self.config(model)["output"]]
        return self._output_names[model]

    def close(self) -> None:
        for close in self._closing:
            close()
        self._client.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_image(path: Path) -> np.ndarray:
    """An image file as FP32 [1, 3, H, W] RGB in [0, 1]."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None])


def save_image(array: np.ndarray, path: Path) -> Path:
    """[1, 3, H, W] or [3, H, W] in [0, 1] -> an 8-bit PNG (or any format PIL infers from the suffix)."""
    import numpy as np
    from PIL import Image

    chw = array[0] if array.ndim == 4 else array
    pixels = np.clip(np.rint(chw.transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@functools.lru_cache(maxsize=4)
def _local_model(name: str, checkpoint: Path | None):

    return models.load(name, checkpoint=checkpoint)


def reference_outputs(spec, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the served model should answer, computed here from its models.yaml source: the PyTorch
    model, or for an ONNX source that file with its plugin nodes decomposed, in ONNX Runtime."""
    if spec.source_model is None:
        return _onnx_outputs(spec, inputs)
    import torch

    module = _local_model(spec.source_model, spec.checkpoint)  # loaded once per process, not per request
    with torch.inference_mode():
        result = module(*(torch.from_numpy(array) for array in _model_inputs(spec, inputs).values()))
    results = result if isinstance(result, (tuple, list)) else (result,)
    return {t.name: r.detach().cpu().numpy() for t, r in zip(spec.outputs, results, strict=True)}


@functools.lru_cache(maxsize=4)
def _onnx_session(path: Path):
    import onnx
    import onnxruntime

    # Decomposed, the graph needs no plugin library: standard ops run on any ONNX Runtime.
    graph = surgery.decompose(onnx.load(str(path)))
    return onnxruntime.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])


def _onnx_outputs(spec, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not spec.onnx.is_file():
        raise FileNotFoundError(2, "source ONNX of --check is missing", str(spec.onnx))
    names = [t.name for t in spec.outputs]
    return dict(zip(names, _onnx_session(spec.onnx).run(names, _model_inputs(spec, inputs)), strict=True))


def _model_inputs(spec, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The request's inputs as the source model takes them, in models.yaml's order: a shape tensor is
    batched by Triton ([N, k], equal rows), the model takes one row."""
    return {t.name: inputs[t.name].reshape(-1, t.dims[0])[0].copy() if t.shape_tensor else inputs[t.name]
            for t in spec.inputs}


def compare(served: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> dict[str, float]:
    """Max abs error per output; a shape mismatch raises ValueError naming the output."""
    import numpy as np

    errors = {}
    for name, want in expected.items():
        got = served[name]
        if got.shape != want.shape:
            raise ValueError(f"output '{name}': served shape {list(got.shape)} != local shape {list(want.shape)}")
        errors[name] = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    return errors


def add_infer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model name in the repository, e.g. super_resolution, deformable_encoder")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="http",
                        help="tritonclient protocol (default: %(default)s)")
    parser.add_argument("--url", help="server address (default: localhost:8000 http, localhost:8001 grpc)")
    image = parser.add_argument_group("super-resolution from an image file")
    image.add_argument("--image", type=Path, help="input image (PNG, JPEG, ...)")
    scale = image.add_mutually_exclusive_group()
    scale.add_argument("--scale", type=float, help="upscale factor, e.g. 2 or 3.5 (also with --random)")
    scale.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="output size (also with --random)")
    tensors = parser.add_argument_group("any model from arrays")
    tensors.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy", help="a saved input")
    tensors.add_argument("--random", type=int, nargs=2, metavar=("H", "W"),
                         help="random image input of this size (batch 1); with --scale/--size also `size`")
    parser.add_argument("--output", type=Path,
                        help="where to write the result (.png for an image, else .npz of all outputs)")
    parser.add_argument("--check", action="store_true",
                        help="compare with the model's source run here (PyTorch, or ONNX Runtime for an ONNX "
                             "source); exit 1 on mismatch")
    parser.add_argument("--atol", type=float, help="max abs error for --check (default: per model)")
    parser.add_argument("--config", type=Path, default=Path("models.yaml"), help="models.yaml, for --check")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --random input (default: %(default)s)")


def _request_inputs(args: argparse.Namespace) -> dict[str, np.ndarray]:
    import numpy as np

    if args.image is not None:
        image = load_image(args.image)
        height, width = image.shape[2:]
        if args.size is not None:
            size = args.size
        elif args.scale is not None:
            size = [round(height * args.scale), round(width * args.scale)]
        else:
            raise UsageError("--image needs --scale or --size")
        return {"image": image, "size": np.array([size], dtype=np.int64)}
    if args.random is not None:
        image = np.random.default_rng(args.seed).random((1, 3, *args.random), dtype=np.float32)
        if args.size is None and args.scale is None:
            return {"image": image}
        size = args.size or [round(args.random[0] * args.scale), round(args.random[1] * args.scale)]
        return {"image": image, "size": np.array([size], dtype=np.int64)}
    inputs = {}
    for item in args.input:
        name, sep, file = item.partition("=")
        if not sep or not file:
            raise UsageError(f"--input expects NAME=FILE.npy, got {item!r}")
        inputs[name] = np.load(file)
    if not inputs:
        raise UsageError("give --image (super-resolution), --random H W, or --input NAME=FILE.npy")
    return inputs


def run_infer(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    inputs = _request_inputs(args)
    # Read before the request: a models.yaml without the model fails --check before any traffic.
    spec = _check_spec(args) if args.check else None
    with Client(args.url, args.protocol) as client, answered(client.url, args.protocol, args.model):
        started = time.perf_counter()
        outputs = client.infer(args.model, inputs)
        elapsed_ms = (time.perf_counter() - started) * 1000
    for name, array in outputs.items():
        print(f"infer: {args.model} over {args.protocol}: {name} {array.dtype} {list(array.shape)} in {elapsed_ms:.1f} ms")
    if args.output is not None:
        if args.output.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"):
            save_image(next(iter(outputs.values())), args.output)
        else:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            np.savez(args.output, **outputs)
        print(f"infer: wrote {args.output}")
    if spec is not None:
        errors = compare(outputs, reference_outputs(spec, inputs))
        atol = args.atol if args.atol is not None else TOLERANCES.get(args.model, DEFAULT_ATOL)
        against = "PyTorch" if spec.source_model is not None else "ONNX Runtime"
        for name, worst in errors.items():
            verdict = "ok" if worst <= atol else "MISMATCH"
            print(f"infer: check {name}: max abs error vs {against} {worst:.2e} (atol {atol:.0e}) {verdict}")
        if any(worst > atol for worst in errors.values()):
            return 1
    return 0


def _check_spec(args: argparse.Namespace) -> config.ModelSpec:
    specs = config.load(args.config)
    if args.model not in specs:
        raise config.ConfigError(f"{args.config}: no model {args.model!r} to --check against "
                                 f"(known: {', '.join(specs)})")
    return specs[args.model]
