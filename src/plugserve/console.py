"""What the commands show the user: progress for the long steps (export, build, engine build,
bench): a live spinner with elapsed time on a terminal (rich), one line when each step starts and
ends otherwise, nothing under `plugserve -q`; and UsageError, for options that do not go together.

Plain lines off a terminal keep CI logs and piped output readable: a spinner's redraws would
fill them with control codes.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any


class UsageError(ValueError):
    """A command's options are missing or do not go together (plugserve exits 2, as argparse does)."""


# Set by `plugserve -q`: the commands' own result lines still print, progress does not.
quiet = False
_live: Any = None  # the rich Status of the outermost step on a terminal; inner steps print under it


def _print(line: str) -> None:
    if _live is not None:
        _live.console.print(line, highlight=False, markup=False)
    else:
        print(line, file=sys.stderr, flush=True)


@contextlib.contextmanager
def step(description: str) -> Iterator[None]:
    """Show `description` while the block runs and how long it took once it ends (not if it fails:
    the error says what happened)."""
    global _live
    if quiet:
        yield
        return
    started = time.monotonic()
    outermost = _live is None and sys.stderr.isatty()
    if outermost:
        try:
            from rich.console import Console
        except ImportError:
            outermost = False
        else:
            _live = Console(stderr=True).status(f"{description} ...", spinner="dots")
            _live.start()
    if not outermost:
        _print(f"{description} ...")
    try:
        yield
    finally:
        if outermost:
            _live.stop()
            _live = None
    _print(f"{description}: done in {time.monotonic() - started:.1f} s")
