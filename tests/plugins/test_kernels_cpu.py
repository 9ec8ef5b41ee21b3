"""libplugserve.so's CPU implementations against the ops' PyTorch references (what CI runs)."""

from __future__ import annotations

import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from plugserve import native  # noqa: E402
from plugserve.ops.dynamic_resize import reference as resize_reference  # noqa: E402
from plugserve.ops.ms_deform_attn import reference as msda_reference  # noqa: E402

pytestmark = pytest.mark.skipif(not native.available(), reason="libplugserve.so not built (make plugins)")

MODES = [("nearest", False), ("bilinear", False), ("bilinear", True), ("bicubic", False), ("bicubic", True),
         ("nearest-exact", False)]


def random_resize_shapes(seed: int, count: int = 12):
    """Odd sizes, 1-pixel maps, up- and down-scaling, shrinking to one pixel."""
    rng = random.Random(seed)
    shapes = [((1, 2, 1, 1), (5, 3)), ((2, 1, 9, 7), (1, 1)), ((1, 3, 64, 48), (15, 13)), ((1, 1, 300, 4), (1999, 4))]
    for _ in range(count - len(shapes)):
        in_h, in_w = rng.randint(1, 40), rng.randint(1, 40)
        shapes.append(((rng.randint(1, 2), rng.randint(1, 3), in_h, in_w), (rng.randint(1, 90), rng.randint(1, 90))))
    return shapes


def size_tensor(out_h: int, out_w: int):
    return torch.tensor([out_h, out_w])


@pytest.mark.parametrize("mode,align_corners", MODES)
def test_resize_matches_interpolate_within_1e_5_over_random_shapes(mode, align_corners):
    torch.manual_seed(0)
    for shape, (out_h, out_w) in random_resize_shapes(seed=MODES.index((mode, align_corners))):
        x = torch.rand(shape)
        out = native.dynamic_resize(x, out_h, out_w, mode, align_corners)
        expected = resize_reference(x, size_tensor(out_h, out_w), mode, align_corners)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=0, msg=f"{shape} -> {out_h}x{out_w}")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode,align_corners", MODES)
def test_resize_in_half_precision_is_the_fp32_result_rounded_once(dtype, mode, align_corners):
    x = torch.rand(2, 3, 17, 23).to(dtype)
    out = native.dynamic_resize(x, 40, 11, mode, align_corners)
    exact = resize_reference(x.float(), size_tensor(40, 11), mode, align_corners)
    assert out.dtype == dtype
    assert ((out.float() - exact).abs() <= torch.finfo(dtype).eps * exact.abs().clamp(min=1)).all()


def test_resize_of_an_empty_batch_returns_an_empty_tensor():
    assert native.dynamic_resize(torch.rand(0, 3, 8, 8), 16, 16).shape == (0, 3, 16, 16)


def test_resize_numpy_entry_point_matches_the_torch_one():
    x = np.random.default_rng(0).random((1, 2, 9, 13), dtype=np.float32)
    expected = native.dynamic_resize(torch.from_numpy(x), 20, 7, "bilinear", True).numpy()
    np.testing.assert_array_equal(native.dynamic_resize_numpy(x, 20, 7, "bilinear", True), expected)


# Scale factors whose in * scale is fractional at most of the random sizes, up and down, and mixed;
# as float32, the type of the op's scales (F.interpolate's 1 / 2.3 in double differs from 1 / 2.3f
# in the last bit, which moves nearest's floor at outputs such as 69 / 2.3 = 30).
SCALE_FACTORS = [tuple(float(np.float32(s)) for s in pair)
                 for pair in [(2.3, 2.3), (0.7, 0.7), (1.5, 1.5), (2.3, 0.7), (0.45, 3.1)]]


