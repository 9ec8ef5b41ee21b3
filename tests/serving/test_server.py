"""Starting and stopping tritonserver: readiness, failures with the log, ports freed, `plugserve serve`."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest

from plugserve import build
from plugserve.client import Client
from plugserve.server import ServerError, TritonServer, _port_busy, free_port

pytestmark = pytest.mark.triton


@pytest.fixture
def tiny_repository(tiny_models_yaml, tmp_path):
    repository = tmp_path / "repo"
    build.build(tiny_models_yaml, repository, log=lambda _: None)
    return repository


def test_stopping_the_server_frees_its_ports_for_the_next_start(tiny_repository):
    ports = free_port(), free_port(), free_port()
    for _ in range(2):
        with TritonServer(tiny_repository, *ports) as server:
            image = np.ones((1, 3, 8, 8), np.float32)
            out = Client(server.http_url).infer("tiny", {"image": image, "size": np.array([[16, 16]])})
            np.testing.assert_allclose(out["upscaled"], 1.0, atol=1e-6)
        assert server.process is None
        assert not any(_port_busy(port) for port in ports)


def test_a_server_that_cannot_serve_a_model_fails_naming_the_model_version_and_file(tiny_repository):
    (tiny_repository / "tiny" / "1" / "model.onnx").unlink()
    with pytest.raises(ServerError) as error:
        TritonServer(tiny_repository, startup_timeout_s=60).start()
    message = str(error.value)
    assert "model tiny: no version could be served: version 1 is not served: model.onnx does not match" in message
    assert "last log lines" in message


def test_a_busy_port_is_named_before_anything_starts(tiny_repository):
    with TritonServer(tiny_repository) as running, pytest.raises(ServerError, match=f"http port {running.http_port}"):
        TritonServer(tiny_repository, http_port=running.http_port).start()


def test_the_serve_command_runs_until_interrupted_and_then_stops_cleanly(tiny_repository, serve_command):
    with serve_command(tiny_repository) as (process, ports):
        line = process.stdout.readline()
        assert line.startswith("serve: server log "), line
        line = process.stdout.readline()
        assert line.startswith(f"serve: ready on http 127.0.0.1:{ports[0]}, grpc 127.0.0.1:{ports[1]}"), line
        assert Client(f"localhost:{ports[1]}", "grpc").ready("tiny")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        assert "serve: stopped" in process.stdout.read()
    time.sleep(0.1)
    assert not any(_port_busy(port) for port in ports)
