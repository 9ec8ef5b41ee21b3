"""`plugserve serve`: tritonserver on a model repository, watched until Ctrl-C.

The server runs with explicit model control by default: plugserve loads each model itself, only
verified versions (plugserve.server.TritonServer.load), and the server's watchdog
(plugserve.watchdog) reloads a model whose instance died, which only the repository API can do. `poll` (Triton reloads what changes on disk)
and `none` (everything at start) are there for setups that expect them; neither can fall back to a
previous version or recover a dead instance, so the watchdog then only reports. The server log is
kept (beside the repository unless --log names it) and its path printed at start.
"""

from __future__ import annotations

import argparse
import datetime
import signal
import sys
import time
from pathlib import Path

from plugserve.server import DEFAULT_PORTS, MODEL_CONTROL_MODES, TritonServer, _plugin_library
from plugserve.trt.provenance import check_repository


def default_log_path(repository: Path) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return repository.resolve().parent / f".{repository.resolve().name}.logs" / f"tritonserver-{stamp}.log"


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repository", type=Path, default=Path("model_repository"), help="default: %(default)s")
    for name, port in DEFAULT_PORTS.items():
        parser.add_argument(f"--{name}-port", type=int, default=port, help="default: %(default)s")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address the HTTP, gRPC and metrics endpoints listen on; 0.0.0.0 for every interface"
                             " (default: %(default)s)")
    parser.add_argument("--model-control", choices=MODEL_CONTROL_MODES, default="explicit",
                        help="explicit (default): plugserve loads each verified model on its own, falls back to the "
                             "previous version when the newest is broken, reloads a model whose instance died, and "
                             "takes new versions from `plugserve build --load`; "
                             "poll: Triton loads what changes on disk; none: Triton loads everything once at start")
    parser.add_argument("--allow-shared-memory", action="store_true",
                        help="let clients register shared-memory regions (restricted by default: a client could "
                             "name any /dev/shm object for the server to read and write)")
    parser.add_argument("--startup-timeout", type=float, default=120.0, help="seconds (default: %(default)s)")
    parser.add_argument("--log", type=Path,
                        help="write the server log here (default: .<repository>.logs/ beside the repository; kept)")
    parser.add_argument("--force", action="store_true",
                        help="serve versions whose files do not match their manifest, and TensorRT engines built for "
                             "another TensorRT, GPU or plugin library")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="pass an option to tritonserver as it is, e.g. --server-arg=--cuda-memory-pool-byte-size"
                             "=0:1073741824 (repeatable)")


def _say(line: str) -> None:
    print(f"serve: {line}", file=sys.stderr, flush=True)


def run_serve(args: argparse.Namespace) -> int:
    try:
        check_repository(args.repository, _plugin_library(), force=args.force)
    except RuntimeError as error:
        _say(str(error))
        return 1
    log_path = args.log or default_log_path(args.repository)
    server = TritonServer(
        args.repository, args.http_port, args.grpc_port, args.metrics_port,
        startup_timeout_s=args.startup_timeout, log_path=log_path, extra_args=args.server_arg, host=args.host,
        model_control=args.model_control, allow_shared_memory=args.allow_shared_memory, force=args.force,
        require_all=False, say=_say,
    )
    stopping = False

    def request_stop(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    print(f"serve: server log {log_path}", flush=True)
    server.start()  # a ServerError (port in use, no tritonserver) is one line and exit 8 from plugserve.cli
    loaded = ", ".join(f"{m} {v}" for m, v in server.loaded.items()) or "no models"
    print(f"serve: ready on http {server.http_url}, grpc {server.grpc_url}, metrics :{server.metrics_port}"
          f" (repository {server.repository}; serving {loaded}); Ctrl-C stops", flush=True)
    try:
        while not stopping and server.process is not None and server.process.poll() is None:
            time.sleep(0.5)
    finally:
        exited = server.process is not None and server.process.poll() is not None
        code = server.stop()
    if exited:
        _say(f"tritonserver exited on its own with code {code}; last log lines:\n{server.log_tail()}")
        return 1
    print(f"serve: stopped; server log kept at {log_path}")
    return 0
