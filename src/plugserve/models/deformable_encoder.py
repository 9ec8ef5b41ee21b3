"""A Deformable-DETR-style encoder: conv stem -> 4 feature levels -> 6 deformable attention layers.

image [N, 3, H, W] -> memory [N, S, 256], S = sum over the 4 levels of H_l * W_l, where level l has
stride 8, 16, 32, 64 with ceil semantics (each stride-2 conv maps n to ceil(n / 2)).

Everything that depends on the image size (level shapes, start indices, reference points, positional
encodings) is computed from tensor shapes, so the exported graph takes any H, W; the shape tensors
are built by concatenating Shape outputs (no ScatterND, which TensorRT handles poorly in shape math).
Weights are a seeded initialisation (no training): the model exists to exercise the MSDA op.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import plugserve.ops.ms_deform_attn  # noqa: F401  (registers torch.ops.plugserve.ms_deform_attn)

INPUTS = ("image",)
OUTPUTS = ("memory",)
DYNAMIC_AXES = {"image": {0: "batch", 2: "height", 3: "width"}}
SEED = 0
D_MODEL, HEADS, LEVELS, POINTS, FFN_DIM, LAYERS = 256, 8, 4, 4, 1024, 6
STRIDES = (8, 16, 32, 64)
# Stem channels after each stride-2 conv (strides 2, 4, 8, 16, 32, 64); the last four are the levels.
STEM_CHANNELS = (32, 64, 128, 256, 256, 256)


def level_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """(H_l, W_l) of each level for an input image, as the stem computes them."""
    return [(-(-height // s), -(-width // s)) for s in STRIDES]


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention (Zhu et al. 2020) over the plugserve::ms_deform_attn op."""

    def __init__(self) -> None:
        super().__init__()
        self.sampling_offsets = nn.Linear(D_MODEL, HEADS * LEVELS * POINTS * 2)
        self.attention_weights = nn.Linear(D_MODEL, HEADS * LEVELS * POINTS)
        self.value_proj = nn.Linear(D_MODEL, D_MODEL)
        self.output_proj = nn.Linear(D_MODEL, D_MODEL)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # Deformable DETR's initialisation (offsets fan out in 8 directions, growing with the point
        # index), except that the offset and weight projections get small random weights instead of
        # zeros, so that sampling depends on the query as it would in a trained model.
        nn.init.normal_(self.sampling_offsets.weight, std=0.02)
        directions = torch.arange(HEADS, dtype=torch.float32) * (2.0 * math.pi / HEADS)
        grid = torch.stack([directions.cos(), directions.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(HEADS, 1, 1, 2).repeat(1, LEVELS, POINTS, 1)
        grid = grid * torch.arange(1, POINTS + 1, dtype=torch.float32).view(1, 1, POINTS, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.normal_(self.attention_weights.weight, std=0.02)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor, value: torch.Tensor,
                spatial_shapes: torch.Tensor, level_start_index: torch.Tensor) -> torch.Tensor:
        n, lq, _ = query.shape
        value = self.value_proj(value).view(n, value.shape[1], HEADS, D_MODEL // HEADS)
        offsets = self.sampling_offsets(query).view(n, lq, HEADS, LEVELS, POINTS, 2)
        weights = self.attention_weights(query).view(n, lq, HEADS, LEVELS * POINTS).softmax(-1)
        weights = weights.view(n, lq, HEADS, LEVELS, POINTS)
        # Offsets are in pixels of each level: normalise by that level's (W, H).
        normalizer = spatial_shapes.flip(-1).to(query.dtype)
        locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        out = torch.ops.plugserve.ms_deform_attn(value, spatial_shapes, level_start_index, locations, weights)
        return self.output_proj(out.flatten(2))


class EncoderLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn()
        self.norm1 = nn.LayerNorm(D_MODEL)
        self.linear1 = nn.Linear(D_MODEL, FFN_DIM)
        self.linear2 = nn.Linear(FFN_DIM, D_MODEL)
        self.norm2 = nn.LayerNorm(D_MODEL)

    def forward(self, src, pos, reference_points, spatial_shapes, level_start_index):
        src = self.norm1(src + self.self_attn(src + pos, reference_points, src, spatial_shapes, level_start_index))
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


def sine_position(height: int, width: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """DETR's normalised sine encoding of an unpadded (H, W) map, flattened: [H*W, 256]."""
    feats = D_MODEL // 2
    dim_t = 10000.0 ** (2 * (torch.arange(feats, device=device, dtype=dtype) // 2) / feats)
    y = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height * (2 * math.pi)
    x = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width * (2 * math.pi)

    def encode(coord: torch.Tensor) -> torch.Tensor:
        angles = coord[:, None] / dim_t
        return torch.stack([angles[:, 0::2].sin(), angles[:, 1::2].cos()], dim=2).flatten(1)

    pos_y = encode(y)[:, None, :].expand(height, width, feats)
    pos_x = encode(x)[None, :, :].expand(height, width, feats)
    return torch.cat([pos_y, pos_x], dim=2).flatten(0, 1)


def reference_points(height: int, width: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Pixel centres of an (H, W) map in [0, 1] coordinates, (x, y) per row: [H*W, 2]."""
    y = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height
    x = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width
    return torch.stack([x[None, :].expand(height, width), y[:, None].expand(height, width)], dim=-1).flatten(0, 1)


class DeformableEncoder(nn.Module):
    """image [N, 3, H, W] -> memory [N, S, 256]."""

    def __init__(self) -> None:
        super().__init__()
        channels = (3, *STEM_CHANNELS)
        self.stem = nn.ModuleList(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
                                  for c_in, c_out in zip(channels[:-1], channels[1:], strict=True))
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, D_MODEL, kernel_size=1), nn.GroupNorm(32, D_MODEL))
            for c in STEM_CHANNELS[-LEVELS:])
        self.level_embed = nn.Parameter(torch.empty(LEVELS, D_MODEL))
        nn.init.normal_(self.level_embed)
        self.layers = nn.ModuleList(EncoderLayer() for _ in range(LAYERS))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x, features = image, []
        for conv in self.stem:
            x = F.relu(conv(x))
            features.append(x)
        features = features[-LEVELS:]

        sources, positions, references = [], [], []
        for level, (feature, proj) in enumerate(zip(features, self.input_proj, strict=True)):
            h, w = feature.shape[2], feature.shape[3]
            sources.append(proj(feature).flatten(2).transpose(1, 2))
            positions.append(sine_position(h, w, image.dtype, image.device) + self.level_embed[level])
            references.append(reference_points(h, w, image.dtype, image.device))
        # Built from the feature shapes (symbolic under export): the exporter emits Concat of Shape outputs.
        spatial_shapes = torch.tensor([[f.shape[2], f.shape[3]] for f in features], dtype=torch.int64,
                                      device=image.device)
        areas = spatial_shapes.prod(1)
        level_start_index = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])

        src = torch.cat(sources, 1)
        pos = torch.cat(positions, 0)[None]
        # Without padding every level covers the whole image, so each query's reference point is the
        # same normalised location on every level.
        refs = torch.cat(references, 0)[None, :, None, :].expand(1, -1, LEVELS, 2)
        for layer in self.layers:
            src = layer(src, pos, refs, spatial_shapes, level_start_index)
        return src


def build() -> DeformableEncoder:
    torch.manual_seed(SEED)
    return DeformableEncoder()


def artifacts_dir() -> Path:
    """Where generated files go: $PLUGSERVE_ARTIFACTS, else ./artifacts (git-ignored)."""
    return Path(os.environ.get("PLUGSERVE_ARTIFACTS", "artifacts"))


def default_checkpoint() -> Path:
    """The seeded weights, written on first use (deterministic from SEED, so never committed)."""
    path = artifacts_dir() / "checkpoints" / "deformable_encoder.pt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(build().state_dict(), partial)
        partial.replace(path)  # atomic, so a concurrent first use never reads half a file
    return path


def example_inputs(batch: int = 1, height: int = 128, width: int = 160, seed: int = 0) -> tuple[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 3, height, width, generator=generator),)
