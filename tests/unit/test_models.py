"""The headline models: loading by name, shapes at any size, seeded weights, and the SR checkpoint's quality."""

from __future__ import annotations

import pytest
import torch

from plugserve import models
from plugserve.models import deformable_encoder, srcnn
from plugserve.ops.dynamic_resize import reference as resize


@pytest.mark.parametrize("name", models.NAMES)
def test_load_returns_the_model_in_eval_mode_with_its_checkpoint(name):
    model = models.load(name)
    assert not model.training
    state = torch.load(models.checkpoint_path(name), weights_only=True)
    for key, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, state[key])


def test_unknown_model_names_the_known_ones():
    with pytest.raises(ValueError, match="super_resolution, deformable_encoder"):
        models.load("yolo")


def test_a_checkpoint_that_does_not_fit_is_rejected_naming_the_file(tmp_path):
    path = tmp_path / "wrong.pt"
    torch.save({"features.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="wrong.pt does not fit"):
        models.load("super_resolution", path)


@pytest.mark.parametrize(("size", "out"), [((16, 24), (32, 48)), ((16, 24), (53, 61)), ((30, 30), (12, 9))])
def test_super_resolution_returns_the_size_asked_for_at_run_time(size, out):
    model = models.load("super_resolution")
    image, _ = models.example_inputs("super_resolution", batch=2, height=size[0], width=size[1])
    with torch.no_grad():
        upscaled = model(image, torch.tensor(out))
    assert upscaled.shape == (2, 3, *out)
    assert upscaled.min() >= 0.0 and upscaled.max() <= 1.0


@pytest.mark.parametrize(("height", "width"), [(64, 64), (33, 95), (8, 8)])
def test_deformable_encoder_memory_holds_every_level_position(height, width):
    model = models.load("deformable_encoder")
    (image,) = models.example_inputs("deformable_encoder", height=height, width=width)
    with torch.no_grad():
        memory = model(image)
    positions = sum(h * w for h, w in deformable_encoder.level_sizes(height, width))
    assert memory.shape == (1, positions, 256)
    assert torch.isfinite(memory).all()


def test_deformable_weights_are_created_on_first_use_and_deterministic_from_the_seed(tmp_path, monkeypatch):
    monkeypatch.setenv("PLUGSERVE_ARTIFACTS", str(tmp_path))
    path = deformable_encoder.default_checkpoint()
    assert path == tmp_path / "checkpoints" / "deformable_encoder.pt"
    saved = torch.load(path, weights_only=True)
    for key, tensor in deformable_encoder.build().state_dict().items():
        torch.testing.assert_close(tensor, saved[key], rtol=0, atol=0)


def test_committed_srcnn_checkpoint_holds_only_the_weights():
    # fp32 weights and pickling overhead; optimizer state or a second copy would double it.
    parameters = sum(p.numel() for p in srcnn.build().parameters())
    assert srcnn.CHECKPOINT.stat().st_size < 4 * parameters * 1.1


def test_committed_srcnn_beats_bicubic_on_a_held_out_photo():
    pytest.importorskip("skimage")
    model = models.load("super_resolution")
    hr = srcnn.sample_image(srcnn.HELD_OUT[0])[..., :240, :300]
    lr, size = srcnn.downscale(hr, 3)
    with torch.no_grad():
        ours = srcnn.psnr(model(lr, size), hr, shave=3)
    bicubic = srcnn.psnr(resize(lr, size, "bicubic", False), hr, shave=3)
    assert ours > bicubic + 0.25, f"SRCNN {ours:.2f} dB vs bicubic {bicubic:.2f} dB"
