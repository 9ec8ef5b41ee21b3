"""The headline models, by repository name: `super_resolution` and `deformable_encoder`.

Each model module defines INPUTS, OUTPUTS, DYNAMIC_AXES, `build()`, `default_checkpoint()` and
`example_inputs(...)`; this package loads them by name.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

MODULES = {
    "super_resolution": "plugserve.models.srcnn",
    "deformable_encoder": "plugserve.models.deformable_encoder",
}
NAMES = tuple(MODULES)


def module(name: str) -> ModuleType:
    if name not in MODULES:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(NAMES)}")
    return importlib.import_module(MODULES[name])


def checkpoint_path(name: str, checkpoint: str | Path | None = None) -> Path:
    """The checkpoint a model loads: the given one, else the model's default (created if seeded)."""
    if checkpoint is None:
        return module(name).default_checkpoint()
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"{name}: checkpoint {path} does not exist")
    return path


def load(name: str, checkpoint: str | Path | None = None) -> torch.nn.Module:
    """The model in eval mode with its weights loaded."""
    import torch

    model = module(name).build()
    path = checkpoint_path(name, checkpoint)
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"{name}: checkpoint {path} does not fit the model: {error}") from error
    return model.eval()


def example_inputs(name: str, **kwargs: Any) -> tuple[torch.Tensor, ...]:
    """Inputs in the order of the model's INPUTS; kwargs are the model's own (batch, height, width, ...)."""
    return module(name).example_inputs(**kwargs)
