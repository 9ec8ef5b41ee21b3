"""`plugserve bench`: perf sweeps over concurrency or request rate against a served model."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from plugserve import native, repository
from plugserve.console import UsageError
from plugserve.perf import analyzer
from plugserve.perf.gpus import GpuSampler
from plugserve.perf.inputs import generate_inputs
from plugserve.perf.load import SenderSide, Side, StepResult, StepSettings, sweep
from plugserve.perf.results import (
    CALIBRATION_MODEL,
    HARNESS_BOUND_SHARE,
    RESULTS_DIR,
    format_table,
    host_description,
    latest_calibration,
    write_results,
)
from plugserve.perf.stats import parse_steps
from plugserve.perf.targets import TritonTarget, in_process_sender
from plugserve.perf.variants import build_calibration_repository, build_variant_repository
from plugserve.server import TritonServer

ENGINES = (analyzer.ENGINE, "python")
SHARED_MEMORY = ("none", "system", "cuda")


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_argument_group("target")
    target.add_argument("--model", help="model name in the repository (not needed with --calibrate)")
    target.add_argument("--url", help="a running server, host:port of its HTTP or gRPC endpoint; "
                                      "without it the harness starts tritonserver on --repository")
    target.add_argument("--protocol", choices=("http", "grpc"), default="http",
                        help="tritonclient protocol (default: %(default)s)")
    target.add_argument("--repository", type=Path, default=Path("model_repository"), help="default: %(default)s")
    target.add_argument("--config", type=Path, default=Path("models.yaml"),
                        help="models.yaml, for --dynamic-batching/--instances variants (default: %(default)s)")
    target.add_argument("--dynamic-batching", choices=("on", "off"),
                        help="serve a variant of the model with dynamic batching on or off (built in a scratch "
                             "repository from the same model.onnx)")
    target.add_argument("--instances", type=int, help="serve a variant with this many model instances")
    load = parser.add_argument_group("load")
    load.add_argument("--concurrency", default=None,
                      help="concurrency sweep, start:end[:step] or a,b,c (default 1:4 unless --request-rate)")
    load.add_argument("--request-rate", help="request-rate sweep in requests/s, start:end[:step] or a,b,c")
    load.add_argument("--arrivals", choices=("constant", "poisson"), default="constant",
                      help="request-rate sends: evenly spaced or a Poisson process (default: %(default)s)")
    load.add_argument("--workers", type=int, default=16, help="request-rate: senders available (default: %(default)s)")
    load.add_argument("--batch-size", type=int, default=1, help="items per request (default: %(default)s)")
    load.add_argument("--shape", action="append", default=[], metavar="NAME=D1,D2",
                      help="dims of an input without the batch dimension (default: the shape profile's opt)")
    load.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy|V1,V2",
                      help="input data: a .npy file (the whole request tensor) or values of one item")
    load.add_argument("--profile", type=int, default=0, help="shape profile whose opt point fills unset inputs")
    load.add_argument("--shared-memory", choices=SHARED_MEMORY, default="none",
                      help="pass inputs and outputs through system shared memory, or CUDA memory on the server's "
                           "GPU (a client on the same host; the python engine needs cuda-python) (default: %(default)s)")
    load.add_argument("--seed", type=int, default=0, help="seed of the generated inputs (default: %(default)s)")
    step = parser.add_argument_group("each step")
    step.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring (default: %(default)s)")
    step.add_argument("--window", type=float, default=1.0, help="seconds per measurement window (default: %(default)s)")
    step.add_argument("--stability", type=float, default=0.1,
                      help="stable when the last windows' throughput spread (max-min)/mean is at most this "
                           "(default: %(default)s)")
    step.add_argument("--stable-windows", type=int, default=3, help="windows that must agree (default: %(default)s)")
    step.add_argument("--max-step-time", type=float, default=15.0,
                      help="seconds of measuring after which a step stops unstable (default: %(default)s)")
    step.add_argument("--min-requests", type=int, default=5,
                      help="a window also lasts until this many requests completed (default: %(default)s)")
    step.add_argument("--rounds", type=int, default=1,
                      help="measure each step this many times and pool them; with --in-process the two "
                           "alternate which goes first, so both see the machine's drift (default: %(default)s)")
    step.add_argument("--max-latency", type=float, help="stop the sweep after a step whose p99 exceeds this (ms)")
    run = parser.add_argument_group("run")
    run.add_argument("--engine", choices=ENGINES,
                     help="what sends the requests: NVIDIA's perf_analyzer (C++, the default where installed: "
                          "`make perf-analyzer`) or this harness's Python senders")
    run.add_argument("--cross-check", action="store_true",
                     help="measure each step with the other engine too, in alternating rounds, and report the ratio")
    run.add_argument("--calibrate", action="store_true",
                     help="measure the harness ceiling against a trivial identity model on a server of its own")
    run.add_argument("--in-process", action="store_true",
                     help="also run the same ONNX Runtime session in this process at the same concurrency")
    run.add_argument("--tag", default="", help="a label for this run, part of the file names")
    run.add_argument("--results", type=Path, default=RESULTS_DIR, help="default: %(default)s")


def _assignments(items: Sequence[str], option: str) -> dict[str, str]:
    parsed = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ValueError(f"{option} {item!r}: expected NAME=VALUE")
        parsed[name] = value
    return parsed


def _check_arguments(args: argparse.Namespace) -> tuple[str, list[float], StepSettings]:
    if args.concurrency and args.request_rate:
        raise ValueError("give --concurrency or --request-rate, not both")
    if args.calibrate and (args.request_rate or args.in_process or args.dynamic_batching or args.instances):
        raise ValueError("--calibrate runs a concurrency sweep on its own model; drop the other target options")
    if not args.calibrate and not args.model:
        raise ValueError("--model is required (or --calibrate)")
    if args.in_process and args.request_rate:
        raise ValueError("--in-process compares at the same concurrency; use it with --concurrency")
    if args.url and (args.dynamic_batching or args.instances):
        raise ValueError("--dynamic-batching/--instances build and serve a variant; they cannot apply to --url")
    for name in ("batch_size", "workers", "stable_windows", "min_requests", "rounds"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.instances is not None and args.instances < 1:
        raise ValueError(f"--instances must be >= 1, got {args.instances}")
    for name in ("window", "max_step_time"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    if args.warmup < 0 or args.stability < 0:
        raise ValueError("--warmup and --stability must be >= 0")
    if args.request_rate:
        mode, loads = "rate", parse_steps(args.request_rate, integer=False)
    else:
        mode, loads = "concurrency", parse_steps(args.concurrency or "1:4", integer=True)
    settings = StepSettings(args.warmup, args.window, args.stability, args.stable_windows, args.max_step_time,
                            args.min_requests, args.rounds)
    return mode, loads, settings


def _engine(args: argparse.Namespace) -> str:
    """The engine asked for, else perf_analyzer where installed; one line says why when it is not used."""
    found = analyzer.find()
    if args.cross_check and found is None:
        raise ValueError("--cross-check needs perf_analyzer: install it with `make perf-analyzer` "
                         f"or point ${analyzer.ENVIRONMENT_VARIABLE} at it")
    if args.engine == analyzer.ENGINE and found is None:
        raise ValueError("--engine perf_analyzer: not found (run `make perf-analyzer`)")
    if args.engine is None and found is None:
        print("bench: perf_analyzer not found (`make perf-analyzer` installs it); measuring with the Python sender")
        return "python"
    return args.engine or analyzer.ENGINE


def _runtime(config: dict[str, Any], repository_dir: Path, model: str) -> str:
    """The runtime the served config names (build writes it), else the one in the newest local
    version's manifest.json: a server given by --url need not serve this machine's repository."""
    named = config.get("parameters", {}).get(repository.RUNTIME_PARAMETER, {}).get("string_value")
    if named:
        return named
    served = repository.served_version_dir(repository_dir / model)
    manifest = served / repository.MANIFEST_NAME if served else None
    return json.loads(manifest.read_text()).get("runtime", "unknown") if manifest and manifest.is_file() else "unknown"


def run_bench(args: argparse.Namespace) -> int:
    """Expected failures raise, for plugserve.cli to end in one line and their exit code: options
    (UsageError), no server or a refusal (plugserve.client), no GPU for --shared-memory cuda."""
    try:
        mode, loads, settings = _check_arguments(args)
        args.engine = _engine(args)
        shapes = {name: [int(d) for d in dims.split(",")]
                  for name, dims in _assignments(args.shape, "--shape").items()}
        values = _assignments(args.input, "--input")
    except ValueError as error:
        raise UsageError(str(error)) from error
    if args.shared_memory == "cuda":
        native.require_gpu("--shared-memory cuda")
    model = CALIBRATION_MODEL if args.calibrate else args.model
    with contextlib.ExitStack() as stack:
        repository_dir = args.repository
        if args.calibrate or args.dynamic_batching or args.instances:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="plugserve-bench-")))
            if args.calibrate:
                repository_dir = build_calibration_repository(scratch / "repository")
            else:
                repository_dir = build_variant_repository(
                    args.config, args.repository, model, scratch / "repository",
                    dynamic_batching=None if args.dynamic_batching is None else args.dynamic_batching == "on",
                    instances=args.instances)
        if args.url and not args.calibrate:
            url = args.url
        else:
            # Shared memory is restricted unless asked for: this bench's own server allows it when it uses it.
            server = stack.enter_context(TritonServer(repository_dir,
                                                      allow_shared_memory=args.shared_memory != "none"))
            url = server.http_url if args.protocol == "http" else server.grpc_url
        target = TritonTarget(url, args.protocol, model)
        stack.callback(target.close)
        try:  # --shape, --input and --profile against the served config
            inputs = generate_inputs(target.config, args.batch_size, shapes, values, args.profile, args.seed)
        except ValueError as error:
            raise UsageError(str(error)) from error
        target.prepare(inputs, shared_memory=args.shared_memory)
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="plugserve-bench-analyzer-")))
        # This host's GPUs: the server's own when the bench starts it or --url names a local one.
        sampler = stack.enter_context(GpuSampler())
        run = _run_sweeps(args, target, mode, loads, settings, inputs, model, url, repository_dir, work_dir, sampler)
    csv_path, json_path = write_results(run, args.results)
    print(f"\nwrote {csv_path} and {json_path}")
    return 0


def _engine_side(engine: str, args: argparse.Namespace, target: TritonTarget, mode: str, settings: StepSettings,
                 inputs: dict[str, np.ndarray], work_dir: Path, sampler: GpuSampler) -> Side:
    def statistics() -> dict[str, Any]:
        # Triton's counters and the GPUs' totals, read together at each end of a measured window.
        return {**target.statistics(), **sampler.snapshot()}

    if engine == "python":
        return SenderSide(target.make_sender, mode, settings, args.batch_size, statistics, args.arrivals,
                          args.seed, args.workers)
    binary = analyzer.find()
    assert binary is not None, "_engine checked that perf_analyzer exists"
    batched = int(target.config.get("max_batch_size", 0)) > 0
    return analyzer.AnalyzerSide(
        binary, target.url, target.protocol, target.model, mode, settings, args.batch_size,
        analyzer.write_input_data(inputs, batched, work_dir / "input-data.json"), work_dir, args.shared_memory,
        max(target.output_bytes.values()) if target.output_bytes else 0, args.arrivals, args.workers,
        statistics)


def _run_sweeps(args: argparse.Namespace, target: TritonTarget, mode: str, loads: list[float],
                settings: StepSettings, inputs: dict[str, np.ndarray], model: str, url: str,
                repository_dir: Path, work_dir: Path, sampler: GpuSampler) -> dict[str, Any]:
    shared_memory = args.shared_memory
    other = next(engine for engine in ENGINES if engine != args.engine)
    calibration = None if args.calibrate else latest_calibration(args.results, args.protocol, shared_memory,
                                                                 args.engine)
    config = target.config
    meta = {
        "model": model, "calibrate": args.calibrate, "runtime": _runtime(target.config, repository_dir, model),
        "protocol": args.protocol, "url": url, "mode": mode, "arrivals": args.arrivals if mode == "rate" else None,
        "loads": loads, "batch_size": args.batch_size, "shared_memory": shared_memory, "tag": args.tag,
        "engine": args.engine, "cross_check": other if args.cross_check else None,
        "dynamic_batching": "dynamic_batching" in config, "max_batch_size": int(config.get("max_batch_size", 0)),
        "instance_count": sum(int(group.get("count", 1)) for group in config.get("instance_group", [])) or 1,
        "input_shapes": {name: list(array.shape) for name, array in inputs.items()},
        "settings": dataclasses.asdict(settings), "started": time.time(), "host": host_description(),
        # A shared machine's other work competes with server and harness alike: say how busy it was.
        "load_average_before": os.getloadavg()[0],
        "gpu_monitor": sampler.describe(),
    }
    ceiling = calibration["requests_per_s"] if calibration else None
    print(f"bench: {model} over {args.protocol} at {url} ({meta['runtime']}, batching "
          f"{'on' if meta['dynamic_batching'] else 'off'}, {meta['instance_count']} instance(s), inputs "
          f"{meta['input_shapes']}, shared memory {shared_memory}; measured by {args.engine}"
          f"{', cross-checked by ' + other if args.cross_check else ''})")
    print(f"bench: GPUs: {meta['gpu_monitor']}")
    if args.calibrate:
        print("bench: calibrating: the best step of this run is the harness ceiling for this protocol")
    elif calibration:
        print(f"bench: harness ceiling {calibration['requests_per_s']:.0f} req/s ({calibration['file']})")
    else:
        print("bench: harness ceiling unknown: run `plugserve bench --calibrate` for this protocol")

    def show(step: StepResult, target_name: str) -> None:
        print(f"  {target_name} {mode} {step.load:g}: {step.throughput:.1f} infer/s, p50 {step.p50_ms:.2f} ms, "
              f"p99 {step.p99_ms:.2f} ms, {step.errors} errors ({step.stopped} after {step.windows} windows)",
              flush=True)

    sides = {"served": _engine_side(args.engine, args, target, mode, settings, inputs, work_dir, sampler)}
    if args.cross_check:
        sides[other] = _engine_side(other, args, target, mode, settings, inputs, work_dir, sampler)
    if args.in_process:
        onnx_path = _served_onnx(repository_dir, model)
        print(f"bench: in-process ONNX Runtime on {onnx_path}, measured at each step beside the served model"
              + (f", {settings.rounds} rounds in alternating order" if settings.rounds > 1 else ""))
        sides["in-process"] = SenderSide(in_process_sender(onnx_path, config, inputs), mode, settings,
                                         args.batch_size, engine="in-process")

    def on_step(steps: dict[str, StepResult]) -> None:
        step = steps["served"]
        step.harness_bound = ceiling is not None and step.requests_per_s > HARNESS_BOUND_SHARE * ceiling
        for name, each in steps.items():
            show(each, f"served by {each.engine}" if name != "in-process" else name)

    result = sweep(sides, loads=loads, rounds=settings.rounds, max_latency_ms=args.max_latency, on_step=on_step)
    served = result.steps["served"]
    if result.end == "latency-cap":
        print(f"bench: sweep stopped: p99 {served[-1].p99_ms:.1f} ms is above --max-latency {args.max_latency} ms")
    meta["load_average_after"] = os.getloadavg()[0]
    print()
    print(format_table(served, result.steps.get("in-process", []), result.steps.get(other, [])))
    return {"meta": meta, "calibration": calibration, "sweep_end": result.end,
            "steps": [dataclasses.asdict(step) for step in served],
            "in_process": [dataclasses.asdict(step) for step in result.steps.get("in-process", [])],
            "cross_check": [dataclasses.asdict(step) for step in result.steps.get(other, [])]}


def _served_onnx(repository_dir: Path, model: str) -> Path:
    served = repository.served_version_dir(repository_dir / model)
    path = (served or repository_dir / model / "none") / repository.ONNX_FILE
    if not path.is_file():
        raise FileNotFoundError(f"--in-process needs the served model.onnx; {path} does not exist")
    return path
