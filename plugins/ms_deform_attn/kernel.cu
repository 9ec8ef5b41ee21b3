// MSDeformAttn CUDA kernel and launcher.
//
// A segment of threads owns one (batch, query, head): D / kVec lanes, each accumulating kVec
// channels in fp32 and reading each corner as one vector of up to 32 bytes, times `splits` lanes
// that share out the group's L * P sampling points and add their partial sums by warp shuffles at
// the end. The launch plan picks the widest slice that D and the alignment allow and then as many
// splits as it takes to fill the GPU, so an encoder (many queries) runs one lane per slice and a
// decoder (a few hundred queries) spreads each query's points over a warp instead of walking them
// one after another. The attention weight is folded into the four corner weights. Measured on an
// H200 (bench/kernels.py --ab, README.md): splitting the points took the decoder at N=1, Lq=300
// from 11.9 to 5.0 us and left the encoder as it was; 16- or 64-byte slices, batching two points'
// loads per lane (122 registers), 1024-thread blocks and splitting the encoder's points too were
// slower on the encoder or the larger decoders.
//
// The general path, for what the measured shapes never needed, is the same kernel with two
// template switches and so leaves the fast path's code as it was: more than kTableSamples points
// per group (P = 32 with 8 levels) keep one table entry per level and find a point's level by a
// division; a head dim that no 2-element slice divides (odd D, or pointers aligned to one element)
// runs one channel per lane (kVec = 1).
#include <algorithm>
#include <cstdint>
#include <string>

#include "common/checks.h"
#include "ms_deform_attn/kernel.cuh"

