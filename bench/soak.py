"""A soak at saturation: every model of a repository over HTTP and gRPC at once, for minutes, against
the server `plugserve serve` runs (explicit model control, watchdog on), with its memory sampled.

    python bench/soak.py [--repository model_repository] [--minutes 10] [--clients 16] [--out bench/results/soak.json]

Each client owns one connection and sends to one (model, protocol) pair, round robin over the pairs,
the next request as soon as the last one returned: a closed loop that keeps the server's cores busy.
Every answer is checked for its outputs' names and for finite values. Every `--sample` seconds the
resident memory of tritonserver and of its python-backend stubs (one per model instance) is read from
/proc. Exit 1 when any request failed or the memory grew: the last minute's mean RSS above the second
minute's (the first holds the models' warm-up) by more than `--rss-growth` (a fraction, default 0.05).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from plugserve.client import Client
from plugserve.perf.inputs import generate_inputs
from plugserve.server import TritonServer

# Small requests, so that a 2-core host runs many a second; names are the models' inputs.
SHAPES = {"super_resolution": {"image": [3, 64, 64]}, "deformable_encoder": {"image": [3, 128, 128]}}
VALUES = {"super_resolution": {"size": "128,128"}}


def server_rss_mb(pid: int) -> tuple[float, float]:
    """Resident memory (MB) of tritonserver and, summed, of its child processes (the stubs)."""
    process = psutil.Process(pid)
    children = process.children(recursive=True)
    stubs = 0.0
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):  # a stub the watchdog is replacing
            stubs += child.memory_info().rss
    return process.memory_info().rss / 1e6, stubs / 1e6


class Tally:
    """What the clients saw: answers per (model, protocol), failures with their time, requests in flight."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.lock = threading.Lock()
        self.counts = {f"{model}/{protocol}": 0 for model, protocol in pairs}
        self.in_flight = {model: 0 for model, _ in pairs}
        self.failures: list[tuple[float, str, str]] = []  # (monotonic time, model, message)

    def begin(self, model: str) -> None:
        with self.lock:
            self.in_flight[model] += 1

    def end(self, model: str, protocol: str, error: Exception | None) -> None:
        with self.lock:
            self.in_flight[model] -= 1
            if error is None:
                self.counts[f"{model}/{protocol}"] += 1
            else:
                self.failures.append((time.monotonic(), model,
                                      f"{model} over {protocol}: {type(error).__name__}: {error}"[:300]))


def client_loop(url: str, protocol: str, model: str, inputs: dict[str, np.ndarray], until: float, tally: Tally) -> None:
    with Client(url, protocol) as client:
        send = client.request(model, inputs)
        while time.monotonic() < until:
            tally.begin(model)
            error: Exception | None = None
            try:
                outputs = send()
                bad = [name for name, array in outputs.items() if not np.isfinite(array).all()]
                if bad:
                    error = ValueError(f"non-finite values in {bad}")
            except Exception as failure:  # a soak counts every failure, it never stops on one
                error = failure
            tally.end(model, protocol, error)


def saturate(server: TritonServer, clients: int, seconds: float) -> tuple[Tally, list[threading.Thread], float]:
    """Start `clients` closed-loop clients over every (model, protocol) pair of the server, for `seconds`."""
    models = sorted(server.loaded)
    if not models:
        raise SystemExit(f"no model is served from {server.repository}")
    pairs = list(itertools.product(models, ("http", "grpc")))
    urls = {"http": server.http_url, "grpc": server.grpc_url}
    with Client(server.http_url, "http") as control:
        inputs = {model: generate_inputs(control.config(model), 1, SHAPES.get(model, {}), VALUES.get(model, {}))
                  for model in models}
    tally = Tally(pairs)
    until = time.monotonic() + seconds
    threads = [threading.Thread(target=client_loop, daemon=True,
                                args=(urls[protocol], protocol, model, inputs[model], until, tally))
               for model, protocol in itertools.islice(itertools.cycle(pairs), clients)]
    for thread in threads:
        thread.start()
    return tally, threads, until


def soak(server: TritonServer, minutes: float, clients: int, sample_s: float) -> dict:
    started = time.monotonic()
    tally, threads, until = saturate(server, clients, minutes * 60)
    assert server.process is not None
    samples = []
    print(f"{'s':>6} {'requests':>9} {'req/s':>7} {'failed':>6} {'server MB':>10} {'stubs MB':>9}")
    last_requests, last_t = 0, started
    while time.monotonic() < until:
        time.sleep(min(sample_s, max(0.0, until - time.monotonic())))
        now = time.monotonic()
        server_mb, stubs_mb = server_rss_mb(server.process.pid)
        requests, failed = sum(tally.counts.values()), len(tally.failures)
        samples.append({"t_s": now - started, "requests": requests, "failed": failed,
                        "server_rss_mb": server_mb, "stubs_rss_mb": stubs_mb})
        print(f"{now - started:6.0f} {requests:9d} {(requests - last_requests) / (now - last_t):7.1f} "
              f"{failed:6d} {server_mb:10.1f} {stubs_mb:9.1f}", flush=True)
        last_requests, last_t = requests, now
    for thread in threads:
        thread.join(timeout=120)
    return {"minutes": minutes, "clients": clients, "requests": dict(tally.counts), "failed": len(tally.failures),
            "failures": [message for _, _, message in tally.failures[:20]], "samples": samples}


def rss_growth(samples: list[dict]) -> float:
    """The last minute's mean RSS (server and stubs) over the second minute's, minus 1."""
    def mean_rss(in_window) -> float:
        window = [s["server_rss_mb"] + s["stubs_rss_mb"] for s in samples if in_window(s["t_s"])]
        return float(np.mean(window)) if window else float("nan")

    end = samples[-1]["t_s"]
    return mean_rss(lambda t: t > end - 60) / mean_rss(lambda t: 60 <= t < 120) - 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"), help="default: %(default)s")
    parser.add_argument("--minutes", type=float, default=10.0, help="default: %(default)s")
    parser.add_argument("--clients", type=int, default=16, help="connections in all (default: %(default)s)")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between memory samples (default: %(default)s)")
    parser.add_argument("--rss-growth", type=float, default=0.05, help="largest allowed growth (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/soak.json"), help="default: %(default)s")
    args = parser.parse_args(argv)
    if args.minutes < 3:
        parser.error("--minutes must be at least 3: the memory check compares the second minute with the last")
    with TritonServer(args.repository, require_all=True) as server:
        result = soak(server, args.minutes, args.clients, args.sample)
    growth = rss_growth(result["samples"])
    result["rss_growth"] = growth
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    total = sum(result["requests"].values())
    print(f"soak: {total} requests in {args.minutes:g} min ({result['requests']}), {result['failed']} failed, "
          f"RSS {growth:+.1%} from the second minute to the last; wrote {args.out}")
    for failure in result["failures"][:5]:
        print(f"  {failure}")
    return 0 if result["failed"] == 0 and growth <= args.rss_growth else 1


if __name__ == "__main__":
    sys.exit(main())
