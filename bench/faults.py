"""Faults measured under the server `plugserve serve` runs: kill -9 of one python-backend stub while
every model is at saturation, and each model's instance memory before, during and after the largest
request its shape profiles allow.

    python bench/faults.py [--repository model_repository] [--clients 8] [--out bench/results/faults.json]

Kill: the clients of bench/soak.py run for `--before` seconds, then one stub of `--victim` (default:
the first model) is killed with SIGKILL; the clients go on for `--after` seconds. It reports how many
requests were in flight to that model at the kill, how many failed, and the recovery time: from the
kill to the last failed request (every request after it succeeded). Exit 1 when the recovery took
longer than `--recovery` seconds or a model other than the victim lost a request.

Largest request: for each model, batch 1 at the `max` point of its last shape profile (for
super_resolution: a 1024x1024 image upscaled to 2048x2048), sent alone; the resident memory of the
model's stubs is sampled every 20 ms. It reports the instance's RSS before, at its peak and 3 s after
the answer.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import psutil

from plugserve.client import Client
from plugserve.perf.inputs import generate_inputs, profile_shapes
from plugserve.runners import contract
from plugserve.server import TritonServer
from plugserve.watchdog import stubs
from soak import saturate


def kill_under_load(server: TritonServer, victim: str, clients: int, before_s: float, after_s: float) -> dict:
    assert server.process is not None
    tally, threads, _ = saturate(server, clients, before_s + after_s)
    time.sleep(before_s)
    stub = next(s for s in stubs(server.process.pid).values() if s.model == victim)
    with tally.lock:
        in_flight = tally.in_flight[victim]
        answered_before = sum(tally.counts.values())
        os.kill(stub.pid, signal.SIGKILL)
        killed_at = time.monotonic()
    for thread in threads:
        thread.join(timeout=120)
    victim_failures = [t - killed_at for t, model, _ in tally.failures if model == victim]
    others = [message for _, model, message in tally.failures if model != victim]
    recovery = max(victim_failures, default=0.0)
    return {"victim": victim, "instance": stub.instance, "clients": clients, "in_flight_at_kill": in_flight,
            "answered_before_kill": answered_before, "answered": sum(tally.counts.values()),
            "failed": len(victim_failures), "recovery_s": recovery, "other_models_failed": len(others),
            "failures": [message for _, _, message in tally.failures[:10]]}


def model_stubs_rss_mb(server_pid: int, model: str) -> dict[str, float]:
    found = {}
    for stub in stubs(server_pid).values():
        if stub.model == model:
            try:
                found[stub.instance] = psutil.Process(stub.pid).memory_info().rss / 1e6
            except psutil.NoSuchProcess:
                continue
    return found


def largest_request_memory(server: TritonServer, model: str) -> dict:
    assert server.process is not None
    with Client(server.http_url, "http") as client:
        config = client.config(model)
        spec = contract.spec_from_config(config)
        profile = len(spec["profiles"]) - 1
        largest = profile_shapes(config, profile, "max")
        shapes = {t["name"]: largest[t["name"]] for t in spec["inputs"] if not t.get("shape_tensor")}
        values = {t["name"]: ",".join(map(str, largest[t["name"]])) for t in spec["inputs"] if t.get("shape_tensor")}
        inputs = generate_inputs(config, 1, shapes, values, profile=profile)
        before = model_stubs_rss_mb(server.process.pid, model)
        peak = dict(before)
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                for instance, rss in model_stubs_rss_mb(server.process.pid, model).items():
                    peak[instance] = max(peak.get(instance, 0.0), rss)
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        outputs = client.infer(model, inputs)
        seconds = time.monotonic() - started
        done.set()
        sampler.join()
        time.sleep(3)
        after = model_stubs_rss_mb(server.process.pid, model)
    served = max(peak, key=lambda instance: peak[instance] - before.get(instance, 0.0))
    return {"model": model, "inputs": {name: list(array.shape) for name, array in inputs.items()},
            "values": values, "outputs": {name: list(array.shape) for name, array in outputs.items()},
            "seconds": seconds, "instance": served, "rss_before_mb": before.get(served),
            "rss_peak_mb": peak[served], "rss_after_mb": after.get(served)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"), help="default: %(default)s")
    parser.add_argument("--clients", type=int, default=8, help="connections in all (default: %(default)s)")
    parser.add_argument("--victim", help="the model one of whose stubs is killed (default: the first served)")
    parser.add_argument("--before", type=float, default=10.0, help="seconds of load before the kill (default: %(default)s)")
    parser.add_argument("--after", type=float, default=20.0, help="seconds of load after it (default: %(default)s)")
    parser.add_argument("--recovery", type=float, default=10.0, help="longest allowed recovery, s (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/faults.json"), help="default: %(default)s")
    args = parser.parse_args(argv)
    said: list[str] = []
    with TritonServer(args.repository, require_all=True, say=said.append) as server:
        victim = args.victim or sorted(server.loaded)[0]
        if victim not in server.loaded:
            parser.error(f"--victim {victim!r} is not served; served: {sorted(server.loaded)}")
        kill = kill_under_load(server, victim, args.clients, args.before, args.after)
        memory = [largest_request_memory(server, model) for model in sorted(server.loaded)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    watchdog = [line for line in said if "watchdog" in line]
    args.out.write_text(json.dumps({"kill": kill, "largest_request": memory, "watchdog": watchdog}, indent=1))
    print(f"kill -9 of {kill['instance']} under {args.clients} clients: {kill['in_flight_at_kill']} request(s) in flight "
          f"to {victim}, {kill['failed']} failed, recovered {kill['recovery_s']:.2f} s after the kill; "
          f"other models lost {kill['other_models_failed']}; {kill['answered']} answered in {args.before + args.after:g} s")
    for line in [*kill["failures"][:2], *watchdog]:
        print(f"  {line}")
    for row in memory:
        print(f"largest {row['model']} request {row['inputs']} {row['values'] or ''} ({row['seconds']:.1f} s): "
              f"{row['instance']} RSS {row['rss_before_mb']:.0f} MB before, {row['rss_peak_mb']:.0f} peak, "
              f"{row['rss_after_mb']:.0f} 3 s after")
    print(f"wrote {args.out}")
    return 0 if kill["recovery_s"] <= args.recovery and kill["other_models_failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