namespace plugserve::ms_deform_attn {
namespace {

constexpr int kBlock = 256;
constexpr int kWarp = 32;
// The fast path's table of every sampling point's level holds this many (8 levels x 16 points).
constexpr int kTableSamples = 128;

template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) Vec {
    T v[kVec];
};

// T: value and output; TS: sampling locations and attention weights (T, or float for mixed precision).
template <typename T, typename TS, typename IndexT, int kVec, bool kPointTable>
__global__ void __launch_bounds__(kBlock)
    msdaKernel(const T* __restrict__ value, const IndexT* __restrict__ spatial_shapes,
               const IndexT* __restrict__ level_start_index, const TS* __restrict__ sampling_locations,
               const TS* __restrict__ attention_weights, T* __restrict__ output, int num_values, int num_heads,
               int head_dim, int num_levels, int num_queries, int num_points, int splits, long long groups) {
    // kPointTable: the level of every sampling point, so that a lane's points need no division by P.
    // Else (more points than the table holds) one entry per level.
    __shared__ Level level_of[kPointTable ? kTableSamples : kMaxLevels];
    const int samples = num_levels * num_points;
    const int entries = kPointTable ? samples : num_levels;
    for (int i = threadIdx.x; i < entries; i += blockDim.x) {
        const int l = kPointTable ? i / num_points : i;
        level_of[i] = makeLevel(static_cast<int64_t>(spatial_shapes[2 * l]),
                                static_cast<int64_t>(spatial_shapes[2 * l + 1]),
                                static_cast<int64_t>(level_start_index[l]), num_values);
    }
    __syncthreads();

    const int lanes = head_dim / kVec;
    const int segment = lanes * splits;
    const long long tid = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    const long long g = tid / segment;
    const int in_segment = static_cast<int>(tid - g * segment);
    const int lane = in_segment % lanes, split = in_segment / lanes;
    // Lanes past the last group stay for the shuffles below; splits > 1 only when segments tile warps.
    const bool active = g < groups;
    const int group = active ? static_cast<int>(g) : 0;  // (batch, query, head), head fastest
    const int head = group % num_heads;
    const int batch = group / num_heads / num_queries;
    const int row_stride = num_heads * head_dim;

    const T* vhead = value + static_cast<long long>(batch) * num_values * row_stride + head * head_dim + lane * kVec;
    const TS* loc = sampling_locations + static_cast<long long>(group) * samples * 2;
    const TS* attn = attention_weights + static_cast<long long>(group) * samples;

    float acc[kVec];
    PS_UNROLL
    for (int j = 0; j < kVec; ++j) acc[j] = 0.f;

    for (int i = active ? split : samples; i < samples; i += splits) {
        const Level lv = level_of[kPointTable ? i : i / num_points];
        if (lv.h == 0) continue;
        const Corners c = bilinearCorners(toFloat(loc[2 * i]), toFloat(loc[2 * i + 1]), lv.h, lv.w);
        const float a = toFloat(attn[i]);
        const T* vlevel = vhead + lv.start * row_stride;
        PS_UNROLL
        for (int k = 0; k < 4; ++k) {
            if (c.row[k] < 0) continue;
            const Vec<T, kVec> v = *reinterpret_cast<const Vec<T, kVec>*>(vlevel + c.row[k] * row_stride);
            const float w = a * c.w[k];
            PS_UNROLL
            for (int j = 0; j < kVec; ++j) acc[j] += toFloat(v.v[j]) * w;
        }
    }
    for (int stride = lanes; stride < segment; stride *= 2) {
        PS_UNROLL
        for (int j = 0; j < kVec; ++j) acc[j] += __shfl_xor_sync(0xffffffffu, acc[j], stride);
    }
    if (!active || split != 0) return;
    Vec<T, kVec> o;
    PS_UNROLL
    for (int j = 0; j < kVec; ++j) o.v[j] = fromFloat<T>(acc[j]);
    *reinterpret_cast<Vec<T, kVec>*>(output + static_cast<long long>(group) * head_dim + lane * kVec) = o;
}

bool aligned(const void* ptr, int bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; }

// Splits of each group's points: doubled while the GPU would hold fewer than `min_threads` lanes,
// as long as segments stay powers of two within a warp (the shuffles' reach) and each split keeps
// a point.
int splitsFor(const Params& p, int lanes, long long min_threads) {
    if ((lanes & (lanes - 1)) != 0) return 1;
    const long long groups = p.batch * p.num_queries * p.num_heads;
    const int samples = static_cast<int>(p.num_levels * p.num_points);
    int splits = 1;
    while (groups * lanes * splits < min_threads && lanes * splits * 2 <= kWarp && splits * 2 <= samples) splits *= 2;
    return splits;
}

template <typename T, typename TS, typename IndexT, int kVec>
Status launchVec(const Params& p, const void* value, const void* spatial_shapes, const void* level_start_index,
                 const void* loc, const void* attn, void* out, long long min_threads, cudaStream_t stream) {
    const long long groups = p.batch * p.num_queries * p.num_heads;
    const int lanes = static_cast<int>(p.head_dim / kVec);
    const int splits = splitsFor(p, lanes, min_threads);
    const long long threads = groups * lanes * splits;
    // Small problems (decoder queries) in small blocks, so that they still reach every SM.
    const int block = threads >= min_threads ? kBlock : kBlock / 4;
    const unsigned blocks = static_cast<unsigned>((threads + block - 1) / block);
    const auto kernel = p.num_levels * p.num_points <= kTableSamples ? msdaKernel<T, TS, IndexT, kVec, true>
                                                                     : msdaKernel<T, TS, IndexT, kVec, false>;
    kernel<<<blocks, block, 0, stream>>>(
        static_cast<const T*>(value), static_cast<const IndexT*>(spatial_shapes),
        static_cast<const IndexT*>(level_start_index), static_cast<const TS*>(loc), static_cast<const TS*>(attn),
        static_cast<T*>(out), static_cast<int>(p.num_values), static_cast<int>(p.num_heads),
        static_cast<int>(p.head_dim), static_cast<int>(p.num_levels), static_cast<int>(p.num_queries),
        static_cast<int>(p.num_points), splits, groups);
    return cudaStatus(cudaGetLastError(), "MSDeformAttn: kernel launch");
}

// The widest per-lane slice, from kSliceBytes down to one element (the general path), that divides
// the head dim and the pointers' alignment.
constexpr int kSliceBytes = 32;  // two 16-byte loads per corner
template <typename T, typename TS, typename IndexT, int kVec = kSliceBytes / sizeof(T)>
Status launchTyped(const Params& p, const void* value, const void* shapes, const void* starts, const void* loc,
                   const void* attn, void* out, long long min_threads, cudaStream_t stream) {
    const int bytes = kVec * static_cast<int>(sizeof(T));
    if (p.head_dim % kVec == 0 && aligned(value, bytes) && aligned(out, bytes))
        return launchVec<T, TS, IndexT, kVec>(p, value, shapes, starts, loc, attn, out, min_threads, stream);
    if constexpr (kVec > 1) {
        return launchTyped<T, TS, IndexT, kVec / 2>(p, value, shapes, starts, loc, attn, out, min_threads, stream);
    } else {
        return Status::Error("MSDeformAttn: value and output must be aligned to their element size (" +
                             std::to_string(bytes) + " bytes); pass tensors as an allocator returns them, or copies");
    }
}

template <typename T, typename TS>
Status launchIndex(const Params& p, IndexType index_type, const void* value, const void* shapes, const void* starts,
                   const void* loc, const void* attn, void* out, cudaStream_t stream) {
    int device = 0, sms = 0;
    Status s = cudaStatus(cudaGetDevice(&device), "MSDeformAttn: cudaGetDevice");
    if (s.ok()) s = cudaStatus(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device),
                               "MSDeformAttn: cudaDeviceGetAttribute");
    if (!s.ok()) return s;
    const long long min_threads = 2048LL * sms;  // as many lanes as the SMs hold
    switch (index_type) {
        case IndexType::kInt32:
            return launchTyped<T, TS, int32_t>(p, value, shapes, starts, loc, attn, out, min_threads, stream);
        case IndexType::kInt64:
            return launchTyped<T, TS, int64_t>(p, value, shapes, starts, loc, attn, out, min_threads, stream);
    }
    return Status::Error("MSDeformAttn: unsupported index type " + std::to_string(static_cast<int>(index_type)));
}

