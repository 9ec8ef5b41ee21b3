"""Statistics of a perf step: percentiles, stability, load schedules, and Triton's server-side split."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 95, 99)


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
