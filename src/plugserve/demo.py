"""`plugserve demo` (what `make demo` runs): export, build, serve, verify, measure, stop.

1. Build the repository for a runtime this machine can serve (onnxruntime on CPU): both models
   are exported from their checkpoints and lowered into new version directories.
2. Start a real tritonserver on it.
3. Over HTTP and gRPC: compare both models' answers with the local PyTorch models, send bad
   requests and check that the errors name the problem and the next good request is served.
4. Upscale real photographs the model never saw in training; compare PSNR with plain bicubic
   upscaling; write PNGs.
5. Measure per-request latency (p50, p90) over both protocols; stop the server.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from plugserve import build, config
from plugserve.client import TOLERANCES, Client, compare, reference_outputs, save_image
from plugserve.server import ServerError, TritonServer

if TYPE_CHECKING:
    import numpy as np

MODELS = ("super_resolution", "deformable_encoder")
SCALE = 2  # of the requests that check answers against PyTorch
PSNR_SCALES = (2, 3, 4)
PNG_PHOTO, PNG_SCALE = "coffee", 3
# Small inputs for the latency loop: the numbers show serving overhead plus a modest model run.
LATENCY_INPUTS = {"super_resolution": (64, 64), "deformable_encoder": (128, 128)}


def _say(message: str) -> None:
    print(f"demo: {message}", flush=True)


def _inputs(model: str, height: int, width: int, seed: int = 0) -> dict[str, np.ndarray]:
    import numpy as np

    image = np.random.default_rng(seed).random((1, 3, height, width), dtype=np.float32)
    if model == "super_resolution":
        return {"image": image, "size": np.array([[height * SCALE, width * SCALE]], dtype=np.int64)}
    return {"image": image}


def bicubic(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Plain bicubic upscaling (PyTorch's, the one the model starts from), clamped to [0, 1]."""
    import torch
    import torch.nn.functional as F

    out = F.interpolate(torch.from_numpy(image), size=(height, width), mode="bicubic", align_corners=False)
    return out.clamp(0.0, 1.0).numpy()


def check_models(clients, specs) -> list[str]:
    """Served outputs against PyTorch, both protocols; returns the lines to report."""

    lines = []
    for model, (height, width) in (("super_resolution", (48, 64)), ("deformable_encoder", (96, 128))):
        inputs = _inputs(model, height, width, seed=1)
        expected = reference_outputs(specs[model], inputs)
        for protocol, client in clients.items():
            errors = compare(client.infer(model, inputs), expected)
            worst = max(errors.values())
            if worst > TOLERANCES[model]:
                raise SystemExit(f"demo: {model} over {protocol} differs from PyTorch: max abs error {worst:.2e}")
            shape = "x".join(map(str, next(iter(expected.values())).shape))
            lines.append(f"{model} over {protocol}: matches PyTorch (output {shape}, max abs error {worst:.1e}"
                         f" <= {TOLERANCES[model]:.0e})")
    return lines


def check_bad_inputs(clients) -> list[str]:
    """Bad requests get errors naming the problem; the next good request is still served."""
    import numpy as np
    from tritonclient.utils import InferenceServerException

    good = _inputs("super_resolution", 16, 16)
    cases = {
        "output size 0": ({**good, "size": np.array([[0, 32]], dtype=np.int64)}, "size"),
        "output size 10^6": ({**good, "size": np.array([[10**6, 10**6]], dtype=np.int64)}, "size"),
        "FP64 image": ({**good, "image": good["image"].astype(np.float64)}, "image"),
        "rank-3 image": ({**good, "image": good["image"][:, :, 0]}, "image"),
        "empty body": ({}, "input"),
    }
    lines = []
    for protocol, client in clients.items():
        for label, (inputs, named) in cases.items():
            try:
                client.infer("super_resolution", inputs, outputs=["upscaled"])
            except InferenceServerException as error:
                message = error.message() or str(error)
                if named not in message:
                    raise SystemExit(f"demo: {label} over {protocol}: error does not name {named!r}: {message}") from None
            else:
                raise SystemExit(f"demo: {label} over {protocol} was accepted")
            client.infer("super_resolution", good)  # still serving
        lines.append(f"bad input over {protocol}: {', '.join(cases)} rejected with errors naming the problem;"
                     " the server kept serving")
    return lines


def check_batching(client, specs) -> str:
    """Concurrent same-shape requests are batched by Triton and answered correctly one by one."""
    from concurrent.futures import ThreadPoolExecutor


    model, count = "super_resolution", 8
    requests = [_inputs(model, 32, 32, seed=seed) for seed in range(count)]
    before = client.statistics(model)["model_stats"][0]

    def send(inputs):
        with Client(client.url, client.protocol) as own:  # one HTTP client per thread
            return own.infer(model, inputs)

    with ThreadPoolExecutor(count) as pool:
        answers = list(pool.map(send, requests))
    for inputs, answer in zip(requests, answers, strict=True):
        worst = max(compare(answer, reference_outputs(specs[model], inputs)).values())
        if worst > TOLERANCES[model]:
            raise SystemExit(f"demo: a batched {model} answer differs from PyTorch: max abs error {worst:.2e}")
    after = client.statistics(model)["model_stats"][0]
    executions = int(after.get("execution_count", 0)) - int(before.get("execution_count", 0))  # JSON omits zeros
    return f"dynamic batching: {count} concurrent requests answered correctly in {executions} model execution(s)"


