// DynamicResize CUDA kernel and launcher.
//
// Each thread owns kCols adjacent output columns of a plane and `rows` consecutive output rows.
// Its column windows (indices and weights) are computed once; the block's row windows once, into
// shared memory; each input row is filtered horizontally once and kept in registers while the
// following output rows still need it, so an x4 bicubic upscale filters 7 input rows per 16
// output rows instead of 64. A warp's stores are contiguous, vectorized when rows are aligned.
// Measured on an H100 (bench/kernels.py): 2 or 8 columns per thread, 64 or 256 threads per block
// and 32 rows are no faster; fewer rows, or capping registers for occupancy (it spills), are slower.
#include <algorithm>
#include <cstdint>
#include <string>

#include "common/checks.h"
#include "dynamic_resize/kernel.cuh"

namespace plugserve::dynamic_resize {
namespace {

constexpr int kBlock = 128;  // threads per block, along x
constexpr int kCols = 4;      // output columns per thread
constexpr int kMaxRows = 16;  // output rows per thread ...
constexpr int kMinRows = 4;   // ... fewer (down to this) when the GPU would otherwise idle

template <typename T>
struct alignas(sizeof(T) * kCols) Pixels {
    T v[kCols];
};

template <typename T, Mode M>
__global__ void __launch_bounds__(kBlock)
    resizeKernel(const T* __restrict__ in, T* __restrict__ out, int in_h, int in_w, int out_h, int out_w,
                 float scale_h, float scale_w, bool align_corners, int rows, int tiles_x, int tiles_y,
                 long long tasks, bool vector_store) {
    constexpr int K = Taps<M>::value;
    // Row windows are the same for every thread of a block: computed once, read from shared memory.
    __shared__ int row_start[kMaxRows];
    __shared__ float row_weight[kMaxRows][K];
    for (long long task = blockIdx.x; task < tasks; task += gridDim.x) {
        const int tile_x = static_cast<int>(task % tiles_x);
        const long long rest = task / tiles_x;
        const int tile_y = static_cast<int>(rest % tiles_y);
        const long long plane = rest / tiles_y;
        const int y_begin = tile_y * rows;
        const int y_end = min(out_h, y_begin + rows);
        __syncthreads();  // the previous task's readers are done with the table
        if (static_cast<int>(threadIdx.x) < y_end - y_begin) {
            const Window<K> wy = window<M>(y_begin + static_cast<int>(threadIdx.x), in_h, scale_h, align_corners);
            row_start[threadIdx.x] = wy.start;
            PS_UNROLL
            for (int k = 0; k < K; ++k) row_weight[threadIdx.x][k] = wy.w[k];
        }
        __syncthreads();
        const int x0 = (tile_x * kBlock + static_cast<int>(threadIdx.x)) * kCols;
        if (x0 >= out_w) continue;

        int cols[kCols][K];
        float wx[kCols][K];
        PS_UNROLL
        for (int c = 0; c < kCols; ++c) {
            const Window<K> w = window<M>(min(x0 + c, out_w - 1), in_w, scale_w, align_corners);
            PS_UNROLL
            for (int k = 0; k < K; ++k) {
                cols[c][k] = clampIndex(w.start + k, in_w);
                wx[c][k] = w.w[k];
            }
        }
        const T* src = in + plane * in_h * in_w;
        T* dst = out + plane * out_h * out_w + x0;

        float h[kCols][K];  // horizontally filtered input rows cached_start .. cached_start+K-1
        int cached_start = INT_MIN;
        for (int y = y_begin; y < y_end; ++y) {
            const int start = row_start[y - y_begin];
            if (start != cached_start) {
                if (start == cached_start + 1) {
                    const T* row = src + clampIndex(start + K - 1, in_h) * in_w;
                    PS_UNROLL
                    for (int c = 0; c < kCols; ++c) {
                        PS_UNROLL
                        for (int k = 0; k + 1 < K; ++k) h[c][k] = h[c][k + 1];
                        h[c][K - 1] = filterRow<T, K>(row, cols[c], wx[c]);
                    }
                } else {
                    PS_UNROLL
                    for (int k = 0; k < K; ++k) {
                        const T* row = src + clampIndex(start + k, in_h) * in_w;
                        PS_UNROLL
                        for (int c = 0; c < kCols; ++c) h[c][k] = filterRow<T, K>(row, cols[c], wx[c]);
                    }
                }
                cached_start = start;
            }
            float wy[K];
            PS_UNROLL
            for (int k = 0; k < K; ++k) wy[k] = row_weight[y - y_begin][k];
            Pixels<T> px;
            PS_UNROLL
            for (int c = 0; c < kCols; ++c) px.v[c] = fromFloat<T>(combine<K>(wy, h[c]));
            T* d = dst + static_cast<long long>(y) * out_w;
            if (vector_store && x0 + kCols <= out_w) {
                *reinterpret_cast<Pixels<T>*>(d) = px;
            } else {
                PS_UNROLL
                for (int c = 0; c < kCols; ++c)
                    if (x0 + c < out_w) d[c] = px.v[c];
            }
        }
    }
}

template <typename T, Mode M>
Status launchTyped(const Params& p, const void* in, void* out, cudaStream_t stream) {
    const int in_h = static_cast<int>(p.in_h), in_w = static_cast<int>(p.in_w);
    const int out_h = static_cast<int>(p.out_h), out_w = static_cast<int>(p.out_w);
    const long long planes = p.batch * p.channels;
    const int tiles_x = (out_w + kBlock * kCols - 1) / (kBlock * kCols);
    // More rows per thread reuse more filtered rows; fewer keep small outputs spread over all SMs.
    int device = 0, sms = 0;
    Status s = cudaStatus(cudaGetDevice(&device), "DynamicResize: cudaGetDevice");
    if (s.ok()) s = cudaStatus(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device),
                               "DynamicResize: cudaDeviceGetAttribute");
    if (!s.ok()) return s;
    const long long threads_per_row = static_cast<long long>(tiles_x) * kBlock * planes;
    int rows = kMaxRows;
    while (rows > kMinRows && threads_per_row * ((out_h + rows - 1) / rows) < 2048LL * sms) rows /= 2;
    const int tiles_y = (out_h + rows - 1) / rows;
    const long long tasks = static_cast<long long>(tiles_x) * tiles_y * planes;
    const unsigned grid = static_cast<unsigned>(std::min<long long>(tasks, INT32_MAX));
    const bool vector_store =
        out_w % kCols == 0 && reinterpret_cast<uintptr_t>(out) % (kCols * sizeof(T)) == 0;
    resizeKernel<T, M><<<grid, kBlock, 0, stream>>>(
        static_cast<const T*>(in), static_cast<T*>(out), in_h, in_w, out_h, out_w,
        areaScale(in_h, out_h, p.align_corners), areaScale(in_w, out_w, p.align_corners), p.align_corners, rows,
        tiles_x, tiles_y, tasks, vector_store);
    return cudaStatus(cudaGetLastError(), "DynamicResize: kernel launch");
}

template <typename T>
Status launchMode(const Params& p, const void* in, void* out, cudaStream_t stream) {
    switch (p.mode) {
        case Mode::kNearest: return launchTyped<T, Mode::kNearest>(p, in, out, stream);
        case Mode::kBilinear: return launchTyped<T, Mode::kBilinear>(p, in, out, stream);
        case Mode::kBicubic: return launchTyped<T, Mode::kBicubic>(p, in, out, stream);
    }
    return Status::Error("DynamicResize: unknown mode");
}

}  // namespace

Status launch(const Params& p, DType dtype, const void* in, void* out, cudaStream_t stream) {
    Status s = validate(p);
    if (!s.ok()) return s;
    if (p.batch * p.channels == 0) return Status::Ok();
    if (in == nullptr || out == nullptr) return Status::Error("DynamicResize: input or output pointer is null");
    switch (dtype) {
        case DType::kFloat32: return launchMode<float>(p, in, out, stream);
        case DType::kFloat16: return launchMode<__half>(p, in, out, stream);
        case DType::kBFloat16: return launchMode<__nv_bfloat16>(p, in, out, stream);
    }
    return Status::Error("DynamicResize: unsupported dtype " + std::to_string(static_cast<int>(dtype)));
}

}  // namespace plugserve::dynamic_resize