@pytest.mark.parametrize("mode,align_corners", MODES)
def test_resize_with_scales_through_the_c_abi_matches_interpolate_by_scale_factor(mode, align_corners):
    torch.manual_seed(1)
    corners = {} if mode.startswith("nearest") else {"align_corners": align_corners}
    for (shape, _), scales in zip(random_resize_shapes(seed=7, count=10), SCALE_FACTORS * 2, strict=True):
        x = torch.rand(shape)
        expected = torch.nn.functional.interpolate(x, scale_factor=scales, mode=mode, recompute_scale_factor=False,
                                                   **corners)
        if 0 in expected.shape:
            continue
        out = native.dynamic_resize(x, *expected.shape[-2:], mode, align_corners, torch.tensor(scales))
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=0, msg=f"{shape} by {scales}")
        numpy_out = native.dynamic_resize_numpy(x.numpy(), *expected.shape[-2:], mode, align_corners, scales)
        np.testing.assert_array_equal(numpy_out, out.numpy())


def test_resize_with_bad_scales_is_rejected_with_a_message():
    with pytest.raises(native.PluginError, match="scales must be finite and > 0, got height"):
        native.dynamic_resize(torch.rand(1, 1, 4, 4), 8, 8, "bilinear", False, torch.tensor([0.0, 2.0]))
    with pytest.raises(ValueError, match="scales must be 2 values"):
        native.dynamic_resize(torch.rand(1, 1, 4, 4), 8, 8, "bilinear", False, torch.tensor([2.0]))


def test_resize_with_align_corners_in_nearest_mode_is_rejected_with_a_message():
    with pytest.raises(native.PluginError, match="align_corners"):
        native.dynamic_resize(torch.rand(1, 1, 4, 4), 8, 8, "nearest", True)


def msda_inputs(n, shapes, m, d, lq, p, dtype=torch.float32, index_dtype=torch.int64, spread=1.4, seed=0):
    """Random inputs; spread > 1 puts some locations outside [0, 1], where grid_sample reads zeros."""
    g = torch.Generator().manual_seed(seed)
    shapes_t = torch.tensor(shapes, dtype=index_dtype).view(-1, 2)
    areas = shapes_t.prod(1)
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    levels = len(shapes)
    value = torch.randn(n, int(areas.sum()), m, d, generator=g)
    loc = torch.rand(n, lq, m, levels, p, 2, generator=g) * spread - (spread - 1) / 2
    weights = torch.rand(n, lq, m, levels, p, generator=g)
    weights = weights / weights.sum((-1, -2), keepdim=True).clamp(min=1e-6)
    return [t.to(dtype) if t.is_floating_point() else t for t in (value, shapes_t, starts, loc, weights)]


def random_msda_cases(seed: int, count: int = 10):
    """L from 1 to 5, P from 1 to 8, 1-pixel levels, even D from 2 to 34."""
    rng = random.Random(seed)
    cases = []
    for k in range(count):
        levels = 1 + k % 5
        shapes = [(rng.randint(1, 12), rng.randint(1, 12)) for _ in range(levels)]
        cases.append((rng.randint(1, 2), shapes, rng.randint(1, 3), 2 * rng.randint(1, 17), rng.randint(1, 20),
                      1 + k % 8))
    return cases


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_msda_matches_the_grid_sample_reference_within_1e_5_over_random_shapes(index_dtype):
    for case in random_msda_cases(seed=1):
        inputs = msda_inputs(*case, index_dtype=index_dtype)
        torch.testing.assert_close(native.ms_deform_attn(*inputs), msda_reference(*inputs), atol=1e-5, rtol=0,
                                   msg=str(case))


# The peers' contracts: Deformable DETR's and mmcv's tests use D = 71 and 1025 (and 2048, 3096), mmcv
# a module with D = 1, mmdeploy P = 32; D = 3 is odd and small.
@pytest.mark.parametrize("d", [1, 3, 71, 1025])
@pytest.mark.parametrize("p", [1, 17, 32])
def test_msda_takes_any_head_dim_and_any_number_of_points(d, p):
    inputs = msda_inputs(2, [(5, 7), (3, 2), (1, 1)], 2, d, 6, p, seed=d + p)
    torch.testing.assert_close(native.ms_deform_attn(*inputs), msda_reference(*inputs), atol=1e-5, rtol=0)


