"""The perf harness behind `plugserve bench`, in small files.

Each step of a sweep warms up, then measures back-to-back windows until the throughput of the last
few windows is stable or the step's time cap is hit, and reports client latency percentiles,
errors, and the server-side split read from Triton's statistics API over the same windows.
`--calibrate` measures the harness's own ceiling against a trivial model, so that a result close to
what the harness itself can drive is flagged instead of being read as the server's.

- stats.py     percentiles, stability, schedules, Triton's server-side split
- load.py      senders in closed and open loop, windows, rounds, sweeps over sides (engines, the twin)
- analyzer.py  NVIDIA's perf_analyzer as the other load engine, with the same steps and results
- gpus.py      per-GPU utilisation and memory over the measured windows, through NVML
- inputs.py    request inputs from the model's config and shape profiles
- results.py   JSON/CSV files, the table, calibrations, the host
- targets.py   the served model, and the in-process ONNX Runtime twin
- plots.py     the report's figures: the shared figure helpers, the per-step latency breakdown
- variants.py  scratch repositories: the calibration model, batching/instance variants
- cli.py       the command line
"""