def upscale_photos(client, artifacts: Path) -> list[str]:
    """Mean PSNR against the originals of photos the model never saw in training: shrink, upscale back.

    The protocol of scripts/train_srcnn.py (crop to a multiple of the scale, antialiased bicubic
    shrink, border of `scale` pixels shaved), so the figures compare with the README's table.
    """
    import numpy as np
    import torch

    from plugserve.models import srcnn

    lines, out = [], artifacts / "demo"
    photos = {name: srcnn.sample_image(name) for name in srcnn.HELD_OUT}
    for scale in PSNR_SCALES:
        ours, theirs = [], []
        for name, photo in photos.items():
            original = photo[..., : photo.shape[2] // scale * scale, : photo.shape[3] // scale * scale]
            low, size = srcnn.downscale(original, scale)
            height, width = size.tolist()
            served = client.infer("super_resolution", {"image": low.numpy(), "size": size.numpy()[None]})["upscaled"]
            plain = bicubic(low.numpy(), height, width)
            ours.append(srcnn.psnr(torch.tensor(served), original, shave=scale))
            theirs.append(srcnn.psnr(torch.tensor(plain), original, shave=scale))
            if name == PNG_PHOTO and scale == PNG_SCALE:
                save_image(low.numpy(), out / f"{name}_input_{width // scale}x{height // scale}.png")
                save_image(plain, out / f"{name}_bicubic_x{scale}.png")
                save_image(served, out / f"{name}_super_resolution_x{scale}.png")
        gain = sum(ours) / len(ours) - sum(theirs) / len(theirs)
        lines.append(f"PSNR x{scale}, mean over held-out {', '.join(photos)}: super_resolution "
                     f"{sum(ours) / len(ours):.2f} dB vs plain bicubic {sum(theirs) / len(theirs):.2f} dB ({gain:+.2f} dB)")
    photo = photos[PNG_PHOTO]
    height, width = photo.shape[2] * PNG_SCALE, photo.shape[3] * PNG_SCALE
    full = client.infer("super_resolution", {"image": photo.numpy(), "size": np.array([[height, width]], dtype=np.int64)})
    path = save_image(full["upscaled"], out / f"{PNG_PHOTO}_{width}x{height}.png")
    lines.append(f"wrote {path} ({PNG_PHOTO} upscaled x{PNG_SCALE}) and the x{PNG_SCALE} comparison PNGs beside it")
    return lines


def latencies(clients, requests: int) -> list[str]:
    import numpy as np

    lines = []
    for model, (height, width) in LATENCY_INPUTS.items():
        inputs = _inputs(model, height, width)
        for protocol, client in clients.items():
            client.infer(model, inputs)  # warm-up
            times = []
            for _ in range(requests):
                started = time.perf_counter()
                client.infer(model, inputs)
                times.append((time.perf_counter() - started) * 1000.0)
            p50, p90 = np.percentile(times, [50, 90])
            lines.append(f"latency {model} ({height}x{width}) over {protocol}: p50 {p50:.1f} ms, p90 {p90:.1f} ms"
                         f" ({requests} sequential requests)")
    return lines


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=Path("models.yaml"), help="default: %(default)s")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"), help="default: %(default)s")
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="where PNGs go (default: %(default)s)")
    parser.add_argument("--runtime", default="onnxruntime", help="runtime to build for (default: %(default)s)")
    parser.add_argument("--keep", type=int, default=2, help="versions to keep per model (default: %(default)s)")
    parser.add_argument("--requests", type=int, default=20, help="requests per latency measurement")
    parser.add_argument("--skip-build", action="store_true", help="serve the repository as it is")


def run_demo(args: argparse.Namespace) -> int:
    import torch


    torch.set_num_threads(2)
    started = time.perf_counter()
    specs = config.load(args.config)
    if not args.skip_build:
        _say(f"exporting and building {', '.join(MODELS)} for {args.runtime} into {args.repository}/")
        build.build(args.config, args.repository, list(MODELS), runtime=args.runtime, keep=args.keep,
                    log=lambda line: _say(line.removeprefix("build: ")))
    server = TritonServer(args.repository, log_path=args.artifacts / "demo" / "tritonserver.log")
    args.artifacts.joinpath("demo").mkdir(parents=True, exist_ok=True)
    try:
        server.start()
    except ServerError as error:
        _say(str(error))
        return 1
    try:
        _say(f"tritonserver ready: http {server.http_url}, grpc {server.grpc_url} (log {server.log_path})")
        clients = {"http": Client(server.http_url, "http"), "grpc": Client(server.grpc_url, "grpc")}
        steps = (
            lambda: check_models(clients, specs),
            lambda: check_bad_inputs(clients),
            lambda: [check_batching(clients["http"], specs)],
            lambda: upscale_photos(clients["grpc"], args.artifacts),
            lambda: latencies(clients, args.requests),
        )
        for step in steps:
            for line in step():
                _say(line)
        for client in clients.values():
            client.close()
    finally:
        code = server.stop()
    _say(f"all checks passed; tritonserver stopped (exit code {code}); demo took {time.perf_counter() - started:.0f} s")
    return 0

