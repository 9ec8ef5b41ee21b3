"""`plugserve check-plugins MODEL.onnx`: each plugin node through what TensorRT will do with it, without TensorRT.

The work is done by plugins/harness (built per TensorRT header set by plugins/check_glue.sh): the
ONNX parser's plugin import, the builder's calls (output types and shapes, formats, configurePlugin
and workspace per profile) and the runtime's (serialize, createPlugin(kRUNTIME), attachToContext,
clone, onShapeChange, and enqueue with --enqueue on a GPU). This module describes each plugin node
to it: attributes with their ONNX types, input types and extents (constant where the ONNX has a
number, symbolic otherwise), the values of shape inputs, and the concrete extents at each
profile's min, opt and max, which it gets by running the decomposed graph with ONNX Runtime.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plugserve import config
from plugserve.ops.common import SHAPE_INPUT_ATTRIBUTE
from plugserve.surgery import decompose

if TYPE_CHECKING:
    import numpy as np
    import onnx

ROOT = Path(__file__).resolve().parents[2]
HARNESS_DIR = ROOT / "plugins" / "build" / "harness"
POINTS = ("min", "opt", "max")
# One profile: graph input name -> (min, opt, max), full shapes or a shape tensor's values.
Profile = Mapping[str, Sequence[Sequence[int]]]


def harnesses() -> dict[str, Path]:
    """TensorRT version -> harness binary, for every header set check_glue.sh built."""
    found = {p.parent.name: p for p in HARNESS_DIR.glob("*/plugserve_harness")}
    return dict(sorted(found.items(), key=lambda kv: [int(x) for x in kv[0].split(".")]))


def plugin_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The nodes the parser imports as plugins: it dispatches on op type alone and falls back to the
    plugin registry for an op it has no importer for (ModelImporter.cpp@10.1-GA:155-168)."""
    import onnx.defs

    return [n for n in model.graph.node if not onnx.defs.has(n.op_type)]


@dataclass
class Evaluation:
    """Concrete values at each point (profile k's min, opt, max) of the tensors plugin nodes read."""

    points: list[str] = field(default_factory=list)
    tensors: list[dict[str, np.ndarray]] = field(default_factory=list)
    problem: str | None = None


def _as_float32(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph computing in fp32 instead of fp16: ONNX Runtime's CPU kernels lack fp16 Conv and
    GridSample, and only the extents matter here."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    fp16, fp32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT

    def retype(tensor: onnx.TensorProto) -> None:
        if tensor.data_type == fp16:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name))

    for tensor in model.graph.initializer:
        retype(tensor)
    for info in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        if info.type.tensor_type.elem_type == fp16:
            info.type.tensor_type.elem_type = fp32
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                retype(attribute.t)
            elif attribute.name == "to" and attribute.i == fp16:
                attribute.i = fp32
    return model


