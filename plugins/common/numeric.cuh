// Element conversions and host/device qualifiers shared by the CUDA kernels (nvcc) and the
// CPU implementations (g++), so both compile the very same math.
#pragma once

#include <cmath>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#ifdef __CUDACC__
#define PS_HD __host__ __device__ __forceinline__
#define PS_UNROLL _Pragma("unroll")
#else
#define PS_HD inline
#define PS_UNROLL
#endif

namespace plugserve {

PS_HD float toFloat(float v) { return v; }
PS_HD float toFloat(__half v) { return __half2float(v); }
PS_HD float toFloat(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
PS_HD T fromFloat(float v);
template <>
PS_HD float fromFloat<float>(float v) { return v; }
template <>
PS_HD __half fromFloat<__half>(float v) { return __float2half_rn(v); }
template <>
PS_HD __nv_bfloat16 fromFloat<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// a * b + c rounded once, as PyTorch's kernels compute source coordinates: nvcc fuses the
// expression into an FMA in its CUDA kernels, and its CPU kernels (built for AVX2/AVX-512 with
// FMA) do the same. Coordinates reach the thousands, where rounding twice moves a sample by
// ~1e-4 of a pixel and the result by more than 1e-5, so the rounding must match.
PS_HD float mulAdd(float a, float b, float c) {
#ifdef __CUDA_ARCH__
    return __fmaf_rn(a, b, c);
#else
    return std::fma(a, b, c);
#endif
}

PS_HD int clampIndex(int i, int size) { return i < 0 ? 0 : (i >= size ? size - 1 : i); }

}  // namespace plugserve
