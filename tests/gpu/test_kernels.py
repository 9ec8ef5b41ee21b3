"""libplugserve.so's CUDA kernels against PyTorch on the same GPU (run on the device: make test-gpu)."""

from __future__ import annotations

import ctypes

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from plugserve import native  # noqa: E402
from plugserve.ops.ms_deform_attn import reference as msda_reference  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(not native.available(), reason="libplugserve.so not built (make plugins)"),
]

RESIZE_SHAPES = [
    ((2, 3, 7, 5), (13, 29)),  # odd up-scale
    ((1, 2, 1, 1), (5, 3)),  # 1-pixel map
    ((2, 3, 64, 64), (16, 17)),  # down-scale
    ((1, 4, 33, 47), (1, 1)),  # to one pixel
    ((1, 3, 300, 200), (1999, 37)),  # large coordinates, mixed scaling
    ((3, 5, 129, 131), (129, 131)),  # same size
    ((1, 3, 9, 10), (36, 41)),  # x4 up-scale with a partial last group of columns
    ((1, 2, 3, 4095), (5, 4096)),  # scale just below 1 on a wide row: windows still one pixel apart
]
MODES = [("nearest", False), ("bilinear", False), ("bilinear", True), ("bicubic", False), ("bicubic", True),
         ("nearest-exact", False)]


def interpolate(x, size, mode, align_corners):
    corners = {} if mode.startswith("nearest") else {"align_corners": align_corners}
    return F.interpolate(x, size=size, mode=mode, **corners)


