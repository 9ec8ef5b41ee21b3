// DynamicResize CUDA kernel and launcher.
//
// Each thread owns kCols adjacent output columns of a plane and a tile of `rows` output rows; see
// resizeKernel for its two phases. Column windows are computed once per thread, the tile's row
// windows once per block, into shared memory. When upscaling horizontally, a thread's columns read
// one shared span of input pixels instead of K pixels each (SharedSpanFilter). A warp's stores are
// contiguous, vectorized when rows are aligned.
// Measured on an H100 (bench/kernels.py), fp16 being the hard case: the kernel is bound by issuing
// instructions as much as by memory (ncu: 0.72 instructions per scheduler per cycle, DRAM 26%), so
// what paid was fewer instructions: weights placed in the span by shifting, not by compare-select
// (x2 fp16: 61 -> 58 us); phase 2 reading two rows' K + 1 slots without zero-fills and selects,
// writing through a pointer that steps by a row (59 -> 53 us); one phase-1 loop per load path
// (1 us). Streaming stores keep the output from evicting the input's halo rows from L2 (64 -> 61
// us; fp32 x4 48 -> 39 us). Slower: pair loads of the span (their selects cost more than the loads
// saved), a sliding register window in phase 2 (its reads wait in a chain), 32 rows per tile, a
// persistent grid, prefetching the next input row, 2 or 8 columns per thread, 256 threads per
// block, 8 rows per tile, and keeping the filtered window in registers. On an H200, rounding the
// 16-bit outputs in pairs (roundPair) took fp16 x4 from 29.8 to 29.1 us and x2 from 52.1 to 51.4.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

#include "common/checks.h"
#include "dynamic_resize/kernel.cuh"

namespace plugserve::dynamic_resize {
namespace {

constexpr int kBlock = 128;  // threads per block, along x
constexpr int kCols = 4;      // output columns per thread, even (see roundPair)
constexpr int kMaxRows = 16;  // output rows per thread ...
constexpr int kMinRows = 4;   // ... fewer (down to this) when the GPU would otherwise idle, and
                              // fewer still (down to 1) while their filtered rows exceed kSlotBytes
constexpr size_t kSlotBytes = 40 * 1024;  // shared memory for one block's filtered rows

template <typename T>
struct alignas(sizeof(T) * kCols) Pixels {
    T v[kCols];
};

template <typename T>
__device__ void storePixels(Pixels<T>* d, const Pixels<T>& px) {
    if constexpr (sizeof(Pixels<T>) == 16) {
        __stcs(reinterpret_cast<uint4*>(d), *reinterpret_cast<const uint4*>(&px));
    } else {
        __stcs(reinterpret_cast<uint2*>(d), *reinterpret_cast<const uint2*>(&px));
    }
}

// Two adjacent pixels rounded to T; 16-bit types round both in one instruction (the same
// round-to-nearest as fromFloat) instead of one each plus the packing.
template <typename T>
__device__ void roundPair(float a, float b, T* dst) {
    if constexpr (std::is_same_v<T, __half>) {
        *reinterpret_cast<__half2*>(dst) = __floats2half2_rn(a, b);
    } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
        *reinterpret_cast<__nv_bfloat162*>(dst) = __floats2bfloat162_rn(a, b);
    } else {
        dst[0] = fromFloat<T>(a);
        dst[1] = fromFloat<T>(b);
    }
}

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

    __device__ bool clamps() const { return false; }  // cols are clamped already

    template <bool kClamp>
    __device__ void apply(const T* row, float (&filtered)[kCols]) const {
        PS_UNROLL
        for (int c = 0; c < kCols; ++c) filtered[c] = filterRow<T, K>(row, cols[c], w[c]);
    }
};

