import contextlib

import pytest

from plugserve.perf.load import SenderError, SenderSide, StepSettings


def test_a_sender_that_cannot_open_ends_the_round_with_its_reason():
    @contextlib.contextmanager
    def make_sender(index):
        if index == 1:
            raise OSError("no room for the region")
        yield lambda: None

    settings = StepSettings(warmup_s=0.05, window_s=0.05, stable_windows=2, max_step_s=2.0)
    with pytest.raises(SenderError, match="a sender could not start: OSError: no room for the region"):
        SenderSide(make_sender, "concurrency", settings, 1).measure(2)
