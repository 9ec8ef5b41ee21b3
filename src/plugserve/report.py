"""`plugserve report`: one Markdown page with PNG plots from the files under bench/results/.

Sections: the harness ceiling (from `plugserve bench --calibrate`), latency percentiles against
throughput per model, runtime and protocol, dynamic batching on against off, one model instance
against two, served against in-process ONNX Runtime, locust against `plugserve bench`, and the
kernel timings of bench/kernels.py when its JSON is present. Where several runs share a
configuration, the newest one is reported.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from plugserve.perf.gpus import describe_split
from plugserve.perf.plots import new_figure, plot_breakdown, save_figure
from plugserve.perf.results import HARNESS_BOUND_SHARE, RESULTS_DIR, memory_mode, round_ratios

# The fields that make two runs the same configuration (the newest of them is reported); the input
# shapes count too (config_key). Runs are compared only where all but the compared field agree.
CONFIG_FIELDS = ("model", "runtime", "protocol", "shared_memory", "dynamic_batching", "instance_count",
                 "batch_size", "mode", "engine", "tag", "calibrate")
# A request-rate step that achieved less than this share of its offered rate is flagged: the server
# (or the sender) could not keep up, so its latencies include queueing the offered load never meant.
RATE_SHORTFALL = 0.95
# A run whose host had a 1-minute load average above this share of its cores before it started
# shared the machine with other work: its numbers are flagged.
LOADED_HOST_SHARE = 0.5
# A closed-loop step whose requests in flight (Little's law: requests/s times mean latency) fell
# below this share of its concurrency did not hold the load it is labelled with.
IN_FLIGHT_SHARE = 0.8


def load_runs(results_dir: Path) -> list[dict[str, Any]]:
    """Every `plugserve bench` JSON in the folder (kernel and locust files have their own readers)."""
    runs = []
    for path in sorted(results_dir.glob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "meta" in data and "steps" in data:
            data["file"] = path.name
            # Results written before the engine and CUDA shm existed: our sender, a bool for system shm.
            data["meta"]["engine"] = data["meta"].get("engine") or "python"
            data["meta"]["shared_memory"] = memory_mode(data["meta"]["shared_memory"])
            runs.append(data)
    return runs


def config_key(meta: dict[str, Any], leave_out: Sequence[str] = ()) -> tuple[Any, ...]:
    """What makes two runs the same configuration: CONFIG_FIELDS and the input shapes."""
    return (*(meta.get(field) for field in CONFIG_FIELDS if field not in leave_out),
            json.dumps(meta.get("input_shapes"), sort_keys=True))


def newest_per_config(runs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    newest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for run in runs:
        key = config_key(run["meta"])
        if key not in newest or run["meta"]["started"] > newest[key]["meta"]["started"]:
            newest[key] = run
    return sorted(newest.values(), key=lambda run: tuple(str(run["meta"].get(f)) for f in CONFIG_FIELDS))


def label(meta: dict[str, Any], fields: Sequence[str]) -> str:
    words = []
    for field in fields:
        value = meta.get(field)
        if field == "dynamic_batching":
            words.append("batching on" if value else "batching off")
        elif field == "instance_count":
            words.append(f"{value} instance{'s' if value != 1 else ''}")
        elif field == "shared_memory":
            words.append("no shm" if value == "none" else f"{value} shm")
        elif field == "batch_size":
            words.append(f"batch {value}")
        elif value:
            words.append(str(value))
    return " / ".join(words)


def varying(runs: Sequence[dict[str, Any]], fields: Sequence[str]) -> list[str]:
    return [field for field in fields if len({str(run["meta"].get(field)) for run in runs}) > 1]


def pairs_differing_in(runs: Sequence[dict[str, Any]], field: str) -> list[list[dict[str, Any]]]:
    """Groups of concurrency runs that share every configuration field but `field`, with 2+ values of it."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for run in runs:
        if run["meta"]["mode"] != "concurrency":
            continue
        key = config_key(run["meta"], leave_out=(field, "tag"))
        groups.setdefault(key, []).append(run)
    found = []
    for group in groups.values():
        by_value = {}
        for run in sorted(group, key=lambda run: run["meta"]["started"]):
            by_value[run["meta"].get(field)] = run
        if len(by_value) > 1:
            found.append([by_value[value] for value in sorted(by_value, key=str)])
    return found


