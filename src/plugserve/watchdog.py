"""Watch a running tritonserver's python-backend instances and bring back the ones that die.

Triton 2.51 neither restarts a dead `triton_python_backend_stub` (kill -9, an OOM kill, a crash in
the stub's own C++ before `execute` runs) nor reports it: the model stays ready and every request
routed to the dead instance fails with "Stub process ... is not healthy". The stubs are children of
tritonserver, one per model instance, whose command line names the model's `model.py`, the
instance's shared-memory region and the instance; `Watchdog.check` compares them with the last
look, asks for a reload of each model that lost one, and unlinks the dead stub's /dev/shm region
(nothing else would: it outlives the server too).

Not every stub that goes is dead: a load (`plugserve build --load`, or Triton's own poll under a
version policy) retires the instances of each version it unloads, a reload of a version replaces
its instances with new stubs of the same names, and each load runs a short-lived stub named after
the model itself (for the backend's config auto-complete), which serves no request. A stub is
dead only when it was an instance, the server still holds its version READY, and no stub of the
same instance runs in its place.
"""

from __future__ import annotations

import contextlib
import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

STUB_NAME = "triton_python_backend_stub"
PROC = Path("/proc")
SHM = Path("/dev/shm")


@dataclass(frozen=True)
class Stub:
    pid: int
    model: str
    version: int
    instance: str
    region: str  # the instance's shared-memory region, /dev/shm/<region>


def _stat(pid_dir: Path) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None when it is gone."""
    try:
        text = (pid_dir / "stat").read_text()
    except OSError:
        return None
    # The command name, in parentheses, may hold spaces: the fields after its closing one are fixed.
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1])


def stubs(server_pid: int) -> dict[int, Stub]:
    """The live python-backend stubs of a tritonserver's model instances, by pid (zombies are dead)."""
    found = {}
    for pid_dir in PROC.iterdir():
        if not pid_dir.name.isdigit():
            continue
        stat = _stat(pid_dir)
        if stat is None or stat[1] != server_pid or stat[0] in ("Z", "X"):
            continue
        with contextlib.suppress(OSError):
            argv = (pid_dir / "cmdline").read_bytes().split(b"\0")
            # <stub> <repository>/<model>/<version>/model.py <region> <sizes> <parent pid> <backend dir>
            # <ipc size> <instance name> <runtime modes>; the trailing b"" of the NUL-terminated list included.
            if len(argv) < 10 or Path(argv[0].decode()).name != STUB_NAME:
                continue
            version_dir, instance = Path(argv[1].decode()).parent, argv[-3].decode()
            if version_dir.name.isdigit() and instance != version_dir.parent.name:  # the model's own stub is no instance
                found[int(pid_dir.name)] = Stub(int(pid_dir.name), version_dir.parent.name, int(version_dir.name),
                                                instance, argv[2].decode())
    return found


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="milliseconds")


class Watchdog:
    """`check()` now and then (plugserve serve: twice a second); `reload(model) -> str | None` (an
    error, or None) is called for each model with a dead instance, `ready() -> {model: [versions]}`
    says which versions the server holds READY now, `say` gets one line per event."""

    def __init__(self, server_pid: int, reload: Callable[[str], str | None],
                 ready: Callable[[], dict[str, list[int]]], say: Callable[[str], None]):
        self.server_pid = server_pid
        self.reload = reload
        self.ready = ready
        self.say = say
        self.known = stubs(server_pid)

    def _dead(self, alive: dict[int, Stub]) -> list[Stub]:
        """The known stubs that are gone and were neither retired nor replaced."""
        gone = [stub for pid, stub in self.known.items() if pid not in alive]
        if not gone:
            return []
        try:
            ready = self.ready()
        except Exception as error:  # noqa: BLE001 - stopping, or not answering: nothing to reload through
            self.say(f"{_now()} watchdog: {len(gone)} instance(s) went, the server cannot say why: {error}")
            return []
        serving = {(s.model, s.version, s.instance) for s in alive.values()}
        return [stub for stub in gone if stub.version in ready.get(stub.model, ())
                and (stub.model, stub.version, stub.instance) not in serving]

    def check(self) -> list[str]:
        """Reload the models whose instances died since the last check; returns those models."""
        alive = stubs(self.server_pid)
        dead = self._dead(alive)
        models = sorted({stub.model for stub in dead})
        for model in models:
            lost = [stub for stub in dead if stub.model == model]
            self.say(f"{_now()} watchdog: model {model}: instance(s) "
                     f"{', '.join(f'{s.instance} (pid {s.pid})' for s in lost)} died; reloading the model")
            started = time.monotonic()
            error = self.reload(model)
            for stub in lost:
                with contextlib.suppress(FileNotFoundError):
                    (SHM / stub.region).unlink()
            outcome = f"failed: {error}" if error else "done"
            self.say(f"{_now()} watchdog: model {model}: reload {outcome} in {time.monotonic() - started:.1f} s; "
                     f"removed the dead instances' shared memory {', '.join(s.region for s in lost)}")
        # The reloaded models' old instances, the healthy ones included, are retired by Triton after
        # the reload returns: their exit is no death.
        # A stub of this check's first look that went since stays known, so that the next check
        # sees it go (a rescan alone would forget a death between the two looks).
        retired = {pid for pid, stub in alive.items() if stub.model in models}
        self.known = {pid: stub for pid, stub in {**alive, **stubs(self.server_pid)}.items() if pid not in retired}
        return models