// The sampling tensors in float32, or in value's own type.
template <typename T>
Status launchSampling(const Params& p, DType sampling_dtype, IndexType index_type, const void* value,
                      const void* shapes, const void* starts, const void* loc, const void* attn, void* out,
                      cudaStream_t stream) {
    if (sampling_dtype == DType::kFloat32)
        return launchIndex<T, float>(p, index_type, value, shapes, starts, loc, attn, out, stream);
    return launchIndex<T, T>(p, index_type, value, shapes, starts, loc, attn, out, stream);
}

}  // namespace

Status launch(const Params& p, DType dtype, DType sampling_dtype, IndexType index_type, const void* value,
              const void* spatial_shapes, const void* level_start_index, const void* sampling_locations,
              const void* attention_weights, void* output, cudaStream_t stream) {
    Status s = validate(p);
    if (s.ok()) s = checkTypes(dtype, sampling_dtype);
    if (!s.ok()) return s;
    if (index_type != IndexType::kInt32 && index_type != IndexType::kInt64)
        return Status::Error("MSDeformAttn: unsupported index type " + std::to_string(static_cast<int>(index_type)));
    if (p.batch * p.num_queries == 0) return Status::Ok();
    if (value == nullptr || spatial_shapes == nullptr || level_start_index == nullptr ||
        sampling_locations == nullptr || attention_weights == nullptr || output == nullptr)
        return Status::Error("MSDeformAttn: a data pointer is null");
    switch (dtype) {
        case DType::kFloat32:
            return launchSampling<float>(p, sampling_dtype, index_type, value, spatial_shapes, level_start_index,
                                         sampling_locations, attention_weights, output, stream);
        case DType::kFloat16:
            return launchSampling<__half>(p, sampling_dtype, index_type, value, spatial_shapes, level_start_index,
                                          sampling_locations, attention_weights, output, stream);
        case DType::kBFloat16:
            return launchSampling<__nv_bfloat16>(p, sampling_dtype, index_type, value, spatial_shapes,
                                                 level_start_index, sampling_locations, attention_weights, output,
                                                 stream);
    }
    return Status::Error("MSDeformAttn: unsupported dtype " + std::to_string(static_cast<int>(dtype)));
}

}  // namespace plugserve::ms_deform_attn
