"""Train the super-resolution model's SRCNN on scikit-image's sample photos and write its checkpoint.

    python scripts/train_srcnn.py [--steps 1000] [--out src/plugserve/checkpoints/srcnn.pt]

CPU only, a few minutes on 2 cores, no downloads: the images ship inside scikit-image. Each step
takes random high-resolution patches, shrinks them by a random scale in [2, 4] and teaches the
network to restore them from the bicubic upsampling. Three photos are held out; the script ends by
printing their PSNR (srcnn.HELD_OUT) for the model and for plain bicubic at x2, x3, x4.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from plugserve.models import load, srcnn
from plugserve.ops.dynamic_resize import reference as resize

TRAIN = ("astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "colorwheel",
         "brick", "grass", "gravel", "moon", "page", "text", "clock", "coins", "cell")
EVAL_SCALES = (2, 3, 4)


def random_patches(images: list[torch.Tensor], count: int, size: int, rng: random.Random) -> torch.Tensor:
    patches = []
    for _ in range(count):
        image = rng.choice(images)
        top = rng.randrange(image.shape[2] - size + 1)
        left = rng.randrange(image.shape[3] - size + 1)
        patch = image[..., top:top + size, left:left + size]
        if rng.random() < 0.5:
            patch = patch.flip(-1)
        patches.append(patch)
    return torch.cat(patches)


def random_scale(rng: random.Random) -> float:
    """A scale in [2, 4], half of them below 2.5: the network cannot see the scale, and trained on a
    uniform draw it sharpens x2 images as if they were x3, doing worse than bicubic there."""
    return rng.uniform(2.0, 2.5) if rng.random() < 0.5 else rng.uniform(2.5, 4.0)


def evaluate(model: torch.nn.Module, images: dict[str, torch.Tensor]) -> dict[int, tuple[float, float]]:
    """Mean held-out PSNR (model, bicubic) per scale; images cropped to a multiple of the scale."""
    results = {}
    with torch.no_grad():
        for scale in EVAL_SCALES:
            ours, bicubic = [], []
            for hr in images.values():
                h, w = (hr.shape[2] // scale) * scale, (hr.shape[3] // scale) * scale
                hr = hr[..., :h, :w]
                lr, size = srcnn.downscale(hr, scale)
                ours.append(srcnn.psnr(model(lr, size), hr, shave=scale))
                bicubic.append(srcnn.psnr(resize(lr, size, "bicubic", False), hr, shave=scale))
            results[scale] = (sum(ours) / len(ours), sum(bicubic) / len(bicubic))
    return results


def train(steps: int, batch: int, patch: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    rng = random.Random(seed)
    images = [srcnn.sample_image(name) for name in TRAIN]
    model = srcnn.build()
    # Start from "output = bicubic": the residual branch's last layer begins near zero.
    torch.nn.init.normal_(model.reconstruction.weight, std=1e-3)
    torch.nn.init.zeros_(model.reconstruction.bias)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=steps, pct_start=0.05)
    start, running = time.monotonic(), 0.0
    for step in range(1, steps + 1):
        hr = random_patches(images, batch, patch, rng)
        lr, size = srcnn.downscale(hr, random_scale(rng))
        loss = F.mse_loss(model(lr, size), hr)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        running += loss.item()
        if step % 100 == 0:
            print(f"step {step}/{steps}  loss {running / 100:.5f} (PSNR {-10 * math.log10(running / 100):.2f} dB)  "
                  f"{time.monotonic() - start:.0f}s", flush=True)
            running = 0.0
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=64, help="high-resolution patch side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=srcnn.CHECKPOINT)
    parser.add_argument("--evaluate", type=Path, metavar="CHECKPOINT",
                        help="skip training: print the held-out PSNR of this checkpoint")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.evaluate:
        model = load("super_resolution", args.evaluate)
    else:
        model = train(args.steps, args.batch, args.patch, args.seed)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), args.out)
        print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")

    print(f"held-out PSNR (dB) on {', '.join(srcnn.HELD_OUT)}, border of `scale` pixels shaved:")
    print("| scale | SRCNN | bicubic | gain |")
    print("| --- | --- | --- | --- |")
    for scale, (ours, bicubic) in evaluate(model, {name: srcnn.sample_image(name) for name in srcnn.HELD_OUT}).items():
        print(f"| x{scale} | {ours:.2f} | {bicubic:.2f} | {ours - bicubic:+.2f} |")


if __name__ == "__main__":
    main()
