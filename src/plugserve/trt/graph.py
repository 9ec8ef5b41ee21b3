"""Preparing an exported plugin-node graph for TensorRT's ONNX parser and for Triton's TensorRT backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from plugserve.ops.common import SHAPE_INPUT_ATTRIBUTE
from plugserve.trt.registry import PLUGIN_NAMESPACE

if TYPE_CHECKING:
    import onnx
    import onnx_graphsurgeon as gs


@dataclass(frozen=True)
class Port:
    """A graph input or output as the server's clients exchange it."""

    name: str
    dtype: int  # ONNX TensorProto element type
    shape_values: int = 0  # a shape-tensor input's number of values; 0 for an ordinary tensor


def _tensor_elem_type(tensor: gs.Variable) -> int | None:
    import onnx

    if tensor.dtype is None:
        return None
    if isinstance(tensor.dtype, int):
        return tensor.dtype
    return int(onnx.helper.np_dtype_to_tensor_dtype(tensor.dtype))


def _retyped(graph: gs.Graph, tensor: gs.Variable, want: int, *, feeds_graph: bool) -> gs.Variable:
    """A tensor typed `want` that takes over `tensor`'s name, joined to it by a Cast: into the graph
    (a graph input) when `feeds_graph`, else out of it (a graph output)."""
    import onnx
    import onnx_graphsurgeon as gs

    name, exported = tensor.name, _tensor_elem_type(tensor)
    declared = gs.Variable(name, dtype=onnx.helper.tensor_dtype_to_np_dtype(want), shape=tensor.shape)
    tensor.name = f"{name}/as_exported"
    source, target, to = (declared, tensor, exported) if feeds_graph else (tensor, declared, want)
    graph.nodes.append(
        gs.Node("Cast", name=f"{name}/cast", attrs={"to": to}, inputs=[source], outputs=[target])
    )
    return declared


def prepare(model: onnx.ModelProto, inputs: Sequence[Port], outputs: Sequence[Port], *,
                 batched: bool) -> onnx.ModelProto:
    """The exported plugin-node graph as TensorRT and Triton need it, for clients that exchange `inputs`
    and `outputs` (each must be a graph input or output by name).

    - DynamicResize nodes whose size is a 1-D tensor get `tensorrt_plugin_shape_input_indices=[1]`,
      so the parser hands the size to the plugin as a shape input (its values become output dims).
    - With `batched` (Triton's max_batch_size > 0), Triton prepends the batch size to every shape-tensor input
      (model_configuration.md, "Shape Tensors"): such an input becomes [batch, values...] and a
      Slice drops the batch value before the graph's own consumers.
    - Graph inputs and outputs get Casts to the ports' dtypes, so an fp16 export keeps
      the client interface (FP32 images, INT64 sizes) while the engine computes in fp16.
    """
    import numpy as np
    import onnx
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    for node in graph.nodes:
        if node.domain == PLUGIN_NAMESPACE and node.op == "DynamicResize" and len(node.inputs) == 2:
            size = node.inputs[1]
            if size.shape is None or len(size.shape) == 1:
                node.attrs[SHAPE_INPUT_ATTRIBUTE] = [1]

    graph_inputs = {t.name: t for t in graph.inputs}
    graph_outputs = {t.name: t for t in graph.outputs}
    for port in inputs:
        original = graph_inputs.get(port.name)
        if original is None:
            raise ValueError(f"input {port.name!r} is not an input of the ONNX graph ({sorted(graph_inputs)})")
        current = original
        if port.shape_values and batched:
            count = port.shape_values
            with_batch = gs.Variable(original.name, dtype=original.dtype, shape=[count + 1])
            original.name = f"{port.name}/values"
            graph.nodes.append(
                gs.Node(
                    "Slice",
                    name=f"{port.name}/drop_batch",
                    inputs=[
                        with_batch,
                        *(
                            gs.Constant(f"{port.name}/{k}", np.array([v], np.int64))
                            for k, v in (("start", 1), ("end", count + 1), ("axis", 0))
                        ),
                    ],
                    outputs=[original],
                )
            )
            current = with_batch
        if _tensor_elem_type(current) not in (None, port.dtype):
            current = _retyped(graph, current, port.dtype, feeds_graph=True)
        graph.inputs[graph.inputs.index(original)] = current
    for port in outputs:
        produced = graph_outputs.get(port.name)
        if produced is None:
            raise ValueError(f"output {port.name!r} is not an output of the ONNX graph ({sorted(graph_outputs)})")
        if _tensor_elem_type(produced) not in (None, port.dtype):
            graph.outputs[graph.outputs.index(produced)] = _retyped(graph, produced, port.dtype, feeds_graph=False)

    graph.cleanup().toposort()
    prepared = gs.export_onnx(graph)
    prepared.ir_version = model.ir_version
    del prepared.opset_import[:]
    prepared.opset_import.extend(model.opset_import)
    prepared.metadata_props.extend(model.metadata_props)
    onnx.checker.check_model(prepared)
    return prepared