def test_msda_on_deformable_detr_level_sizes_matches_the_reference():
    inputs = msda_inputs(1, [(100, 167), (50, 84), (25, 42), (13, 21)], 8, 32, 40, 4)
    torch.testing.assert_close(native.ms_deform_attn(*inputs), msda_reference(*inputs), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_msda_in_half_precision_is_no_further_from_fp64_than_the_reference_plus_one_rounding(dtype):
    for case in random_msda_cases(seed=2, count=4):
        inputs = msda_inputs(*case, dtype=dtype)
        out = native.ms_deform_attn(*inputs)
        exact = msda_reference(*[t.double() if t.is_floating_point() else t for t in inputs])
        # grid_sample has no CPU kernel for 16-bit types: the reference from the same 16-bit inputs,
        # computed in fp32 and rounded, is what a half-precision grid_sample could at best return.
        ref = msda_reference(*[t.float() if t.is_floating_point() else t for t in inputs]).to(dtype)
        ulp = torch.finfo(dtype).eps * exact.abs().max().item()
        assert out.dtype == dtype
        assert (out.double() - exact).abs().max().item() <= (ref.double() - exact).abs().max().item() + ulp


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_msda_of_a_half_value_with_float32_locations_and_weights_is_the_float32_result_rounded_once(dtype):
    for case in random_msda_cases(seed=3, count=4):
        value, shapes, starts, loc, weights = msda_inputs(*case)
        half = value.to(dtype)
        out = native.ms_deform_attn(half, shapes, starts, loc, weights)
        assert out.dtype == dtype
        # The value rounded to the half type is all the precision lost before the fp32 math; then one rounding.
        expected = msda_reference(half.float(), shapes, starts, loc, weights)
        torch.testing.assert_close(out.float(), expected.to(dtype).float(), atol=1e-5, rtol=0)
        torch.testing.assert_close(msda_reference(half, shapes, starts, loc, weights), expected.to(dtype))


def test_msda_refuses_sampling_tensors_in_another_half_type_or_apart_naming_the_rule():
    value, shapes, starts, loc, weights = msda_inputs(1, [(4, 4)], 2, 4, 3, 2)
    for args in ((value.half(), loc.bfloat16(), weights.bfloat16()), (value.half(), loc, weights.half()),
                 (value, loc.half(), weights.half())):
        with pytest.raises(ValueError, match="must share value's dtype or be float32"):
            native.ms_deform_attn(args[0], shapes, starts, args[1], args[2])


def test_msda_with_no_batch_or_no_queries_returns_an_empty_output():
    for n, lq in ((0, 5), (2, 0)):
        assert native.ms_deform_attn(*msda_inputs(n, [(4, 4)], 2, 4, lq, 2)).shape == (n, lq, 2, 4)


@pytest.mark.parametrize("bad_shapes,bad_starts,problem", [
    ([(4, 4), (3, 3)], [0, 20], "level 1"),  # runs past value's 25 rows
    ([(4, 4), (3, 3)], [-1, 16], "level 0"),
    ([(4, 4), (0, 3)], [0, 16], "level 1"),
    ([(4, 4), (1 << 40, 1 << 40)], [0, 16], "level 1"),  # H*W overflows int64 arithmetic naively
])
def test_msda_index_tensors_inconsistent_with_value_raise_an_error_naming_the_level(bad_shapes, bad_starts, problem):
    value, _, _, loc, weights = msda_inputs(1, [(4, 4), (3, 3)], 2, 4, 3, 2)
    with pytest.raises(native.PluginError, match=problem):
        native.ms_deform_attn(value, torch.tensor(bad_shapes), torch.tensor(bad_starts), loc, weights)


def test_msda_numpy_entry_point_matches_the_torch_one():
    inputs = msda_inputs(1, [(5, 6), (2, 3)], 2, 4, 7, 3, index_dtype=torch.int32)
    expected = native.ms_deform_attn(*inputs).numpy()
    np.testing.assert_array_equal(native.ms_deform_attn_numpy(*(t.numpy() for t in inputs)), expected)
