// DynamicResize CUDA kernel and launcher.
//
// Each thread owns kCols adjacent output columns of a plane and a tile of `rows` output rows; see
// resizeKernel for its two phases. Column windows are computed once per thread, the tile's row
// windows once per block, into shared memory. When upscaling horizontally, a thread's columns read
// one shared span of input pixels instead of K pixels each (SharedSpanFilter). A warp's stores are
// contiguous, vectorized when rows are aligned.
// Measured on an H100 (bench/kernels.py), fp16 being the hard case (the kernel waits on memory
// latency, and 2-byte loads and stores move half the bytes per instruction): the two phases with
// 8 resident blocks beat filtering rows while producing output (x2: 64 against 70 us) and keeping
// the filtered window in registers (72 us: 80 registers, 6 blocks); 2 or 8 columns per thread,
// 256 threads per block, 8 rows per tile and prefetching the next input row are all slower.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "common/checks.h"
#include "dynamic_resize/kernel.cuh"

namespace plugserve::dynamic_resize {
namespace {

constexpr int kBlock = 128;  // threads per block, along x
constexpr int kCols = 4;      // output columns per thread
constexpr int kMaxRows = 16;  // output rows per thread ...
constexpr int kMinRows = 4;   // ... fewer (down to this) when the GPU would otherwise idle, and
                              // fewer still (down to 1) while their filtered rows exceed kSlotBytes
constexpr size_t kSlotBytes = 40 * 1024;  // shared memory for one block's filtered rows

template <typename T>
struct alignas(sizeof(T) * kCols) Pixels {
    T v[kCols];
};

// Filters one input row at a thread's kCols output columns (x0 ..), each column reading its own
// K pixels. Right for any scale.
template <typename T, Mode M>
struct PerColumnFilter {
    static constexpr int K = Taps<M>::value;
    static constexpr int kBlocksPerSm = 5;  // the registers it needs without spilling
    int cols[kCols][K];
    float w[kCols][K];

    __device__ PerColumnFilter(int x0, int in_w, int out_w, float scale, bool align_corners) {
        PS_UNROLL
        for (int c = 0; c < kCols; ++c) {
            const Window<K> wc = window<M>(min(x0 + c, out_w - 1), in_w, scale, align_corners);
            PS_UNROLL
            for (int k = 0; k < K; ++k) {
                cols[c][k] = clampIndex(wc.start + k, in_w);
                w[c][k] = wc.w[k];
            }
        }
    }

    __device__ void operator()(const T* row, float (&filtered)[kCols]) const {
        PS_UNROLL
        for (int c = 0; c < kCols; ++c) filtered[c] = filterRow<T, K>(row, cols[c], w[c]);
    }
};

// The same result when upscaling (scale <= 1): consecutive columns' windows then start at most one
// pixel apart, so column c's taps lie at offset 0..c of one span of kCols + K - 1 pixels. Reading
// the span once (7 loads instead of 16 for bicubic, from one address when it is inside the row)
// matters because the loads, not the arithmetic, bound the fp16 kernel. Each column weights the
// span's first c + K pixels, zero before its taps, so its sum adds the same products in the same
// order as PerColumnFilter's.
template <typename T, Mode M>
struct SharedSpanFilter {
    static constexpr int K = Taps<M>::value;
    static constexpr int kSpan = kCols + K - 1;
    // Resident blocks the registers must allow (64 registers, no spills): the kernel waits on
    // memory, and more warps hide more of it.
    static constexpr int kBlocksPerSm = 8;
    int start, in_w;
    bool inside;  // the span needs no clamping
    float w[kCols][kSpan];

    __device__ SharedSpanFilter(int x0, int in_w_, int out_w, float scale, bool align_corners) : in_w(in_w_) {
        PS_UNROLL
        for (int c = 0; c < kCols; ++c) {
            const Window<K> wc = window<M>(min(x0 + c, out_w - 1), in_w, scale, align_corners);
            if (c == 0) start = wc.start;
            const int offset = wc.start - start;
            PS_UNROLL
            for (int j = 0; j < kSpan; ++j) {
                float weight = 0.f;
                PS_UNROLL
                for (int k = 0; k < K; ++k) weight = j - offset == k ? wc.w[k] : weight;
                w[c][j] = weight;
            }
        }
        inside = start >= 0 && start + kSpan <= in_w;
    }

