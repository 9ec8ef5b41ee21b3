"""Per-GPU utilisation and memory during a step, read from NVML (`nvidia-ml-py`) in a background thread.

The sampler keeps cumulative totals per GPU, like Triton's statistics: a snapshot at each end of
the measured windows, and the difference of two snapshots is what the GPUs did in between
(`gpu_split`, beside `stats.server_split`). Without nvidia-ml-py or a GPU the sampler says why once
and its snapshots are empty, so results carry no GPU fields.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from types import ModuleType
from typing import Any

# The snapshot key the sampler adds beside Triton's model statistics.
SNAPSHOT_KEY = "gpu_totals"
# NVML's utilisation is the share of the last sample period (1/6 s to 1 s by GPU) a kernel ran.
INTERVAL_S = 0.1
MIB = 1 << 20


class GpuSampler:
    """NVML read every `interval_s` while open; `snapshot()` gives the cumulative totals so far."""

    def __init__(self, nvml: ModuleType | Any = None, interval_s: float = INTERVAL_S):
        self.interval_s = interval_s
        self.unavailable: str | None = None
        self._nvml: Any = nvml
        self._initialised = False
        self._devices: list[tuple[int, str, Any]] = []  # NVML index, name, handle
        self._totals: list[dict[str, float]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuSampler:
        try:
            if self._nvml is None:
                import pynvml

                self._nvml = pynvml
            self._nvml.nvmlInit()
            self._initialised = True
            count = self._nvml.nvmlDeviceGetCount()
        except ImportError:
            self.unavailable = "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
        except Exception as error:  # noqa: BLE001 - pynvml.NVMLError: no driver, no GPU, no permission
            self.unavailable = f"NVML: {error}"
        else:
            if count == 0:
                self.unavailable = "NVML sees no GPU"
            for index in range(count):
                handle = self._nvml.nvmlDeviceGetHandleByIndex(index)
                name = self._nvml.nvmlDeviceGetName(handle)
                total = self._nvml.nvmlDeviceGetMemoryInfo(handle).total
                self._devices.append((index, name.decode() if isinstance(name, bytes) else str(name), handle))
                self._totals.append({"samples": 0, "utilization_sum": 0.0, "memory_used_sum": 0.0,
                                     "memory_total": float(total)})
        if self._devices:
            self._thread = threading.Thread(target=self._run, name="gpu-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._initialised:
            self._nvml.nvmlShutdown()

    def describe(self) -> str:
        """One line for the bench's output and the results' meta."""
        if self.unavailable is not None:
            return f"unavailable: {self.unavailable}"
        return f"NVML, {len(self._devices)} GPU(s) every {self.interval_s:g} s: " + ", ".join(
            f"{index} {name}" for index, name, _ in self._devices)

    def sample(self) -> None:
        """Read every GPU once into the totals (the thread's loop; tests call it directly)."""
        readings = []
        for _, _, handle in self._devices:
            readings.append((float(self._nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
                             float(self._nvml.nvmlDeviceGetMemoryInfo(handle).used)))
        with self._lock:
            for totals, (utilization, used) in zip(self._totals, readings, strict=True):
                totals["samples"] += 1
                totals["utilization_sum"] += utilization
                totals["memory_used_sum"] += used

    def snapshot(self) -> dict[str, Any]:
        """The cumulative totals, to merge into a statistics snapshot; empty when unavailable."""
        if not self._devices:
            return {}
        with self._lock:
            return {SNAPSHOT_KEY: [{"index": index, "name": name, **totals}
                                   for (index, name, _), totals in zip(self._devices, self._totals, strict=True)]}

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()


def gpu_split(windows: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per GPU over the given (before, after) snapshot pairs: mean utilisation (%) and mean memory
    used (MiB), with the samples they rest on; [] when the snapshots carry no GPU totals."""
    pairs = [(before[SNAPSHOT_KEY], after[SNAPSHOT_KEY]) for before, after in windows
             if SNAPSHOT_KEY in before and SNAPSHOT_KEY in after]
    if not pairs:
        return []
    split = []
    for position, device in enumerate(pairs[0][1]):

        def delta(key: str, position: int = position) -> float:
            return sum(after[position][key] - before[position][key] for before, after in pairs)

        samples = int(delta("samples"))
        split.append({"index": device["index"], "name": device["name"], "samples": samples,
                      "utilization_percent": delta("utilization_sum") / samples if samples else None,
                      "memory_used_mib": delta("memory_used_sum") / samples / MIB if samples else None,
                      "memory_total_mib": device["memory_total"] / MIB})
    return split


def pool_gpus(rounds: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Several rounds' per-GPU splits as one: means weighted by each round's samples."""
    if not rounds or not all(rounds):
        return []
    pooled = []
    for devices in zip(*rounds, strict=True):
        samples = sum(device["samples"] for device in devices)

        def mean(key: str, devices: Sequence[dict[str, Any]] = devices, samples: int = samples) -> float | None:
            if not samples:
                return None
            return sum(device[key] * device["samples"] for device in devices if device["samples"]) / samples

        pooled.append({**devices[0], "samples": samples, "utilization_percent": mean("utilization_percent"),
                       "memory_used_mib": mean("memory_used_mib")})
    return pooled


def describe_split(split: Sequence[dict[str, Any]]) -> str:
    """`gpu0 87% 12.3/140.4 GiB` per GPU, for the table's note and the report; "" without a split."""
    parts = []
    for device in split:
        if device["utilization_percent"] is None:
            parts.append(f"gpu{device['index']} no samples")
        else:
            parts.append(f"gpu{device['index']} {device['utilization_percent']:.0f}% "
                         f"{device['memory_used_mib'] / 1024:.1f}/{device['memory_total_mib'] / 1024:.1f} GiB")
    return ", ".join(parts)
