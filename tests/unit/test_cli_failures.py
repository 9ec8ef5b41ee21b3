"""Expected failures end in two lines (the problem, then the fix and the exit code), an exit code per
class that `plugserve --help` lists, and no traceback unless -v asks for one."""

from __future__ import annotations

import argparse
import importlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from plugserve import cli, console
from plugserve.cli import main


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def failed(capsys, code: int, args: list[str]) -> str:
    """The problem line of a failure that printed exactly the problem and the fix, and no traceback."""
    assert main(args) == code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 2, lines
    assert lines[1].strip().startswith("->") and f"(exit {code};" in lines[1]
    return lines[0]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_infer_with_no_server_says_so_and_how_to_start_one(capsys, protocol):
    address = f"127.0.0.1:{free_port()}"
    line = failed(capsys, 6, ["infer", "super_resolution", "--protocol", protocol, "--url", address,
                              "--random", "8", "8", "--scale", "2"])
    assert line.startswith(f"plugserve infer: no server at {address} ({protocol})")


def test_infer_with_a_missing_image_names_the_file(capsys, tmp_path):
    line = failed(capsys, 4, ["infer", "super_resolution", "--image", str(tmp_path / "photo.jpg"), "--scale", "2"])
    assert line == f"plugserve infer: no such file: {tmp_path / 'photo.jpg'}"


def test_options_that_do_not_go_together_exit_2(capsys):
    line = failed(capsys, 2, ["infer", "super_resolution"])
    assert "give --image" in line


def test_a_bad_models_yaml_names_its_file_and_field(capsys, tiny_models_yaml, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text(tiny_models_yaml.read_text().replace("max_batch_size: 4", "max_batch_size: 4\n    runtime: tvm"))
    line = failed(capsys, 3, ["build", "--config", str(other), "--repository", str(tmp_path / "repo")])
    assert line == ("plugserve build: other.yaml: models.tiny.runtime: expected one of onnxruntime, tensorrt, torch, "
                    "got 'tvm'")


def test_a_runtime_that_is_not_installed_exits_5(capsys, tiny_models_yaml, tmp_path):
    from plugserve.lowering import tensorrt

    if tensorrt.unavailable() is None:
        pytest.skip("TensorRT is installed here")
    line = failed(capsys, 5, ["build", "--config", str(tiny_models_yaml), "--repository", str(tmp_path / "repo"),
                              "--runtime", "tensorrt"])
    assert line.startswith("plugserve build: runtime tensorrt cannot build tiny here:")


def test_build_load_with_no_server_there_says_so_before_building_anything(capsys, tiny_models_yaml, tmp_path):
    address = f"127.0.0.1:{free_port()}"
    line = failed(capsys, 6, ["build", "--config", str(tiny_models_yaml), "--repository", str(tmp_path / "repo"),
                              "--load", address])
    assert line == f"plugserve build: no server at {address} (http): Connection refused"
    assert not (tmp_path / "repo").exists()


def test_bench_with_no_server_says_so_and_how_to_start_one(capsys):
    address = f"127.0.0.1:{free_port()}"
    line = failed(capsys, 6, ["bench", "--model", "tiny", "--url", address, "--engine", "python"])
    assert line.startswith(f"plugserve bench: no server at {address} (http)")


def test_bench_options_that_do_not_go_together_exit_2(capsys):
    line = failed(capsys, 2, ["bench", "--model", "tiny", "--url", "localhost:1", "--concurrency", "2",
                              "--request-rate", "5"])
    assert line == "plugserve bench: give --concurrency or --request-rate, not both"


def without_gpus(args: list[str]) -> subprocess.CompletedProcess:
    """`plugserve ARGS` with every GPU hidden (CUDA_VISIBLE_DEVICES empty): on any machine, one without a GPU."""
    return subprocess.run([sys.executable, "-m", "plugserve.cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})


def test_bench_with_cuda_shared_memory_and_no_gpu_exits_9_naming_the_option():
    done = without_gpus(["bench", "--model", "tiny", "--url", f"127.0.0.1:{free_port()}", "--engine", "python",
                         "--shared-memory", "cuda"])
    assert done.returncode == 9 and "Traceback" not in done.stderr, done.stderr
    problem, fix = done.stderr.strip().splitlines()
    assert problem == ("plugserve bench: --shared-memory cuda needs a CUDA GPU, and this machine shows none "
                       "(no NVIDIA driver or device, CUDA_VISIBLE_DEVICES='')")
    assert "(exit 9;" in fix


def test_a_tensorrt_build_without_a_gpu_exits_9_before_exporting(tiny_models_yaml, tmp_path):
    from plugserve.lowering import tensorrt

    if tensorrt.unavailable() is not None:
        pytest.skip(f"TensorRT is not installed here: {tensorrt.unavailable()}")
    done = without_gpus(["build", "--config", str(tiny_models_yaml), "--repository", str(tmp_path / "repo"),
                         "--runtime", "tensorrt"])
    assert done.returncode == 9 and "Traceback" not in done.stderr, done.stderr
    assert "plugserve build: runtime tensorrt (building an engine) needs a CUDA GPU" in done.stderr
    assert not (tmp_path / "repo" / "tiny").exists()


def test_serve_on_a_port_in_use_exits_8(capsys, tmp_path):
    (tmp_path / "repo").mkdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = failed(capsys, 8, ["serve", "--repository", str(tmp_path / "repo"), "--http-port", str(port)])
    assert line == f"plugserve serve: http port {port} is already in use (another tritonserver?)"


def test_verbose_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError):
        main(["-v", "infer", "super_resolution", "--image", str(tmp_path / "x.png"), "--scale", "2"])


def test_help_lists_every_exit_code(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    printed = capsys.readouterr().out
    for code, _ in cli.FAILURES.values():
        assert f"\n  {code}  " in printed
    assert "-v, --verbose" in printed and "-q, --quiet" in printed


def test_every_class_in_the_failure_table_exists():
    for name in cli.FAILURES:
        module, _, cls = name.rpartition(".")
        assert isinstance(getattr(importlib.import_module(module), cls), type), name


def test_version_names_the_package_and_what_it_runs_on(capsys):
    assert main(["--version"]) == 0
    printed = capsys.readouterr().out
    for name in ("plugserve 0.", "libplugserve.so", "torch", "onnxruntime", "tritonclient", "tritonserver"):
        assert name in printed


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_every_option_has_help_text(command):
    parser = argparse.ArgumentParser()
    module = importlib.import_module(cli.COMMANDS[command][0])
    getattr(module, f"add_{command.replace('-', '_')}_arguments")(parser)
    missing = [a.option_strings or a.dest for a in parser._actions
               if not a.help and not isinstance(a, argparse._HelpAction)]
    assert not missing


def test_a_build_shows_its_progress_unless_quiet(capsys, tiny_models_yaml, tmp_path):
    repo = tmp_path / "repo"
    assert main(["build", "--config", str(tiny_models_yaml), "--repository", str(repo)]) == 0
    err = capsys.readouterr().err
    assert "build: tiny version 1 (onnxruntime, fp32) ..." in err and "build: tiny version 1 (onnxruntime, fp32): done in" in err
    try:
        assert main(["-q", "build", "--config", str(tiny_models_yaml), "--repository", str(repo)]) == 0
        assert capsys.readouterr().err == ""
    finally:
        console.quiet = False


def test_results_go_to_the_projects_bench_results():
    from plugserve.perf import results

    assert Path(__file__).resolve().parents[2] / "bench" / "results" == results.RESULTS_DIR
