"""`plugserve infer` against the session's tritonserver: image files in, PNGs out, --check verdicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from plugserve.cli import main
from plugserve.client import save_image

pytestmark = pytest.mark.triton

ROOT = Path(__file__).resolve().parents[2]


def url(server, protocol: str) -> str:
    return server.http_url if protocol == "http" else server.grpc_url


@pytest.fixture
def photo(tmp_path) -> Path:
    pixels = np.random.default_rng(0).random((1, 3, 20, 30), dtype=np.float32)
    return save_image(pixels, tmp_path / "photo.png")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_infer_upscales_an_image_file_to_a_png_at_any_scale_and_checks_it(server, photo, tmp_path, protocol, capsys):
    out = tmp_path / "up.png"
    args = ["infer", "super_resolution", "--protocol", protocol, "--url", url(server, protocol),
            "--image", str(photo), "--scale", "2.5", "--output", str(out), "--check", "--config", str(ROOT / "models.yaml")]
    assert main(args) == 0
    with Image.open(out) as image:
        assert image.size == (75, 50)  # (W, H) = 2.5 x (30, 20)
    printed = capsys.readouterr().out
    assert "check upscaled: max abs error vs PyTorch" in printed and "ok" in printed


def test_infer_takes_an_explicit_output_size(server, photo, tmp_path):
    out = tmp_path / "sized.png"
    assert main(["infer", "super_resolution", "--url", server.http_url, "--image", str(photo),
                 "--size", "33", "77", "--output", str(out)]) == 0
    with Image.open(out) as image:
        assert image.size == (77, 33)


def test_infer_sends_a_random_image_with_a_requested_scale(server, capsys):
    assert main(["infer", "super_resolution", "--protocol", "grpc", "--url", server.grpc_url,
                 "--random", "16", "24", "--scale", "2", "--check", "--config", str(ROOT / "models.yaml")]) == 0
    assert "upscaled float32 [1, 3, 32, 48]" in capsys.readouterr().out


def test_infer_runs_the_deformable_encoder_on_random_and_saved_inputs(server, tmp_path, capsys):
    config = ["--config", str(ROOT / "models.yaml")]
    assert main(["infer", "deformable_encoder", "--protocol", "grpc", "--url", server.grpc_url,
                 "--random", "64", "80", "--check", "--output", str(tmp_path / "out.npz"), *config]) == 0
    assert np.load(tmp_path / "out.npz")["memory"].shape == (1, 8 * 10 + 4 * 5 + 2 * 3 + 1 * 2, 256)
    saved = tmp_path / "image.npy"
    np.save(saved, np.random.default_rng(1).random((1, 3, 64, 64), dtype=np.float32))
    assert main(["infer", "deformable_encoder", "--url", server.http_url, "--input", f"image={saved}", "--check",
                 *config]) == 0
    assert "max abs error vs PyTorch" in capsys.readouterr().out


def test_infer_check_fails_when_the_served_model_differs_from_the_local_one(server, photo, tmp_path, capsys):
    import torch

    from plugserve import models

    torch.manual_seed(1)
    torch.save(models.module("super_resolution").build().state_dict(), tmp_path / "other.pt")
    other = tmp_path / "models.yaml"
    other.write_text((ROOT / "models.yaml").read_text().replace(
        "checkpoint: src/plugserve/checkpoints/srcnn.pt", f"checkpoint: {tmp_path / 'other.pt'}"))
    assert main(["infer", "super_resolution", "--url", server.http_url, "--image", str(photo), "--scale", "2",
                 "--check", "--config", str(other)]) == 1
    assert "MISMATCH" in capsys.readouterr().out


def test_infer_check_runs_an_onnx_source_in_onnx_runtime(server, photo, export_path, tmp_path, capsys):
    import yaml

    tree = yaml.safe_load((ROOT / "models.yaml").read_text())
    tree["models"]["super_resolution"]["source"] = {"onnx": str(export_path("super_resolution"))}
    onnx_sourced = tmp_path / "models.yaml"
    onnx_sourced.write_text(yaml.safe_dump(tree))
    assert main(["infer", "super_resolution", "--url", server.http_url, "--image", str(photo), "--scale", "2",
                 "--check", "--config", str(onnx_sourced)]) == 0
    assert "check upscaled: max abs error vs ONNX Runtime" in capsys.readouterr().out


def test_infer_reports_the_servers_error_in_one_line_and_exits_7(server, photo, capsys):
    assert main(["infer", "super_resolution", "--url", server.http_url, "--image", str(photo),
                 "--size", "0", "64"]) == 7
    err = capsys.readouterr().err
    assert "requested output size must be positive" in err and "Traceback" not in err


def test_infer_of_a_model_the_server_does_not_have_says_how_to_build_it(server, capsys):
    assert main(["infer", "no_such_model", "--url", server.http_url, "--random", "8", "8"]) == 7
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("plugserve infer: no_such_model: the server answered:") and len(err) == 2
    assert "plugserve build --model no_such_model" in err[1]
