"""Load generation: closed-loop (concurrency) and open-loop (request rate) senders, windows, rounds, sweeps."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import numpy as np

from plugserve.perf.gpus import gpu_split
from plugserve.perf.stats import arrival_times, latency_summary, relative_spread, server_split


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
    engine: str = "python"  # what sent the requests and timed them: "python" (this harness) or "perf_analyzer"
    # Per GPU over the measured windows (gpus.gpu_split): mean utilisation and memory; [] without NVML.
    gpus: list[dict[str, Any]] = dataclasses.field(default_factory=list)


Sender = Callable[[], object]  # one request; its result is ignored, an exception is a counted error
# Opens one worker's sender inside that worker's thread and closes it there: tritonclient.http runs
# on gevent, whose connections belong to the thread that made them.
SenderFactory = Callable[[int], AbstractContextManager[Sender]]


Record = tuple[float, float, float, str | None]  # scheduled, start, end, error


class SenderError(RuntimeError):
    """A worker could not open its sender, so the step cannot be measured as asked."""


class _Recorder:
    """Per-request records appended by the worker threads (list.append is atomic under the GIL)."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        # Why a worker could not open its sender (a refused shared-memory registration, say): the
        # round then ends with this error instead of measuring the workers that did start.
        self.failed_to_start: str | None = None

    def check_started(self) -> None:
        if self.failed_to_start:
            raise SenderError(f"a sender could not start: {self.failed_to_start}")

    def opened(self, make_sender: SenderFactory, index: int, work: Callable[[Sender], None]) -> None:
        with contextlib.ExitStack() as stack:
            try:
                send = stack.enter_context(make_sender(index))
            except Exception as exc:  # reported by measure_round, in the bench's own error line
                self.failed_to_start = f"{type(exc).__name__}: {exc}".strip()[:300]
                return
            work(send)

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

    def work(send: Sender) -> None:
        while not stop.is_set():
            recorder.call(send, math.nan)

    return [threading.Thread(target=recorder.opened, args=(make_sender, index, work), daemon=True)
            for index in range(concurrency)]


def _open_loop(make_sender: SenderFactory, rate: float, arrivals: str, seed: int, workers: int,
               recorder: _Recorder, stop: threading.Event) -> list[threading.Thread]:
    """Requests sent on a schedule by a pool of workers; a send that finds every worker busy goes out late."""
    schedule = arrival_times(rate, arrivals, seed)
    lock = threading.Lock()
    origin = time.perf_counter()

    def work(send: Sender) -> None:
        while not stop.is_set():
            with lock:
                scheduled = origin + next(schedule)
            delay = scheduled - time.perf_counter()
            if delay > 0 and stop.wait(delay):
                return
            recorder.call(send, scheduled)

    return [threading.Thread(target=recorder.opened, args=(make_sender, index, work), daemon=True)
            for index in range(workers)]


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
            recorder.check_started()
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
            recorder.check_started()
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
        gpus=gpu_split(windows),
        round_throughputs=[sum(r[3] is None for r in round_.records) * batch_size / round_.duration_s
                           for round_ in rounds],
    )


class Side(Protocol):
    """One thing a sweep measures at each load: a load engine against the served model, or the twin."""

    def measure(self, load: float) -> Any:
        """One round at this load (warm-up and windows)."""

    def pool(self, load: float, rounds: Sequence[Any]) -> StepResult:
        """The step from its rounds."""


@dataclasses.dataclass
class SenderSide:
    """This harness's own senders (threads in this process) in closed or open loop."""
    make_sender: SenderFactory
    mode: str
    settings: StepSettings
    batch_size: int
    statistics: Callable[[], dict[str, Any]] | None = None
    arrivals: str = "constant"
    seed: int = 0
    workers: int = 16
    engine: str = "python"

    def measure(self, load: float) -> _Round:
        recorder, stop = _Recorder(), threading.Event()
        if self.mode == "concurrency":
            threads = _closed_loop(self.make_sender, int(load), recorder, stop)
        else:
            threads = _open_loop(self.make_sender, float(load), self.arrivals, self.seed, self.workers, recorder, stop)
        return measure_round(threads, recorder, stop, self.settings, self.batch_size, self.statistics)

    def pool(self, load: float, rounds: Sequence[Any]) -> StepResult:
        return dataclasses.replace(step_result(self.mode, load, rounds, self.batch_size), engine=self.engine)


@dataclasses.dataclass
class Sweep:
    steps: dict[str, list[StepResult]]  # per side, its step at each load measured
    end: str  # "done", or "latency-cap" when the first side's p99 went over the cap


def sweep(sides: dict[str, Side], *, loads: Sequence[float], rounds: int = 1, max_latency_ms: float | None = None,
          on_step: Callable[[dict[str, StepResult]], None] | None = None) -> Sweep:
    """One step per load for each side, each measured in `rounds` rounds; the first side leads.

    The sides take turns within a round, and every other round in reverse order: a shared machine's
    speed drifts over seconds to minutes, and both sides of a ratio (served / in-process, one engine
    / the other) should see the same drift.
    """
    result = Sweep({name: [] for name in sides}, "done")
    order = list(sides)
    for load in loads:
        measured: dict[str, list[Any]] = {name: [] for name in sides}
        for index in range(rounds):
            for name in order[::-1] if index % 2 else order:
                measured[name].append(sides[name].measure(load))
        steps = {name: sides[name].pool(load, measured[name]) for name in order}
        for name, step in steps.items():
            result.steps[name].append(step)
        if on_step:
            on_step(steps)
        if max_latency_ms is not None and not steps[order[0]].p99_ms <= max_latency_ms:
            result.end = "latency-cap"
            break
    return result
