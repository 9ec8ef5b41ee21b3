"""Kernel benchmark on one GPU: libplugserve.so's DynamicResize and MSDeformAttn against their peers.

Every contender is timed the same way: a CUDA graph of `--reps` back-to-back calls, replayed
`--iters` times between CUDA events (falling back to a plain loop when a contender cannot be
captured), so the numbers are device time without Python launch overhead.

Bandwidth is the fewest bytes the op must read plus write (each input byte it needs read once,
each output byte written once) over its time. The ceilings are measured in the same run over
4 GiB buffers: a device-to-device copy (bytes read plus written), a read-only stream (a sum) and a
write-only stream (a fill). Each case's share is of the ceiling that fits its mix: with w the
written fraction of its bytes, the time per byte is interpolated linearly between the read stream
(w = 0), the copy (w = 1/2) and the write stream (w = 1). Each peer gets its share of the same
ceiling for the same bytes.

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
TARGETS = {"resize_eager": 3.0, "resize_compiled": 1.5, "resize_bandwidth": 0.8, "resize_fp16_time": 0.65,
           "msda_decoder_fp32": 1.5, "msda_encoder_fp32": 4.0, "msda_encoder_fp16": 8.0}


def timed(fn, reps: int, iters: int, graph: bool = True) -> tuple[float, str]:
    """Median device milliseconds per call of fn, and how it was measured ("graph" or "loop")."""
    import torch

    for _ in range(3):
        fn()
    torch.cuda.synchronize()

    def loop():
        for _ in range(reps):
            fn()
    run, how = loop, "loop"
    if graph:
        stream = torch.cuda.Stream()
        try:
            captured = torch.cuda.CUDAGraph()
            with torch.cuda.stream(stream):
                fn()  # warm-up on the capture stream
                torch.cuda.synchronize()
                with torch.cuda.graph(captured, stream=stream):
                    for _ in range(reps):
                        fn()
            run, how = captured.replay, "graph"
        except Exception:  # capture unsupported by this contender: time the plain calls instead
            torch.cuda.synchronize()
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


def ceilings() -> dict[str, float]:
    """GB/s of the three streams, each over 4 GiB buffers (many times the L2). Timed as plain calls:
    captured in a CUDA graph, the copy ran at 2.77 TB/s on the H200, against 4.25 as a plain call
    (a graph's memcpy node need not take the same path), and each call here lasts milliseconds, so
    launch gaps do not count."""
    import torch

    src = torch.rand(1 << 30, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    total = torch.empty((), dtype=torch.float32, device="cuda")
    nbytes = src.numel() * src.element_size()
    gbs = {}
    # The copy is the faster of a memcpy and an elementwise kernel, which move the same bytes.
    for name, fn, moved in (("copy", lambda: dst.copy_(src), 2 * nbytes),
                            ("copy", lambda: torch.mul(src, 1.0, out=dst), 2 * nbytes),
                            ("read", lambda: torch.sum(src, dim=0, out=total), nbytes),
                            ("write", lambda: dst.fill_(1.5), nbytes)):
        ms, _ = timed(fn, reps=3, iters=10, graph=False)
        gbs[name] = max(gbs.get(name, 0.0), moved / (ms * 1e-3) / 1e9)
    return gbs


def fitting_ceiling(ceil: dict[str, float], read_bytes: float, write_bytes: float) -> float:
    """GB/s ceiling for an op that reads and writes these bytes; see the module docstring."""
    w = write_bytes / (read_bytes + write_bytes)
    if w <= 0.5:
        per_byte = (1 - 2 * w) / ceil["read"] + 2 * w / ceil["copy"]
    else:
        per_byte = (2 - 2 * w) / ceil["copy"] + (2 * w - 1) / ceil["write"]
    return 1 / per_byte


def bandwidth(row: dict, ceil: dict[str, float], read_bytes: float, write_bytes: float, peers: tuple[str, ...]):
    """Adds bytes, GB/s and share of the fitting ceiling for ours and each peer timed in row."""
    fit = fitting_ceiling(ceil, read_bytes, write_bytes)
    row.update(read_bytes=int(read_bytes), write_bytes=int(write_bytes), ceiling_gbs=fit)
    for who in ("ours",) + peers:
        if f"{who}_ms" in row:
            gbs = (read_bytes + write_bytes) / (row[f"{who}_ms"] * 1e-3) / 1e9
            row[f"{who}_gbs"] = gbs
            row["bandwidth_share" if who == "ours" else f"{who}_share"] = gbs / fit


def bench_resize(reps: int, iters: int, ceil: dict[str, float], peers: bool = True) -> list[dict]:
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
            rows.append({
                "op": "DynamicResize", "case": f"{list(shape)}->{oh}x{ow}", "dtype": str(dtype).split(".")[1],
                "ours_ms": t_ours, "eager_ms": t_eager, "compiled_ms": t_compiled, "timing": how,
                "x_eager": t_eager / t_ours, "x_compiled": t_compiled / t_ours,
                "max_abs_err_vs_eager": err,
                "large": shape[0] * shape[1] > 3,
            })
            bandwidth(rows[-1], ceil, x.numel() * x.element_size(), expected.numel() * x.element_size(),
                      ("eager", "compiled"))
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


def touched_value_bytes(value, shapes, starts, loc) -> int:
    """Bytes of `value` a sampling must read at least: each (batch, row, head) slice that some
    bilinear corner inside its level touches, once."""
    import torch

    n, s, m, d = value.shape
    keys = []
    for lvl, ((h, w), start) in enumerate(zip(shapes.tolist(), starts.tolist(), strict=True)):
        xy = loc[:, :, :, lvl].float()  # [N, Lq, M, P, 2]
        x0 = (xy[..., 0] * w - 0.5).floor().long()
        y0 = (xy[..., 1] * h - 0.5).floor().long()
        batch = torch.arange(n, device=loc.device).view(n, 1, 1, 1)
        head = torch.arange(m, device=loc.device).view(1, 1, m, 1)
        for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
            x, y = x0 + dx, y0 + dy
            inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
            row = start + y * w + x
            keys.append((((batch * s + row) * m + head)[inside]).flatten())
    return int(torch.cat(keys).unique().numel()) * d * value.element_size()


def bench_msda(reps: int, iters: int, ceil: dict[str, float], peer, peers: bool = True) -> list[dict]:
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
            read = touched_value_bytes(value, shapes_cpu, starts_cpu, loc) + \
                sum(t.numel() * t.element_size() for t in (loc, weights))
            bandwidth(row, ceil, read, expected.numel() * value.element_size(), ("peer", "grid_sample"))
            rows.append(row)
            print(_row_text(row), flush=True)
    return rows


def bench_ab(libraries: list[Path], reps: int, iters: int, rounds: int) -> list[dict]:
    """Our kernels from several builds of libplugserve.so, case by case, the builds interleaved in
    each of `rounds` rounds: one device call compares kernel variants on the same inputs."""
    import os

    import torch

    from plugserve import native

    def use(lib: Path) -> None:
        os.environ[native.ENV_VAR] = str(lib)
        native.load.cache_clear()

    cases = []
    for shape, (oh, ow) in RESIZE_CASES:
        for dtype in (torch.float32, torch.float16):
            x = torch.rand(shape, device="cuda", dtype=dtype)
            cases.append((f"resize {list(shape)}->{oh}x{ow} {dtype}",
                          partial(native.dynamic_resize, x, oh, ow, "bicubic", False)))
    for kind, n, lq in MSDA_CASES:
        for dtype in (torch.float32, torch.float16):
            cases.append((f"msda {kind} N={n} Lq={lq} {dtype}",
                          partial(native.ms_deform_attn, *msda_inputs(kind, n, lq, dtype))))
    rows = []
    for name, fn in cases:
        times: dict[str, list[float]] = {lib.parent.name: [] for lib in libraries}
        for lib in libraries:  # each build's answer against the first build's
            use(lib)
            out = fn().float()
            if lib == libraries[0]:
                first = out
            times[lib.parent.name].append(float((out - first).abs().max()))
        for _ in range(rounds):
            for lib in libraries:
                use(lib)
                times[lib.parent.name].append(timed(fn, reps, iters)[0])
        rows.append({"case": name, "builds": times})
        print(f"{name:<52}" + "".join(f"  {k} {1e3 * min(v[1:]):7.2f} us (d {v[0]:.0e})" for k, v in times.items()),
              flush=True)
    return rows


def _share(r: dict, key: str) -> str:
    return "  n/a " if r.get(key) is None else f"{100 * r[key]:5.1f}%"


def _row_text(r: dict) -> str:
    bw = f"{r['ours_gbs']:5.0f} GB/s {_share(r, 'bandwidth_share')} of {r['ceiling_gbs']:4.0f}" if "ours_gbs" in r else ""
    if r["op"] == "DynamicResize":
        return (f"{r['op']:<13} {r['case']:<28} {r['dtype']:<8} ours {r['ours_ms']:8.4f} ms {bw}  "
                f"eager {r['eager_ms']:8.4f} ({r['x_eager']:5.2f}x, {_share(r, 'eager_share')})  "
                f"compiled {r['compiled_ms']:8.4f} ({r['x_compiled']:5.2f}x, {_share(r, 'compiled_share')})  "
                f"err {r['max_abs_err_vs_eager']:.1e}")
    peer = (f"peer {r['peer_ms']:8.4f} ({r['x_peer']:5.2f}x, {_share(r, 'peer_share')})" if "peer_ms" in r
            else "peer n/a")
    return (f"{r['op']:<13} {r['case']:<28} {r['dtype']:<8} ours {r['ours_ms']:8.4f} ms {bw}  {peer}  grid_sample "
            f"{r['grid_sample_ms']:8.4f} ({r['x_grid_sample']:6.1f}x, {_share(r, 'grid_sample_share')})  "
            f"err {r['max_abs_err_vs_fp64']:.1e}")


def targets_met(rows: list[dict]) -> dict[str, bool]:
    resize = [r for r in rows if r["op"] == "DynamicResize"]
    large = {(r["case"], r["dtype"]): r for r in resize if r["large"]}
    msda = [r for r in rows if r["op"] == "MSDeformAttn"]
    peered = [r for r in msda if "x_peer" in r]
    met = {
        "resize >= 3x eager": all(r["x_eager"] >= TARGETS["resize_eager"] for r in resize),
        "resize >= 1.5x torch.compile": all(r["x_compiled"] >= TARGETS["resize_compiled"] for r in resize),
        "resize >= 80% of fitting ceiling (larger cases, fp32 and fp16)":
            all(r["bandwidth_share"] >= TARGETS["resize_bandwidth"] for r in large.values()),
        "resize fp16 time <= 0.65x fp32 (larger cases)":
            all(r["ours_ms"] <= TARGETS["resize_fp16_time"] * large[(case, "float32")]["ours_ms"]
                for (case, dtype), r in large.items() if dtype == "float16" and (case, "float32") in large),
        "msda never slower than the grid_sample reference": all(r["x_grid_sample"] >= 1 for r in msda),
    }
    if peered:
        met["msda never slower than torch-ms-deform-attn"] = all(r["x_peer"] >= 1 for r in peered)
        met["msda decoder N=1 Lq=300 fp32 >= 1.5x peer"] = all(
            r["x_peer"] >= TARGETS["msda_decoder_fp32"] for r in peered
            if r["case"] == "decoder N=1 Lq=300" and r["dtype"] == "float32")
        for dtype, key in (("float32", "msda_encoder_fp32"), ("float16", "msda_encoder_fp16")):
            met[f"msda encoder {dtype} >= {TARGETS[key]:g}x peer"] = all(
                r["x_peer"] >= TARGETS[key] for r in peered if r["encoder"] and r["dtype"] == dtype)
    return met


def chart(result: dict, path: Path) -> None:
    """Top: speed-ups over each peer. Bottom: ours and each peer as a share of the fitting ceiling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, axes = plt.subplots(2, 2, figsize=(15, 11))
    for col, op, peers in ((0, "DynamicResize", (("eager", "eager"), ("compiled", "torch.compile"))),
                           (1, "MSDeformAttn", (("peer", "torch-ms-deform-attn"), ("grid_sample", "grid_sample ref")))):
        sel = [r for r in rows if r["op"] == op]
        labels = [f"{r['case']}\n{r['dtype']}" for r in sel]
        speed, share = axes[0][col], axes[1][col]
        width = 0.38
        for k, (key, name) in enumerate(peers):
            vals = [r.get(f"x_{key}", 0.0) for r in sel]
            speed.bar([i + (k - 0.5) * width for i in range(len(sel))], vals, width, label=f"vs {name}")
        width = 0.27
        for k, (key, name) in enumerate((("bandwidth_share", "libplugserve"),) +
                                        tuple((f"{key}_share", name) for key, name in peers)):
            vals = [100 * (r.get(key) or 0.0) for r in sel]
            share.bar([i + (k - 1) * width for i in range(len(sel))], vals, width, label=name)
        speed.set_yscale("log")
        speed.axhline(1.0, color="black", linewidth=0.8)
        speed.set_ylabel("speed-up of libplugserve (x, log scale)")
        speed.set_title(f"{op} on {result['device']}")
        share.axhline(100.0, color="black", linewidth=0.8)
        share.set_ylabel("share of the ceiling fitting the read/write mix (%)")
        for ax in (speed, share):
            ax.set_xticks(range(len(sel)), labels, rotation=60, ha="right", fontsize=7)
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
    parser.add_argument("--ab", type=Path, nargs="+", metavar="LIB",
                        help="time only our kernels, from each of these libplugserve.so builds in turn")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of --ab")
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
    if args.ab:
        result = {"device": torch.cuda.get_device_name(), "ab": bench_ab(args.ab, args.reps, args.iters, args.rounds)}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "ab-kernels.json").write_text(json.dumps(result, indent=2))
        return 0
    peer = None
    if args.peer_path:
        sys.path.insert(0, str(args.peer_path))
        import torch_ms_deform_attn as peer
    ceil = ceilings()
    print(f"device {torch.cuda.get_device_name()}; ceilings: copy {ceil['copy']:.0f} GB/s (read + write), "
          f"read {ceil['read']:.0f} GB/s, write {ceil['write']:.0f} GB/s; {native.build_info()}", flush=True)
    rows = []
    if args.only in (None, "resize"):
        rows += bench_resize(args.reps, args.iters, ceil, not args.ours_only)
    if args.only in (None, "msda"):
        rows += bench_msda(args.reps, args.iters, ceil, peer, not args.ours_only)
    result = {"device": torch.cuda.get_device_name(), "copy_bandwidth_gbs": ceil["copy"],
              "read_bandwidth_gbs": ceil["read"], "write_bandwidth_gbs": ceil["write"], "torch": torch.__version__,
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
