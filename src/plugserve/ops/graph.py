"""A small emitter of standard ONNX nodes into an onnx-graphsurgeon graph, used by the decompositions."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx_graphsurgeon as gs


class Emitter:
    """Adds nodes that replace one plugin node; their names start with that node's name, so a
    decomposed graph still tells which plugin node each standard op came from."""

    def __init__(self, graph: gs.Graph, replaced: gs.Node):
        self.graph = graph
        self.prefix = replaced.name or replaced.op
        self.opset = int(graph.opset)
        self._count = 0

    def __call__(self, op: str, *inputs: gs.Tensor | np.ndarray, outputs: list[gs.Variable] | None = None,
                 **attrs: Any) -> gs.Variable:
        self._count += 1
        name = f"{self.prefix}/{op}_{self._count}"
        constants = [gs.Constant(f"{name}/in{i}", x) if isinstance(x, np.ndarray) else x for i, x in enumerate(inputs)]
        produced = outputs or [gs.Variable(f"{name}/out")]
        self.graph.nodes.append(gs.Node(op=op, name=name, attrs=attrs, inputs=constants, outputs=produced))
        return produced[0]

    def int64(self, *values: int) -> np.ndarray:
        return np.array(values, dtype=np.int64)

    # The helpers below emit what each ONNX opset allows, so a decomposition stays valid in the
    # graph it is written into (tutorial graphs import opset 11; exporters today 18 or more).

    def shape(self, x: gs.Tensor, start: int, end: int) -> gs.Variable:
        """Shape(x)[start:end]: Shape's start/end attributes exist from opset 15 on."""
        if self.opset >= 15:
            return self("Shape", x, start=start, end=end)
        return self("Slice", self("Shape", x), self.int64(start), self.int64(end), self.int64(0))

    def reduce(self, op: str, x: gs.Tensor, axes: list[int], keepdims: int) -> gs.Variable:
        """A Reduce* node over `axes`: an input from opset 18 on (ReduceSum from 13), before that an attribute."""
        if self.opset >= (13 if op == "ReduceSum" else 18):
            return self(op, x, self.int64(*axes), keepdims=keepdims)
        return self(op, x, axes=axes, keepdims=keepdims)


def detach(node: gs.Node) -> None:
    """Disconnect a replaced node so `graph.cleanup()` removes it."""
    node.inputs.clear()
    node.outputs.clear()


def single_node_model(op_type: str, inputs: dict[str, tuple[int, list]], outputs: dict[str, tuple[int, list]],
                      *, domain: str, opset: int = 20, **attrs: Any):
    """A graph of one node (e.g. one plugin node) whose inputs and outputs are the graph's, for testing an
    op in isolation. `inputs`/`outputs` map names to (onnx.TensorProto element type, shape with str dims)."""
    import onnx
    from onnx import helper

    def values(specs: dict[str, tuple[int, list]]) -> list:
        return [helper.make_tensor_value_info(name, dtype, shape) for name, (dtype, shape) in specs.items()]

    node = helper.make_node(op_type, list(inputs), list(outputs), name=op_type, domain=domain, **attrs)
    graph = helper.make_graph([node], op_type, values(inputs), values(outputs))
    # IR version 10 (onnx 1.16) rather than the installed onnx's newest, which runtimes may not read yet.
    model = helper.make_model(graph, ir_version=10,
                              opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(domain, 1)])
    onnx.checker.check_model(model)
    return model
