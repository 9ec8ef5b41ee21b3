"""Results of a perf run: JSON and CSV files, the terminal table, the newest calibration, the host."""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from plugserve.perf.gpus import describe_split
from plugserve.perf.load import StepResult

# The project's bench/results, found from this file (src/plugserve/perf/ in a checkout), not the
# current directory: `plugserve bench` run from elsewhere still files its results with the others.
# An installed package has no project around it: there, bench/results under the current directory.
_PROJECT = Path(__file__).resolve().parents[3]
RESULTS_DIR = _PROJECT / "bench" / "results" if (_PROJECT / "pyproject.toml").is_file() else Path("bench/results")
# A step whose requests/s exceed this share of the calibrated ceiling measures the harness, not the server.
HARNESS_BOUND_SHARE = 0.5
CALIBRATION_MODEL = "plugserve_identity"


def _flat_row(run: dict[str, Any], step: dict[str, Any]) -> dict[str, Any]:
    row = {key: run["meta"].get(key) for key in ("model", "runtime", "protocol", "tag", "dynamic_batching",
                                                 "instance_count", "batch_size", "shared_memory")}
    row.update({key: value for key, value in step.items() if key not in ("server", "window_throughputs",
                                                                           "round_throughputs", "error_messages",
                                                                           "gpus")})
    row.update(step["server"])
    for device in step.get("gpus", []):
        for key in ("utilization_percent", "memory_used_mib", "memory_total_mib"):
            row[f"gpu{device['index']}_{key}"] = device[key]
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
    rows += [_flat_row(run, step) | {"target": "served"} for step in run.get("cross_check", [])]
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


def memory_mode(value: Any) -> str:
    """A run's shared memory as "none", "system" or "cuda" (older results wrote a bool for system)."""
    if isinstance(value, bool):
        return "system" if value else "none"
    return str(value or "none")


def format_table(steps: Sequence[StepResult], in_process: Sequence[StepResult] = (),
                 cross_check: Sequence[StepResult] = ()) -> str:
    header = (f"{'load':>7} {'infer/s':>9} {'req/s':>8} {'p50':>8} {'p90':>8} {'p95':>8} {'p99':>8} {'mean':>8} "
              f"{'errors':>6} {'queue':>8} {'infer':>8} {'batch':>5} {'stop':>8}  note")
    lines = [header, f"{'':>7} {'':>9} {'':>8} {'(ms)':>8} {'':>8} {'':>8} {'':>8} {'':>8} {'':>6} {'(us)':>8}"]
    local = {step.load: step for step in in_process}
    other = {step.load: step for step in cross_check}
    for step in steps:
        notes = [f"{step.engine}"]
        if step.harness_bound:
            notes.append("HARNESS-BOUND")
        twin = local.get(step.load)
        if twin is not None and twin.throughput:
            note = f"{step.throughput / twin.throughput:.2f}x in-process ({twin.throughput:.1f}/s"
            if len(step.round_throughputs) > 1:
                ratios = round_ratios(step.round_throughputs, twin.round_throughputs)
                note += f"; rounds {min(ratios):.2f}-{max(ratios):.2f}"
            notes.append(note + ")")
        checked = other.get(step.load)
        if checked is not None and checked.throughput:
            notes.append(f"{step.throughput / checked.throughput:.2f}x {checked.engine} ({checked.throughput:.1f}/s, "
                         f"p50 {checked.p50_ms:.2f} ms)")
        if step.gpus:
            notes.append(describe_split(step.gpus))
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


def latest_calibration(results_dir: Path, protocol: str, shared_memory: str, engine: str) -> dict[str, Any] | None:
    """The newest calibration for this protocol, one by the same engine and memory mode first; None without any."""
    candidates = []
    for path in results_dir.glob(f"{CALIBRATION_MODEL}-*.json"):
        run = json.loads(path.read_text())
        meta = run["meta"]
        if meta.get("calibrate") and meta["protocol"] == protocol:
            candidates.append((meta.get("engine", "python") == engine, memory_mode(meta["shared_memory"]) == shared_memory,
                               meta["started"], path, run))
    if not candidates:
        return None
    *_, started, path, run = max(candidates, key=lambda item: item[:3])
    return {"requests_per_s": max(step["requests_per_s"] for step in run["steps"]), "file": str(path),
            "started": started, "shared_memory": memory_mode(run["meta"]["shared_memory"]),
            "engine": run["meta"].get("engine", "python")}


def host_description() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "platform": platform.platform()}
