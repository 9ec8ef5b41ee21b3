"""Super-resolution: bicubic upsampling to a run-time output size, then SRCNN-style convolutions that restore detail.

The convolutions: 5x5 conv 3->WIDTH, ReLU, DEPTH times (3x3 conv WIDTH->WIDTH, ReLU), 3x3 conv WIDTH->3, all
padded to keep the size; SRCNN (Dong et al. 2014) deepened with 3x3 layers as its follow-ups (VDSR, FSRCNN) do.
They predict the residual over the bicubic image rather than the image itself: with the small training set we
have (sample photos that packages ship) that trains in minutes and starts from bicubic quality instead of below
it. SRCNN's own 9-1-5 layers (9x9 3->64, 1x1 64->32, 5x5 32->3) gained +0.52 dB over bicubic at x3 on the
held-out photos; these (32 channels, 5 mapping layers) +0.76, at 1.9x the CPU time per image (scripts/train_srcnn.py
gives the runs).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

import plugserve.ops.dynamic_resize  # noqa: F401  (registers torch.ops.plugserve.dynamic_resize)

INPUTS = ("image", "size")
OUTPUTS = ("upscaled",)
# The image's batch and spatial dims vary at run time; `size` is always [2].
DYNAMIC_AXES = {"image": {0: "batch", 2: "height", 3: "width"}}
CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "srcnn.pt"
# scikit-image sample photos that scripts/train_srcnn.py never trains on: PSNR figures use these.
HELD_OUT = ("chelsea", "coffee", "camera")
# The checkpoint's shape: channels of the hidden layers and how many 3x3 layers map them.
WIDTH = 32
DEPTH = 5


class SuperResolution(nn.Module):
    """image [N, 3, H, W] RGB in [0, 1], size int64 [2] = (OH, OW) -> upscaled [N, 3, OH, OW] in [0, 1]."""

    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, width, kernel_size=5, padding=2)
        self.mapping = nn.ModuleList(nn.Conv2d(width, width, kernel_size=3, padding=1) for _ in range(depth))
        self.reconstruction = nn.Conv2d(width, 3, kernel_size=3, padding=1)

    def forward(self, image: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
        upscaled = torch.ops.plugserve.dynamic_resize(image, size, "bicubic", False)
        hidden = torch.relu(self.features(upscaled))
        for layer in self.mapping:
            hidden = torch.relu(layer(hidden))
        return (upscaled + self.reconstruction(hidden)).clamp(0.0, 1.0)


def build(width: int = WIDTH, depth: int = DEPTH) -> SuperResolution:
    return SuperResolution(width, depth)


def default_checkpoint() -> Path:
    if not CHECKPOINT.is_file():
        raise FileNotFoundError(f"super_resolution checkpoint {CHECKPOINT} is missing; "
                                f"train it with `python scripts/train_srcnn.py`")
    return CHECKPOINT


def sample_image(name: str) -> torch.Tensor:
    """A photo shipped with scikit-image as [1, 3, H, W] float RGB in [0, 1] (grey replicated, alpha dropped)."""
    import numpy as np

    try:
        import skimage.data
    except ImportError as error:
        raise ImportError("sample images come from scikit-image: pip install 'plugserve[test]'") from error
    image = getattr(skimage.data, name)()
    if isinstance(image, tuple):  # stereo pairs
        image = image[0]
    image = np.asarray(image, dtype=np.float32) / 255.0
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(image[..., :3])).permute(2, 0, 1)[None]


def downscale(hr: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The low-resolution input for a high-resolution batch (antialiased bicubic, as an image
    pipeline would shrink it) and the size to upscale it back to."""
    import torch.nn.functional as F

    h, w = hr.shape[-2:]
    low = (max(1, round(h / scale)), max(1, round(w / scale)))
    lr = F.interpolate(hr, size=low, mode="bicubic", antialias=True, align_corners=False).clamp(0.0, 1.0)
    return lr, torch.tensor([h, w], dtype=torch.int64)


def psnr(estimate: torch.Tensor, target: torch.Tensor, shave: int = 0) -> float:
    """PSNR in dB of images in [0, 1], ignoring a `shave`-pixel border (the usual SR convention)."""
    if shave:
        estimate, target = estimate[..., shave:-shave, shave:-shave], target[..., shave:-shave, shave:-shave]
    mse = torch.mean((estimate.clamp(0.0, 1.0) - target) ** 2).item()
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


def example_inputs(batch: int = 1, height: int = 32, width: int = 48, scale: float = 2.0,
                   seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A random image and the size `scale` times larger."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, height, width, generator=generator)
    return image, torch.tensor([round(height * scale), round(width * scale)], dtype=torch.int64)
