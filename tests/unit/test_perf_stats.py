"""The harness's arithmetic: percentiles, ranges, arrival schedules, stability and the server split."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from plugserve.perf.stats import (
    arrival_times,
    latency_summary,
    parse_steps,
    percentile,
    relative_spread,
    server_split,
)


def test_percentiles_are_nearest_rank_over_known_latencies():
    latencies = np.random.default_rng(0).permutation(np.arange(1, 101, dtype=float))
    assert [percentile(latencies, p) for p in (50, 90, 95, 99, 100)] == [50, 90, 95, 99, 100]
    assert percentile([7.0], 99) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0  # an observed latency, never an interpolation


def test_latency_summary_reports_mean_and_nan_for_no_requests():
    summary = latency_summary([1.0, 2.0, 3.0, 10.0])
    assert summary["mean_ms"] == 4.0 and summary["p99_ms"] == 10.0
    assert all(math.isnan(value) for value in latency_summary([]).values())


def test_percentile_outside_0_to_100_is_rejected():
    with pytest.raises(ValueError, match="percentile"):
        percentile([1.0], 0)


def test_ranges_are_inclusive_and_linear_like_perf_analyzer():
    assert parse_steps("1:16:2", integer=True) == [1, 3, 5, 7, 9, 11, 13, 15]
    assert parse_steps("1:8", integer=True) == list(range(1, 9))
    assert parse_steps("1,2,4,8", integer=True) == [1, 2, 4, 8]
    assert parse_steps("5:20:5", integer=False) == [5.0, 10.0, 15.0, 20.0]


@pytest.mark.parametrize("text", ["8:1", "1:8:0", "a:b", "1:2:3:4", "0,1", "1.5"])
def test_bad_ranges_name_the_range(text):
    with pytest.raises(ValueError, match="range"):
        parse_steps(text, integer=True)


def test_constant_arrivals_are_evenly_spaced():
    assert list(itertools.islice(arrival_times(4.0, "constant"), 5)) == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_poisson_arrivals_have_the_requested_rate_and_exponential_gaps():
    offsets = np.array(list(itertools.islice(arrival_times(200.0, "poisson", seed=1), 20000)))
    gaps = np.diff(offsets)
    assert np.all(gaps >= 0)
    assert 1 / gaps.mean() == pytest.approx(200.0, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)  # coefficient of variation of an exponential


def test_unknown_arrival_distribution_is_rejected():
    with pytest.raises(ValueError, match="arrival"):
        next(arrival_times(1.0, "bursty"))


def test_relative_spread_is_range_over_mean():
    assert relative_spread([90.0, 100.0, 110.0]) == pytest.approx(0.2)
    assert relative_spread([0.0, 0.0]) == 0.0


def _stats(count, queue, infer, executions, inferences, as_strings=False):
    def item(n, ns):
        return {"count": str(n) if as_strings else n, "ns": str(ns) if as_strings else ns}

    return {"model_stats": [{
        "execution_count": executions, "inference_count": inferences,
        "inference_stats": {"success": item(count, count * 5000), "fail": item(1, 10), "queue": item(count, queue),
                            "compute_input": item(count, 0), "compute_infer": item(count, infer),
                            "compute_output": item(count, 0)}}]}


def test_server_split_is_the_difference_of_cumulative_statistics():
    split = server_split([(_stats(10, 1_000_000, 2_000_000, 10, 10),
                           _stats(30, 5_000_000, 6_000_000, 20, 40, as_strings=True))])
    assert split["server_success"] == 20
    assert split["server_queue_us"] == pytest.approx(200.0)
    assert split["server_compute_infer_us"] == pytest.approx(200.0)
    assert split["server_request_us"] == pytest.approx(5.0)
    assert split["server_avg_batch"] == pytest.approx(3.0)
    assert split["server_failures"] == 0


def test_server_split_over_several_windows_sums_them_before_averaging():
    first = (_stats(10, 1_000_000, 2_000_000, 10, 10), _stats(30, 5_000_000, 6_000_000, 20, 40))
    second = (_stats(50, 6_000_000, 1_000_000, 30, 50), _stats(60, 6_000_000, 5_000_000, 40, 60))
    split = server_split([first, second])
    assert split["server_success"] == 30
    assert split["server_queue_us"] == pytest.approx(4000 / 30)  # 4 ms of queueing in the first window only
    assert split["server_compute_infer_us"] == pytest.approx(8000 / 30)
    assert split["server_request_us"] == pytest.approx(5.0)
    assert split["server_avg_batch"] == pytest.approx(40 / 20)