def plot_latency_vs_throughput(runs: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """p50 (solid) and p99 (dashed) latency against throughput, one colour per configuration."""
    figure, (axis,) = new_figure(1)
    fields = varying(runs, CONFIG_FIELDS) or ["runtime", "protocol"]
    for index, run in enumerate(runs):
        color = f"C{index % 10}"
        steps = sorted(run["steps"], key=lambda step: step["throughput"])
        x = [step["throughput"] for step in steps]
        axis.plot(x, [step["p50_ms"] for step in steps], "o-", color=color, label=label(run["meta"], fields))
        axis.plot(x, [step["p99_ms"] for step in steps], "s--", color=color, alpha=0.6)
        for step in steps:
            axis.annotate(f"{step['load']:g}", (step["throughput"], step["p50_ms"]), textcoords="offset points",
                          xytext=(4, -10), fontsize=7, color=color)
            if step.get("harness_bound"):
                axis.plot(step["throughput"], step["p50_ms"], "x", color="red", markersize=11)
            if step.get("stopped") != "stable":
                axis.plot(step["throughput"], step["p50_ms"], "o", markerfacecolor="none", color="black",
                          markersize=11)
    axis.set_xlabel("throughput (inferences/s)")
    # Log-scaled: runs of one model differ by 10-100x in latency (transport, batching, engine).
    axis.set_yscale("log")
    axis.set_ylabel("client latency (ms, log scale)")
    axis.set_title(f"{title}: p50 solid, p99 dashed; numbers: load;\nred x: harness-bound; black ring: "
                   "time-capped (unstable)", fontsize=9)
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=7)
    save_figure(figure, path)


def plot_comparison(group: Sequence[dict[str, Any]], field: str, path: Path, title: str) -> None:
    """Throughput and p50 latency against concurrency for runs that differ only in `field`."""
    figure, axes = new_figure(2)
    for run in group:
        steps = sorted(run["steps"], key=lambda step: step["load"])
        loads = [step["load"] for step in steps]
        text = label(run["meta"], [field])
        axes[0].plot(loads, [step["throughput"] for step in steps], "o-", label=text)
        axes[1].plot(loads, [step["p50_ms"] for step in steps], "o-", label=f"{text} p50")
    axes[0].set_ylabel("throughput (inferences/s)")
    axes[1].set_ylabel("client latency p50 (ms)")
    for axis in axes:
        axis.set_xlabel("concurrency")
        axis.grid(alpha=0.3)
        axis.set_ylim(bottom=0)
        axis.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    save_figure(figure, path)


def plot_in_process(run: dict[str, Any], path: Path, title: str) -> None:
    figure, (axis,) = new_figure(1)
    served = {step["load"]: step["throughput"] for step in run["steps"]}
    local = {step["load"]: step["throughput"] for step in run["in_process"]}
    loads = sorted(set(served) & set(local))
    width = 0.38
    positions = range(len(loads))
    axis.bar([p - width / 2 for p in positions], [served[load] for load in loads], width, label="served (Triton)")
    axis.bar([p + width / 2 for p in positions], [local[load] for load in loads], width, label="in-process ORT")
    for p, load in zip(positions, loads, strict=True):
        if local[load]:
            axis.annotate(f"{served[load] / local[load]:.2f}x", (p, max(served[load], local[load])),
                          ha="center", xytext=(0, 3), textcoords="offset points", fontsize=8)
    axis.set_xticks(list(positions), [f"{load:g}" for load in loads])
    axis.set_xlabel("concurrency")
    axis.set_ylabel("throughput (inferences/s)")
    axis.set_title(title, fontsize=10)
    # Headroom above the tallest bar, so the legend covers no ratio label.
    axis.set_ylim(top=1.3 * max([*served.values(), *local.values(), 1e-9]))
    axis.legend(fontsize=8, loc="upper left", ncols=2)
    save_figure(figure, path)


