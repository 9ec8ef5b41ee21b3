"""In-process ONNX Runtime, plugin nodes run natively (libplugserve_ort.so) against the decomposed graph.

For each model and concurrency c = 1..4: c threads, each with its own session configured as the
onnxruntime runner configures a model with c instances (`session_options`: the cores shared out),
each calling `run` back to back for --seconds. Prints throughput and p50 side by side; --profile
adds where the time goes, from ORT's profiler (one session on every core, --profile-runs runs).

    PYTHONPATH=src python bench/ort_native.py [--seconds 4] [--profile]

The exported graphs are cached in bench/results/ort_native/ (delete them after changing a model).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from plugserve import native
from plugserve.export import export_onnx
from plugserve.runners.contract import ONNXRUNTIME_OPTIONS_PARAMETER
from plugserve.runners.onnxruntime_runner import session_options
from plugserve.surgery import decompose

RESULTS = Path(__file__).resolve().parent / "results" / "ort_native"
# models.yaml's opt shapes at batch 1, which is what an idle instance serves.
WORKLOADS = {
    "super_resolution": {"image": np.random.default_rng(0).random((1, 3, 128, 128), dtype=np.float32),
                         "size": np.array([256, 256], np.int64)},
    "deformable_encoder": {"image": np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)},
}


def graphs(model: str) -> dict[str, onnx.ModelProto]:
    path = RESULTS / f"{model}.onnx"
    if not path.is_file():
        RESULTS.mkdir(parents=True, exist_ok=True)
        export_onnx(model, path)
    plugin_graph = onnx.load(str(path))
    return {"native": plugin_graph, "decomposed": decompose(plugin_graph)}


def make_session(graph: onnx.ModelProto, variant: str, instances: int, profile_dir: str | None = None):
    # As the lowering writes config.pbtxt, so the library is registered by the runner's own code.
    library = native.onnxruntime_library()
    ops = {"ops": variant, "library": library.name} if variant == "native" else {"ops": variant}
    config = {"instance_group": [{"count": instances}],
              "parameters": {ONNXRUNTIME_OPTIONS_PARAMETER: {"string_value": json.dumps(ops)}}}
    options = session_options(config, str(library.parent))
    if profile_dir:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(profile_dir, variant)
    return ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])


def measure(graph: onnx.ModelProto, variant: str, feed: dict, concurrency: int, seconds: float) -> dict:
    sessions = [make_session(graph, variant, concurrency) for _ in range(concurrency)]
    for s in sessions:
        s.run(None, feed)  # first run allocates; not timed
    latencies: list[list[float]] = [[] for _ in sessions]
    start = threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def worker(index: int) -> None:
        start.wait()
        while time.perf_counter() < deadline[0]:
            t0 = time.perf_counter()
            sessions[index].run(None, feed)
            latencies[index].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    deadline[0] = time.perf_counter() + seconds
    t0 = time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    pooled = [x for per in latencies for x in per]
    return {"throughput": len(pooled) / wall, "p50_ms": 1e3 * statistics.median(pooled), "runs": len(pooled)}


def profile(graph: onnx.ModelProto, variant: str, feed: dict, runs: int) -> dict[str, float]:
    """Share of node time per op type over `runs` runs, from ORT's profiler JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        session = make_session(graph, variant, 1, profile_dir=tmp)
        for _ in range(runs + 1):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"]
    total = sum(per_op.values())
    return {op: dur / total for op, dur in sorted(per_op.items(), key=lambda kv: -kv[1])} | {"_total_ms_per_run":
                                                                                            total / 1e3 / (runs + 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 2, 3, 4])
    parser.add_argument("--seconds", type=float, default=4.0, help="measured time per step")
    parser.add_argument("--profile", action="store_true", help="also print ORT profiler shares per op type")
    parser.add_argument("--profile-runs", type=int, default=10)
    args = parser.parse_args(argv)
    if native.onnxruntime_library() is None:
        raise SystemExit("ort_native: libplugserve_ort.so not built (make plugins with ONNX Runtime headers)")
    cores = len(os.sched_getaffinity(0))
    print(f"ONNX Runtime {ort.__version__}, {cores} cores, {native.onnxruntime_library()}")
    print(f"{'model':<20}{'c':>3}{'native /s':>12}{'decomposed /s':>15}{'ratio':>8}{'native p50 ms':>15}"
          f"{'decomposed p50 ms':>19}")
    rows = []
    for model in args.models:
        variants, feed = graphs(model), WORKLOADS[model]
        for c in args.concurrency:
            # Alternating which variant goes first keeps a slow drift of the machine from favouring one.
            order = ["native", "decomposed"] if c % 2 else ["decomposed", "native"]
            got = {v: measure(variants[v], v, feed, c, args.seconds) for v in order}
            n, d = got["native"], got["decomposed"]
            rows.append({"model": model, "concurrency": c, **{f"{v}_{k}": x for v in got for k, x in got[v].items()}})
            print(f"{model:<20}{c:>3}{n['throughput']:>12.2f}{d['throughput']:>15.2f}"
                  f"{n['throughput'] / d['throughput']:>7.2f}x{n['p50_ms']:>15.1f}{d['p50_ms']:>19.1f}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "table.json").write_text(json.dumps(rows, indent=1))
    if args.profile:
        for model in args.models:
            variants, feed = graphs(model), WORKLOADS[model]
            for variant in ("native", "decomposed"):
                shares = profile(variants[variant], variant, feed, args.profile_runs)
                total = shares.pop("_total_ms_per_run")
                top = ", ".join(f"{op} {share:.0%}" for op, share in list(shares.items())[:6])
                print(f"profile {model} {variant}: {total:.1f} ms of node time per run ({cores} threads): {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
