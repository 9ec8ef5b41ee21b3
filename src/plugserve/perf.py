"""`plugserve bench`: perf sweeps over concurrency or request rate against a served model.

`perf_analyzer` is not installable from PyPI, so this is a small harness of our own on top of
`plugserve.client`. Each step of a sweep warms up, then measures back-to-back windows until the
throughput of the last few windows is stable or the step's time cap is hit, and reports client
latency percentiles, errors, and the server-side split read from Triton's statistics API over the
same windows. `--calibrate` measures the harness's own ceiling against a trivial model, so that a
result close to what the harness itself can drive is flagged instead of being read as the server's.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import math
import os
import platform
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_DIR = Path("bench/results")
PERCENTILES = (50, 90, 95, 99)
# A step whose requests/s exceed this share of the calibrated ceiling measures the harness, not the server.
HARNESS_BOUND_SHARE = 0.5
CALIBRATION_MODEL = "plugserve_identity"
# Numpy dtypes of Triton's tensor types; BYTES/BF16 inputs are not generated.
TRITON_DTYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}


# --------------------------------------------------------------------------------------------------
# Statistics


def percentile(values: Sequence[float] | np.ndarray, p: float) -> float:
    """Nearest-rank percentile: the smallest value with at least p% of the values at or below it.

    Nearest rank (as perf_analyzer reports) always returns a latency that was actually observed,
    which interpolation between two requests does not.
    """
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {p}")
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    if ordered.size == 0:
        return math.nan
    rank = math.ceil(p / 100.0 * ordered.size)
    return float(ordered[rank - 1])


def latency_summary(latencies_ms: Sequence[float] | np.ndarray) -> dict[str, float]:
    values = np.asarray(latencies_ms, dtype=np.float64)
    summary = {f"p{p}_ms": percentile(values, p) for p in PERCENTILES}
    summary["mean_ms"] = float(values.mean()) if values.size else math.nan
    return summary


def relative_spread(values: Sequence[float]) -> float:
    """(max - min) / mean; zero for an all-zero series (a step that only fails is steady too)."""
    array = np.asarray(values, dtype=np.float64)
    mean = array.mean()
    if mean == 0:
        return 0.0 if np.all(array == 0) else math.inf
    return float((array.max() - array.min()) / mean)


def parse_steps(text: str, *, integer: bool) -> list[float]:
    """`start:end:step` (inclusive, linear like perf_analyzer's ranges), `a,b,c`, or a single value."""
    convert = int if integer else float
    try:
        if ":" in text:
            parts = [convert(part) for part in text.split(":")]
            if len(parts) == 2:
                parts.append(convert(1))
            if len(parts) != 3:
                raise ValueError
            start, end, step = parts
            if step <= 0 or end < start:
                raise ValueError
            count = int(math.floor((end - start) / step + 1e-9)) + 1
            values = [convert(start + i * step) for i in range(count)]
        else:
            values = [convert(part) for part in text.split(",")]
    except ValueError:
        kind = "integers" if integer else "numbers"
        raise ValueError(
            f"bad range {text!r}: expected start:end[:step] with start <= end and step > 0, or a list a,b,c of {kind}"
        ) from None
    if any(value <= 0 for value in values):
        raise ValueError(f"bad range {text!r}: every value must be positive")
    return values


def arrival_times(rate: float, arrivals: str, seed: int = 0) -> Iterator[float]:
    """Send offsets in seconds from the start of a step: every 1/rate, or a Poisson process of that rate."""
    if rate <= 0:
        raise ValueError(f"request rate must be positive, got {rate}")
    if arrivals == "constant":
        index = 0
        while True:
            yield index / rate
            index += 1
    elif arrivals == "poisson":
        rng = np.random.default_rng(seed)
        offset = 0.0
        while True:
            for gap in rng.exponential(1.0 / rate, size=1024):
                yield offset
                offset += float(gap)
    else:
        raise ValueError(f"unknown arrival distribution {arrivals!r}: expected 'constant' or 'poisson'")


def server_split(windows: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, float]:
    """Triton's model statistics over the given (before, after) pairs of cumulative snapshots, summed:
    counts, and per-request averages in microseconds.

    Accepts the HTTP JSON form and the gRPC `as_json` form (where 64-bit counters are strings).
    """

    def stats(snapshot: dict[str, Any]) -> dict[str, Any]:
        entries = snapshot.get("model_stats", [])
        if not entries:
            raise ValueError("the server returned no model statistics for the model")
        return entries[0]

    pairs = [(stats(before), stats(after)) for before, after in windows]

    def delta(read: Callable[[dict[str, Any]], Any]) -> int:
        return sum(int(read(last)) - int(read(first)) for first, last in pairs)

    def section(name: str, field: str) -> int:
        return delta(lambda entry: entry["inference_stats"].get(name, {}).get(field, 0))

    success = section("success", "count")
    executions = delta(lambda entry: entry.get("execution_count", 0))
    inferences = delta(lambda entry: entry.get("inference_count", 0))
    split: dict[str, float] = {
        "server_success": success,
        "server_failures": section("fail", "count"),
        "server_executions": executions,
        "server_avg_batch": inferences / executions if executions else math.nan,
    }
    for name in ("queue", "compute_input", "compute_infer", "compute_output", "success"):
        key = "request" if name == "success" else name
        split[f"server_{key}_us"] = section(name, "ns") / success / 1000.0 if success else math.nan
    return split


# --------------------------------------------------------------------------------------------------
# Load generation


@dataclasses.dataclass
class StepSettings:
    warmup_s: float = 1.0
    window_s: float = 1.0
    stability: float = 0.1
    stable_windows: int = 3
    max_step_s: float = 15.0
    # A window also lasts until this many requests completed: a slow model's one-second window
    # would otherwise hold one request or none, and its throughput would be noise.
    min_requests: int = 5
    # Each step is measured this many times (warm-up and windows each time) and the rounds pooled.
    rounds: int = 1


@dataclasses.dataclass
class StepResult:
    mode: str  # "concurrency" or "rate"
    load: float  # concurrency, or the requested rate in requests/s
    stopped: str  # "stable", or "time-cap" when a round stopped at its cap
    windows: int  # over all rounds
    window_throughputs: list[float]  # the windows each round kept, round after round
    duration_s: float
    requests: int
    errors: int
    error_messages: list[str]
    requests_per_s: float
    throughput: float  # inferences/s: successful requests times batch size
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    send_delay_ms: float = math.nan  # rate mode: mean lateness of sends against their schedule
    server: dict[str, float] = dataclasses.field(default_factory=dict)
    harness_bound: bool = False
    round_throughputs: list[float] = dataclasses.field(default_factory=list)


Sender = Callable[[], object]  # one request; its result is ignored, an exception is a counted error
# Opens one worker's sender inside that worker's thread and closes it there: tritonclient.http runs
# on gevent, whose connections belong to the thread that made them.
SenderFactory = Callable[[int], AbstractContextManager[Sender]]


Record = tuple[float, float, float, str | None]  # scheduled, start, end, error


class _Recorder:
    """Per-request records appended by the worker threads (list.append is atomic under the GIL)."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def call(self, send: Sender, scheduled: float) -> None:
        start = time.perf_counter()
        error = None
        try:
            send()
        except Exception as exc:  # every failure is a counted error with its message, never a crash
            error = f"{type(exc).__name__}: {exc}".strip()[:300]
        self.records.append((scheduled, start, time.perf_counter(), error))


def _closed_loop(make_sender: SenderFactory, concurrency: int, recorder: _Recorder,
                 stop: threading.Event) -> list[threading.Thread]:
    """`concurrency` workers, each sending its next request as soon as the last one returns."""

    def work(index: int) -> None:
        with make_sender(index) as send:
            while not stop.is_set():
                recorder.call(send, math.nan)

    return [threading.Thread(target=work, args=(index,), daemon=True) for index in range(concurrency)]


def _open_loop(make_sender: SenderFactory, rate: float, arrivals: str, seed: int, workers: int,
               recorder: _Recorder, stop: threading.Event) -> list[threading.Thread]:
    """Requests sent on a schedule by a pool of workers; a send that finds every worker busy goes out late."""
    schedule = arrival_times(rate, arrivals, seed)
    lock = threading.Lock()
    origin = time.perf_counter()

    def work(index: int) -> None:
        with make_sender(index) as send:
            while not stop.is_set():
                with lock:
                    scheduled = origin + next(schedule)
                delay = scheduled - time.perf_counter()
                if delay > 0 and stop.wait(delay):
                    return
                recorder.call(send, scheduled)

    return [threading.Thread(target=work, args=(index,), daemon=True) for index in range(workers)]


@dataclasses.dataclass
class _Round:
    """One measurement of a step: its windows, and the requests that ended in the windows it kept."""
    stopped: str
    windows: int
    kept_throughputs: list[float]
    duration_s: float
    records: list[Record]
    statistics: tuple[dict[str, Any], dict[str, Any]] | None  # server snapshots at the kept windows' ends


def measure_round(threads: list[threading.Thread], recorder: _Recorder, stop: threading.Event,
                  settings: StepSettings, batch_size: int, statistics: Callable[[], dict[str, Any]] | None
                  ) -> _Round:
    """Warm up, then measure windows until the last `stable_windows` agree or `max_step_s` is spent.

    Warm-up lasts `warmup_s` and until a request completed (first runs pay for lazy initialisation).
    """

    def wait_for(count: int, since: float, until: float) -> None:
        while time.perf_counter() < until and sum(record[2] >= since for record in recorder.records) < count:
            time.sleep(0.02)

    for thread in threads:
        thread.start()
    try:
        started = time.perf_counter()
        time.sleep(settings.warmup_s)
        wait_for(1, started, started + settings.warmup_s + settings.max_step_s)
        boundaries = [time.perf_counter()]
        snapshots = [statistics() if statistics else {}]
        while True:
            time.sleep(settings.window_s)
            wait_for(settings.min_requests, boundaries[-1], boundaries[0] + settings.max_step_s)
            boundaries.append(time.perf_counter())
            snapshots.append(statistics() if statistics else {})
            ends = np.array([record[2] for record in recorder.records if record[3] is None])
            counts = np.histogram(ends, bins=boundaries)[0] if ends.size else np.zeros(len(boundaries) - 1)
            rates = [float(count) * batch_size / (b - a) for count, a, b in
                     zip(counts, boundaries[:-1], boundaries[1:], strict=True)]
            if len(rates) >= settings.stable_windows and (
                relative_spread(rates[-settings.stable_windows:]) <= settings.stability
            ):
                stopped = "stable"
                break
            if boundaries[-1] - boundaries[0] >= settings.max_step_s:
                stopped = "time-cap"
                break
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)

    used = min(settings.stable_windows, len(rates))
    begin, end = boundaries[-used - 1], boundaries[-1]
    return _Round(stopped=stopped, windows=len(rates), kept_throughputs=rates[-used:], duration_s=end - begin,
                  records=[record for record in recorder.records if begin <= record[2] < end],
                  statistics=(snapshots[-used - 1], snapshots[-1]) if statistics else None)


def step_result(mode: str, load: float, rounds: Sequence[_Round], batch_size: int) -> StepResult:
    """One step from its rounds, pooled: their requests together over their summed durations."""
    measured = [record for round_ in rounds for record in round_.records]
    latencies = [(stop_t - start) * 1000.0 for _, start, stop_t, error in measured if error is None]
    errors = Counter(error for *_, error in measured if error is not None)
    delays = [(start - scheduled) * 1000.0 for scheduled, start, _, error in measured if not math.isnan(scheduled)]
    duration = sum(round_.duration_s for round_ in rounds)
    successes = len(latencies)
    summary = latency_summary(latencies)
    windows = [round_.statistics for round_ in rounds if round_.statistics is not None]
    return StepResult(
        mode=mode, load=load, stopped="stable" if all(r.stopped == "stable" for r in rounds) else "time-cap",
        windows=sum(round_.windows for round_ in rounds),
        window_throughputs=[rate for round_ in rounds for rate in round_.kept_throughputs],
        duration_s=duration, requests=len(measured), errors=sum(errors.values()),
        error_messages=[f"{count}x {message}" for message, count in errors.most_common(3)],
        requests_per_s=successes / duration, throughput=successes * batch_size / duration,
        p50_ms=summary["p50_ms"], p90_ms=summary["p90_ms"], p95_ms=summary["p95_ms"], p99_ms=summary["p99_ms"],
        mean_ms=summary["mean_ms"],
        send_delay_ms=float(np.mean(delays)) if delays else math.nan,
        server=server_split(windows) if windows else {},
        round_throughputs=[sum(r[3] is None for r in round_.records) * batch_size / round_.duration_s
                           for round_ in rounds],
    )


@dataclasses.dataclass
class Sweep:
    steps: list[StepResult]
    twin_steps: list[StepResult]  # the twin's step at each load, when the sweep had a twin
    end: str  # "done", or "latency-cap" when a step's p99 went over the cap


def sweep(make_sender: SenderFactory, *, mode: str, loads: Sequence[float], settings: StepSettings,
          batch_size: int, statistics: Callable[[], dict[str, Any]] | None = None, arrivals: str = "constant",
          seed: int = 0, workers: int = 16, max_latency_ms: float | None = None,
          twin: SenderFactory | None = None,
          on_step: Callable[[StepResult, StepResult | None], None] | None = None) -> Sweep:
    """One step per load, each measured in `settings.rounds` rounds.

    A `twin` (the same model in this process) is measured at each load as well, each round
    alternating which goes first: a shared machine's speed drifts over seconds to minutes, and
    both sides of a served / in-process ratio should see the same drift.
    """

    def run_round(factory: SenderFactory, load: float, server: Callable[[], dict[str, Any]] | None) -> _Round:
        recorder, stop = _Recorder(), threading.Event()
        if mode == "concurrency":
            threads = _closed_loop(factory, int(load), recorder, stop)
        else:
            threads = _open_loop(factory, float(load), arrivals, seed, workers, recorder, stop)
        return measure_round(threads, recorder, stop, settings, batch_size, server)

    result = Sweep([], [], "done")
    for load in loads:
        served: list[_Round] = []
        local: list[_Round] = []
        turns = [(make_sender, statistics, served)] + ([(twin, None, local)] if twin is not None else [])
        for index in range(settings.rounds):
            for factory, server, rounds in turns[::-1] if index % 2 else turns:
                rounds.append(run_round(factory, load, server))
        step = step_result(mode, load, served, batch_size)
        twin_step = step_result(mode, load, local, batch_size) if twin is not None else None
        result.steps.append(step)
        if twin_step is not None:
            result.twin_steps.append(twin_step)
        if on_step:
            on_step(step, twin_step)
        if max_latency_ms is not None and not step.p99_ms <= max_latency_ms:
            result.end = "latency-cap"
            break
    return result


# --------------------------------------------------------------------------------------------------
# Inputs


def profile_shapes(config: dict[str, Any], profile: int) -> dict[str, list[int]]:
    """The `opt` point of a models.yaml shape profile, from the spec the build writes into the config.

    For ordinary inputs: dims without the batch dimension; for shape tensors: their values.
    Empty when the model was not built by plugserve (no `plugserve_spec` parameter).
    """
    from plugserve.repository import SPEC_PARAMETER

    text = config.get("parameters", {}).get(SPEC_PARAMETER, {}).get("string_value")
    if not text:
        return {}
    spec = json.loads(text)
    profiles = spec.get("profiles", [])
    if not 0 <= profile < len(profiles):
        raise ValueError(f"model {config.get('name')!r} has {len(profiles)} shape profiles; --profile {profile} is not one")
    batched = int(spec.get("max_batch_size", 0)) > 0
    shape_tensors = {t["name"] for t in spec.get("inputs", []) if t.get("shape_tensor")}
    return {name: list(r["opt"]) if name in shape_tensors or not batched else list(r["opt"][1:])
            for name, r in profiles[profile].items()}


def generate_inputs(config: dict[str, Any], batch_size: int, shapes: dict[str, list[int]],
                    values: dict[str, str], profile: int = 0, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for every input of a Triton model config (the JSON form of `ModelConfig`).

    Variable dims come from `shapes`, else from the opt point of the model's shape profile;
    integer inputs (sizes, indices: random numbers would miss their meaning) from `values`, else
    from that profile. `values` maps a name to a .npy file (the whole request tensor) or to
    comma-separated numbers (one item, repeated over the batch). Floats are uniform in [0, 1),
    like images.
    """
    rng = np.random.default_rng(seed)
    batched = int(config.get("max_batch_size", 0)) > 0
    if batch_size > 1 and not batched:
        raise ValueError(f"model {config.get('name')!r} does not batch (max_batch_size 0); use --batch-size 1")
    known = {spec["name"] for spec in config.get("input", [])}
    for name in [*shapes, *values]:
        if name not in known:
            raise ValueError(f"model {config.get('name')!r} has no input {name!r}; its inputs: {sorted(known)}")
    opt = profile_shapes(config, profile)
    inputs = {}
    for spec in config.get("input", []):
        name, type_name = spec["name"], str(spec["data_type"]).removeprefix("TYPE_")
        if type_name not in TRITON_DTYPES:
            raise ValueError(f"input {name!r}: cannot generate data of type {type_name}; pass it with --input")
        dtype = TRITON_DTYPES[type_name]
        dims = [int(d) for d in spec["dims"]]
        if name in values and values[name].endswith(".npy"):
            inputs[name] = np.load(values[name]).astype(dtype, copy=False)
            continue
        if name in values:
            try:
                item = np.array([float(v) for v in values[name].split(",")], dtype=dtype)
                item = item.reshape([d if d > 0 else -1 for d in dims])
            except ValueError as error:
                raise ValueError(f"--input {name}={values[name]}: not numbers of the config dims {dims}: {error}") from None
            inputs[name] = np.repeat(item[None], batch_size, axis=0) if batched else item
            continue
        if not np.issubdtype(dtype, np.floating):
            if name not in opt:
                raise ValueError(f"input {name!r} is {type_name}: give its values with --input {name}=1,2 or FILE.npy")
            # With batching on, Triton gives every input a batch dimension, shape tensors too (one row each).
            array = np.array(opt[name], dtype=dtype).reshape(dims)
            inputs[name] = np.repeat(array[None], batch_size, axis=0) if batched else array
            continue
        shape = shapes.get(name, opt.get(name, dims))
        if len(shape) != len(dims) or any(d not in (-1, s) for d, s in zip(dims, shape, strict=True)):
            raise ValueError(f"input {name!r}: shape {shape} does not match the config dims {dims}")
        if any(d < 0 for d in shape):
            raise ValueError(f"input {name!r} has variable dims {dims}: give them with --shape {name}=...")
        array = rng.random(shape, dtype=np.float32).astype(dtype)
        inputs[name] = np.repeat(array[None], batch_size, axis=0) if batched else array
    return inputs


# --------------------------------------------------------------------------------------------------
# Results


def _flat_row(run: dict[str, Any], step: dict[str, Any]) -> dict[str, Any]:
    row = {key: run["meta"][key] for key in ("model", "runtime", "protocol", "tag", "dynamic_batching",
                                             "instance_count", "batch_size", "shared_memory")}
    row.update({key: value for key, value in step.items() if key not in ("server", "window_throughputs",
                                                                           "round_throughputs", "error_messages")})
    row.update(step["server"])
    row["error_messages"] = " | ".join(step["error_messages"])
    return row


def write_results(run: dict[str, Any], results_dir: Path) -> tuple[Path, Path]:
    """One JSON with everything and one CSV with a row per step (target, server split and flags)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    meta = run["meta"]
    parts = [meta["model"], meta["runtime"], meta["protocol"], meta["mode"],
             "calibration" if meta.get("calibrate") else "", meta["tag"],
             time.strftime("%Y%m%dT%H%M%S", time.gmtime(meta["started"]))]
    stem = "-".join(str(part) for part in parts if part)
    json_path = results_dir / f"{stem}.json"
    json_path.write_text(json.dumps(run, indent=2, default=_json_default) + "\n")
    rows = [_flat_row(run, step) | {"target": "served"} for step in run["steps"]]
    rows += [_flat_row(run, step) | {"target": "in-process"} for step in run.get("in_process", [])]
    csv_path = results_dir / f"{stem}.csv"
    with csv_path.open("w", newline="") as handle:
        fields = list(dict.fromkeys(key for row in rows for key in row))
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return csv_path, json_path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def round_ratios(served_rounds: Sequence[float], twin_rounds: Sequence[float]) -> list[float]:
    """Served / in-process throughput of each round of one step (NaN where the twin served nothing)."""
    return [a / b if b else math.nan for a, b in zip(served_rounds, twin_rounds, strict=True)]


def format_table(steps: Sequence[StepResult], in_process: Sequence[StepResult] = ()) -> str:
    header = (f"{'load':>7} {'infer/s':>9} {'req/s':>8} {'p50':>8} {'p90':>8} {'p95':>8} {'p99':>8} {'mean':>8} "
              f"{'errors':>6} {'queue':>8} {'infer':>8} {'batch':>5} {'stop':>8}  note")
    lines = [header, f"{'':>7} {'':>9} {'':>8} {'(ms)':>8} {'':>8} {'':>8} {'':>8} {'':>8} {'':>6} {'(us)':>8}"]
    local = {step.load: step for step in in_process}
    for step in steps:
        notes = []
        if step.harness_bound:
            notes.append("HARNESS-BOUND")
        twin = local.get(step.load)
        if twin is not None and twin.throughput:
            note = f"{step.throughput / twin.throughput:.2f}x in-process ({twin.throughput:.1f}/s"
            if len(step.round_throughputs) > 1:
                ratios = round_ratios(step.round_throughputs, twin.round_throughputs)
                note += f"; rounds {min(ratios):.2f}-{max(ratios):.2f}"
            notes.append(note + ")")
        if step.errors:
            notes.append(step.error_messages[0][:60])
        server = step.server
        lines.append(
            f"{step.load:>7g} {step.throughput:>9.1f} {step.requests_per_s:>8.1f} {step.p50_ms:>8.2f} "
            f"{step.p90_ms:>8.2f} {step.p95_ms:>8.2f} {step.p99_ms:>8.2f} {step.mean_ms:>8.2f} {step.errors:>6} "
            f"{server.get('server_queue_us', math.nan):>8.0f} {server.get('server_compute_infer_us', math.nan):>8.0f} "
            f"{server.get('server_avg_batch', math.nan):>5.2f} {step.stopped:>8}  {'; '.join(notes)}"
        )
    return "\n".join(lines)


def latest_calibration(results_dir: Path, protocol: str, shared_memory: bool) -> dict[str, Any] | None:
    """The newest calibration for this protocol, one in the same memory mode first; None without any."""
    candidates = []
    for path in results_dir.glob(f"{CALIBRATION_MODEL}-*.json"):
        run = json.loads(path.read_text())
        meta = run["meta"]
        if meta.get("calibrate") and meta["protocol"] == protocol:
            candidates.append((meta["shared_memory"] == shared_memory, meta["started"], path, run))
    if not candidates:
        return None
    _, started, path, run = max(candidates, key=lambda item: item[:2])
    return {"requests_per_s": max(step["requests_per_s"] for step in run["steps"]), "file": str(path),
            "started": started, "shared_memory": run["meta"]["shared_memory"]}


def host_description() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "platform": platform.platform()}


# --------------------------------------------------------------------------------------------------
# Calibration model


def build_calibration_repository(repository_dir: Path, max_batch_size: int = 8) -> Path:
    """A repository holding one identity model, built by `plugserve.build` like any served model.

    An ONNX `Identity` on a small FP32 vector served by the onnxruntime runner: what is left of a
    request is the harness, the protocol and Triton's python-backend path, which is the ceiling
    no real model's measurement can rise above.
    """
    import onnx
    from onnx import TensorProto, helper

    from plugserve import config
    from plugserve.build import build_model

    repository_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = repository_dir.parent / f"{CALIBRATION_MODEL}.onnx"
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], CALIBRATION_MODEL,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "n"])],
    )
    # IR version 10 (onnx 1.16): recent onnx writes a newer IR than the onnxruntime here reads.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.save(model, str(onnx_path))
    tree = {"models": {CALIBRATION_MODEL: {
        "source": {"onnx": str(onnx_path)},
        "inputs": [{"name": "x", "dtype": "FP32", "dims": [-1]}],
        "outputs": [{"name": "y", "dtype": "FP32", "dims": [-1]}],
        "profiles": [{"x": {"min": [1, 1], "opt": [1, 16], "max": [max_batch_size, 4096]}}],
        "max_batch_size": max_batch_size,
        "dynamic_batching": {"max_queue_delay_microseconds": 0},
        "runtime": "onnxruntime",
    }}}
    spec = config.parse(tree, base_dir=repository_dir.parent, label="calibration model")[CALIBRATION_MODEL]
    build_model(spec, repository_dir)
    return repository_dir


# --------------------------------------------------------------------------------------------------
# Targets: the served model, and the same ONNX Runtime session in this process


class TritonTarget:
    """The served model through `plugserve.client`: one client (one connection) per sender.

    With system shared memory each sender index owns a region per input, written once, and a region
    per output, sized from one probe request; the requests then carry only region names.
    """

    def __init__(self, url: str, protocol: str, model: str):
        from plugserve.client import Client

        self.url, self.protocol, self.model = url, protocol, model
        self.control = Client(url, protocol)
        try:
            self.config = self.control.config(model)
        except Exception as error:  # the server's message says what is wrong (unknown model, not ready)
            raise ValueError(f"cannot read the config of model {model!r} at {url} over {protocol}: {error}") from None
        self.output_names = [output["name"] for output in self.config.get("output", [])]
        self.inputs: dict[str, np.ndarray] = {}
        self.output_bytes: dict[str, int] | None = None
        self._lock = threading.Lock()
        # Per sender index: input and output region arguments of `Client.infer_shared_memory`.
        self._shm: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
        self._regions: list[tuple[str, Any]] = []

    def prepare(self, inputs: dict[str, np.ndarray], *, shared_memory: bool) -> None:
        self.inputs = {name: np.ascontiguousarray(array) for name, array in inputs.items()}
        if shared_memory:
            try:
                outputs = self.control.infer(self.model, self.inputs, self.output_names)
            except Exception as error:
                raise ValueError(f"the probe request that sizes the output regions failed: {error}") from None
            self.output_bytes = {name: array.nbytes for name, array in outputs.items()}

    @contextlib.contextmanager
    def make_sender(self, index: int) -> Iterator[Sender]:
        from plugserve.client import Client

        model, names = self.model, self.output_names
        with Client(self.url, self.protocol) as client:
            if self.output_bytes is None:
                yield client.request(model, self.inputs, names)
                return
            with self._lock:
                if index not in self._shm:
                    self._shm[index] = self._shared_memory(index, client, self.output_bytes)
            shm_inputs, shm_outputs = self._shm[index]
            yield lambda: client.infer_shared_memory(model, shm_inputs, shm_outputs)

    def _shared_memory(self, index: int, client: Any, output_bytes: dict[str, int]
                       ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Regions for one sender index, kept across steps; registered by the sender's own client
        (registration is server-wide, so `close` can unregister them through the control client)."""
        from tritonclient.utils import np_to_triton_dtype
        from tritonclient.utils import shared_memory as shm

        def region(kind: str, name: str, byte_size: int) -> tuple[str, Any]:
            # Unique per process and sender: two harnesses on one server must not share a region.
            region_name = f"plugserve_bench_{os.getpid()}_{index}_{kind}_{name}"
            handle = shm.create_shared_memory_region(region_name, "/" + region_name, byte_size)
            client.register_system_shared_memory(region_name, "/" + region_name, byte_size)
            self._regions.append((region_name, handle))
            return region_name, handle

        shm_inputs, shm_outputs = {}, {}
        for name, array in self.inputs.items():
            region_name, handle = region("in", name, array.nbytes)
            shm.set_shared_memory_region(handle, [array])
            shm_inputs[name] = (region_name, list(array.shape), np_to_triton_dtype(array.dtype), array.nbytes)
        for name, byte_size in output_bytes.items():
            shm_outputs[name] = (region("out", name, byte_size)[0], byte_size)
        return shm_inputs, shm_outputs

    def statistics(self) -> dict[str, Any]:
        return self.control.statistics(self.model)

    def close(self) -> None:
        from tritonclient.utils import shared_memory as shm

        for region_name, handle in self._regions:
            self.control.unregister_system_shared_memory(region_name)
            shm.destroy_shared_memory_region(handle)
        self.control.close()
        self._regions, self._shm = [], {}


def in_process_sender(onnx_path: Path, config: dict[str, Any], inputs: dict[str, np.ndarray]) -> SenderFactory:
    """Senders that call one ONNX Runtime session from this process with the served model's inputs.

    The session is made as one instance of the onnxruntime runner makes it (CPU provider, the
    instance's share of the cores) and is fed as the runner feeds it: a shape tensor's batch rows
    collapse to its one row of values.
    """
    import onnxruntime as ort

    from plugserve.runners.onnxruntime_runner import session_options

    session = ort.InferenceSession(str(onnx_path), session_options(config), providers=["CPUExecutionProvider"])
    spec = json.loads(config["parameters"]["plugserve_spec"]["string_value"])
    feed = {}
    for tensor in spec["inputs"]:
        array = inputs[tensor["name"]]
        feed[tensor["name"]] = array.reshape(-1)[: tensor["dims"][0]] if tensor["shape_tensor"] else array
    output_names = [tensor["name"] for tensor in spec["outputs"]]

    def make_sender(_index: int) -> AbstractContextManager[Sender]:
        return contextlib.nullcontext(lambda: session.run(output_names, feed))

    return make_sender


def build_variant_repository(config_path: Path, source_repository: Path, model: str, into: Path, *,
                             dynamic_batching: bool | None, instances: int | None) -> Path:
    """The served model again, with dynamic batching or the instance count changed from models.yaml.

    Built by `plugserve.build` from the model.onnx of the newest version in `source_repository`,
    so the variant serves the same graph and only Triton's scheduling differs.
    """
    from plugserve import config, repository
    from plugserve.build import ONNX_FILE, build_model

    spec = config.load(config_path).get(model)
    if spec is None:
        raise ValueError(f"{config_path}: no model {model!r}; variants are built from models.yaml")
    found = repository.versions(source_repository / model)
    if not found:
        raise ValueError(f"no built version of {model!r} in {source_repository}: run `plugserve build` first")
    version_dir = source_repository / model / str(found[-1])
    if repository.read_manifest(version_dir)["runtime"] != "onnxruntime":
        raise ValueError(f"{version_dir}: variants are built for the onnxruntime runtime only")
    changes: dict[str, Any] = {"onnx": version_dir / ONNX_FILE, "source_model": None, "checkpoint": None,
                               "runtime": "onnxruntime"}
    if dynamic_batching is not None:
        batching = spec.dynamic_batching or config.DynamicBatching((), 0)
        changes["dynamic_batching"] = batching if dynamic_batching else None
    if instances is not None:
        changes["instance_groups"] = (config.InstanceGroup(instances, spec.instance_groups[0].kind),)
    build_model(dataclasses.replace(spec, **changes), into)
    return into


# --------------------------------------------------------------------------------------------------
# Command line


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_argument_group("target")
    target.add_argument("--model", help="model name in the repository (not needed with --calibrate)")
    target.add_argument("--url", help="a running server, host:port of its HTTP or gRPC endpoint; "
                                      "without it the harness starts tritonserver on --repository")
    target.add_argument("--protocol", choices=("http", "grpc"), default="http")
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
    load.add_argument("--shared-memory", choices=("none", "system"), default="none",
                      help="pass inputs and outputs through system shared memory (default: %(default)s)")
    load.add_argument("--seed", type=int, default=0)
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


def _runtime(repository_dir: Path, model: str) -> str:
    """The runtime recorded in the newest version's manifest.json (the one Triton serves by default)."""
    from plugserve import repository

    found = repository.versions(repository_dir / model)
    manifest = repository_dir / model / str(found[-1] if found else 0) / repository.MANIFEST_NAME
    return json.loads(manifest.read_text()).get("runtime", "unknown") if manifest.is_file() else "unknown"


def run_bench(args: argparse.Namespace) -> int:
    from plugserve.server import ServerError, TritonServer

    try:
        mode, loads, settings = _check_arguments(args)
        shapes = {name: [int(d) for d in dims.split(",")]
                  for name, dims in _assignments(args.shape, "--shape").items()}
        values = _assignments(args.input, "--input")
    except ValueError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    model = CALIBRATION_MODEL if args.calibrate else args.model
    with contextlib.ExitStack() as stack:
        repository_dir = args.repository
        try:
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
                server = stack.enter_context(TritonServer(repository_dir))
                url = server.http_url if args.protocol == "http" else server.grpc_url
            target = TritonTarget(url, args.protocol, model)
            stack.callback(target.close)
            inputs = generate_inputs(target.config, args.batch_size, shapes, values, args.profile, args.seed)
            target.prepare(inputs, shared_memory=args.shared_memory == "system")
        except (ValueError, ServerError) as error:
            print(f"bench: {error}", file=sys.stderr)
            return 2
        run = _run_sweeps(args, target, mode, loads, settings, inputs, model, url, repository_dir)
    csv_path, json_path = write_results(run, args.results)
    print(f"\nwrote {csv_path} and {json_path}")
    return 0


def _run_sweeps(args: argparse.Namespace, target: TritonTarget, mode: str, loads: list[float],
                settings: StepSettings, inputs: dict[str, np.ndarray], model: str, url: str,
                repository_dir: Path) -> dict[str, Any]:
    shared_memory = args.shared_memory == "system"
    calibration = None if args.calibrate else latest_calibration(args.results, args.protocol, shared_memory)
    config = target.config
    meta = {
        "model": model, "calibrate": args.calibrate, "runtime": _runtime(repository_dir, model),
        "protocol": args.protocol, "url": url, "mode": mode, "arrivals": args.arrivals if mode == "rate" else None,
        "loads": loads, "batch_size": args.batch_size, "shared_memory": shared_memory, "tag": args.tag,
        "dynamic_batching": "dynamic_batching" in config, "max_batch_size": int(config.get("max_batch_size", 0)),
        "instance_count": sum(int(group.get("count", 1)) for group in config.get("instance_group", [])) or 1,
        "input_shapes": {name: list(array.shape) for name, array in inputs.items()},
        "settings": dataclasses.asdict(settings), "started": time.time(), "host": host_description(),
        # A shared machine's other work competes with server and harness alike: say how busy it was.
        "load_average_before": os.getloadavg()[0],
    }
    ceiling = calibration["requests_per_s"] if calibration else None
    print(f"bench: {model} over {args.protocol} at {url} ({meta['runtime']}, batching "
          f"{'on' if meta['dynamic_batching'] else 'off'}, {meta['instance_count']} instance(s), inputs "
          f"{meta['input_shapes']}{', system shared memory' if shared_memory else ''})")
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

    local_sender = None
    if args.in_process:
        onnx_path = _served_onnx(repository_dir, model)
        print(f"bench: in-process ONNX Runtime on {onnx_path}, measured at each step beside the served model"
              + (f", {settings.rounds} rounds in alternating order" if settings.rounds > 1 else ""))
        local_sender = in_process_sender(onnx_path, config, inputs)

    def on_step(step: StepResult, twin_step: StepResult | None) -> None:
        step.harness_bound = ceiling is not None and step.requests_per_s > HARNESS_BOUND_SHARE * ceiling
        show(step, "served")
        if twin_step is not None:
            show(twin_step, "in-process")

    result = sweep(target.make_sender, mode=mode, loads=loads, settings=settings, batch_size=args.batch_size,
                   statistics=target.statistics, arrivals=args.arrivals, seed=args.seed, workers=args.workers,
                   max_latency_ms=args.max_latency, twin=local_sender, on_step=on_step)
    if result.end == "latency-cap":
        print(f"bench: sweep stopped: p99 {result.steps[-1].p99_ms:.1f} ms is above --max-latency {args.max_latency} ms")
    meta["load_average_after"] = os.getloadavg()[0]
    print()
    print(format_table(result.steps, result.twin_steps))
    return {"meta": meta, "calibration": calibration, "sweep_end": result.end,
            "steps": [dataclasses.asdict(step) for step in result.steps],
            "in_process": [dataclasses.asdict(step) for step in result.twin_steps]}


def _served_onnx(repository_dir: Path, model: str) -> Path:
    from plugserve import repository
    from plugserve.build import ONNX_FILE

    found = repository.versions(repository_dir / model)
    path = repository_dir / model / str(found[-1] if found else 0) / ONNX_FILE
    if not path.is_file():
        raise ValueError(f"--in-process needs the served model.onnx; {path} does not exist")
    return path