def rounds_cell(served: dict[str, Any], local: dict[str, Any]) -> str:
    """Served / in-process throughput of each round of a step measured in rounds (`--rounds`)."""
    ratios = round_ratios(served.get("round_throughputs", []), local.get("round_throughputs", []))
    return " ".join("-" if math.isnan(ratio) else f"{ratio:.2f}" for ratio in ratios) if len(ratios) > 1 else "-"


def _section(runs: Sequence[dict[str, Any]], key: str, option: str, heading: str, intro: str
             ) -> tuple[list[str], list[dict[str, Any]]]:
    """A section's heading and introduction, and the runs that have `key` (or a line saying there are none)."""
    having = [run for run in runs if run.get(key)]
    return [f"## {heading}", "", intro, "", *([] if having else [f"No run with `{option}`.", ""])], having


def _ratio(step: dict[str, Any], other: dict[str, Any]) -> str:
    return f"{step['throughput'] / other['throughput']:.2f}x" if other["throughput"] else "-"


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        # Kernel times are fractions of a millisecond: keep three significant digits there.
        if abs(value) >= 1000:
            return f"{value:.0f}"
        return f"{value:.{digits}f}" if abs(value) >= 1 or value == 0 else f"{value:.3g}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(cell) for cell in row) + " |" for row in rows]
    return lines + [""]


def steps_table(run: dict[str, Any]) -> list[str]:
    header = ["load", "infer/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "mean ms", "errors", "queue us",
              "compute in us", "infer us", "compute out us", "avg batch", "stopped", "flag"]
    # Runs sampled by NVML (plugserve bench with nvidia-ml-py on a GPU host) show each GPU's share.
    with_gpus = any(step.get("gpus") for step in run["steps"])
    rows = []
    for step in run["steps"]:
        server = step.get("server", {})
        rows.append([f"{step['load']:g}", step["throughput"], step["p50_ms"], step["p90_ms"], step["p95_ms"],
                     step["p99_ms"], step["mean_ms"], step["errors"], server.get("server_queue_us"),
                     server.get("server_compute_input_us"), server.get("server_compute_infer_us"),
                     server.get("server_compute_output_us"), server.get("server_avg_batch"), step["stopped"],
                     ", ".join(step_flags(run, step))] + ([describe_split(step.get("gpus", []))] if with_gpus else []))
    return markdown_table(header + (["GPUs (util, memory)"] if with_gpus else []), rows)


def step_flags(run: dict[str, Any], step: dict[str, Any]) -> list[str]:
    flags = ["harness-bound"] if step.get("harness_bound") else []
    if step["stopped"] != "stable":
        flags.append("**time-capped: unstable**")
    if run["meta"]["mode"] == "rate" and step["requests_per_s"] < RATE_SHORTFALL * step["load"]:
        flags.append(f"**achieved {step['requests_per_s']:.1f} of {step['load']:g} req/s offered**")
    in_flight = step["requests_per_s"] * step["mean_ms"] / 1000
    if run["meta"]["mode"] == "concurrency" and in_flight < IN_FLIGHT_SHARE * step["load"]:
        flags.append(f"**{in_flight:.1f} in flight of {step['load']:g}**")
    return flags


def loaded_host(meta: dict[str, Any]) -> bool:
    cpus = (meta.get("host") or {}).get("cpus") or 1
    return meta.get("load_average_before", 0.0) > LOADED_HOST_SHARE * cpus


