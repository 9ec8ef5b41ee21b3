"""bench/faults.py against the tiny model's own server: a stub killed under load, the largest request's memory."""

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.triton

BENCH = Path(__file__).parents[2] / "bench"
sys.path.insert(0, str(BENCH))  # faults.py imports its clients from soak.py beside it
_SPEC = importlib.util.spec_from_file_location("faults", BENCH / "faults.py")
faults = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(faults)


def test_a_stub_killed_under_load_is_back_within_ten_seconds_and_serves_again(tiny_server):
    # 12 s of load after the kill: a recovery under 10 s leaves 2 s in which every request succeeded.
    result = faults.kill_under_load(tiny_server, "tiny", clients=4, before_s=2, after_s=12)
    assert result["answered_before_kill"] > 0
    assert result["recovery_s"] < 10, (result, tiny_server.said)
    assert any("reload done" in line for line in tiny_server.said), tiny_server.said


def test_the_largest_request_is_sent_at_the_last_profiles_max_point_and_memory_is_sampled(tiny_server):
    row = faults.largest_request_memory(tiny_server, "tiny")
    assert row["inputs"] == {"image": [1, 3, 64, 64], "size": [1, 2]}
    assert row["outputs"] == {"upscaled": [1, 3, 256, 256]}
    assert 0 < row["rss_before_mb"] <= row["rss_peak_mb"]
    assert row["rss_after_mb"] > 0
