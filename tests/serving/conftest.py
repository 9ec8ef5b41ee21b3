"""One real tritonserver per test session, serving both headline models built from models.yaml."""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from plugserve import build, config, native
from plugserve.client import Client
from plugserve.server import TritonServer, free_port

ROOT = Path(__file__).resolve().parents[2]
# Beside each model, with the library built, its decomposed build under this suffix: native and
# decomposed answers compared on one server.
DECOMPOSED = "_decomposed"


@pytest.fixture(scope="session")
def decomposed_twin():
    """`decomposed_twin(model)`: the name the decomposed build of `model` is served under."""
    return lambda model: model + DECOMPOSED


@pytest.fixture(scope="session")
def specs():
    return config.load(ROOT / "models.yaml")


@pytest.fixture(scope="session")
def served_repository(tmp_path_factory, export_path) -> Path:
    """The project's models.yaml built for onnxruntime (ops native where libplugserve_ort.so is built).

    Each model's source is the session's shared export of it (ONNX with plugin nodes, which the
    onnxruntime lowering decomposes, as `plugserve build` does after exporting): the deformable
    encoder takes about a minute to export on 2 cores, and the unit tests export the same graphs.
    """
    tree = yaml.safe_load((ROOT / "models.yaml").read_text())
    for name, entry in tree["models"].items():
        entry["source"] = {"onnx": str(export_path(name))}
    repository = tmp_path_factory.mktemp("serving") / "model_repository"
    for spec in config.parse(tree, base_dir=ROOT).values():
        build.build_model(spec, repository, runtime="onnxruntime")
        if native.onnxruntime_library() is not None:
            twin = dataclasses.replace(spec, name=spec.name + DECOMPOSED,
                                       onnxruntime=config.OnnxRuntimeOptions("decomposed"),
                                       instance_groups=(config.InstanceGroup(1, "KIND_CPU"),))
            build.build_model(twin, repository, runtime="onnxruntime")
    return repository


@pytest.fixture(scope="session")
def server(served_repository):
    with TritonServer(served_repository) as running:
        yield running


@pytest.fixture(scope="session", params=["http", "grpc"])
def client(request, server):
    url = server.http_url if request.param == "http" else server.grpc_url
    with Client(url, request.param) as connected:
        yield connected


@pytest.fixture()
def serve_command():
    """`serve_command(repository)`: a context manager running `plugserve serve` (see `_serve_command`)."""
    return _serve_command


@contextlib.contextmanager
def _serve_command(repository: Path) -> Iterator[tuple[subprocess.Popen, list[int]]]:
    """`plugserve serve` on free ports as a user starts it: the process (stdout and stderr merged, as
    text) and its http, grpc and metrics ports; killed on the way out if the test left it running."""
    ports = [free_port(), free_port(), free_port()]
    process = subprocess.Popen(
        [sys.executable, "-m", "plugserve.cli", "serve", "--repository", str(repository),
         "--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2])],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        yield process, ports
    finally:
        if process.poll() is None:
            process.kill()


@pytest.fixture
def tiny_server(tiny_models_yaml, tmp_path):
    """The tiny model (one instance) on its own server, with what the watchdog said."""
    repository = tmp_path / "repo"
    build.build(tiny_models_yaml, repository, log=lambda _: None)
    said: list[str] = []
    with TritonServer(repository, say=said.append) as server:
        server.said = said
        yield server