def locust_rows(results_dir: Path, runs: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """Locust's p50 per request name beside `plugserve bench` at the same concurrency, model and protocol."""
    rows = []
    for path in sorted(results_dir.glob("locust*_stats.csv")):
        settings_path = path.with_name(path.name.replace("_stats.csv", "_settings.json"))
        settings = json.loads(settings_path.read_text()) if settings_path.exists() else {}
        with path.open() as handle:
            for record in csv.DictReader(handle):
                if record["Name"] == "Aggregated" or not int(record["Request Count"]):
                    continue
                protocol = record["Type"].lower()
                model, _, size = record["Name"].partition(" ")
                users = settings.get("users")
                # The newest bench step at the same model, protocol, concurrency and inputs: locust's
                # request name ends in the trailing dims of its first input ("64x64").
                bench = next((step for run in sorted(runs, key=lambda run: -run["meta"]["started"])
                              for step in run["steps"]
                              if run["meta"]["model"] == model and run["meta"]["protocol"] == protocol
                              and run["meta"]["mode"] == "concurrency" and step["load"] == users
                              and run["meta"]["engine"] == "python" and run["meta"]["shared_memory"] == "none"
                              and _same_size(run["meta"].get("input_shapes"), size)), None)
                p50 = float(record["50%"])
                rows.append([path.name, record["Name"], protocol, users, int(record["Request Count"]),
                             int(record["Failure Count"]), p50, bench["p50_ms"] if bench else None,
                             f"{(p50 / bench['p50_ms'] - 1) * 100:+.0f}%" if bench else "-"])
    return rows


def _same_size(input_shapes: dict[str, list[int]] | None, size: str) -> bool:
    dims = [int(d) for d in size.split("x") if d.isdigit()]
    first = next(iter((input_shapes or {}).values()), [])
    return bool(dims) and list(first[-len(dims):]) == dims


KERNEL_COLUMNS = ("op", "case", "dtype", "ours_ms", "eager_ms", "compiled_ms", "peer_ms", "grid_sample_ms",
                  "x_eager", "x_compiled", "x_peer", "x_grid_sample", "bandwidth_share", "timing")


def kernel_sections(results_dir: Path, out_dir: Path) -> list[str]:
    """bench/kernels.py's results: the run's device and targets, a table of its rows, their share of
    copy bandwidth as a plot, and the speed-up chart kernels.py draws beside its JSON."""
    import shutil

    lines: list[str] = []
    for path in sorted(results_dir.glob("kernels*.json")):
        result = json.loads(path.read_text())
        rows = result.get("rows") if isinstance(result, dict) else None
        if not rows:
            lines += [f"`{path.name}`: no `rows`; not a bench/kernels.py result, skipped.", ""]
            continue
        lines += [f"### {path.name}", "",
                  f"Device {result.get('device')}, ceilings: device-to-device copy "
                  f"{_fmt(result.get('copy_bandwidth_gbs'), 0)} GB/s (read + write), read "
                  f"{_fmt(result.get('read_bandwidth_gbs'), 0)} GB/s, write {_fmt(result.get('write_bandwidth_gbs'), 0)} "
                  f"GB/s; torch {result.get('torch')}, {result.get('time')}; library: {result.get('library')}.", ""]
        targets = result.get("targets_met", {})
        if targets:
            lines += markdown_table(["target", "met"], [[name, "yes" if ok else "**no**"] for name, ok in targets.items()])
        columns = [c for c in KERNEL_COLUMNS if any(c in row for row in rows)]
        lines += markdown_table(columns, ([f"{100 * row[c]:.1f}%" if c == "bandwidth_share" and row.get(c) is not None
                                           else row.get(c) for c in columns] for row in rows))
        # kernels.py leaves the share out (None) where an op's bytes moved are not well defined.
        measured = [row for row in rows if isinstance(row.get("bandwidth_share"), (int, float))]
        if measured:
            figure, (axis,) = new_figure(1)
            names = [f"{row.get('op')} {row.get('case')} {row.get('dtype')}" for row in measured]
            axis.barh(range(len(measured)), [100 * row["bandwidth_share"] for row in measured],
                      color=["C0" if row.get("op") == "DynamicResize" else "C1" for row in measured])
            axis.set_yticks(range(len(measured)), names, fontsize=7)
            axis.invert_yaxis()
            axis.set_xlabel("share of the ceiling that fits its read/write mix (%)")
            axis.set_title(f"libplugserve kernels on {result.get('device')}", fontsize=10)
            png = out_dir / f"{path.stem}-bandwidth.png"
            save_figure(figure, png)
            lines += [f"![{path.stem} bandwidth]({png.name})", ""]
        chart = path.with_suffix(".png")
        if chart.is_file():
            shutil.copyfile(chart, out_dir / chart.name)
            lines += [f"![{path.stem} speed-ups]({chart.name})", ""]
    return lines


def build_report(results_dir: Path, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = newest_per_config(load_runs(results_dir))
    calibrations = [run for run in runs if run["meta"].get("calibrate")]
    measured = [run for run in runs if not run["meta"].get("calibrate")]
    lines = ["# plugserve benchmark report", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from `{results_dir}`."]
    hosts = {json.dumps(run["meta"].get("host"), sort_keys=True) for run in runs}
    for host in hosts:
        lines.append(f"Host: `{host}`.")
    lines += ["", "## Harness ceiling", "",
              "`plugserve bench --calibrate` drives a trivial identity model on the same server and protocol; "
              f"a step above {HARNESS_BOUND_SHARE:.0%} of this ceiling (requests/s) is flagged harness-bound "
              "and measures the load generator more than the server.", ""]
    if calibrations:
        lines += markdown_table(
            ["protocol", "shared memory", "ceiling req/s", "at concurrency", "p50 ms there"],
            [[run["meta"]["protocol"], run["meta"]["shared_memory"], best["requests_per_s"], f"{best['load']:g}",
              best["p50_ms"]] for run in calibrations
             for best in [max(run["steps"], key=lambda step: step["requests_per_s"])]])
    else:
        lines += ["**No calibration found**: run `plugserve bench --calibrate`; no step could be checked "
                  "against the harness ceiling.", ""]
    uncalibrated = sorted({run["meta"]["protocol"] for run in measured if not run.get("calibration")})
    if uncalibrated:
        lines += [f"Runs without a ceiling for their protocol: {', '.join(uncalibrated)}.", ""]

    lines += ["## Latency against throughput", ""]
    for model in sorted({run["meta"]["model"] for run in measured}):
        model_runs = [run for run in measured if run["meta"]["model"] == model]
        png = out_dir / f"latency-{model}.png"
        plot_latency_vs_throughput(model_runs, png, model)
        lines += [f"### {model}", "", f"![latency against throughput, {model}]({png.name})", ""]
        for run in model_runs:
            meta = run["meta"]
            ceiling = run.get("calibration")
            host = (f"host load {_fmt(meta.get('load_average_before'), 2)} before, "
                    f"{_fmt(meta.get('load_average_after'), 2)} after on {(meta.get('host') or {}).get('cpus')} cores")
            lines += [f"**{label(meta, ['runtime', 'protocol', 'mode', 'engine', 'tag'])}** "
                      f"({label(meta, ['dynamic_batching', 'instance_count', 'batch_size', 'shared_memory'])}; "
                      f"inputs {meta.get('input_shapes')}; harness ceiling "
                      f"{_fmt(ceiling['requests_per_s']) + ' req/s' if ceiling else 'not calibrated'}; "
                      f"sweep ended: {run.get('sweep_end')}; {host}; `{run['file']}`)", ""]
            if loaded_host(meta):
                lines += ["**Loaded host**: other work kept the cores busy before this run started; its numbers "
                          "are lower and noisier than the machine gives.", ""]
            lines += steps_table(run)
            png = out_dir / f"breakdown-{Path(run['file']).stem}.png"
            plot_breakdown(run, png, f"{model} / {label(meta, ['protocol', 'shared_memory', 'engine'])}: "
                                     "server split per step")
            lines += [f"![latency breakdown, {run['file']}]({png.name})", ""]

    for field, heading in (("dynamic_batching", "Dynamic batching on against off"),
                           ("instance_count", "One model instance against two")):
        lines += [f"## {heading}", ""]
        groups = pairs_differing_in(measured, field)
        if not groups:
            lines += [f"No pair of runs that differ only in `{field}`.", ""]
        for index, group in enumerate(groups):
            meta = group[0]["meta"]
            title = f"{meta['model']} / {meta['runtime']} / {meta['protocol']}: {heading.lower()}"
            png = out_dir / f"{field}-{meta['model']}-{meta['protocol']}-{index}.png"
            plot_comparison(group, field, png, title)
            lines += [f"![{title}]({png.name})", ""]
            loads = sorted({step["load"] for run in group for step in run["steps"]})
            cells = [{step["load"]: f"{step['throughput']:.2f} / {step['p50_ms']:.0f}" for step in run["steps"]}
                     for run in group]
            lines += markdown_table(
                ["configuration", *[f"c={load:g}: infer/s / p50 ms" for load in loads]],
                [[label(run["meta"], [field]), *[cell.get(load, "-") for load in loads]]
                 for run, cell in zip(group, cells, strict=True)])

    section, compared = _section(
        measured, "in_process", "--in-process", "Served against in-process ONNX Runtime",
        "The same ONNX Runtime session options and inputs, called from threads in the harness process "
        "at the same concurrency and batch size; the ratio is served / in-process throughput, pooled over "
        "the step's rounds when it was measured in rounds (alternating which side went first).")
    lines += section
    for run in compared:
        meta = run["meta"]
        title = f"{meta['model']} / {meta['protocol']}: served against in-process"
        png = out_dir / f"in-process-{Path(run['file']).stem}.png"  # one per run: a model is often measured again
        plot_in_process(run, png, title)
        local = {step["load"]: step for step in run["in_process"]}
        lines += [f"### {meta['model']} / {meta['protocol']}, {run['file']}", "", f"![{title}]({png.name})", ""]
        lines += markdown_table(
            ["concurrency", "served infer/s", "in-process infer/s", "ratio", "ratio per round", "served p50 ms",
             "in-process p50 ms"],
            [[f"{step['load']:g}", step["throughput"], local[step["load"]]["throughput"],
              _ratio(step, local[step["load"]]), rounds_cell(step, local[step["load"]]),
              step["p50_ms"], local[step["load"]]["p50_ms"]]
             for step in run["steps"] if step["load"] in local])

    section, checked = _section(measured, "cross_check", "--cross-check", "perf_analyzer against plugserve's sender",
                                "Both engines measured each step in alternating rounds; the ratio is the run's "
                                "engine over the other.")
    lines += section
    for run in checked:
        other = {step["load"]: step for step in run["cross_check"]}
        meta = run["meta"]
        lines += [f"### {meta['model']} / {label(meta, ['protocol', 'shared_memory'])}, {run['file']}", ""]
        lines += markdown_table(
            ["load", f"{meta['engine']} infer/s", f"{meta['cross_check']} infer/s", "ratio", f"{meta['engine']} p50 ms",
             f"{meta['cross_check']} p50 ms"],
            [[f"{step['load']:g}", step["throughput"], other[step["load"]]["throughput"],
              _ratio(step, other[step["load"]]), step["p50_ms"], other[step["load"]]["p50_ms"]]
             for step in run["steps"] if step["load"] in other])

    lines += ["## locust against plugserve bench", "",
              "Each locust request is compared only with a bench step of the same model, protocol, concurrency and "
              "input shape, measured by our sender without shared memory (as locust sends).", ""]
    rows = locust_rows(results_dir, measured)
    lines += markdown_table(["file", "request", "protocol", "users", "requests", "failures", "locust p50 ms",
                             "bench p50 ms", "difference"], rows) if rows else ["No locust stats found.", ""]

    lines += ["## Kernels (bench/kernels.py)", ""]
    lines += kernel_sections(results_dir, out_dir) or ["No kernels*.json found.", ""]
    page = out_dir / "report.md"
    page.write_text("\n".join(lines) + "\n")
    return page


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder with bench results (JSON, CSV)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for report.md and its PNGs (default: <results>/report)")


def run_report(args: argparse.Namespace) -> int:
    if not args.results.is_dir():
        raise FileNotFoundError(2, "results folder does not exist; run `plugserve bench` first", str(args.results))
    page = build_report(args.results, args.out or args.results / "report")
    print(f"wrote {page}")
    return 0

