"""The bench's GPU sampler: NVML readings aggregated over the measured windows, per GPU.

NVML is replaced by a fake module that plays back scripted readings (the hardware counters are
NVIDIA's; what is tested is the sampler's bookkeeping and arithmetic), or made absent.
"""

from __future__ import annotations

import csv
import dataclasses
import sys
import time
from types import SimpleNamespace

import pytest

from plugserve.perf import gpus
from plugserve.perf.load import StepResult
from plugserve.perf.results import format_table, write_results

MIB = 1 << 20


class FakeNvml:
    """pynvml's face for two GPUs; each `sample` reads the next scripted (utilisation, MiB used) per GPU."""

    def __init__(self, readings, names=(b"NVIDIA H200", "NVIDIA H200"), total_mib=1024):
        self.readings = {index: iter(per_gpu) for index, per_gpu in enumerate(readings)}
        self.current = {}
        self.names, self.total = names, total_mib * MIB
        self.shut_down = False

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shut_down = True

    def nvmlDeviceGetCount(self):
        return len(self.readings)

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetName(self, handle):
        return self.names[handle]

    def nvmlDeviceGetUtilizationRates(self, handle):
        self.current[handle] = next(self.readings[handle])
        return SimpleNamespace(gpu=self.current[handle][0], memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle):
        used = self.current.get(handle, (0, 0))[1] * MIB
        return SimpleNamespace(total=self.total, used=used, free=self.total - used)


def test_each_gpus_utilisation_and_memory_are_averaged_over_the_measured_windows_only():
    # GPU 0 busy, GPU 1 idle while measured; the first reading is warm-up and must not count.
    nvml = FakeNvml([[(5, 100), (90, 500), (80, 700), (70, 900)], [(50, 999), (0, 10), (10, 30), (20, 50)]])
    with gpus.GpuSampler(nvml, interval_s=3600) as sampler:  # no background reads: the test drives them
        assert sampler.describe() == "NVML, 2 GPU(s) every 3600 s: 0 NVIDIA H200, 1 NVIDIA H200"
        sampler.sample()
        start = sampler.snapshot()
        for _ in range(3):
            sampler.sample()
        split = gpus.gpu_split([({"model_stats": []} | start, sampler.snapshot())])
    assert nvml.shut_down
    assert split == [
        {"index": 0, "name": "NVIDIA H200", "samples": 3, "utilization_percent": 80.0, "memory_used_mib": 700.0,
         "memory_total_mib": 1024.0},
        {"index": 1, "name": "NVIDIA H200", "samples": 3, "utilization_percent": 10.0, "memory_used_mib": 30.0,
         "memory_total_mib": 1024.0},
    ]
    assert gpus.describe_split(split) == "gpu0 80% 0.7/1.0 GiB, gpu1 10% 0.0/1.0 GiB"


def test_windows_and_rounds_pool_by_their_samples():
    nvml = FakeNvml([[(100, 10), (0, 10), (40, 10), (60, 10)]], names=("GPU",))
    with gpus.GpuSampler(nvml, interval_s=3600) as sampler:
        marks = [sampler.snapshot()]
        for _ in range(4):
            sampler.sample()
            marks.append(sampler.snapshot())
    # Two windows (samples 1 and 3-4), skipping the one between, as a sweep keeps its last windows.
    (window,) = gpus.gpu_split([(marks[0], marks[1]), (marks[2], marks[4])])
    assert (window["samples"], window["utilization_percent"]) == (3, pytest.approx(200 / 3))
    first = {**window, "samples": 1, "utilization_percent": 100.0}
    second = {**window, "samples": 3, "utilization_percent": 20.0}
    (pooled,) = gpus.pool_gpus([[first], [second]])
    assert (pooled["samples"], pooled["utilization_percent"]) == (4, 40.0)
    assert gpus.pool_gpus([[first], []]) == []  # a round without GPU figures: nothing to pool honestly


def test_the_background_thread_samples_while_the_sampler_is_open():
    nvml = FakeNvml([[(30, 1)] * 10_000])
    with gpus.GpuSampler(nvml, interval_s=0.001) as sampler:
        start = sampler.snapshot()
        deadline = time.monotonic() + 10
        while gpus.gpu_split([(start, sampler.snapshot())])[0]["samples"] < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        (device,) = gpus.gpu_split([(start, sampler.snapshot())])
    assert device["samples"] >= 3 and device["utilization_percent"] == 30.0


def test_without_nvidia_ml_py_or_a_gpu_the_sampler_says_why_once_and_results_carry_no_gpu_fields(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    with gpus.GpuSampler() as sampler:
        assert sampler.describe() == "unavailable: nvidia-ml-py is not installed (pip install nvidia-ml-py)"
        assert sampler.snapshot() == {}
    assert gpus.gpu_split([({}, {})]) == []

    class NoDriver(FakeNvml):
        def nvmlInit(self):
            raise RuntimeError("Driver Not Loaded")

    with gpus.GpuSampler(NoDriver([[]])) as sampler:
        assert sampler.describe() == "unavailable: NVML: Driver Not Loaded" and sampler.snapshot() == {}
    with gpus.GpuSampler(FakeNvml([])) as sampler:
        assert sampler.describe() == "unavailable: NVML sees no GPU"


def step(**changes):
    base = StepResult(mode="concurrency", load=2, stopped="stable", windows=3, window_throughputs=[10.0],
                      duration_s=1.0, requests=10, errors=0, error_messages=[], requests_per_s=10.0,
                      throughput=10.0, p50_ms=1.0, p90_ms=1.0, p95_ms=1.0, p99_ms=1.0, mean_ms=1.0)
    return dataclasses.replace(base, **changes)


def test_results_carry_each_gpus_figures_in_the_csv_and_the_table(tmp_path):
    split = [{"index": i, "name": "GPU", "samples": 5, "utilization_percent": 50.0 + i, "memory_used_mib": 2048.0,
              "memory_total_mib": 4096.0} for i in range(2)]
    measured = step(gpus=split)
    run = {"meta": {"model": "m", "runtime": "torch", "protocol": "grpc", "mode": "concurrency", "tag": "",
                    "started": 0.0}, "steps": [dataclasses.asdict(measured)]}
    csv_path, _ = write_results(run, tmp_path)
    (row,) = csv.DictReader(csv_path.open())
    assert (row["gpu0_utilization_percent"], row["gpu1_utilization_percent"], row["gpu1_memory_used_mib"]) == (
        "50.0", "51.0", "2048.0")
    assert "gpus" not in row
    assert "gpu0 50% 2.0/4.0 GiB, gpu1 51% 2.0/4.0 GiB" in format_table([measured])
    assert "gpu0" not in format_table([step()])


def test_the_report_shows_each_gpus_share_only_for_runs_that_have_it():
    from plugserve import report

    split = [{"index": 0, "name": "GPU", "samples": 5, "utilization_percent": 97.0, "memory_used_mib": 1024.0,
              "memory_total_mib": 2048.0}]
    with_gpus = report.steps_table({"meta": {"mode": "concurrency"}, "steps": [dataclasses.asdict(step(gpus=split))]})
    assert "GPUs (util, memory)" in with_gpus[0] and "gpu0 97% 1.0/2.0 GiB" in with_gpus[2]
    without = report.steps_table({"meta": {"mode": "concurrency"}, "steps": [dataclasses.asdict(step())]})
    assert "GPUs" not in without[0]
