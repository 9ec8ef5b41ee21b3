// MSDeformAttn math, shared by the CUDA kernel (kernel.cu) and the CPU implementation (cpu.cpp).
// Sampling follows F.grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False)
// on each level, with the grid given as 2 * location - 1, as Deformable DETR's reference does.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/numeric.cuh"
#include "ms_deform_attn/kernel.h"

namespace plugserve::ms_deform_attn {

constexpr int kMaxLevels = 8;

// One level of the value tensor: rows start .. start + h*w - 1. h == 0 marks a level whose
// shape or start index does not fit `value`; it is skipped.
struct Level {
    int h, w, start;
};

PS_HD Level makeLevel(int64_t h, int64_t w, int64_t start, int64_t num_values) {
    if (h < 1 || w < 1 || start < 0 || h > num_values || w > num_values || start > num_values ||
        h * w > num_values - start)
        return {0, 0, 0};
    return {static_cast<int>(h), static_cast<int>(w), static_cast<int>(start)};
}

// The four bilinear corners of one sampling point: rows inside the level (y * w + x), -1 for
// corners outside the map (they contribute zero), and their weights, in grid_sample's order
// north-west, north-east, south-west, south-east.
struct Corners {
    int row[4];
    float w[4];
};

// A sampling point that reads nothing.
constexpr Corners kNoCorners = {{-1, -1, -1, -1}, {0.f, 0.f, 0.f, 0.f}};

// grid_sample's unnormalization of g = 2 * loc - 1 for align_corners=False.
PS_HD float unnormalize(float loc, int size) {
    const float g = 2.f * loc - 1.f;  // as the reference computes the grid, in the input dtype
    return mulAdd(g + 1.f, static_cast<float>(size), -1.f) * 0.5f;
}

PS_HD Corners bilinearCorners(float loc_x, float loc_y, int h, int w) {
    const float x = unnormalize(loc_x, w);
    const float y = unnormalize(loc_y, h);
    // Entirely outside (or NaN): nothing to read; also keeps the int conversions below in range.
    if (!(x > -1.f && x < static_cast<float>(w) && y > -1.f && y < static_cast<float>(h))) return kNoCorners;
    const float x0f = floorf(x), y0f = floorf(y);
    const int x0 = static_cast<int>(x0f), y0 = static_cast<int>(y0f);
    const float ex = (x0f + 1.f) - x, wx = x - x0f;  // weights of columns x0 and x0+1
    const float ey = (y0f + 1.f) - y, wy = y - y0f;  // weights of rows y0 and y0+1
    Corners c;
    const bool in_x0 = x0 >= 0, in_x1 = x0 + 1 < w, in_y0 = y0 >= 0, in_y1 = y0 + 1 < h;
    c.row[0] = in_x0 && in_y0 ? y0 * w + x0 : -1;
    c.row[1] = in_x1 && in_y0 ? y0 * w + x0 + 1 : -1;
    c.row[2] = in_x0 && in_y1 ? (y0 + 1) * w + x0 : -1;
    c.row[3] = in_x1 && in_y1 ? (y0 + 1) * w + x0 + 1 : -1;
    c.w[0] = ex * ey;
    c.w[1] = wx * ey;
    c.w[2] = ex * wy;
    c.w[3] = wx * wy;
    return c;
}

}  // namespace plugserve::ms_deform_attn