def evaluate(model: onnx.ModelProto, profiles: Sequence[Profile], names: set[str],
             shape_tensors: Collection[str] = (), seed: int = 0) -> Evaluation:
    """Run the decomposed graph at every profile point and keep the tensors in `names`. The
    profile of an input in `shape_tensors` holds its values, of any other input its shape."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    result = Evaluation()
    if not profiles:
        result.problem = "no profile: give --models-yaml and --profile-model (or profiles) for min/opt/max extents"
        return result
    # The tensors to keep whose type is known are made graph outputs before decompose, which would
    # otherwise drop those its standard ops no longer read (DynamicResize by scales decomposes into
    # a Resize without the size); the others after it.
    typed = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info
             if v.type.tensor_type.elem_type}
    fetching = onnx.ModelProto()
    fetching.CopyFrom(model)
    fetching.graph.output.extend(typed[n] for n in sorted(names) if n in typed)
    try:
        runnable = _as_float32(decompose(fetching))
    except Exception as error:  # the parser step will say what is wrong with the node
        result.problem = f"the graph cannot be decomposed to run it ({error})"
        return result
    known = {t.name: numpy_helper.to_array(t) for t in runnable.graph.initializer}
    graph_inputs = {i.name: i for i in runnable.graph.input}
    fetch = sorted(n for n in names if n not in known and n not in graph_inputs)
    outputs = {o.name for o in runnable.graph.output}
    runnable.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in fetch if n not in outputs)
    session = ort.InferenceSession(runnable.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    for k, profile in enumerate(profiles):
        for j, point in enumerate(POINTS):
            feeds = {}
            for name, info in graph_inputs.items():
                if name not in profile:
                    result.problem = f"profile {k} has no shape for graph input {name!r}"
                    return result
                shape = list(profile[name][j])
                dtype = onnx.helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type)
                feeds[name] = np.array(shape, dtype) if name in shape_tensors else rng.random(shape).astype(dtype)
            try:
                values = dict(zip(fetch, session.run(fetch, feeds), strict=True)) if fetch else {}
            except Exception as error:  # a graph that does not run at these shapes: no extents from it
                return Evaluation(problem=f"the graph does not run at profile {k} {point} ({error})")
            result.points.append(f"p{k}.{point}")
            result.tensors.append({**known, **feeds, **values})
    return result


def _hex(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return data.hex() or "-"


def _symbol(text: str) -> str:
    """A token the harness reads as a symbol: no whitespace, not starting like a number."""
    name = re.sub(r"\s+", "", text)
    return name if name and not name[0].isdigit() and name[0] != "-" else f"s_{name}"


def _attribute_line(attribute: onnx.AttributeProto) -> str:
    import onnx
    from onnx import numpy_helper

    kind = onnx.AttributeProto.AttributeType.Name(attribute.type)
    head = f"attr {_hex(attribute.name)} {kind}"
    if kind == "INT":
        return f"{head} {attribute.i}"
    if kind == "FLOAT":
        return f"{head} {attribute.f!r}"
    if kind == "STRING":
        return f"{head} {_hex(attribute.s)}"
    if kind == "INTS":
        return f"{head} {len(attribute.ints)} {' '.join(map(str, attribute.ints))}"
    if kind == "FLOATS":
        return f"{head} {len(attribute.floats)} {' '.join(repr(f) for f in attribute.floats)}"
    if kind == "STRINGS":
        return f"{head} {len(attribute.strings)} {' '.join(_hex(s) for s in attribute.strings)}"
    if kind == "TENSOR":
        elem = onnx.TensorProto.DataType.Name(attribute.t.data_type)
        return f"{head} {elem} 1 {_hex(numpy_helper.to_array(attribute.t).tobytes())}"
    return head


def _constant_values(model: onnx.ModelProto) -> set[str]:
    """Tensors whose values the builder knows: initializers and Constant outputs."""
    return {t.name for t in model.graph.initializer} | {
        o for n in model.graph.node if n.op_type == "Constant" for o in n.output}


def describe(model: onnx.ModelProto, evaluation: Evaluation, data_dir: Path | None = None) -> str:
    """The harness's input for every plugin node (grammar: plugins/harness/description.h)."""
    import numpy as np
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    infos = {i.name: i for i in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]}
    infos.update({t.name: onnx.helper.make_tensor_value_info(t.name, t.data_type, t.dims)
                  for t in model.graph.initializer})
    constants = _constant_values(model)
    lines = [f"point {p}" for p in evaluation.points]
    symbols: dict[str, list[int]] = {}

    def symbolic(name: str, values: list[int] | None) -> str:
        # One name per distinct sequence of values: two extents the ONNX names alike but that
        # differ at some point (a dim_param reused by the exporter) get two symbols.
        base = candidate = _symbol(name)
        suffix = 1
        while values is not None and candidate in symbols and symbols[candidate] != values:
            suffix += 1
            candidate = f"{base}_{suffix}"
        if values is not None:
            symbols[candidate] = values
        return candidate

    body: list[str] = []
    for index, node in enumerate(plugin_nodes(model)):
        name = node.name or f"{node.op_type}_{index}"
        body.append(f"node {_hex(name)} {_hex(node.op_type)}")
        body.extend(_attribute_line(a) for a in node.attribute)
        shape_inputs = {int(i) for a in node.attribute if a.name == SHAPE_INPUT_ATTRIBUTE for i in a.ints}
        # The evaluation runs fp16 graphs in fp32 (see `evaluate`): the data files hold each input's own type.
        np_types: dict[str, Any] = {}
        for i, tensor in enumerate(node.input):
            if tensor == "":
                body.append(f"input {i} empty")
                continue
            info = infos.get(tensor)
            ttype = info.type.tensor_type if info is not None else None
            elem = onnx.TensorProto.DataType.Name(ttype.elem_type) if ttype is not None and ttype.elem_type else "FLOAT"
            np_types[tensor] = onnx.helper.tensor_dtype_to_np_dtype(onnx.TensorProto.DataType.Value(elem))
            samples = [t.get(tensor) for t in evaluation.tensors]
            present = [s for s in samples if s is not None]
            concrete = [np.shape(s) for s in present] if present and len(present) == len(samples) else None
            dims = list(ttype.shape.dim) if ttype is not None and ttype.HasField("shape") else None
            rank = len(dims) if dims is not None else (len(concrete[0]) if concrete else 0)
            extents = []
            for axis in range(rank):
                dim = dims[axis] if dims is not None else None
                if dim is not None and dim.HasField("dim_value"):
                    extents.append(str(dim.dim_value))
                else:
                    label = dim.dim_param if dim is not None and dim.dim_param else f"{tensor}_{axis}"
                    extents.append(symbolic(label, [int(c[axis]) for c in concrete] if concrete else None))
            body.append(f"input {i} {elem} {rank} {' '.join(extents)}".rstrip())
            # Values of 1-D index tensors (shape inputs, or sizes given as device tensors); not of float
            # ones such as DynamicResize's scales, which only the kernel reads.
            if (i in shape_inputs or rank == 1) and concrete and rank == 1 and "INT" in elem:
                count = concrete[0][0]
                values = [np.asarray(s).reshape(-1).tolist() for s in samples]
                if tensor in constants:
                    entries = [str(v) for v in values[0]]
                else:
                    entries = [symbolic(f"{tensor}_{j}", [int(v[j]) for v in values]) for j in range(count)]
                body.append(f"value {i} {count} {' '.join(entries)}")
        if data_dir is not None:
            node_dir = data_dir / re.sub(r"[^A-Za-z0-9_.-]", "_", name)
            node_dir.mkdir(parents=True, exist_ok=True)
            for point, tensors in zip(evaluation.points, evaluation.tensors, strict=True):
                for i, tensor in enumerate(node.input):
                    if tensor in tensors:
                        np.ascontiguousarray(tensors[tensor], np_types[tensor]).tofile(node_dir / f"in{i}.{point}.bin")
            body.append(f"data {node_dir}")
        body.append("end")
    lines.extend(f"sym {name} {' '.join(map(str, values))}" for name, values in symbols.items())
    return "\n".join(lines + body) + "\n"


