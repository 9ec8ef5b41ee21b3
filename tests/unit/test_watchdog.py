"""Watchdog.check against scripted looks at the stubs (what /proc would show at each call)."""

from plugserve import watchdog
from plugserve.watchdog import Stub, Watchdog

INSTANCE = Stub(pid=101, model="tiny", version=1, instance="tiny_0_0", region="plugserve_tiny_0_0")


def test_a_stub_that_dies_between_a_checks_two_looks_is_reloaded_by_the_next_check(monkeypatch):
    looks = iter([{101: INSTANCE},   # the watchdog's first look, at start
                  {101: INSTANCE},   # check 1, first look: alive
                  {},                # check 1, rescan: it died in between
                  {},                # check 2, first look
                  {}])               # check 2, rescan
    monkeypatch.setattr(watchdog, "stubs", lambda _pid: next(looks))
    reloaded, said = [], []
    dog = Watchdog(1, lambda model: reloaded.append(model), lambda: {"tiny": [1]}, said.append)
    assert dog.check() == []
    assert dog.check() == ["tiny"]
    assert reloaded == ["tiny"]
    assert any("tiny_0_0 (pid 101) died" in line for line in said), said


def test_a_stub_whose_version_the_server_no_longer_holds_ready_is_retired_not_dead(monkeypatch):
    looks = iter([{101: INSTANCE}, {}, {}])
    monkeypatch.setattr(watchdog, "stubs", lambda _pid: next(looks))
    reloaded = []
    dog = Watchdog(1, lambda model: reloaded.append(model), lambda: {"tiny": [2]}, lambda _line: None)
    assert dog.check() == []
    assert reloaded == []
