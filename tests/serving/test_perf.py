"""`plugserve bench` against a real tritonserver serving the calibration identity model.

Short windows keep the whole module to seconds; the numbers are not benchmarks, the behaviour is.
"""

from __future__ import annotations

import contextlib
import csv
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from plugserve.cli import main
from plugserve.perf import analyzer
from plugserve.perf.inputs import generate_inputs
from plugserve.perf.load import SenderSide, StepSettings, sweep
from plugserve.perf.results import CALIBRATION_MODEL
from plugserve.perf.targets import TritonTarget
from plugserve.perf.variants import build_calibration_repository
from plugserve.report import build_report
from plugserve.server import TritonServer

pytestmark = pytest.mark.triton

QUICK = ["--warmup", "0.2", "--window", "0.3", "--stable-windows", "2", "--max-step-time", "1.5"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repository = build_calibration_repository(tmp_path_factory.mktemp("calibration") / "repository")
    # The shared-memory tests bench this server by --url: its shared-memory API must be open.
    with TritonServer(repository, allow_shared_memory=True) as running:
        yield running


def bench(server, results: Path, *extra: str, protocol: str = "http", engine: str = "python") -> dict:
    url = server.http_url if protocol == "http" else server.grpc_url
    assert main(["bench", "--url", url, "--protocol", protocol, "--model", CALIBRATION_MODEL, "--engine", engine,
                 "--repository", str(server.repository), "--results", str(results), *QUICK, *extra]) == 0
    (path,) = sorted(results.glob("*.json"), key=lambda p: p.stat().st_mtime)[-1:]
    return json.loads(path.read_text())


def test_a_concurrency_sweep_writes_one_well_formed_row_per_step(server, tmp_path):
    run = bench(server, tmp_path, "--concurrency", "1:3")
    assert [step["load"] for step in run["steps"]] == [1, 2, 3]
    assert run["sweep_end"] == "done"
    assert run["meta"]["runtime"] == "onnxruntime" and run["meta"]["dynamic_batching"] is True
    for step in run["steps"]:
        assert step["errors"] == 0, step["error_messages"]
        assert step["requests"] > 0 and step["stopped"] in ("stable", "time-cap")
        assert step["p50_ms"] <= step["p90_ms"] <= step["p95_ms"] <= step["p99_ms"]
        server_side = step["server"]
        # The server's statistics cover the same windows: about the same requests, each shorter than the client saw.
        assert server_side["server_success"] == pytest.approx(step["requests"], rel=0.2, abs=5)
        assert 0 < server_side["server_request_us"] / 1000 <= step["mean_ms"]
        assert server_side["server_compute_infer_us"] > 0
    (csv_path,) = tmp_path.glob("*.csv")
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [float(row["load"]) for row in rows] == [1, 2, 3]
    assert {"p99_ms", "throughput", "server_queue_us", "server_compute_input_us", "server_compute_output_us",
            "stopped", "harness_bound", "errors"} <= set(rows[0])


def test_percentiles_match_known_latencies_added_to_real_requests(server):
    """Each request is a real one plus a known pause of 0, 10, ..., 90 ms, so the percentiles are known."""
    target = TritonTarget(server.http_url, "http", CALIBRATION_MODEL)
    target.prepare(generate_inputs(target.config, 1, {}, {}))
    pauses = iter(np.tile(np.arange(0, 100, 10) / 1000.0, 1000))
    lock = threading.Lock()

    @contextlib.contextmanager
    def make_sender(index):
        with target.make_sender(index) as send:

            def paused():
                send()
                with lock:
                    pause = next(pauses)
                time.sleep(pause)

            yield paused

    settings = StepSettings(warmup_s=0.0, window_s=1.0, stability=1.0, stable_windows=1, max_step_s=1.0)
    try:
        (step,) = sweep({"served": SenderSide(make_sender, "concurrency", settings, 1)}, loads=[10]).steps["served"]
    finally:
        target.close()
    # Ten workers draw the pauses in turn, so each window holds them about equally. A pause is a
    # floor; the upper bounds leave room for a busy machine's scheduling delays.
    assert 40 <= step.p50_ms < 70
    assert 80 <= step.p90_ms < 130
    assert step.p99_ms >= 90
    assert 45 <= step.mean_ms < 75


def test_in_process_twin_is_measured_beside_each_step_in_pooled_rounds(server, tmp_path, capsys):
    run = bench(server, tmp_path, "--concurrency", "1,2", "--in-process", "--rounds", "2")
    assert run["meta"]["settings"]["rounds"] == 2
    assert [step["load"] for step in run["in_process"]] == [step["load"] for step in run["steps"]] == [1, 2]
    for served, local in zip(run["steps"], run["in_process"], strict=True):
        for step in (served, local):
            assert step["errors"] == 0 and len(step["round_throughputs"]) == 2
            # Pooled: the requests of both rounds over both rounds' time.
            assert step["throughput"] == pytest.approx(step["requests"] / step["duration_s"])
            assert min(step["round_throughputs"]) <= step["throughput"] <= max(step["round_throughputs"])
        assert served["server"]["server_success"] == pytest.approx(served["requests"], rel=0.2, abs=5)
    table = capsys.readouterr().out
    assert "x in-process (" in table and "; rounds " in table


def test_a_sweep_stops_at_its_latency_cap(server, tmp_path):
    run = bench(server, tmp_path, "--concurrency", "1:4", "--max-latency", "0.001")
    assert run["sweep_end"] == "latency-cap"
    assert len(run["steps"]) == 1


def test_a_step_that_never_stabilises_stops_at_its_time_cap(server, tmp_path):
    started = time.perf_counter()
    run = bench(server, tmp_path, "--concurrency", "2", "--stability", "0", "--max-step-time", "1.2")
    (step,) = run["steps"]
    assert step["stopped"] == "time-cap"
    assert step["windows"] == 4  # 1.2 s of 0.3 s windows
    assert time.perf_counter() - started < 10


def test_requests_the_server_rejects_are_counted_as_errors(server, tmp_path):
    too_long = ",".join(["0.5"] * 5000)  # the identity model's profile allows at most 4096 values
    run = bench(server, tmp_path, "--concurrency", "2", "--input", f"x={too_long}")
    (step,) = run["steps"]
    assert step["requests"] > 0 and step["errors"] == step["requests"]
    assert step["throughput"] == 0
    assert "outside the model's profiles" in step["error_messages"][0]


def test_system_shared_memory_over_grpc_serves_and_releases_its_regions(server, tmp_path):
    from tritonclient.utils import shared_memory

    run = bench(server, tmp_path, "--concurrency", "2", "--shared-memory", "system", protocol="grpc")
    (step,) = run["steps"]
    assert run["meta"]["shared_memory"] == "system" and step["errors"] == 0 and step["requests"] > 0
    assert shared_memory.mapped_shared_memory_regions() == []


@pytest.mark.parametrize("arrivals, rates, tolerance", [("constant", "50,100", 0.1), ("poisson", "100", 0.35)])
def test_a_rate_sweep_sends_at_the_requested_rates(server, tmp_path, arrivals, rates, tolerance):
    run = bench(server, tmp_path, "--request-rate", rates, "--arrivals", arrivals, "--window", "0.5",
                "--max-step-time", "2")
    assert [step["load"] for step in run["steps"]] == [float(rate) for rate in rates.split(",")]
    for step in run["steps"]:
        assert step["errors"] == 0, step["error_messages"]
        assert step["requests_per_s"] == pytest.approx(step["load"], rel=tolerance)
        assert step["send_delay_ms"] < 5  # the senders kept up with the schedule


def test_calibration_sets_the_ceiling_that_later_runs_report_and_flag(server, tmp_path):
    assert main(["bench", "--calibrate", "--engine", "python", "--concurrency", "2", "--results", str(tmp_path),
                 *QUICK]) == 0
    run = bench(server, tmp_path, "--concurrency", "2")
    ceiling = run["calibration"]["requests_per_s"]
    assert ceiling > 0
    # The identity model again: it runs at about the ceiling, so the step is harness-bound.
    assert run["steps"][0]["harness_bound"] is (run["steps"][0]["requests_per_s"] > 0.5 * ceiling)
    page = build_report(tmp_path, tmp_path / "report")
    text = page.read_text()
    assert "Harness ceiling" in text
    assert f"harness ceiling {ceiling:.0f} req/s" in text or f"harness ceiling {ceiling:.1f} req/s" in text
    assert all((page.parent / name).is_file() for name in
               [line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")])


needs_analyzer = pytest.mark.skipif(analyzer.find() is None, reason="perf_analyzer is not installed "
                                    f"(`make perf-analyzer`, or ${analyzer.ENVIRONMENT_VARIABLE})")


@needs_analyzer
@pytest.mark.parametrize("memory", ["none", "system"])
def test_cross_check_measures_each_step_with_both_engines_and_reports_their_ratio(server, tmp_path, capsys, memory):
    run = bench(server, tmp_path, "--concurrency", "1,2", "--cross-check", "--shared-memory", memory,
                protocol="grpc", engine=analyzer.ENGINE)
    assert run["meta"]["engine"] == "perf_analyzer" and run["meta"]["cross_check"] == "python"
    assert [step["load"] for step in run["steps"]] == [step["load"] for step in run["cross_check"]] == [1, 2]
    for ours, theirs in zip(run["steps"], run["cross_check"], strict=True):
        assert ours["engine"] == "perf_analyzer" and theirs["engine"] == "python"
        for step in (ours, theirs):
            assert step["errors"] == 0, step["error_messages"]
            assert step["throughput"] > 0 and step["p50_ms"] <= step["p90_ms"] <= step["p99_ms"]
            assert step["stopped"] in ("stable", "time-cap")
        assert ours["server"]["server_compute_infer_us"] > 0 and ours["server"]["server_avg_batch"] >= 1
    assert "x python (" in capsys.readouterr().out
    (csv_path,) = tmp_path.glob("*.csv")
    with csv_path.open() as handle:
        engines = [row["engine"] for row in csv.DictReader(handle)]
    assert engines == ["perf_analyzer", "perf_analyzer", "python", "python"]


@needs_analyzer
def test_perf_analyzer_sweeps_request_rates_from_our_input_data(server, tmp_path):
    run = bench(server, tmp_path, "--request-rate", "50", "--arrivals", "poisson", "--window", "0.5",
                "--max-step-time", "2", engine=analyzer.ENGINE)
    (step,) = run["steps"]
    assert step["errors"] == 0 and step["requests_per_s"] == pytest.approx(50, rel=0.35)


def test_input_data_carries_each_item_with_its_dtype_and_shape(tmp_path):
    import base64

    inputs = {"image": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2), "size": np.array([[4, 6]] * 2)}
    data = json.loads(analyzer.write_input_data(inputs, True, tmp_path / "in.json").read_text())
    (entry,) = data["data"]
    assert entry["size"]["shape"] == [2] and entry["image"]["shape"] == [3, 2, 2]
    assert np.frombuffer(base64.b64decode(entry["size"]["b64"]), np.int64).tolist() == [4, 6]
    assert np.frombuffer(base64.b64decode(entry["image"]["b64"]), np.float32).tolist() == list(range(12))


@pytest.mark.parametrize("arguments, message", [
    (["--concurrency", "4:1"], "bad range"),
    (["--concurrency", "2", "--request-rate", "5"], "not both"),
    (["--batch-size", "0"], "--batch-size"),
    (["--shape", "x"], "NAME=VALUE"),
])
def test_bad_arguments_are_rejected_with_the_problem_named(arguments, message, capsys):
    assert main(["bench", "--model", "m", "--url", "localhost:1", *arguments]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("protocol, user", [("http", "TritonHttpUser"), ("grpc", "TritonGrpcUser")])
def test_locust_users_fire_named_request_events_and_write_csv_stats(server, tmp_path, protocol, user):
    import os
    import subprocess
    import sys

    host = server.http_url if protocol == "http" else server.grpc_url
    locustfile = Path(__file__).parents[2] / "bench" / "locustfile.py"
    prefix = tmp_path / f"locust-{protocol}"
    subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "--users", "2", "--spawn-rate", "2",
         "--run-time", "4s", "--stop-timeout", "10", "--host", host, "--tags", "compare", "--only-summary",
         "--csv", str(prefix), user],
        env={**os.environ, "PLUGSERVE_LOCUST_MODEL": CALIBRATION_MODEL}, check=True, timeout=60,
        capture_output=True,
    )
    with open(f"{prefix}_stats.csv") as handle:
        (row,) = [row for row in csv.DictReader(handle) if row["Name"] != "Aggregated"]
    assert row["Type"] == ("HTTP" if protocol == "http" else "gRPC")
    assert row["Name"] == f"{CALIBRATION_MODEL} 1x16"
    assert int(row["Request Count"]) > 5 and int(row["Failure Count"]) == 0
    assert float(row["Average Content Size"]) == 16 * 4  # the identity's output: 16 float32
    assert json.loads(Path(f"{prefix}_settings.json").read_text())["users"] == 2


@pytest.mark.parametrize("engine", ["python", "perf_analyzer"])
def test_a_server_that_restricts_shared_memory_ends_the_bench_in_one_line(server, tmp_path, capsys, engine):
    if engine == "perf_analyzer" and analyzer.find() is None:
        pytest.skip("perf_analyzer is not installed (make perf-analyzer)")
    with TritonServer(server.repository) as restricted:  # plugserve serve's default: shared memory closed
        code = main(["bench", "--url", restricted.grpc_url, "--protocol", "grpc", "--model", CALIBRATION_MODEL,
                     "--repository", str(server.repository), "--results", str(tmp_path), "--concurrency", "2",
                     "--shared-memory", "system", "--engine", engine, *QUICK])
    err = capsys.readouterr().err.strip()
    assert code == 7 and "Traceback" not in err and len(err.splitlines()) == 2, err
    problem, fix = err.splitlines()
    assert "refused to register system shared memory" in problem and "--allow-shared-memory" in fix
    assert not list(tmp_path.glob("*.json"))
