// DynamicResize math, shared by the CUDA kernel (kernel.cu) and the CPU implementation (cpu.cpp).
// Follows PyTorch's upsample_{nearest,bilinear,bicubic}2d with an explicit output size:
// the scale is in/out (or (in-1)/(out-1) with align_corners) in fp32, or 1/scale where scales
// are given, borders are clamped.
#pragma once

#include <cmath>

#include "common/numeric.cuh"
#include "dynamic_resize/kernel.h"

namespace plugserve::dynamic_resize {

constexpr float kCubicA = -0.75f;  // PyTorch's (and OpenCV's) bicubic coefficient

template <Mode M>
struct Taps;
template <>
struct Taps<Mode::kNearest> { static constexpr int value = 1; };
template <>
struct Taps<Mode::kBilinear> { static constexpr int value = 2; };
template <>
struct Taps<Mode::kBicubic> { static constexpr int value = 4; };
template <>
struct Taps<Mode::kNearestExact> { static constexpr int value = 1; };

// A 1-D filter: input indices start .. start+kTaps-1 (clamped to the map when read) and weights.
template <int kTaps>
struct Window {
    int start;
    float w[kTaps];
};

PS_HD float areaScale(int in_size, int out_size, bool align_corners) {
    if (align_corners) return out_size > 1 ? static_cast<float>(in_size - 1) / static_cast<float>(out_size - 1) : 0.f;
    return static_cast<float>(in_size) / static_cast<float>(out_size);
}

// PyTorch's area_pixel_compute_scale when a scale is given (Params::scales): 1 / scale, unless
// align_corners, which ignores it.
PS_HD float areaScale(int in_size, int out_size, bool align_corners, const float* given) {
    return given != nullptr && !align_corners ? 1.f / *given : areaScale(in_size, out_size, align_corners);
}

PS_HD float sourceIndex(float scale, int dst, bool align_corners, bool cubic) {
    if (align_corners) return scale * static_cast<float>(dst);
    const float src = mulAdd(scale, static_cast<float>(dst) + 0.5f, -0.5f);
    return (!cubic && src < 0.f) ? 0.f : src;
}

PS_HD float cubicConv1(float x) { return ((kCubicA + 2.f) * x - (kCubicA + 3.f)) * x * x + 1.f; }
PS_HD float cubicConv2(float x) { return ((kCubicA * x - 5.f * kCubicA) * x + 8.f * kCubicA) * x - 4.f * kCubicA; }

template <Mode M>
PS_HD Window<Taps<M>::value> window(int dst, int in_size, float scale, bool align_corners);

template <>
PS_HD Window<1> window<Mode::kNearest>(int dst, int in_size, float scale, bool) {
    const int i = static_cast<int>(floorf(static_cast<float>(dst) * scale));
    return {i < in_size - 1 ? i : in_size - 1, {1.f}};
}

// PyTorch's nearest_exact_idx: the pixel whose centre is nearest, ties to the right; ONNX Resize
// computes the same with half_pixel coordinates and nearest_mode=round_prefer_ceil.
template <>
PS_HD Window<1> window<Mode::kNearestExact>(int dst, int in_size, float scale, bool) {
    const int i = static_cast<int>(floorf((static_cast<float>(dst) + 0.5f) * scale));
    return {i < in_size - 1 ? i : in_size - 1, {1.f}};
}

// PyTorch's guard_index_and_lambda: the window's first index (at most in_size - 1) and the
// fraction past it, clamped to [0, 1].
PS_HD int guardIndex(float real, int in_size, float* lambda) {
    int i = static_cast<int>(floorf(real));
    i = i < in_size - 1 ? i : in_size - 1;
    const float l = real - static_cast<float>(i);
    *lambda = l < 0.f ? 0.f : (l > 1.f ? 1.f : l);
    return i;
}

template <>
PS_HD Window<2> window<Mode::kBilinear>(int dst, int in_size, float scale, bool align_corners) {
    float lambda;
    const int i = guardIndex(sourceIndex(scale, dst, align_corners, false), in_size, &lambda);
    return {i, {1.f - lambda, lambda}};
}

template <>
PS_HD Window<4> window<Mode::kBicubic>(int dst, int in_size, float scale, bool align_corners) {
    float t;
    const int i = guardIndex(sourceIndex(scale, dst, align_corners, true), in_size, &t);
    return {i - 1, {cubicConv2(t + 1.f), cubicConv1(t), cubicConv1(1.f - t), cubicConv2((1.f - t) + 1.f)}};
}

// Weighted sum in PyTorch's order (x0*w0 + x1*w1 + ...).
template <int kTaps>
PS_HD float combine(const float (&w)[kTaps], const float (&x)[kTaps]) {
    float s = x[0] * w[0];
PS_UNROLL
    for (int k = 1; k < kTaps; ++k) s += x[k] * w[k];
    return s;
}

// One input row filtered horizontally at the columns `cols` (already clamped).
template <typename T, int kTaps>
PS_HD float filterRow(const T* row, const int (&cols)[kTaps], const float (&w)[kTaps]) {
    float x[kTaps];
PS_UNROLL
    for (int k = 0; k < kTaps; ++k) x[k] = toFloat(row[cols[k]]);
    return combine<kTaps>(w, x);
}

}  // namespace plugserve::dynamic_resize
