"""`plugserve report` over a results folder: every section, every plot it links, the pairs it compares."""

from __future__ import annotations

import dataclasses
import json

from plugserve.perf.load import StepResult
from plugserve.perf.results import write_results
from plugserve.report import build_report


def _step(load: float, throughput: float, p50: float) -> dict:
    return dataclasses.asdict(StepResult(
        mode="concurrency", load=load, stopped="stable", windows=3, window_throughputs=[throughput] * 3,
        duration_s=3.0, requests=int(throughput * 3), errors=0, error_messages=[], requests_per_s=throughput,
        throughput=throughput, p50_ms=p50, p90_ms=p50 * 1.2, p95_ms=p50 * 1.3, p99_ms=p50 * 1.5, mean_ms=p50,
        server={"server_queue_us": 10.0, "server_compute_infer_us": p50 * 900}))


def _run(started: float, *, batching: bool = True, instances: int = 1, protocol: str = "http",
         calibrate: bool = False, in_process: bool = False) -> dict:
    steps = [_step(c, 10.0 * c ** (0.8 if batching else 0.5), 5.0 * c ** 0.5) for c in (1, 2, 4)]
    if in_process:  # measured in two rounds, served 10% below and above its pooled throughput
        steps = [dict(step, round_throughputs=[step["throughput"] * 0.9, step["throughput"] * 1.1]) for step in steps]
    return {"meta": {"model": "plugserve_identity" if calibrate else "super_resolution", "runtime": "onnxruntime",
                     "protocol": protocol, "mode": "concurrency", "tag": "", "calibrate": calibrate,
                     "dynamic_batching": batching, "instance_count": instances, "batch_size": 1,
                     "shared_memory": False, "started": started, "input_shapes": {"image": [1, 3, 64, 64]},
                     "host": {"cpus": 2}},
            "calibration": None if calibrate else {"requests_per_s": 1000.0, "file": "c.json", "started": 0},
            "sweep_end": "done", "steps": steps,
            "in_process": [dict(step, throughput=step["throughput"] * 1.05,
                                round_throughputs=[step["throughput"] * 1.05] * 2) for step in steps]
            if in_process else []}


def test_the_report_has_every_section_and_links_only_plots_it_wrote(tmp_path):
    results = tmp_path / "results"
    for index, run in enumerate([_run(1, calibrate=True), _run(2, in_process=True), _run(3, batching=False),
                                 _run(4, instances=2), _run(5, protocol="grpc")]):
        run["meta"]["started"] = 1_700_000_000 + index  # distinct file names
        write_results(run, results)
    (results / "kernels.json").write_text(json.dumps({
        "device": "NVIDIA H100", "copy_bandwidth_gbs": 3020.0, "torch": "2.11", "time": "t", "library": "lib",
        "rows": [{"op": "DynamicResize", "case": "[1, 3, 64, 64]->128x128", "dtype": "float32", "ours_ms": 0.01,
                  "eager_ms": 0.05, "x_eager": 5.0, "bandwidth_share": 0.7}],
        "targets_met": {"resize >= 3x eager": True}}))
    (results / "locust-http_stats.csv").write_text(
        "Type,Name,Request Count,Failure Count,Median Response Time,50%\n"
        "HTTP,super_resolution 64x64,100,0,7,7\nAggregated,Aggregated,100,0,7,7\n")
    (results / "locust-http_settings.json").write_text(json.dumps({"users": 2}))

    page = build_report(results, tmp_path / "report")
    text = page.read_text()
    for heading in ("## Harness ceiling", "## Latency against throughput", "## Dynamic batching on against off",
                    "## One model instance against two", "## Served against in-process ONNX Runtime",
                    "## locust against plugserve bench", "## Kernels (bench/kernels.py)"):
        assert heading in text
    assert "No pair of runs" not in text  # both comparisons found their pair
    assert "| http | none | 30.3 | 4 |" in text  # the calibration run's best step is the ceiling
    assert "harness ceiling 1000 req/s" in text  # each run states the ceiling it was flagged against
    assert "| 0.95x | 0.86 1.05 |" in text  # served / in-process at each concurrency, pooled and per round
    assert "super_resolution 64x64 | http | 2 | 100 | 0 | 7.0 | 7.1 | -1% |" in text  # locust beside bench at c=2
    assert "| yes |" in text and "70.0%" in text  # kernel targets and bandwidth share
    images = [line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert len(images) == 5 + 4  # and a latency breakdown per measured run
    assert all((page.parent / name).stat().st_size > 1000 for name in images)


def test_runs_by_different_engines_stay_apart_and_flags_mark_what_cannot_be_trusted(tmp_path):
    results = tmp_path / "results"
    python = _run(1)
    python["meta"]["load_average_before"] = 1.9  # of 2 cores: the host was busy
    analyzer = _run(2)
    analyzer["meta"].update(engine="perf_analyzer", cross_check="python", load_average_before=0.1)
    analyzer["steps"][1]["stopped"] = "time-cap"
    analyzer["cross_check"] = [dict(step, throughput=step["throughput"] / 2, engine="python")
                               for step in analyzer["steps"]]
    rate = _run(3)
    rate["meta"].update(mode="rate", loads=[10, 20, 40])
    rate["steps"] = [dict(step, mode="rate", load=load, requests_per_s=achieved) for step, load, achieved in
                     zip(rate["steps"], (10, 20, 40), (10.0, 19.5, 25.0), strict=True)]
    for index, run in enumerate([python, analyzer, rate]):
        run["meta"]["started"] = 1_700_000_000 + index
        write_results(run, results)
    text = build_report(results, tmp_path / "report").read_text()
    assert "concurrency / python" in text and "concurrency / perf_analyzer" in text  # not merged as one config
    assert text.count("**Loaded host**") == 1
    assert "**time-capped: unstable**" in text
    assert "achieved 25.0 of 40 req/s offered" in text and "achieved 19.5" not in text
    # The synthetic steps' requests/s times mean latency is far below their concurrency (Little's law).
    assert "**0.1 in flight of 2**" in text
    assert "## perf_analyzer against plugserve's sender" in text and "| 2.00x |" in text
