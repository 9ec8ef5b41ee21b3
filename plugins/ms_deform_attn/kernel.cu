// MSDeformAttn CUDA kernel and launcher.
//
// A group of D / kVec threads owns one (batch, query, head); each thread accumulates kVec
// channels in fp32 and reads each corner as 32-byte vectors where D and alignment allow, so a
// sampling point costs a few wide loads instead of the 4 * D scalar loads of the Deformable-DETR
// kernel, and fewer threads repeat the corner arithmetic. The attention weight is folded into
// the four corner weights. Measured on an H100 (bench/kernels.py), against 16-byte slices,
// query-major thread order and batching the loads of several points: this was the fastest.
#include <algorithm>
#include <cstdint>
#include <string>

#include "common/checks.h"
#include "ms_deform_attn/kernel.cuh"

namespace plugserve::ms_deform_attn {
namespace {

constexpr int kBlock = 256;

template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) Vec {
    T v[kVec];
};

template <typename T, typename IndexT, int kVec>
__global__ void __launch_bounds__(kBlock)
    msdaKernel(const T* __restrict__ value, const IndexT* __restrict__ spatial_shapes,
               const IndexT* __restrict__ level_start_index, const T* __restrict__ sampling_locations,
               const T* __restrict__ attention_weights, T* __restrict__ output, int num_values, int num_heads,
               int head_dim, int num_levels, int num_queries, int num_points, long long groups) {
    __shared__ Level levels[kMaxLevels];
    if (threadIdx.x < num_levels) {
        const int l = threadIdx.x;
        levels[l] = makeLevel(static_cast<int64_t>(spatial_shapes[2 * l]), static_cast<int64_t>(spatial_shapes[2 * l + 1]),
                              static_cast<int64_t>(level_start_index[l]), num_values);
    }
    __syncthreads();

    const int threads_per_group = head_dim / kVec;
    const long long tid = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    const long long g = tid / threads_per_group;
    if (g >= groups) return;
    const int lane = static_cast<int>(tid - g * threads_per_group);
    const int group = static_cast<int>(g);  // (batch, query, head), head fastest
    const int head = group % num_heads;
    const int batch = group / num_heads / num_queries;
    const int row_stride = num_heads * head_dim;

    const T* vhead = value + static_cast<long long>(batch) * num_values * row_stride + head * head_dim + lane * kVec;
    const int samples = num_levels * num_points;
    const T* loc = sampling_locations + static_cast<long long>(group) * samples * 2;
    const T* attn = attention_weights + static_cast<long long>(group) * samples;

    float acc[kVec];
    PS_UNROLL
    for (int j = 0; j < kVec; ++j) acc[j] = 0.f;

    for (int l = 0; l < num_levels; ++l) {
        const Level lv = levels[l];
        if (lv.h == 0) continue;
        const T* vlevel = vhead + static_cast<long long>(lv.start) * row_stride;
        for (int p = 0; p < num_points; ++p) {
            const int i = l * num_points + p;
            const Corners c = bilinearCorners(toFloat(loc[2 * i]), toFloat(loc[2 * i + 1]), lv.h, lv.w);
            const float a = toFloat(attn[i]);
            PS_UNROLL
            for (int k = 0; k < 4; ++k) {
                if (c.row[k] < 0) continue;
                const Vec<T, kVec> v =
                    *reinterpret_cast<const Vec<T, kVec>*>(vlevel + static_cast<long long>(c.row[k]) * row_stride);
                const float w = a * c.w[k];
                PS_UNROLL
                for (int j = 0; j < kVec; ++j) acc[j] += toFloat(v.v[j]) * w;
            }
        }
    }
    Vec<T, kVec> o;
    PS_UNROLL
    for (int j = 0; j < kVec; ++j) o.v[j] = fromFloat<T>(acc[j]);
    *reinterpret_cast<Vec<T, kVec>*>(output + static_cast<long long>(group) * head_dim + lane * kVec) = o;
}

bool aligned(const void* ptr, int bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; }

template <typename T, typename IndexT, int kVec>
Status launchVec(const Params& p, const void* value, const void* spatial_shapes, const void* level_start_index,
                 const void* loc, const void* attn, void* out, long long min_threads, cudaStream_t stream) {
    const long long groups = p.batch * p.num_queries * p.num_heads;
    const long long threads = groups * (p.head_dim / kVec);
    // Small problems (decoder queries) in small blocks, so that they still reach every SM.
    const int block = threads >= min_threads ? kBlock : kBlock / 4;
    const unsigned blocks = static_cast<unsigned>((threads + block - 1) / block);
    msdaKernel<T, IndexT, kVec><<<blocks, block, 0, stream>>>(
        static_cast<const T*>(value), static_cast<const IndexT*>(spatial_shapes),
        static_cast<const IndexT*>(level_start_index), static_cast<const T*>(loc), static_cast<const T*>(attn),
        static_cast<T*>(out), static_cast<int>(p.num_values), static_cast<int>(p.num_heads),
        static_cast<int>(p.head_dim), static_cast<int>(p.num_levels), static_cast<int>(p.num_queries),
        static_cast<int>(p.num_points), groups);
    return cudaStatus(cudaGetLastError(), "MSDeformAttn: kernel launch");
}

// The widest per-thread slice, from 32 bytes (two 16-byte loads per corner) down to two
// elements, that divides the head dim and the pointers' alignment, unless that leaves too few
// threads to fill the GPU (decoder-sized problems): then narrower slices, more threads.
template <typename T, typename IndexT, int kVec = 32 / sizeof(T)>
Status launchTyped(const Params& p, const void* value, const void* shapes, const void* starts, const void* loc,
                   const void* attn, void* out, long long min_threads, cudaStream_t stream) {
    const int bytes = kVec * static_cast<int>(sizeof(T));
    const long long threads = p.batch * p.num_queries * p.num_heads * (p.head_dim / kVec);
    if (p.head_dim % kVec == 0 && aligned(value, bytes) && aligned(out, bytes) && (kVec == 2 || threads >= min_threads))
        return launchVec<T, IndexT, kVec>(p, value, shapes, starts, loc, attn, out, min_threads, stream);
    if constexpr (kVec > 2) {
        return launchTyped<T, IndexT, kVec / 2>(p, value, shapes, starts, loc, attn, out, min_threads, stream);
    } else {
        return Status::Error("MSDeformAttn: value and output must be aligned to " + std::to_string(bytes) +
                             " bytes (two elements)");
    }
}

template <typename T>
Status launchIndex(const Params& p, IndexType index_type, const void* value, const void* shapes, const void* starts,
                   const void* loc, const void* attn, void* out, cudaStream_t stream) {
    int device = 0, sms = 0;
    Status s = cudaStatus(cudaGetDevice(&device), "MSDeformAttn: cudaGetDevice");
    if (s.ok()) s = cudaStatus(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device),
                               "MSDeformAttn: cudaDeviceGetAttribute");
    if (!s.ok()) return s;
    const long long min_threads = 1024LL * sms;
    switch (index_type) {
        case IndexType::kInt32:
            return launchTyped<T, int32_t>(p, value, shapes, starts, loc, attn, out, min_threads, stream);
        case IndexType::kInt64:
            return launchTyped<T, int64_t>(p, value, shapes, starts, loc, attn, out, min_threads, stream);
    }
    return Status::Error("MSDeformAttn: unsupported index type " + std::to_string(static_cast<int>(index_type)));
}

}  // namespace