    __device__ void operator()(const T* row, float (&filtered)[kCols]) const {
        float v[kSpan];
        if (inside) {
            const T* span = row + start;
            PS_UNROLL
            for (int j = 0; j < kSpan; ++j) v[j] = toFloat(span[j]);
        } else {
            PS_UNROLL
            for (int j = 0; j < kSpan; ++j) v[j] = toFloat(row[clampIndex(start + j, in_w)]);
        }
        PS_UNROLL
        for (int c = 0; c < kCols; ++c) {
            float s = v[0] * w[c][0];
            PS_UNROLL
            for (int j = 1; j < c + K; ++j) s += v[j] * w[c][j];
            filtered[c] = s;
        }
    }
};

// A thread's horizontally filtered input rows, in shared memory so that a row can be looked up by
// index; each thread reads back only its own, so the phases need no barrier between them.
struct alignas(sizeof(float) * kCols) Filtered {
    float v[kCols];
};

// Two phases per task (a plane's tile of `rows` output rows by kBlock * kCols columns): every input
// row the tile needs is filtered horizontally into shared memory, rows independent of each other so
// that their loads overlap; then each output row combines K of them vertically. When the row
// windows step by one pixel (upscaling), the tile's windows overlap and each input row is filtered
// once (x4 bicubic: 7 rows for 16 output rows instead of 64); otherwise each output row gets its own
// K slots.
template <typename T, Mode M, typename Filter>
__global__ void __launch_bounds__(kBlock, Filter::kBlocksPerSm)
    resizeKernel(const T* __restrict__ in, T* __restrict__ out, int in_h, int in_w, int out_h, int out_w,
                 float scale_h, float scale_w, bool align_corners, bool rows_step_by_one, int rows, int tiles_x,
                 int tiles_y, long long tasks, bool vector_store) {
    constexpr int K = Taps<M>::value;
    // Row windows are the same for every thread of a block: computed once, read from shared memory.
    __shared__ int row_start[kMaxRows];
    __shared__ float row_weight[kMaxRows][K];
    extern __shared__ Filtered filtered_rows[];  // [slot][thread]
    const int tid = static_cast<int>(threadIdx.x);
    for (long long task = blockIdx.x; task < tasks; task += gridDim.x) {
        const int tile_x = static_cast<int>(task % tiles_x);
        const long long rest = task / tiles_x;
        const int tile_y = static_cast<int>(rest % tiles_y);
        const long long plane = rest / tiles_y;
        const int y_begin = tile_y * rows;
        const int y_count = min(out_h, y_begin + rows) - y_begin;
        __syncthreads();  // the previous task's readers are done with the table
        if (tid < y_count) {
            const Window<K> wy = window<M>(y_begin + tid, in_h, scale_h, align_corners);
            row_start[tid] = wy.start;
            PS_UNROLL
            for (int k = 0; k < K; ++k) row_weight[tid][k] = wy.w[k];
        }
        __syncthreads();
        const int x0 = (tile_x * kBlock + tid) * kCols;
        if (x0 >= out_w) continue;
        const T* src = in + plane * in_h * in_w;
        const int first = row_start[0];
        const int slots = rows_step_by_one ? row_start[y_count - 1] - first + K : y_count * K;
        {
            const Filter filter(x0, in_w, out_w, scale_w, align_corners);
#pragma unroll 4
            for (int slot = 0; slot < slots; ++slot) {
                const int y = rows_step_by_one ? first + slot : row_start[slot / K] + slot % K;
                Filtered f;
                filter(src + clampIndex(y, in_h) * in_w, f.v);
                filtered_rows[slot * kBlock + tid] = f;
            }
        }
        T* dst = out + plane * out_h * out_w + x0;
        for (int r = 0; r < y_count; ++r) {
            const int slot = rows_step_by_one ? row_start[r] - first : r * K;
            float wy[K];
            float h[kCols][K];
            PS_UNROLL
            for (int k = 0; k < K; ++k) {
                wy[k] = row_weight[r][k];
                const Filtered f = filtered_rows[(slot + k) * kBlock + tid];
                PS_UNROLL
                for (int c = 0; c < kCols; ++c) h[c][k] = f.v[c];
            }
            Pixels<T> px;
            PS_UNROLL
            for (int c = 0; c < kCols; ++c) px.v[c] = fromFloat<T>(combine<K>(wy, h[c]));
            T* d = dst + static_cast<long long>(y_begin + r) * out_w;
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

// SharedSpanFilter's premise: consecutive output columns' windows start at most one pixel apart.
// True in exact arithmetic whenever scale <= 1; the rounded source coordinates (all below in_size)
// keep it when the scale leaves room for their rounding error, and are exact when the scale is 1.
bool windowsStepByOne(float scale, int in_size) {
    const double coordinate_ulp = std::ldexp(1.0, std::ilogb(static_cast<double>(in_size)) - 23);
    return scale == 1.f || static_cast<double>(scale) + coordinate_ulp <= 1.0;
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
    const float scale_h = areaScale(in_h, out_h, p.align_corners), scale_w = areaScale(in_w, out_w, p.align_corners);
    const bool rows_step_by_one = windowsStepByOne(scale_h, in_h);
    constexpr int K = Taps<M>::value;
    // Filtered-row slots a tile of `rows` output rows needs at most (one more than the windows'
    // spread, for the rounding of their starts).
    const auto slots = [&](int rows) {
        return rows_step_by_one ? static_cast<int>(std::ceil(static_cast<double>(rows - 1) * scale_h)) + K + 1
                                : rows * K;
    };
    const auto slot_bytes = [&](int rows) { return static_cast<size_t>(slots(rows)) * kBlock * sizeof(Filtered); };
    int rows = kMaxRows;
    while (rows > kMinRows && threads_per_row * ((out_h + rows - 1) / rows) < 2048LL * sms) rows /= 2;
    while (rows > 1 && slot_bytes(rows) > kSlotBytes) rows /= 2;
    const int tiles_y = (out_h + rows - 1) / rows;
    const long long tasks = static_cast<long long>(tiles_x) * tiles_y * planes;
    const unsigned grid = static_cast<unsigned>(std::min<long long>(tasks, INT32_MAX));
    const bool vector_store =
        out_w % kCols == 0 && reinterpret_cast<uintptr_t>(out) % (kCols * sizeof(T)) == 0;
    const auto kernel = windowsStepByOne(scale_w, in_w) ? resizeKernel<T, M, SharedSpanFilter<T, M>>
                                                        : resizeKernel<T, M, PerColumnFilter<T, M>>;
    kernel<<<grid, kBlock, slot_bytes(rows), stream>>>(
        static_cast<const T*>(in), static_cast<T*>(out), in_h, in_w, out_h, out_w, scale_h, scale_w,
        p.align_corners, rows_step_by_one, rows, tiles_x, tiles_y, tasks, vector_store);
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