// The same result when upscaling (scale <= 1): consecutive columns' windows then start at most one
// pixel apart, so column c's taps lie at offset 0..c of one span of kCols + K - 1 pixels. Reading
// the span once (7 loads instead of 16 for bicubic, from one address when it is inside the row)
// saves both instructions and L1 traffic. Each column weights the span's first c + K pixels, zero
// before its taps, so for finite inputs its sum adds the same products in the same order as
// PerColumnFilter's (an infinite pixel up to c pixels before a column's taps makes it NaN: 0 * inf).
template <typename T, Mode M>
struct SharedSpanFilter {
    static constexpr int K = Taps<M>::value;
    static constexpr int kSpan = kCols + K - 1;
    // Resident blocks the registers must allow: 72 registers, which the unswitched phase-1 loops
    // need without spilling (at 64 they spill, and 8 blocks without them is slower on fp16 x2).
    static constexpr int kBlocksPerSm = 7;
    int start, in_w;
    bool clamp;  // the span reaches past the row's ends
    float w[kCols][kSpan];

    __device__ SharedSpanFilter(int x0, int in_w_, int out_w, float scale, bool align_corners) : in_w(in_w_) {
        PS_UNROLL
        for (int c = 0; c < kCols; ++c) {
            const Window<K> wc = window<M>(min(x0 + c, out_w - 1), in_w, scale, align_corners);
            if (c == 0) start = wc.start;
            const int offset = wc.start - start;
            PS_UNROLL
            for (int j = 0; j < kSpan; ++j) w[c][j] = j < K ? wc.w[j] : 0.f;
            // Shifted right by the taps' offset in the span (at most c): a few selects per step,
            // where placing each weight by comparing offsets took a select per tap and pixel.
            PS_UNROLL
            for (int step = 0; step < c; ++step) {
                if (step < offset) {
                    PS_UNROLL
                    for (int j = kSpan - 1; j > 0; --j) w[c][j] = w[c][j - 1];
                    w[c][0] = 0.f;
                }
            }
        }
        clamp = start < 0 || start + kSpan > in_w;
    }

    __device__ bool clamps() const { return clamp; }

