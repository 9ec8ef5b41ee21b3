"""The operators plugserve owns, one module per op.

Each op module holds the four faces of one operator, so that they change together:
`reference` (pure PyTorch, the definition of the op's numbers), the `torch.ops.plugserve.*`
custom op that models call, `onnx_translation` (the exporter's mapping to the plugin node
TensorRT loads from libplugserve.so) and `decompose` (the same node rewritten into standard
ONNX ops for runtimes without the plugin).

Importing an op module registers its torch.library op.
"""

from __future__ import annotations

from plugserve.ops.common import (
    DOMAIN,
    IMPLEMENTATIONS,
    KERNEL_DTYPES,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
    SHAPE_INPUT_ATTRIBUTE,
    plugin_attributes,
    plugin_op,
    set_implementation,
    use_kernels,
)

__all__ = ["DOMAIN", "IMPLEMENTATIONS", "KERNEL_DTYPES", "PLUGIN_NAMESPACE", "PLUGIN_VERSION", "SHAPE_INPUT_ATTRIBUTE",
           "custom_translation_table",
           "plugin_attributes", "plugin_op", "set_implementation", "use_kernels"]


def custom_translation_table(msda: str = "plugserve") -> dict:
    """`torch.onnx.export(custom_translation_table=...)`: each custom op to its plugin node.

    `msda="nvidia"` emits NVIDIA's `MultiscaleDeformableAttnPlugin_TRT` instead of ours.
    """
    import torch

    from plugserve.ops import dynamic_resize, ms_deform_attn

    msda_translations = {"plugserve": ms_deform_attn.onnx_translation, "nvidia": ms_deform_attn.onnx_translation_nvidia}
    if msda not in msda_translations:
        raise ValueError(f"msda must be one of {sorted(msda_translations)}, got {msda!r}")
    return {
        torch.ops.plugserve.dynamic_resize.default: dynamic_resize.onnx_translation,
        torch.ops.plugserve.ms_deform_attn.default: msda_translations[msda],
    }
