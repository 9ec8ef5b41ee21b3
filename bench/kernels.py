"""Kernel benchmark on one GPU: libplugserve.so's DynamicResize and MSDeformAttn against their peers.

Every contender is timed the same way: a CUDA graph of `--reps` back-to-back calls, replayed
`--iters` times between CUDA events (falling back to a plain loop when a contender cannot be
captured), so the numbers are device time without Python launch overhead. Bandwidth is bytes
read plus written by the op over its time, as a share of a device-to-device copy measured in
the same run.

  PYTHONPATH=src python bench/kernels.py [--peer-path DIR] [--out bench/results]
  python bench/kernels.py --chart-from bench/results/kernels.json    # redraw the chart only

Peers: DynamicResize against F.interpolate eager and torch.compile; MSDeformAttn against the
grid_sample reference (plugserve.ops.ms_deform_attn.reference) and the Deformable-DETR CUDA
kernel of the PyPI sdist torch-ms-deform-attn (built with
`TORCH_CUDA_ARCH_LIST=9.0 pip install --no-build-isolation --no-deps --target DIR .`, passed as
--peer-path DIR). That kernel has no fp16 path: its fp16 entry casts to fp32 and back, which is
what its users get, so that is what is timed.

MSDA inputs are shaped like a trained Deformable DETR's, not uniform noise: each query samples
around its reference point (encoder: its own pixel; decoder: a random point), head m along
direction 2*pi*m/M at radii 1..P pixels of each level, plus noise.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from functools import partial
from pathlib import Path

RESIZE_CASES = [((1, 3, 256, 256), (1024, 1024)), ((8, 3, 256, 256), (1024, 1024)), ((1, 64, 270, 480), (540, 960))]
ENCODER_LEVELS = [(100, 167), (50, 84), (25, 42), (13, 21)]  # 800x1333 image, strides 8..64
MSDA_HEADS, MSDA_DIM, MSDA_POINTS = 8, 32, 4
MSDA_CASES = [("encoder", 1, None), ("encoder", 8, None), ("decoder", 1, 300), ("decoder", 1, 900),
              ("decoder", 8, 300), ("decoder", 8, 900)]
TARGETS = {"resize_eager": 3.0, "resize_compiled": 1.5, "resize_bandwidth": 0.6, "msda_fp32": 2.0, "msda_fp16": 4.0}


def timed(fn, reps: int, iters: int) -> tuple[float, str]:
    """Median device milliseconds per call of fn, and how it was measured ("graph" or "loop")."""
    import torch

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.stream(stream):
            fn()  # warm-up on the capture stream
            torch.cuda.synchronize()
            with torch.cuda.graph(graph, stream=stream):
                for _ in range(reps):
                    fn()
        run, how = graph.replay, "graph"
    except Exception:  # capture unsupported by this contender: time the plain calls instead
        torch.cuda.synchronize()

        def run():
            for _ in range(reps):
                fn()
        how = "loop"
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / reps)
    times.sort()
    return times[len(times) // 2], how


def copy_bandwidth() -> float:
    """GB/s of a 1 GiB device-to-device copy, counting bytes read plus written."""
    import torch

    src = torch.empty(1 << 28, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    ms, _ = timed(lambda: dst.copy_(src), reps=5, iters=10)
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


def bench_resize(reps: int, iters: int, copy_gbs: float, peers: bool = True) -> list[dict]:
    import torch
    import torch.nn.functional as F

    from plugserve import native

    rows = []
    for shape, (oh, ow) in RESIZE_CASES:
        for dtype in (torch.float32, torch.float16):
            x = torch.rand(shape, device="cuda", dtype=dtype)

            def eager(x=x, oh=oh, ow=ow):
                return F.interpolate(x, size=(oh, ow), mode="bicubic", align_corners=False)

            compiled = torch.compile(eager, dynamic=False)

            def ours(x=x, oh=oh, ow=ow):
                return native.dynamic_resize(x, oh, ow, "bicubic", False)

            expected = eager()
            err = (ours().float() - expected.float()).abs().max().item()
            t_ours, how = timed(ours, reps, iters)
            if not peers:
                print(f"resize {shape} {dtype} ours {t_ours:.4f} ms", flush=True)
                continue
            t_eager, _ = timed(eager, reps, iters)
            t_compiled, _ = timed(compiled, reps, iters)
            nbytes = (x.numel() + expected.numel()) * x.element_size()
            share = nbytes / (t_ours * 1e-3) / 1e9 / copy_gbs
            rows.append({
                "op": "DynamicResize", "case": f"{list(shape)}->{oh}x{ow}", "dtype": str(dtype).split(".")[1],
                "ours_ms": t_ours, "eager_ms": t_eager, "compiled_ms": t_compiled, "timing": how,
                "x_eager": t_eager / t_ours, "x_compiled": t_compiled / t_ours, "bandwidth_share": share,
                "max_abs_err_vs_eager": err,
                "large": shape[0] * shape[1] > 3,
            })
            print(_row_text(rows[-1]), flush=True)
    return rows


def msda_inputs(kind: str, n: int, lq: int | None, dtype, seed: int = 0, device: str = "cuda"):
    """Deformable-DETR-like inputs; see the module docstring."""
    import torch

    g = torch.Generator(device="cpu").manual_seed(seed)
    shapes = torch.tensor(ENCODER_LEVELS, dtype=torch.int64)
    areas = shapes.prod(1)
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    s = int(areas.sum())
    m, d, p, levels = MSDA_HEADS, MSDA_DIM, MSDA_POINTS, len(ENCODER_LEVELS)
    if kind == "encoder":
        refs = []
        for h, w in ENCODER_LEVELS:
            ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
            refs.append(torch.stack([xs.flatten(), ys.flatten()], -1))
        ref = torch.cat(refs).expand(n, s, 2)
        lq = s
    else:
        ref = torch.rand(n, lq, 2, generator=g)
    angle = torch.arange(m) * (2 * math.pi / m)
    direction = torch.stack([angle.cos(), angle.sin()], -1)  # [M, 2]
    radius = torch.arange(1, p + 1, dtype=torch.float32)  # [P]
    offsets = direction[:, None, None, :] * radius[None, None, :, None]  # [M, 1, P, 2] pixels
    offsets = offsets + 0.5 * torch.randn(n, lq, m, levels, p, 2, generator=g)
    scale = torch.tensor([[w, h] for h, w in ENCODER_LEVELS], dtype=torch.float32)  # [L, 2]
    loc = ref[:, :, None, None, None, :] + offsets / scale[None, None, None, :, None, :]
    logits = torch.randn(n, lq, m, levels * p, generator=g)
    weights = logits.softmax(-1).view(n, lq, m, levels, p)
    value = torch.randn(n, s, m, d, generator=g)
    return (value.to(device, dtype), shapes.to(device), starts.to(device), loc.to(device, dtype),
            weights.to(device, dtype))


def bench_msda(reps: int, iters: int, copy_gbs: float, peer, peers: bool = True) -> list[dict]:
    import torch

    from plugserve import native
    from plugserve.ops.ms_deform_attn import reference

    rows = []
    for kind, n, lq in MSDA_CASES:
        for dtype in (torch.float32, torch.float16):
            value, shapes, starts, loc, weights = msda_inputs(kind, n, lq, dtype)
            shapes_cpu, starts_cpu = shapes.cpu(), starts.cpu()  # the reference reads them as Python ints

            ours = partial(native.ms_deform_attn, value, shapes, starts, loc, weights)
            grid_sample_ref = partial(reference, value, shapes_cpu, starts_cpu, loc, weights)

            expected = reference(value.double(), shapes_cpu, starts_cpu, loc.double(), weights.double())
            err = (ours().double() - expected).abs().max().item()
            t_ours, how = timed(ours, reps, iters)
            if not peers:
                print(f"msda {kind} {n} {lq} {dtype} ours {t_ours:.4f} ms err {err:.1e}", flush=True)
                continue
            t_ref, _ = timed(grid_sample_ref, max(1, reps // 5), iters)
            row = {"op": "MSDeformAttn", "case": f"{kind} N={n} Lq={loc.shape[1]}", "dtype": str(dtype).split(".")[1],
                   "ours_ms": t_ours, "grid_sample_ms": t_ref, "timing": how, "x_grid_sample": t_ref / t_ours,
                   "max_abs_err_vs_fp64": err, "encoder": kind == "encoder"}
            if peer is not None:
                peer_call = partial(peer.ms_deform_attn, value, shapes, starts, loc, weights)
                peer_err = (peer_call().double().view_as(expected) - expected).abs().max().item()
                t_peer, _ = timed(peer_call, reps, iters)
                row.update(peer_ms=t_peer, x_peer=t_peer / t_ours, peer_max_abs_err_vs_fp64=peer_err)
            nbytes = sum(t.numel() * t.element_size() for t in (value, loc, weights)) + \
                value.element_size() * n * loc.shape[1] * MSDA_HEADS * MSDA_DIM
            # The decoder's few queries touch a fraction of `value`, so a byte count means little there.
            row["bandwidth_share"] = nbytes / (t_ours * 1e-3) / 1e9 / copy_gbs if kind == "encoder" else None
            rows.append(row)
            print(_row_text(row), flush=True)
    return rows


def _row_text(r: dict) -> str:
    if r["op"] == "DynamicResize":
        return (f"{r['op']:<13} {r['case']:<28} {r['dtype']:<8} ours {r['ours_ms']:8.4f} ms  eager {r['eager_ms']:8.4f} "
                f"({r['x_eager']:5.2f}x)  compiled {r['compiled_ms']:8.4f} ({r['x_compiled']:5.2f}x)  "
                f"copy-BW {100 * r['bandwidth_share']:5.1f}%  err {r['max_abs_err_vs_eager']:.1e}")
    peer = (f"peer {r['peer_ms']:8.4f} ({r['x_peer']:5.2f}x)" if "peer_ms" in r else "peer n/a")
    share = "  n/a " if r["bandwidth_share"] is None else f"{100 * r['bandwidth_share']:5.1f}%"
    return (f"{r['op']:<13} {r['case']:<28} {r['dtype']:<8} ours {r['ours_ms']:8.4f} ms  {peer}  grid_sample "
            f"{r['grid_sample_ms']:8.4f} ({r['x_grid_sample']:6.1f}x)  copy-BW {share}  err {r['max_abs_err_vs_fp64']:.1e}")


def targets_met(rows: list[dict]) -> dict[str, bool]:
    resize = [r for r in rows if r["op"] == "DynamicResize"]
    encoder = [r for r in rows if r["op"] == "MSDeformAttn" and r["encoder"] and "x_peer" in r]
    met = {
        "resize >= 3x eager": all(r["x_eager"] >= TARGETS["resize_eager"] for r in resize),
        "resize >= 1.5x torch.compile": all(r["x_compiled"] >= TARGETS["resize_compiled"] for r in resize),
        "resize >= 60% copy bandwidth (larger cases)":
            all(r["bandwidth_share"] >= TARGETS["resize_bandwidth"] for r in resize if r["large"]),
    }
    if encoder:
        met["msda encoder fp32 >= 2x peer"] = all(r["x_peer"] >= TARGETS["msda_fp32"] for r in encoder
                                                  if r["dtype"] == "float32")
        met["msda encoder fp16 >= 4x peer"] = all(r["x_peer"] >= TARGETS["msda_fp16"] for r in encoder
                                                  if r["dtype"] == "float16")
    return met


def chart(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(15, 6))
    for ax, op, peers in ((axes[0], "DynamicResize", (("x_eager", "vs eager"), ("x_compiled", "vs torch.compile"))),
                          (axes[1], "MSDeformAttn", (("x_peer", "vs torch-ms-deform-attn"),
                                                     ("x_grid_sample", "vs grid_sample ref")))):
        sel = [r for r in rows if r["op"] == op]
        labels = [f"{r['case']}\n{r['dtype']}" for r in sel]
        width = 0.38
        for k, (key, name) in enumerate(peers):
            vals = [r.get(key, 0.0) for r in sel]
            ax.bar([i + (k - 0.5) * width for i in range(len(sel))], vals, width, label=name)
        ax.set_xticks(range(len(sel)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_yscale("log")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_ylabel("speed-up of libplugserve (x, log scale)")
        ax.set_title(f"{op} on {result['device']}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="folder for kernels.json/.png")
    parser.add_argument("--peer-path", type=Path, help="folder holding the built torch_ms_deform_attn package")
    parser.add_argument("--reps", type=int, default=20, help="calls per CUDA graph")
    parser.add_argument("--iters", type=int, default=15, help="timed graph replays (median reported)")
    parser.add_argument("--only", choices=("resize", "msda"), help="run one op's cases")
    parser.add_argument("--ours-only", action="store_true", help="time only libplugserve (quick A/B of kernels)")
    parser.add_argument("--chart-from", type=Path, help="redraw the chart from a JSON result and exit")
    args = parser.parse_args(argv)

    if args.chart_from:
        result = json.loads(args.chart_from.read_text())
        chart(result, args.chart_from.with_suffix(".png"))
        return 0

    import torch

    from plugserve import native

    if not torch.cuda.is_available():
        print("kernels.py needs a CUDA GPU", file=sys.stderr)
        return 2
    peer = None
    if args.peer_path:
        sys.path.insert(0, str(args.peer_path))
        import torch_ms_deform_attn as peer
    copy_gbs = copy_bandwidth()
    print(f"device {torch.cuda.get_device_name()}; copy bandwidth {copy_gbs:.0f} GB/s (read + write); "
          f"{native.build_info()}", flush=True)
    rows = []
    if args.only in (None, "resize"):
        rows += bench_resize(args.reps, args.iters, copy_gbs, not args.ours_only)
    if args.only in (None, "msda"):
        rows += bench_msda(args.reps, args.iters, copy_gbs, peer, not args.ours_only)
    result = {"device": torch.cuda.get_device_name(), "copy_bandwidth_gbs": copy_gbs, "torch": torch.__version__,
              "library": native.build_info(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "rows": rows, "targets_met": targets_met(rows)}
    if args.ours_only:
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kernels.json").write_text(json.dumps(result, indent=2))
    for name, ok in result["targets_met"].items():
        print(f"target {name}: {'met' if ok else 'NOT met'}")
    try:
        chart(result, args.out / "kernels.png")
    except ImportError:
        print("matplotlib missing: chart skipped (redraw with --chart-from)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