Status launch(const Params& p, DType dtype, IndexType index_type, const void* value, const void* spatial_shapes,
              const void* level_start_index, const void* sampling_locations, const void* attention_weights,
              void* output, cudaStream_t stream) {
    Status s = validate(p);
    if (!s.ok()) return s;
    if (index_type != IndexType::kInt32 && index_type != IndexType::kInt64)
        return Status::Error("MSDeformAttn: unsupported index type " + std::to_string(static_cast<int>(index_type)));
    if (p.batch * p.num_queries == 0) return Status::Ok();
    if (value == nullptr || spatial_shapes == nullptr || level_start_index == nullptr ||
        sampling_locations == nullptr || attention_weights == nullptr || output == nullptr)
        return Status::Error("MSDeformAttn: a data pointer is null");
    switch (dtype) {
        case DType::kFloat32:
            return launchIndex<float>(p, index_type, value, spatial_shapes, level_start_index, sampling_locations,
                                      attention_weights, output, stream);
        case DType::kFloat16:
            return launchIndex<__half>(p, index_type, value, spatial_shapes, level_start_index, sampling_locations,
                                       attention_weights, output, stream);
        case DType::kBFloat16:
            return launchIndex<__nv_bfloat16>(p, index_type, value, spatial_shapes, level_start_index,
                                              sampling_locations, attention_weights, output, stream);
    }
    return Status::Error("MSDeformAttn: unsupported dtype " + std::to_string(static_cast<int>(dtype)));
}

}  // namespace plugserve::ms_deform_attn
