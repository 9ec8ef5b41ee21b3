"""Find, prepare and run tritonserver on a model repository; wait for readiness; stop cleanly.

    with TritonServer("model_repository") as server:     # free ports unless given
        Client(server.http_url, "http").infer(...)

The nvidia-pytriton wheel's tritonserver ships the python backend without its stub in place:
`prepare_backends` copies `python_backend_stubs/<py>/triton_python_backend_stub` next to
`libtriton_python.so` in a private backend directory. `stop` waits for the process to exit so
that the next start finds its ports free.

Defaults are the safe ones: the server listens on 127.0.0.1 only; the shared-memory, logging,
trace and model-repository APIs need the header `plugserve-admin: <key>` (a random key per start,
in the serving record beside the repository) unless shared memory is asked for. Model control is
explicit: the server starts empty and each model is loaded on its own, only versions whose files
match their manifest, newest first, so one broken model or version never takes the others down
and a broken newest version falls back to the previous one.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import site
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from plugserve import native, repository
from plugserve.repository_api import ADMIN_HEADER, LiveServer, load_newest
from plugserve.watchdog import SHM, Watchdog

DEFAULT_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
# Seconds tritonserver waits for in-flight requests at shutdown: tests and demos stop often.
EXIT_TIMEOUT_S = 3
LOG_TAIL_LINES = 40
MODEL_CONTROL_MODES = ("explicit", "poll", "none")
# The APIs restricted to ADMIN_HEADER unless asked for: shared memory lets a client name any
# /dev/shm object for the server (root in a container) to read and write.
RESTRICTED_APIS = ("shared-memory", "logging", "trace", "model-repository")
WATCH_INTERVAL_S = 0.5  # how often the watchdog looks for dead instances


class ServerError(RuntimeError):
    """tritonserver could not be found, started, or did not become ready; the message says why."""


def _pytriton_dir() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "tritonserver"


def find_tritonserver() -> Path:
    """$TRITONSERVER (which must then be right), then PATH, then /opt/tritonserver/bin, then the
    nvidia-pytriton wheel's."""
    if os.environ.get("TRITONSERVER"):
        chosen = Path(os.environ["TRITONSERVER"])
        if not (chosen.is_file() and os.access(chosen, os.X_OK)):
            raise ServerError(f"$TRITONSERVER={chosen} is not an executable file")
        return chosen
    wheel = _pytriton_dir()
    found = shutil.which("tritonserver")
    for path in (
        Path(found) if found else None,
        Path("/opt/tritonserver/bin/tritonserver"),
        wheel / "bin" / "tritonserver" if wheel else None,
    ):
        if path is not None and path.is_file() and os.access(path, os.X_OK):
            return path
    raise ServerError(
        "tritonserver not found: set $TRITONSERVER, put it on PATH, install it under /opt/tritonserver, "
        "or `pip install nvidia-pytriton`"
    )


