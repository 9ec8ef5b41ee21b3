"""Finding tritonserver and preparing what it needs, without starting it."""

from __future__ import annotations

import os
import site
from pathlib import Path

import pytest

from plugserve.server import ServerError, TritonServer, find_tritonserver, prepare_backends


def test_the_TRITONSERVER_variable_wins_over_every_other_place(tmp_path, monkeypatch):
    own = tmp_path / "tritonserver"
    own.write_text("#!/bin/sh\n")
    own.chmod(0o755)
    monkeypatch.setenv("TRITONSERVER", str(own))
    assert find_tritonserver() == own


def test_a_TRITONSERVER_that_is_not_an_executable_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITONSERVER", str(tmp_path / "absent"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServerError, match=r"\$TRITONSERVER=.*absent is not an executable file"):
        find_tritonserver()


def test_without_other_installations_the_wheels_server_gets_the_stub_for_this_python(tmp_path, monkeypatch):
    monkeypatch.delenv("TRITONSERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    server = find_tritonserver()
    if Path("/opt/tritonserver/bin/tritonserver").exists():
        pytest.skip("an /opt/tritonserver installation takes precedence here")
    assert "pytriton" in server.parts
    backends = prepare_backends(server, tmp_path)
    assert (backends / "python" / "libtriton_python.so").is_file()
    stub = backends / "python" / "triton_python_backend_stub"
    assert stub.is_file() and os.access(stub, os.X_OK)


def test_the_server_environment_carries_site_packages_for_runners_and_the_wheels_libraries(tmp_path, monkeypatch):
    monkeypatch.delenv("TRITONSERVER", raising=False)
    server = find_tritonserver()
    env = TritonServer(tmp_path).environment(server)
    assert set(env["PLUGSERVE_SITE_PACKAGES"].split(os.pathsep)) >= {
        p for p in site.getsitepackages() if Path(p).is_dir()}
    if "pytriton" in server.parts:
        assert any(Path(p).name == "nvidia_pytriton.libs" for p in env["LD_LIBRARY_PATH"].split(os.pathsep))


def test_ports_left_unset_are_picked_free_and_distinct(tmp_path):
    server = TritonServer(tmp_path)
    assert len({server.http_port, server.grpc_port, server.metrics_port}) == 3
    assert server.http_url == f"127.0.0.1:{server.http_port}"  # bound to 127.0.0.1 only: never ::1 by "localhost"
