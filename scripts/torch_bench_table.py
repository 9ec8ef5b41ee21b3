#!/usr/bin/env python3
"""Markdown table of `plugserve bench` runs of bench/torch_h100.yaml: each model beside its pure-PyTorch twin.

    python scripts/torch_bench_table.py RESULTS_DIR

A model named `<name>_pytorch` is the twin of `<name>` (and of `<name>_eager`); the ratio column is
throughput over the twin's at the same concurrency and transport; "cross-check" is the step's
throughput over the other engine's (`--cross-check`), where measured. The server columns are Triton's per-request
averages over the measured windows: queue, compute input (request tensors into the runner),
compute infer (the runner's execute), compute output (response tensors out). "in flight" is
requests/s times the mean latency: how many requests the engine really kept in flight (a
concurrency step that holds fewer than its concurrency is bound by its sender); "GPU %" is the
mean utilisation NVML saw over the windows (near 100: the GPU bounds the step).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from plugserve.perf.results import memory_mode


def twin(model: str) -> str | None:
    if model.endswith("_pytorch"):
        return None
    return model.removesuffix("_eager") + "_pytorch"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    runs = {}
    for path in sorted(Path(argv[0]).glob("*.json")):
        run = json.loads(path.read_text())
        meta = run["meta"]
        memory = memory_mode(meta["shared_memory"])
        transport = meta["protocol"] + ("" if memory == "none" else f" + {memory} shm")
        runs[(meta["model"], transport)] = run  # the newest of a kind wins: file names end with the start time
    steps = {(model, transport, step["load"]): step for (model, transport), run in runs.items()
             for step in run["steps"]}
    print("| model | transport | engine | conc | in flight | infer/s | vs PyTorch | cross-check | p50 ms | p99 ms | batch "
          "| GPU % | queue us | input us | infer us | output us | stop | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (model, transport), run in runs.items():
        checked = {step["load"]: step for step in run.get("cross_check", [])}
        for step in run["steps"]:
            check = checked.get(step["load"])
            cross = (f"{step['throughput'] / check['throughput']:.2f}x {check['engine']}"
                     if check and check["throughput"] else "")
            other = steps.get((twin(model), transport, step["load"])) if twin(model) else None
            ratio = f"{step['throughput'] / other['throughput']:.2f}x" if other and other["throughput"] else ""
            server = step["server"]
            in_flight = step["requests_per_s"] * step["mean_ms"] / 1000
            busy = [g["utilization_percent"] for g in step.get("gpus", []) if g.get("utilization_percent") is not None]
            gpu = max(busy) if busy else float("nan")
            print(f"| {model} | {transport} | {step.get('engine', 'python')} | {step['load']:g} | {in_flight:.1f} "
                  f"| {step['throughput']:.1f} | {ratio} | {cross} "
                  f"| {step['p50_ms']:.2f} "
                  f"| {step['p99_ms']:.2f} | {server.get('server_avg_batch', float('nan')):.2f} | {gpu:.0f} "
                  f"| {server.get('server_queue_us', float('nan')):.0f} "
                  f"| {server.get('server_compute_input_us', float('nan')):.0f} "
                  f"| {server.get('server_compute_infer_us', float('nan')):.0f} "
                  f"| {server.get('server_compute_output_us', float('nan')):.0f} | {step['stopped']} "
                  f"| {step['errors']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