def prepare_backends(server: Path, into: Path) -> Path:
    """A backend directory for `server`: its own `backends/`, completed with the python backend stub.

    For the wheel's server the stub must match this interpreter's Python version, since the
    runners use this environment's packages.
    """
    home = server.parent.parent
    source = home / "backends"
    stubs = home / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}"
    if not (source / "python").is_dir():
        raise ServerError(f"no python backend under {source} (tritonserver at {server})")
    if (source / "python" / "triton_python_backend_stub").is_file() or not stubs.is_dir():
        return source  # a complete installation (e.g. the NGC image): use it as it is
    target = into / "backends"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(stubs / "triton_python_backend_stub", target / "python" / "triton_python_backend_stub")
    return target


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_busy(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _plugin_library() -> Path | None:
    """libplugserve.so when it is built (TensorRT plans need it)."""
    path = native.library_path()
    return path if path is not None and path.is_file() else None


class TritonServer:
    """A tritonserver process on one model repository. Ports left as None are picked free."""

    def __init__(
        self,
        repository: str | Path,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        *,
        startup_timeout_s: float = 120.0,
        log_path: Path | None = None,
        extra_args: list[str] | None = None,
        host: str = "127.0.0.1",
        model_control: str = "explicit",
        allow_shared_memory: bool = False,
        force: bool = False,
        require_all: bool = True,
        say=None,
    ):
        """`force` serves versions whose files do not match their manifest; `require_all` makes a
        model that cannot be served fail `start` (plugserve serve serves the others); `say` gets a
        line per model or version left out (default: nowhere)."""
        if model_control not in MODEL_CONTROL_MODES:
            raise ValueError(f"model_control must be one of {MODEL_CONTROL_MODES}, got {model_control!r}")
        self.host = host
        self.model_control = model_control
        self.allow_shared_memory = allow_shared_memory
        self.force = force
        self.require_all = require_all
        self.say = say or (lambda _line: None)
        self.admin_key = secrets.token_urlsafe(18)
        self.loaded: dict[str, list[int]] = {}  # model -> versions loaded at start
        self.unserved: dict[str, str] = {}  # model -> why none of its versions is served
        self._record: Path | None = None
        self._watching: tuple[threading.Thread, threading.Event] | None = None
        self.repository = Path(repository).resolve()
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.startup_timeout_s = startup_timeout_s
        self.extra_args = extra_args or []
        self._workdir: tempfile.TemporaryDirectory | None = None
        self._log_path = log_path
        self._log_file: BinaryIO | None = None
        self.process: subprocess.Popen | None = None

    @property
    def _connect_host(self) -> str:
        return "127.0.0.1" if self.host in ("127.0.0.1", "0.0.0.0") else self.host  # noqa: S104 - compared, not bound

    @property
    def http_url(self) -> str:
        return f"{self._connect_host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self._connect_host}:{self.grpc_port}"

    @property
    def live(self) -> LiveServer:
        """Its repository API, with the admin key."""
        return LiveServer(self.http_url, self.admin_key, timeout_s=self.startup_timeout_s)

    @property
    def shm_prefix(self) -> str:
        """Unique per server, so that two servers (a test session and a demo) never collide, and
        `stop` can remove what a dead instance left in /dev/shm."""
        return f"plugserve_{os.getpid()}_{self.http_port}_"

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    def command(self, server: Path, backends: Path) -> list[str]:
        restricted = [api for api in RESTRICTED_APIS if not (api == "shared-memory" and self.allow_shared_memory)]
        return [
            str(server),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            f"--http-address={self.host}",
            f"--grpc-address={self.host}",
            f"--metrics-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
            f"--model-control-mode={self.model_control}",
            f"--http-restricted-api={','.join(restricted)}:{ADMIN_HEADER}={self.admin_key}",
            f"--grpc-restricted-protocol={','.join(restricted)}:{ADMIN_HEADER}={self.admin_key}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            *self.extra_args,
        ]

    def environment(self, server: Path) -> dict[str, str]:
        env = dict(os.environ)
        # The stub's embedded Python ignores PYTHONPATH; runners read this instead (see the runner's docstring).
        # $PYTHONPATH first, as for this interpreter (e.g. `PYTHONPATH=src` on a machine without the venv).
        paths = [*os.environ.get("PYTHONPATH", "").split(os.pathsep), *site.getsitepackages()]
        env["PLUGSERVE_SITE_PACKAGES"] = os.pathsep.join(dict.fromkeys(p for p in paths if p and Path(p).is_dir()))
        wheel_libs = server.parent.parent.parent.parent / "nvidia_pytriton.libs"
        # The stub links libpython<major.minor>.so: this interpreter's LIBDIR has it where the
        # loader's default paths do not (a Python built into a prefix of its own).
        libdirs = [str(d) for d in (wheel_libs, Path(sysconfig.get_config_var("LIBDIR") or "/nonexistent")) if d.is_dir()]
        if libdirs:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [env.get("LD_LIBRARY_PATH"), *libdirs]))
        library = _plugin_library()
        if library is not None:
            env["LD_PRELOAD"] = os.pathsep.join(filter(None, [env.get("LD_PRELOAD"), str(library)]))
        return env

    def start(self) -> TritonServer:
        if self.process is not None:
            raise ServerError("server already started")
        if not self.repository.is_dir():
            raise ServerError(f"model repository {self.repository} does not exist (run `plugserve build` first)")
        for name, port in (("http", self.http_port), ("grpc", self.grpc_port), ("metrics", self.metrics_port)):
            if _port_busy(port):
                raise ServerError(f"{name} port {port} is already in use (another tritonserver?)")
        server = find_tritonserver()
        if self.model_control != "explicit":
            self._check_served_versions()
        self._workdir = tempfile.TemporaryDirectory(prefix="plugserve-triton-")
        workdir = Path(self._workdir.name)
        backends = prepare_backends(server, workdir)
        if self._log_path is None:
            self._log_path = workdir / "tritonserver.log"
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self._log_path, "wb")  # noqa: SIM115 - open for the server's lifetime
        self.process = subprocess.Popen(
            self.command(server, backends),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=self.environment(server),
            start_new_session=True,  # a Ctrl-C in the terminal reaches us; we stop the server ourselves
        )
        try:
            self._wait_ready()
            if self.model_control == "explicit":
                self._load_all()
        except BaseException:
            self.stop()
            raise
        self._record = repository.write_serving_record(self.repository, {
            "pid": os.getpid(), "http": self.http_url, "grpc": self.grpc_url, "log": str(self._log_path),
            "admin_header": ADMIN_HEADER, "admin_key": self.admin_key, "loaded": self.loaded})
        self._watch()
        return self

    def _watch(self) -> None:
        """Check the instances in a thread until `stop`; only explicit model control can reload."""
        assert self.process is not None
        reload = self.reload if self.model_control == "explicit" else (
            lambda model: f"model control {self.model_control} cannot reload a model")
        watchdog = Watchdog(self.process.pid, reload, lambda: self.live.loaded(("READY",)), self.say)
        stopping = threading.Event()

        def loop() -> None:
            while not stopping.wait(WATCH_INTERVAL_S):
                watchdog.check()

        thread = threading.Thread(target=loop, name="plugserve-watchdog", daemon=True)
        thread.start()
        self._watching = thread, stopping

    def _model_dirs(self) -> list[Path]:
        return sorted(p for p in self.repository.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and (p / repository.CONFIG_NAME).is_file())

    def _check_served_versions(self) -> None:
        """poll and none: Triton loads what the configs name; refuse to start on any unverified file."""
        problems = []
        for model_dir in self._model_dirs():
            present = repository.versions(model_dir)
            try:
                config = repository.to_dict(repository.read_config(model_dir / repository.CONFIG_NAME))
            except Exception as error:  # noqa: BLE001 - protobuf's ParseError and decoding errors alike
                problems.append(f"model {model_dir.name}: {repository.CONFIG_NAME}: {error}")
                continue
            served = repository.policy_versions(config, present)
            self.loaded[model_dir.name] = served
            for version in served:
                problems += [f"model {model_dir.name} version {version}: {problem}" for problem in
                             repository.version_problems(model_dir, version, newest=version == present[-1])]
        if problems and not self.force:
            raise ServerError("refusing to serve files that do not match their manifests (--force serves them):\n"
                              + "\n".join(problems))

    def _load_all(self) -> None:
        for model_dir in self._model_dirs():
            self.load(model_dir.name)
        if self.unserved and self.require_all:
            raise ServerError("\n".join(f"model {m}: {why}" for m, why in self.unserved.items())
                              + f"\nlast log lines:\n{self.log_tail()}")

    def load(self, model: str) -> list[int]:
        """Load the newest verified versions of `model` its version policy serves, falling back to
        older ones while a load fails; returns the versions loaded ([] when none could be)."""

        def explain(name: str) -> str:
            return "".join(f"\n  log: {line}" for line in
                           [line for line in self.log_tail(400).splitlines() if name in line][-5:])

        chosen, reasons = load_newest(self.live, self.repository / model, force=self.force, say=self.say,
                                      explain=explain)
        if chosen:
            self.loaded[model] = chosen
            self.unserved.pop(model, None)
            return chosen
        present = repository.versions(self.repository / model)
        self.unserved[model] = ("no version could be served: " + "; ".join(reasons)) if present else "no versions"
        self.say(f"model {model} is not served: {self.unserved[model]}")
        return []

    def reload(self, model: str) -> str | None:
        """Load `model` again, replacing every instance (the watchdog's recovery), at the versions the
        server holds now (a `plugserve build --load` may have changed them since start); an error or None."""
        versions = self.live.loaded(("READY",)).get(model) or self.loaded.get(model)
        if not versions:
            return f"model {model} was not loaded"
        config = repository.to_dict(repository.read_config(repository.version_config(self.repository / model,
                                                                                      versions[-1])))
        # Until the new instances are ready, Triton keeps routing to the dead one and those requests
        # fail: the replacement skips the warm-up (on 2 busy cores it kept super_resolution's
        # recovery at 20 s) and its first requests pay for it instead.
        config.pop("model_warmup", None)
        return self.live.load(model, config, versions)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if self._log_path is None or not self._log_path.is_file():
            return "(no log)"
        return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(
                    f"tritonserver exited with code {self.process.returncode} before becoming ready "
                    f"(repository {self.repository}); last log lines:\n{self.log_tail()}"
                )
            if self.ready():
                return
            time.sleep(0.25)
        raise ServerError(
            f"tritonserver not ready after {self.startup_timeout_s:.0f} s on port {self.http_port}; "
            f"last log lines:\n{self.log_tail()}"
        )

    def stop(self) -> int | None:
        """Stop the server and wait for its process; returns its exit code (None if never started)."""
        code = None
        if self._watching is not None:  # before the stubs go: stopping is no death
            self._watching[1].set()
            self._watching[0].join()
            self._watching = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=EXIT_TIMEOUT_S + 15)
                except subprocess.TimeoutExpired:
                    # Kill its whole session: the python backend stubs run as its children.
                    os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait()
            code = self.process.returncode
            self.process = None
        # What dead instances left (a live one removes its own region when it stops).
        for region in SHM.glob(f"{self.shm_prefix}*"):
            region.unlink(missing_ok=True)
        if self._record is not None:
            self._record.unlink(missing_ok=True)
            self._record = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._workdir is not None:
            if self._log_path is not None and self._log_path.is_relative_to(self._workdir.name):
                self._log_path = None  # the log goes with the work directory
            self._workdir.cleanup()
            self._workdir = None
        return code

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
