"""Find, prepare and run tritonserver on a model repository; wait for readiness; stop cleanly.

    with TritonServer("model_repository") as server:     # free ports unless given
        Client(server.http_url, "http").infer(...)

The nvidia-pytriton wheel's tritonserver ships the python backend without its stub in place:
`prepare_backends` copies `python_backend_stubs/<py>/triton_python_backend_stub` next to
`libtriton_python.so` in a private backend directory. `stop` waits for the process to exit so
that the next start finds its ports free.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import site
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from plugserve import native
from plugserve.trt.provenance import check_repository

DEFAULT_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
# Seconds tritonserver waits for in-flight requests at shutdown: tests and demos stop often.
EXIT_TIMEOUT_S = 3
LOG_TAIL_LINES = 40


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
    ):
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
    def http_url(self) -> str:
        return f"localhost:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"localhost:{self.grpc_port}"

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    def command(self, server: Path, backends: Path) -> list[str]:
        return [
            str(server),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
            # Shared-memory regions are named by this prefix: unique per server, so that two servers
            # (a test session and a demo) never collide.
            f"--backend-config=python,shm-region-prefix-name=plugserve_{os.getpid()}_{self.http_port}_",
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
        except BaseException:
            self.stop()
            raise
        return self

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


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repository", type=Path, default=Path("model_repository"), help="default: %(default)s")
    for name, port in DEFAULT_PORTS.items():
        parser.add_argument(f"--{name}-port", type=int, default=port, help="default: %(default)s")
    parser.add_argument("--startup-timeout", type=float, default=120.0, help="seconds (default: %(default)s)")
    parser.add_argument("--log", type=Path, help="write the server log here (default: a temporary file)")
    parser.add_argument("--force", action="store_true",
                        help="serve TensorRT engines built for another TensorRT, GPU or plugin library")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="pass an option to tritonserver as it is, e.g. --server-arg=--cuda-memory-pool-byte-size"
                             "=0:1073741824 (repeatable)")


def run_serve(args: argparse.Namespace) -> int:
    try:
        check_repository(args.repository, _plugin_library(), force=args.force)
    except RuntimeError as error:
        print(f"serve: {error}", file=sys.stderr)
        return 1
    server = TritonServer(
        args.repository, args.http_port, args.grpc_port, args.metrics_port,
        startup_timeout_s=args.startup_timeout, log_path=args.log, extra_args=args.server_arg,
    )
    stopping = False

    def request_stop(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    server.start()  # a ServerError (port in use, no tritonserver) is one line and exit 8 from plugserve.cli
    print(f"serve: ready on http {server.http_url}, grpc {server.grpc_url}, metrics :{server.metrics_port}"
          f" (repository {server.repository}); Ctrl-C stops", flush=True)
    try:
        while not stopping and server.process is not None and server.process.poll() is None:
            time.sleep(0.5)
    finally:
        exited = server.process is not None and server.process.poll() is not None
        tail = server.log_tail() if exited else ""  # read before stop() removes a temporary log
        code = server.stop()
    if exited:
        print(f"serve: tritonserver exited on its own with code {code}; last log lines:\n{tail}", file=sys.stderr)
        return 1
    print("serve: stopped")
    return 0
