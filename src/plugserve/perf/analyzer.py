"""NVIDIA's perf_analyzer as a load engine: the same steps, inputs, stability rule and results as ours.

perf_analyzer sends from C++ threads, so a Python client's CPU (serializing, parsing 10-20 MB
answers) leaves the measurement. Each round of a step is one perf_analyzer run at that one load:

- inputs: the harness's own arrays, written once as `--input-data` JSON (base64, shape tensors too);
- windows: `--measurement-interval` is our window; it stops when its last 3 windows lie within
  `--stability-percentage` of their mean, which we set to half our spread limit so that its rule
  implies ours ((max - min) / mean <= stability); `--max-trials` is our time cap in windows;
- a run that does not settle within the cap prints no numbers: it is marked `time-cap` and three
  more windows are measured with a limit of 1000% (in effect none), so the step still has numbers;
- perf_analyzer unregisters every shared-memory region of the server when it starts, so our own
  sender registers its regions anew for each round (see `TritonTarget.make_sender`);
- warm-up: it has none in seconds; a first window counts only when the next ones agree with it;
- numbers: its `-f` CSV (throughput, p50/p90/p95/p99, the server split over the kept windows) and
  its stdout (each window's throughput, request count, mean latency); batch counts from Triton's
  statistics API around the run.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from plugserve.perf.gpus import gpu_split, pool_gpus
from plugserve.perf.load import StepResult, StepSettings
from plugserve.perf.stats import server_split

ENGINE = "perf_analyzer"
# Where `make venv` puts the wrapper, beside the venv's python; PLUGSERVE_PERF_ANALYZER overrides.
ENVIRONMENT_VARIABLE = "PLUGSERVE_PERF_ANALYZER"
_PASS = re.compile(r"Pass \[\d+\] throughput: ([0-9.]+) infer/sec")
_UNSTABLE = "Failed to obtain stable measurement"
# perf_analyzer's CSV columns (microseconds) -> our server split keys.
_SERVER_COLUMNS = {"Server Queue": "server_queue_us", "Server Compute Input": "server_compute_input_us",
                   "Server Compute Infer": "server_compute_infer_us", "Server Compute Output": "server_compute_output_us"}


def find() -> Path | None:
    """The perf_analyzer to run: $PLUGSERVE_PERF_ANALYZER, the one beside this Python, or on PATH."""
    candidates = [os.environ.get(ENVIRONMENT_VARIABLE), str(Path(sys.executable).parent / "perf_analyzer"),
                  shutil.which("perf_analyzer")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return Path(candidate)
    return None


def write_input_data(inputs: dict[str, np.ndarray], batched: bool, path: Path) -> Path:
    """The request's tensors as perf_analyzer `--input-data` JSON: one item each (perf_analyzer adds
    the batch dimension from `-b`), raw bytes in base64 so that values and dtypes arrive exactly."""
    entry = {}
    for name, array in inputs.items():
        item = np.ascontiguousarray(array[0] if batched else array)
        entry[name] = {"b64": base64.b64encode(item.tobytes()).decode(), "shape": list(item.shape)}
    path.write_text(json.dumps({"data": [entry]}))
    return path


@dataclasses.dataclass
class AnalyzerSide:
    """perf_analyzer against the served model, one run per round (see the module docstring)."""
    binary: Path
    url: str
    protocol: str
    model: str
    mode: str
    settings: StepSettings
    batch_size: int
    input_data: Path
    work_dir: Path
    shared_memory: str = "none"
    output_bytes: int = 0  # the largest output of one request, for the output regions
    arrivals: str = "constant"
    workers: int = 16
    statistics: Callable[[], dict[str, Any]] | None = None
    runs: int = 0

    def command(self, load: float, stability_percent: float, trials: int, csv_path: Path) -> list[str]:
        command = [str(self.binary), "-m", self.model, "-u", self.url, "-i", self.protocol, "-b", str(self.batch_size),
                   "--input-data", str(self.input_data), "--measurement-interval", str(round(self.settings.window_s * 1000)),
                   "--stability-percentage", f"{stability_percent:g}", "--max-trials", str(trials), "-f", str(csv_path),
                   "-v", "--shared-memory", self.shared_memory]
        if self.mode == "concurrency":
            # One thread per request in flight, said outright: on the H200 host its c=8 steps held only
            # about 4 requests in flight (requests/s times mean latency) with the default.
            command += ["--concurrency-range", f"{int(load)}:{int(load)}", "--max-threads", str(int(load))]
        else:
            command += ["--request-rate-range", f"{load:g}:{load:g}", "--request-distribution", self.arrivals,
                        "--max-threads", str(self.workers)]
        if self.shared_memory != "none":
            command += ["--output-shared-memory-size", str(self.output_bytes)]
        return command

    def _run(self, load: float, stability_percent: float, trials: int) -> tuple[int, str, Path]:
        self.runs += 1
        csv_path = self.work_dir / f"perf_analyzer-{self.runs}.csv"
        limit = 60 + 3 * (trials + 3) * self.settings.window_s
        try:
            done = subprocess.run(self.command(load, stability_percent, trials, csv_path), capture_output=True,
                                  text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            return 124, f"perf_analyzer ran past {limit:.0f} s", csv_path
        return done.returncode, done.stdout + done.stderr, csv_path

    def measure(self, load: float) -> StepResult:
        trials = max(3, math.ceil(self.settings.max_step_s / self.settings.window_s))
        before = self.statistics() if self.statistics else None
        code, output, csv_path = self._run(load, max(self.settings.stability * 50, 0.01), trials)
        stopped, passes = "stable", _PASS.findall(output)
        if _UNSTABLE in output:  # it then exits 2 and writes no CSV
            stopped = "time-cap"
            code, output, csv_path = self._run(load, 1000.0, 5)
            passes += _PASS.findall(output)
        after = self.statistics() if self.statistics else None
        if code != 0 or not csv_path.is_file():
            lines = [line.strip() for line in output.splitlines() if line.strip()]
            return _failed(self.mode, load, stopped, f"perf_analyzer exit {code}: {lines[-1] if lines else ''}"[:300])
        with csv_path.open() as handle:
            row = next(csv.DictReader(handle))
        requests = int(_after(output, "Client:", r"Request count: (\d+)"))
        throughput = float(row["Inferences/Second"])
        windows = [(before, after)] if before is not None and after is not None else []
        split = server_split(windows) if windows else {}
        split.update({key: float(row[column]) for column, key in _SERVER_COLUMNS.items() if column in row})
        duration = requests * self.batch_size / throughput if throughput else 0.0
        return StepResult(
            mode=self.mode, load=load, stopped=stopped, windows=len(passes),
            window_throughputs=[float(rate) for rate in passes[-3:]], duration_s=duration, requests=requests,
            errors=0, error_messages=[], requests_per_s=throughput / self.batch_size, throughput=throughput,
            p50_ms=float(row["p50 latency"]) / 1000, p90_ms=float(row["p90 latency"]) / 1000,
            p95_ms=float(row["p95 latency"]) / 1000, p99_ms=float(row["p99 latency"]) / 1000,
            mean_ms=_after(output, "Client:", r"Avg latency: (\d+) usec") / 1000, server=split,
            round_throughputs=[throughput], engine=ENGINE, gpus=gpu_split(windows))

    def pool(self, load: float, rounds: Sequence[StepResult]) -> StepResult:
        """Rounds pooled as their requests over their summed time; percentiles are the rounds' own
        weighted by their requests (perf_analyzer reports no single requests to pool)."""
        if len(rounds) == 1:
            return rounds[0]
        duration = sum(step.duration_s for step in rounds)
        requests = sum(step.requests for step in rounds)
        weights = [step.requests for step in rounds] if requests else [1] * len(rounds)

        def weighted(field: str) -> float:
            return float(np.average([getattr(step, field) for step in rounds], weights=weights))

        keys = set.intersection(*(set(step.server) for step in rounds)) if all(s.server for s in rounds) else set()
        return dataclasses.replace(
            rounds[0], stopped="stable" if all(s.stopped == "stable" for s in rounds) else "time-cap",
            windows=sum(s.windows for s in rounds), window_throughputs=[r for s in rounds for r in s.window_throughputs],
            duration_s=duration, requests=requests, errors=sum(s.errors for s in rounds),
            error_messages=[m for s in rounds for m in s.error_messages][:3],
            requests_per_s=requests / duration if duration else 0.0,
            throughput=requests * self.batch_size / duration if duration else 0.0,
            p50_ms=weighted("p50_ms"), p90_ms=weighted("p90_ms"), p95_ms=weighted("p95_ms"), p99_ms=weighted("p99_ms"),
            mean_ms=weighted("mean_ms"), server={key: weighted_server(rounds, key, weights) for key in keys},
            round_throughputs=[s.throughput for s in rounds], gpus=pool_gpus([s.gpus for s in rounds]))


def weighted_server(rounds: Sequence[StepResult], key: str, weights: Sequence[int]) -> float:
    values = [step.server[key] for step in rounds]
    return float(sum(values)) if key in ("server_success", "server_failures", "server_executions") else float(
        np.average(values, weights=weights))


def _after(output: str, marker: str, pattern: str) -> float:
    """The first match of `pattern` after the last `marker` (the summary after the per-window lines)."""
    found = re.search(pattern, output[output.rfind(marker):])
    return float(found.group(1)) if found else math.nan


def _failed(mode: str, load: float, stopped: str, message: str) -> StepResult:
    return StepResult(mode=mode, load=load, stopped=stopped, windows=0, window_throughputs=[], duration_s=0.0,
                      requests=1, errors=1, error_messages=[f"1x {message}"], requests_per_s=0.0, throughput=0.0,
                      p50_ms=math.nan, p90_ms=math.nan, p95_ms=math.nan, p99_ms=math.nan, mean_ms=math.nan,
                      round_throughputs=[0.0], engine=ENGINE)