def run_harness(description: str, harness: Path, *, enqueue: bool = False) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
        f.write(description)
        f.flush()
        proc = subprocess.run([str(harness), *(["--enqueue"] if enqueue else []), f.name],
                              capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{harness} failed ({proc.returncode}): {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def check(model: onnx.ModelProto, profiles: Sequence[Profile] = (), *, shape_tensors: Collection[str] = (),
          harness: Path | None = None, enqueue: bool = False, data_dir: Path | None = None,
          evaluation: Evaluation | None = None) -> dict[str, Any]:
    """The harness's report for every plugin node of `model` (the newest header set unless `harness`)."""
    if harness is None:
        built = harnesses()
        if not built:
            raise FileNotFoundError(f"no harness under {HARNESS_DIR}: run plugins/check_glue.sh (after make plugins)")
        harness = list(built.values())[-1]
    if evaluation is None:
        names = {t for n in plugin_nodes(model) for t in n.input if t}
        evaluation = evaluate(model, profiles, names, shape_tensors)
    report = run_harness(describe(model, evaluation, data_dir), harness, enqueue=enqueue)
    report["evaluation_problem"] = evaluation.problem
    return report


def format_report(report: Mapping[str, Any]) -> str:
    """Per node: creator, fields with types, shape inputs, output shapes per profile, formats, failure and fix."""
    lines = [f"TensorRT {report['tensorrt']} headers"]
    if report.get("evaluation_problem"):
        lines.append(f"  note: {report['evaluation_problem']}")
    for node in report["nodes"]:
        status = "OK" if node["failed_step"] is None else f"FAILS at the {node['failed_step']} step"
        lines.append(f"{node['node']} ({node['op']}): {status}")
        for step in node["steps"]:
            d = step["details"]
            if step["step"] == "parser" and "creator" in d:
                c = d["creator"]
                lines.append(f"  creator: {c['name']} version {c['version']!r} namespace {c['namespace']!r}")
                fields = ", ".join(f"{f['name']}:{f['type']}={f.get('value')}" for f in d["fields"]) or "none"
                lines.append(f"  fields: {fields}")
                lines.append(f"  shape inputs: {d['shape_inputs'] or 'none'}; device input types: "
                             f"{', '.join(d['device_input_types'])}")
            if step["step"] == "build":
                for shape in d.get("output_shapes", []):
                    lines.append(f"  output shape: [{', '.join(shape['expressions'])}]")
                    for k, p in enumerate(shape["profiles"]):
                        lines.append(f"    profile {k}: min {p['min']} opt {p['opt']} max {p['max']}")
                for f in d.get("formats", []):
                    lines.append(f"  formats {f['tensor']} ({f['network_type']}): {', '.join(f['accepted']) or 'none'}")
                if d.get("workspace_bytes"):
                    lines.append(f"  workspace bytes per profile: {d['workspace_bytes']}")
            if step["step"] == "runtime" and step["ok"]:
                lines.append(f"  engine round trip: {len(d['serialized_fields'])} field(s), {d['plan_bytes']} bytes; "
                             f"onShapeChange at {', '.join(d['on_shape_change']) or 'no point'}")
            lines.extend(f"  log: {line}" for line in step["log"])
            if not step["ok"]:
                lines.append(f"  error ({step['step']}): {step['error']}")
                lines.append(f"  fix: {step['fix']}")
    return "\n".join(lines)


def model_profiles(models_yaml: Path, name: str) -> tuple[list[dict[str, tuple]], set[str]]:
    """A model's profiles from models.yaml (full shapes, batch first), and its shape-tensor inputs."""

    spec = config.load(models_yaml)[name]
    return ([{k: (r.min, r.opt, r.max) for k, r in profile.items()} for profile in spec.profiles],
            {t.name for t in spec.inputs if t.shape_tensor})


def add_check_plugins_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="ONNX file with plugin nodes")
    parser.add_argument("--models-yaml", type=Path, default=ROOT / "models.yaml",
                        help="where the shape profiles are (default: the repository's models.yaml)")
    parser.add_argument("--profile-model", help="the models.yaml entry whose profiles to use "
                        "(default: the ONNX's plugserve.model metadata)")
    parser.add_argument("--tensorrt", help="header set (default: the newest built); 'all' runs each")
    parser.add_argument("--enqueue", action="store_true", help="also run enqueue on the GPU with the captured inputs")
    parser.add_argument("--json", action="store_true", help="print the harness's JSON instead of the summary")


def run_check_plugins(args: argparse.Namespace) -> int:
    import onnx

    model = onnx.load(str(args.model))
    name = args.profile_model or next((p.value for p in model.metadata_props if p.key == "plugserve.model"), None)
    profiles, shape_tensors = (model_profiles(args.models_yaml, name) if name and args.models_yaml.is_file()
                               else ([], set()))
    built = harnesses()
    if not built:
        raise SystemExit(f"check-plugins: no harness under {HARNESS_DIR}; run `make plugins` then plugins/check_glue.sh")
    chosen = built if args.tensorrt == "all" else {args.tensorrt or list(built)[-1]: None}
    names = {t for n in plugin_nodes(model) for t in n.input if t}
    evaluation = evaluate(model, profiles, names, shape_tensors)
    failed = False
    with tempfile.TemporaryDirectory() as data:
        for version in chosen:
            if version not in built:
                raise SystemExit(f"check-plugins: no harness for TensorRT {version} (built: {', '.join(built)})")
            report = check(model, profiles, harness=built[version], enqueue=args.enqueue, evaluation=evaluation,
                           data_dir=Path(data) if args.enqueue else None)
            print(json.dumps(report, indent=1) if args.json else format_report(report))
            failed |= any(n["failed_step"] is not None for n in report["nodes"])
    return 1 if failed else 0
