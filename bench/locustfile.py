"""Locust load in the shape of real traffic for the served models, over HTTP or gRPC.

    make locust                                   # headless, bounded time, CSV under bench/results/
    locust -f bench/locustfile.py --host localhost:8000 TritonHttpUser    # web UI on :8089
    locust -f bench/locustfile.py --host localhost:8001 TritonGrpcUser

Tasks (choose with `--tags`): `sr` sends real photographs (scikit-image's sample images) at
several sizes to super_resolution, `deformable` sends them to deformable_encoder, and `compare`
sends exactly the inputs `plugserve bench` generates for super_resolution, so that its p50 can be
set beside the harness's at the same concurrency (`PLUGSERVE_LOCUST_WAIT=0`, users = concurrency).
Every request fires locust's request event named `<model> <H>x<W>`, sized by its response bytes.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

# gRPC's C core needs gevent-aware polling before any channel exists, or every greenlet blocks the
# whole process on its call; tritonclient.http is built on geventhttpclient and is gevent-native.
from grpc.experimental import gevent as grpc_gevent
from locust import User, constant, events, tag, task

grpc_gevent.init_gevent()

SR_MODEL = "super_resolution"
DEFORMABLE_MODEL = "deformable_encoder"
# Input sides for the photographs: within the first shape profile of both models in models.yaml.
SR_SIDES = (64, 128, 256)
DEFORMABLE_SIDES = (128, 256)
SAMPLE_IMAGES = ("astronaut", "chelsea", "coffee", "rocket")


def _photographs() -> list:
    """RGB sample photographs as float32 [3, H, W] in [0, 1]."""
    import numpy as np
    from skimage import data

    return [np.ascontiguousarray(getattr(data, name)()[..., :3].transpose(2, 0, 1), dtype=np.float32) / 255.0
            for name in SAMPLE_IMAGES]


def _fit(image, side: int):
    """Centre crop to a square and resize to side x side (antialiased), keeping real image content."""
    import numpy as np
    from skimage.transform import resize

    _, height, width = image.shape
    crop = min(height, width)
    top, left = (height - crop) // 2, (width - crop) // 2
    square = image[:, top:top + crop, left:left + crop]
    return resize(square, (3, side, side), anti_aliasing=True).astype(np.float32)


class TritonUser(User):
    """One locust user holds one plugserve client and sends one request at a time."""

    abstract = True
    protocol = "http"
    wait_time = constant(float(os.environ.get("PLUGSERVE_LOCUST_WAIT", "0")))
    images: list = []

    def on_start(self) -> None:
        from plugserve.client import Client

        host = (self.host or "").split("://")[-1]
        if not host:
            raise ValueError("no host: pass --host localhost:8000 (HTTP) or localhost:8001 (gRPC)")
        self.client = Client(host, protocol=self.protocol)
        if not TritonUser.images:
            TritonUser.images = _photographs()
        self.compare_inputs = None
        self.output_names: dict[str, list[str]] = {}

    def on_stop(self) -> None:
        # An open gRPC channel keeps gevent's gRPC poller alive, and locust would not exit.
        self.client.close()

    def _infer(self, model: str, inputs: dict) -> None:
        shape = next(iter(inputs.values())).shape  # the image: its height and width name the request
        name = f"{model} {shape[-2]}x{shape[-1]}"
        start = time.perf_counter()
        length, error = 0, None
        if model not in self.output_names:
            # Named once: without them every `infer` would first fetch the model's config.
            self.output_names[model] = [output["name"] for output in self.client.config(model)["output"]]
        try:
            outputs = self.client.infer(model, inputs, self.output_names[model])
            length = sum(array.nbytes for array in outputs.values())
        except Exception as exc:  # a failed request is a locust failure, reported with its message
            error = exc
        self.environment.events.request.fire(
            request_type=self.protocol.upper() if self.protocol == "http" else "gRPC", name=name,
            response_time=(time.perf_counter() - start) * 1000.0, response_length=length, exception=error,
            context={},
        )

    @tag("sr")
    @task(3)
    def super_resolution(self) -> None:
        import numpy as np

        rng = np.random.default_rng()
        side = int(rng.choice(SR_SIDES))
        image = _fit(self.images[rng.integers(len(self.images))], side)
        self._infer(SR_MODEL, {"image": image[None], "size": np.array([[2 * side, 2 * side]], dtype=np.int64)})

    @tag("deformable")
    @task(1)
    def deformable(self) -> None:
        import numpy as np

        rng = np.random.default_rng()
        side = int(rng.choice(DEFORMABLE_SIDES))
        self._infer(DEFORMABLE_MODEL, {"image": _fit(self.images[rng.integers(len(self.images))], side)[None]})

    @tag("compare")
    @task(1)
    def compare(self) -> None:
        from plugserve.perf.inputs import generate_inputs

        model = os.environ.get("PLUGSERVE_LOCUST_MODEL", SR_MODEL)
        if self.compare_inputs is None:
            self.compare_inputs = generate_inputs(self.client.config(model), 1, {}, {})
        self._infer(model, self.compare_inputs)


class TritonHttpUser(TritonUser):
    protocol = "http"


class TritonGrpcUser(TritonUser):
    protocol = "grpc"


@events.test_stop.add_listener
def _write_settings(environment, **_kwargs) -> None:
    """Beside locust's CSV stats, the run's users and protocol, so the report can match bench steps."""
    options = environment.parsed_options
    if options is None or not options.csv_prefix:
        return
    Path(f"{options.csv_prefix}_settings.json").write_text(json.dumps({
        "users": options.num_users, "host": environment.host, "tags": options.tags,
        "user_classes": [cls.__name__ for cls in environment.user_classes],
        "wait_s": float(os.environ.get("PLUGSERVE_LOCUST_WAIT", "0")),
    }, indent=2) + "\n")


# Seconds a run may take to leave the interpreter once its stats are final.
EXIT_GRACE_S = 20


@events.quit.add_listener
def _exit_even_if_grpc_hangs(**_kwargs) -> None:
    """Leave the process within EXIT_GRACE_S of locust's quit, printing every thread's stack if not.

    gRPC's gevent integration now and then keeps the interpreter from exiting after the run is over
    (seen once in ~20 runs of the tests on a loaded 2-core machine). By the quit event the stats are
    final and locust closes its CSV files right after it, so nothing is lost; the run ends with exit
    code 1 and the stacks instead of never. faulthandler's watchdog is a C thread: it fires while the
    gevent hub is stuck, and a normal exit cancels it without waiting.
    """
    import faulthandler

    faulthandler.dump_traceback_later(EXIT_GRACE_S, exit=True)
