"""bench/soak.py against the session's server: every pair answered, memory sampled, growth judged."""

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.triton

_SPEC = importlib.util.spec_from_file_location("soak", Path(__file__).parents[2] / "bench" / "soak.py")
soak = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(soak)


def test_a_short_soak_answers_every_model_over_both_protocols_and_samples_memory(server):
    result = soak.soak(server, minutes=0.2, clients=2 * 2 * len(server.loaded), sample_s=3)
    assert result["failed"] == 0, result["failures"]
    assert set(result["requests"]) == {f"{m}/{p}" for m in server.loaded for p in ("http", "grpc")}
    assert all(count > 0 for count in result["requests"].values()), result["requests"]
    assert len(result["samples"]) >= 3
    assert all(s["server_rss_mb"] > 0 and s["stubs_rss_mb"] > 0 for s in result["samples"])


def test_memory_growth_compares_the_last_minute_with_the_second():
    samples = [{"t_s": t, "server_rss_mb": 100.0, "stubs_rss_mb": 100.0 + (t >= 240) * 50} for t in range(0, 300, 10)]
    assert soak.rss_growth(samples) == pytest.approx(0.25)


def test_a_soak_shorter_than_three_minutes_is_refused(capsys):
    with pytest.raises(SystemExit):
        soak.main(["--minutes", "1"])
    assert "--minutes must be at least 3" in capsys.readouterr().err
