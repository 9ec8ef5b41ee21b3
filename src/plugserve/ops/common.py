"""What every op module shares: the plugin nodes' domain and attributes, the kernels-or-reference switch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from plugserve import native

if TYPE_CHECKING:
    import onnxscript
    import torch

# The ONNX domain of our plugin nodes and the attributes the TensorRT ONNX parser reads to
# find the plugin creator (it defaults to namespace "" and version "1" without them).
DOMAIN = "plugserve"
PLUGIN_NAMESPACE = "plugserve"
PLUGIN_VERSION = "1"
# The TensorRT ONNX parser (10.1+) passes the node inputs listed in this INTS attribute to an
# IPluginV3 as shape inputs (plugins/harness/onnx_parser.cpp cites the parser).
SHAPE_INPUT_ATTRIBUTE = "tensorrt_plugin_shape_input_indices"


def attr_text(value):
    """A string attribute as onnx-graphsurgeon gives it (bytes or str) as str; other values as they are."""
    return value.decode() if isinstance(value, bytes) else value


# Which implementation the torch.library ops run: "plugserve" = the libplugserve.so kernels when
# the library loads (else the reference), "reference" = pure PyTorch always. Process-wide, because
# the torch runtime serves one program both ways to measure our kernels against PyTorch's operators,
# and each Triton model instance is a process of its own.
IMPLEMENTATIONS = ("plugserve", "reference")
_implementation = "plugserve"
# The dtypes libplugserve.so's kernels (and so the TensorRT and ONNX Runtime plugins) take.
KERNEL_DTYPES = ("float32", "float16", "bfloat16")


def set_implementation(name: str) -> None:
    global _implementation
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"ops implementation must be one of {IMPLEMENTATIONS}, got {name!r}")
    _implementation = name


def use_kernels(op: str | None = None, tensor: torch.Tensor | None = None) -> bool:
    """Whether the custom ops call libplugserve.so: selected and loadable.

    Given the op's main tensor, the "plugserve" implementation refuses (ValueError) a dtype the
    kernels lack, as the C ABI does, whether or not the library loads here: a float64 model that
    ran on the reference on a machine without the library would otherwise fail only where it is served.
    """
    if _implementation == "reference":
        return False
    if tensor is not None and (name := str(tensor.dtype).removeprefix("torch.")) not in KERNEL_DTYPES:
        raise ValueError(f"{op}: dtype must be one of {KERNEL_DTYPES} (the plugserve kernels'), got {name}; cast "
                         f"the input, or select PyTorch's own operators with "
                         f"plugserve.ops.set_implementation('reference')")
    return native.available()


def plugin_attributes() -> dict[str, str]:
    """The attributes every plugserve plugin node carries."""
    return {"plugin_namespace": PLUGIN_NAMESPACE, "plugin_version": PLUGIN_VERSION}


def plugin_op(op_type: str, inputs: dict[str, str], outputs: dict[str, str], attributes: dict[str, str],
              *, domain: str = DOMAIN) -> onnxscript.values.Op:
    """An onnxscript op that emits one plugin node, for use in an exporter translation function.

    The dynamo exporter binds arguments through the op's OpSchema and drops keyword arguments the
    schema does not declare; `onnxscript.values.Opset(domain).OpType` looks the schema up in onnx's
    registry and fails for ops nobody registered. So each plugin node is described here: `inputs`
    and `outputs` map names to type strings ("T" = the float type, "S" = a second float type, "I" = int32/int64, or a concrete
    "tensor(int64)"), `attributes` map names to "int", "ints" or "string"; every plugin node also
    takes the string attributes plugin_namespace and plugin_version.
    """
    import onnx.defs
    import onnxscript

    attr_types = {"int": onnx.defs.OpSchema.AttrType.INT, "ints": onnx.defs.OpSchema.AttrType.INTS,
                  "string": onnx.defs.OpSchema.AttrType.STRING}
    schema = onnx.defs.OpSchema(
        op_type, domain, 1,
        inputs=[onnx.defs.OpSchema.FormalParameter(name, t) for name, t in inputs.items()],
        outputs=[onnx.defs.OpSchema.FormalParameter(name, t) for name, t in outputs.items()],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"], "float tensors"),
                          ("S", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"], "float tensors"),
                          ("I", ["tensor(int32)", "tensor(int64)"], "index tensors")],
        attributes=[onnx.defs.OpSchema.Attribute(name, attr_types[t], required=True)
                    for name, t in {**attributes, "plugin_namespace": "string", "plugin_version": "string"}.items()],
    )
    return onnxscript.values.Op(onnxscript.values.Opset(domain, 1), op_type, schema)