@pytest.mark.parametrize("mode,align_corners", MODES)
@pytest.mark.parametrize("shape,size", RESIZE_SHAPES)
def test_resize_matches_interpolate_in_fp32_within_1e_5(shape, size, mode, align_corners):
    x = torch.rand(shape, device="cuda")
    out = native.dynamic_resize(x, *size, mode, align_corners)
    torch.testing.assert_close(out, interpolate(x, size, mode, align_corners), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode,align_corners", MODES)
def test_resize_in_half_precision_is_the_fp32_result_rounded_once(dtype, mode, align_corners):
    x = torch.rand(2, 3, 37, 53, device="cuda").to(dtype)
    out = native.dynamic_resize(x, 101, 70, mode, align_corners)
    exact = interpolate(x.float(), (101, 70), mode, align_corners)
    ulp = torch.finfo(dtype).eps * exact.abs().clamp(min=1)
    assert out.dtype == dtype
    assert ((out.float() - exact).abs() <= ulp).all()


def test_resize_of_a_large_tensor_matches_interpolate():
    x = torch.rand(4, 64, 270, 480, device="cuda")
    out = native.dynamic_resize(x, 1080, 1920, "bicubic", False)
    torch.testing.assert_close(out, interpolate(x, (1080, 1920), "bicubic", False), atol=1e-5, rtol=0)


def test_resize_runs_on_the_current_stream():
    x = torch.rand(8, 3, 256, 256, device="cuda")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        out = native.dynamic_resize(x, 1024, 1024, "bicubic", False)
    stream.synchronize()
    torch.testing.assert_close(out, interpolate(x, (1024, 1024), "bicubic", False), atol=1e-5, rtol=0)


# The kernel reads given scales on the device and then takes the paths right for any scale
# (per-column filters, K row slots per output row): up, down, mixed, and wide rows.
SCALES_CASES = [
    ((2, 3, 7, 5), (2.3, 2.3)),
    ((2, 3, 64, 64), (0.7, 0.7)),
    ((1, 4, 33, 47), (1.5, 0.45)),
    ((1, 3, 300, 200), (3.7, 0.31)),
    ((1, 2, 3, 4095), (1.7, 0.999)),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("mode,align_corners", MODES)
@pytest.mark.parametrize("shape,scales", SCALES_CASES)
def test_resize_with_scales_on_the_device_matches_interpolate_by_scale_factor(shape, scales, mode, align_corners,
                                                                             dtype):
    x = torch.rand(shape, device="cuda").to(dtype)
    corners = {} if mode.startswith("nearest") else {"align_corners": align_corners}
    scales = tuple(float(torch.tensor(s, dtype=torch.float32)) for s in scales)  # the op's scales are float32
    exact = F.interpolate(x.float(), scale_factor=scales, mode=mode, recompute_scale_factor=False, **corners)
    out = native.dynamic_resize(x, *exact.shape[-2:], mode, align_corners, torch.tensor(scales, device="cuda"))
    assert out.dtype == dtype
    tolerance = 1e-5 if dtype == torch.float32 else torch.finfo(dtype).eps * exact.abs().clamp(min=1)
    assert ((out.float() - exact).abs() <= tolerance).all()


def msda_inputs(n, shapes, m, d, lq, p, dtype=torch.float32, index_dtype=torch.int64, spread=1.4, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes_t = torch.tensor(shapes, dtype=index_dtype)
    areas = shapes_t.prod(1)
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    s, levels = int(areas.sum()), len(shapes)
    value = torch.randn(n, s, m, d, generator=g)
    # spread > 1: some locations fall outside [0, 1], where grid_sample reads zeros
    loc = torch.rand(n, lq, m, levels, p, 2, generator=g) * spread - (spread - 1) / 2
    weights = torch.rand(n, lq, m, levels, p, generator=g)
    weights = weights / weights.sum((-1, -2), keepdim=True)
    return [t.to("cuda", dtype) if t.is_floating_point() else t.to("cuda") for t in
            (value, shapes_t, starts, loc, weights)]


MSDA_CASES = [
    (2, [(7, 9), (3, 4), (1, 1)], 3, 8, 11, 4),
    (1, [(100, 167), (50, 84), (25, 42), (13, 21)], 8, 32, 300, 4),
    (2, [(5, 5)], 1, 2, 6, 1),
    (1, [(6, 7), (4, 4), (3, 2), (2, 2), (1, 3)], 2, 6, 9, 8),  # D=6: 2-wide vectors
    (1, [(9, 8)] * 8, 2, 256, 5, 16),  # 8 levels x 16 points: the fast path's full table of point levels
]
# The general path: one channel per lane (odd D), one level entry per level (L * P > 128), and both;
# D and P from the peers' tests (Deformable DETR, mmcv: D = 1, 71, 1025, 2048, 3096; mmdeploy: P = 32).
GENERAL_MSDA_CASES = [
    (2, [(7, 9), (3, 4), (1, 1)], 3, 1, 11, 4),  # D = 1: splits reach a full warp
    (2, [(7, 9), (3, 4)], 2, 3, 40, 17),
    (1, [(12, 10), (6, 5), (3, 3), (2, 1)], 2, 71, 33, 32),  # L * P = 128 still fits the table
    (1, [(9, 8)] * 8, 2, 8, 7, 17),  # L * P = 136: per-level table, vector slices
    (1, [(9, 8)] * 8, 2, 71, 5, 32),  # per-level table and one channel per lane
    (1, [(16, 12), (8, 6)], 1, 1025, 9, 4),
    (2, [(16, 12), (8, 6)], 1, 2048, 9, 2),
    (1, [(16, 12), (8, 6)], 1, 3096, 5, 3),  # 3096 = 8 x 387 lanes, no power of two: no splits
]


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("case", MSDA_CASES)
def test_msda_matches_the_grid_sample_reference_in_fp32_within_1e_5(case, index_dtype):
    inputs = msda_inputs(*case, index_dtype=index_dtype)
    out = native.ms_deform_attn(*inputs)
    torch.testing.assert_close(out, msda_reference(*inputs), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", GENERAL_MSDA_CASES)
def test_msda_general_path_for_any_head_dim_and_points_matches_the_reference(case, dtype):
    inputs = msda_inputs(*case, dtype=dtype)
    out = native.ms_deform_attn(*inputs)
    exact = msda_reference(*[t.double() if t.is_floating_point() else t for t in inputs])
    if dtype == torch.float32:
        torch.testing.assert_close(out, msda_reference(*inputs), atol=1e-5, rtol=0)
    else:
        ref_err = (msda_reference(*inputs).double() - exact).abs().max().item()
        assert (out.double() - exact).abs().max().item() <= ref_err + torch.finfo(dtype).eps * exact.abs().max().item()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", [MSDA_CASES[1], GENERAL_MSDA_CASES[2], GENERAL_MSDA_CASES[3]])
def test_msda_of_a_half_value_with_float32_locations_and_weights_is_the_float32_result_rounded_once(case, dtype):
    value, shapes, starts, loc, weights = msda_inputs(*case)
    half = value.to(dtype)
    out = native.ms_deform_attn(half, shapes, starts, loc, weights)
    assert out.dtype == dtype
    expected = msda_reference(half.float(), shapes, starts, loc, weights)
    ulp = torch.finfo(dtype).eps * expected.abs().max().item()
    assert (out.float() - expected).abs().max().item() <= ulp + 1e-5


def test_msda_on_value_aligned_to_one_element_takes_the_general_path():
    # A view one element into its storage: no 2-element slice is aligned, so one channel per lane.
    value, shapes, starts, loc, weights = msda_inputs(1, [(6, 5), (3, 3)], 2, 8, 7, 3)
    shifted = torch.empty(value.numel() + 1, device="cuda")[1:].view_as(value).copy_(value)
    torch.testing.assert_close(native.ms_deform_attn(shifted, shapes, starts, loc, weights),
                               msda_reference(value, shapes, starts, loc, weights), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", MSDA_CASES[:3])
def test_msda_in_half_precision_is_no_further_from_fp64_than_the_reference_plus_one_rounding(case, dtype):
    inputs = msda_inputs(*case, dtype=dtype)
    out = native.ms_deform_attn(*inputs)
    exact = msda_reference(*[t.double() if t.is_floating_point() else t for t in inputs])
    ref_err = (msda_reference(*inputs).double() - exact).abs().max().item()
    ulp = torch.finfo(dtype).eps * exact.abs().max().item()
    assert (out.double() - exact).abs().max().item() <= ref_err + ulp


def test_msda_of_a_large_batch_matches_the_reference():
    inputs = msda_inputs(8, [(100, 167), (50, 84), (25, 42), (13, 21)], 8, 32, 900, 4)
    torch.testing.assert_close(native.ms_deform_attn(*inputs), msda_reference(*inputs), atol=1e-5, rtol=0)


def test_msda_with_no_batch_or_no_queries_returns_an_empty_output():
    for n, lq in ((0, 5), (2, 0)):
        inputs = msda_inputs(n, [(4, 4)], 2, 4, lq, 2)
        assert native.ms_deform_attn(*inputs).shape == (n, lq, 2, 4)


def test_msda_levels_that_do_not_fit_value_contribute_zero_instead_of_reading_out_of_bounds():
    value, shapes, starts, loc, weights = msda_inputs(1, [(6, 6), (3, 3)], 2, 4, 7, 2)
    bad_shapes = shapes.clone()
    bad_shapes[1] = torch.tensor([1000, 1000])  # level 1 would run far past value's 45 rows
    bad_starts = starts.clone()
    bad_starts[0] = -5
    out = native.ms_deform_attn(value, bad_shapes, starts, loc, weights)
    only_level0 = weights.clone()
    only_level0[:, :, :, 1] = 0
    torch.testing.assert_close(out, msda_reference(value, shapes, starts, loc, only_level0), atol=1e-5, rtol=0)
    assert native.ms_deform_attn(value, shapes, bad_starts, loc, weights).isfinite().all()
    torch.cuda.synchronize()


def test_bad_input_through_the_c_abi_on_the_gpu_is_an_error_status_with_a_message():
    lib = native.load()
    x = torch.rand(1, 1, 4, 4, device="cuda")
    y = torch.empty(1, 1, 8, 8, device="cuda")
    stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)

    def resize(*dims, mode=b"bicubic", dtype=0):
        return lib.plugserve_dynamic_resize(*dims, mode, 0, None, dtype, x.data_ptr(), y.data_ptr(), stream)

    assert resize(1, 1, 4, 4, 8, 8, dtype=7) == 1
    assert b"dtype" in lib.plugserve_last_error()
    assert resize(1, 1, 4, 4, 0, 8) == 1
    assert b">= 1" in lib.plugserve_last_error()
    assert resize(1, 1, 4, 4, 8, 8, mode=b"lanczos") == 1
    assert resize(1 << 20, 1 << 20, 4, 4, 8, 8) == 1
    assert b"2^31-1" in lib.plugserve_last_error()
    assert resize(1, 1, 4, 4, 8, 8) == 0
    torch.cuda.synchronize()