    template <bool kClamp>
    __device__ void apply(const T* row, float (&filtered)[kCols]) const {
        float v[kSpan];
        if (kClamp) {
            PS_UNROLL
            for (int j = 0; j < kSpan; ++j) v[j] = toFloat(row[clampIndex(start + j, in_w)]);
        } else {
            const T* span = row + start;
            PS_UNROLL
            for (int j = 0; j < kSpan; ++j) v[j] = toFloat(span[j]);
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
// With kGivenScales, scale_h and scale_w come from `scales` (Params::scales, two floats in device
// memory, which the host never reads); a template flag, so that the size path reads nothing more.
template <typename T, Mode M, typename Filter, bool kGivenScales>
__global__ void __launch_bounds__(kBlock, Filter::kBlocksPerSm)
    resizeKernel(const T* __restrict__ in, T* __restrict__ out, int in_h, int in_w, int out_h, int out_w,
                 float scale_h, float scale_w, const float* __restrict__ scales, bool align_corners,
                 bool rows_step_by_one, int rows, int tiles_x, int tiles_y, long long tasks, bool vector_store) {
    constexpr int K = Taps<M>::value;
    if constexpr (kGivenScales) {
        scale_h = areaScale(in_h, out_h, align_corners, scales);
        scale_w = areaScale(in_w, out_w, align_corners, scales + 1);
    }
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
            // One loop per load path: branches between the unrolled slots would keep their loads
            // from overlapping.
            const auto filter_rows = [&](auto clamp) {
#pragma unroll 4
                for (int slot = 0; slot < slots; ++slot) {
                    const int y = rows_step_by_one ? first + slot : row_start[slot / K] + slot % K;
                    Filtered f;
                    filter.template apply<decltype(clamp)::value>(src + clampIndex(y, in_h) * in_w, f.v);
                    filtered_rows[slot * kBlock + tid] = f;
                }
            };
            if (filter.clamps()) {
                filter_rows(std::true_type());
            } else {
                filter_rows(std::false_type());
            }
        }
        T* row_out = out + (plane * out_h + y_begin) * out_w + x0;  // the next row store_row writes
        const bool whole_group = vector_store && x0 + kCols <= out_w;
        // Slots slot .. slot + K - 1, and slot + K when `extra`, into h's columns.
        const auto read_slots = [&](int slot, bool extra, float (&h)[kCols][K + 1]) {
            PS_UNROLL
            for (int k = 0; k <= K; ++k) {
                if (k < K || extra) {
                    const Filtered f = filtered_rows[(slot + k) * kBlock + tid];
                    PS_UNROLL
                    for (int c = 0; c < kCols; ++c) h[c][k] = f.v[c];
                }
            }
        };
        // Output row r from the K slots of h that start at `offset` (0 or 1; a constant at each call,
        // so that the inlined copies index h directly).
        const auto store_row = [&](int r, const float (&h)[kCols][K + 1], int offset) {
            float wy[K];
            PS_UNROLL
            for (int k = 0; k < K; ++k) wy[k] = row_weight[r][k];
            float sum[kCols];
            PS_UNROLL
            for (int c = 0; c < kCols; ++c) {
                float x[K];
                PS_UNROLL
                for (int k = 0; k < K; ++k) x[k] = offset ? h[c][k + 1] : h[c][k];
                sum[c] = combine<K>(wy, x);
            }
            Pixels<T> px;
            PS_UNROLL
            for (int c = 0; c < kCols; c += 2) roundPair(sum[c], sum[c + 1], &px.v[c]);
            if (whole_group) {
                storePixels(reinterpret_cast<Pixels<T>*>(row_out), px);
            } else {
                PS_UNROLL
                for (int c = 0; c < kCols; ++c)
                    if (x0 + c < out_w) row_out[c] = px.v[c];
            }
            row_out += out_w;
        };
        float h[kCols][K + 1];
        int r = 0;
        if (rows_step_by_one) {
            // Two rows at a time: their windows start at most one slot apart, so K + 1 reads serve
            // both. The step is the block's, so its branches are uniform.
            for (; r + 1 < y_count; r += 2) {
                const bool step = row_start[r + 1] != row_start[r];
                read_slots(row_start[r] - first, step, h);
                store_row(r, h, 0);
                if (step) {
                    store_row(r + 1, h, 1);
                } else {
                    store_row(r + 1, h, 0);
                }
            }
        }
        for (; r < y_count; ++r) {
            read_slots(rows_step_by_one ? row_start[r] - first : r * K, false, h);
            store_row(r, h, 0);
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
    // Given scales live on the device, so the host cannot check the step-by-one premises on them:
    // their kernel takes the paths that are right for any scale.
    const bool given_scales = p.scales != nullptr;
    const bool rows_step_by_one = !given_scales && windowsStepByOne(scale_h, in_h);
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
    const auto kernel = given_scales                    ? resizeKernel<T, M, PerColumnFilter<T, M>, true>
                        : windowsStepByOne(scale_w, in_w) ? resizeKernel<T, M, SharedSpanFilter<T, M>, false>
                                                          : resizeKernel<T, M, PerColumnFilter<T, M>, false>;
    kernel<<<grid, kBlock, slot_bytes(rows), stream>>>(
        static_cast<const T*>(in), static_cast<T*>(out), in_h, in_w, out_h, out_w, scale_h, scale_w, p.scales,
        p.align_corners, rows_step_by_one, rows, tiles_x, tiles_y, tasks, vector_store);
    return cudaStatus(cudaGetLastError(), "DynamicResize: kernel launch");
}

template <typename T>
Status launchMode(const Params& p, const void* in, void* out, cudaStream_t stream) {
    switch (p.mode) {
        case Mode::kNearest: return launchTyped<T, Mode::kNearest>(p, in, out, stream);
        case Mode::kBilinear: return launchTyped<T, Mode::kBilinear>(p, in, out, stream);
        case Mode::kBicubic: return launchTyped<T, Mode::kBicubic>(p, in, out, stream);
        case Mode::kNearestExact: return launchTyped<T, Mode::kNearestExact>(p, in, out, stream);
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
