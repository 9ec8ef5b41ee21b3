// MSDeformAttn on the CPU: the same corner math as the CUDA kernel. Unlike the kernel, which
// can only skip a bad level, the CPU path sees the index tensors and rejects inconsistent ones.
#include <algorithm>
#include <string>
#include <vector>

#include "ms_deform_attn/kernel.cuh"

namespace plugserve::ms_deform_attn {
namespace {

// One (batch, query) per task: every head of it, so that a task reads its sampling locations and
// writes its output row contiguously.
// T: value and output; TS: sampling locations and attention weights (T, or float for mixed precision).
template <typename T, typename TS>
void msdaCpu(const Params& p, const Level* levels, const T* value, const TS* loc, const TS* attn, T* out,
             const ParallelFor* parallel) {
    const int M = static_cast<int>(p.num_heads), D = static_cast<int>(p.head_dim);
    const int L = static_cast<int>(p.num_levels), P = static_cast<int>(p.num_points);
    const int64_t row_stride = static_cast<int64_t>(M) * D;
    parallelFor(parallel, static_cast<size_t>(p.batch * p.num_queries), [&](size_t task) {
        const int64_t n = static_cast<int64_t>(task) / p.num_queries;
        const T* vbatch = value + n * p.num_values * row_stride;
        std::vector<float> acc(static_cast<size_t>(D));  // any D: one allocation per task of M*L*P*4*D FMAs
        for (int m = 0; m < M; ++m) {
            const int64_t group = static_cast<int64_t>(task) * M + m;
            const TS* gl = loc + group * L * P * 2;
            const TS* ga = attn + group * L * P;
            const T* vhead = vbatch + static_cast<int64_t>(m) * D;
            std::fill(acc.begin(), acc.end(), 0.f);
            for (int l = 0; l < L; ++l) {
                for (int pt = 0; pt < P; ++pt) {
                    const int i = l * P + pt;
                    const Corners c =
                        bilinearCorners(toFloat(gl[2 * i]), toFloat(gl[2 * i + 1]), levels[l].h, levels[l].w);
                    const float a = toFloat(ga[i]);
                    // Same order as the kernel: the attention weight folded into each corner's.
                    for (int k = 0; k < 4; ++k) {
                        if (c.row[k] < 0) continue;
                        const T* v = vhead + (levels[l].start + c.row[k]) * row_stride;
                        const float w = a * c.w[k];
                        for (int d = 0; d < D; ++d) acc[d] += toFloat(v[d]) * w;
                    }
                }
            }
            T* o = out + group * D;
            for (int d = 0; d < D; ++d) o[d] = fromFloat<T>(acc[d]);
        }
    });
}

template <typename IndexT>
Status readLevels(const Params& p, const void* spatial_shapes, const void* level_start_index, Level* levels) {
    const IndexT* shapes = static_cast<const IndexT*>(spatial_shapes);
    const IndexT* starts = static_cast<const IndexT*>(level_start_index);
    for (int l = 0; l < p.num_levels; ++l) {
        levels[l] = makeLevel(shapes[2 * l], shapes[2 * l + 1], starts[l], p.num_values);
        if (levels[l].h == 0)
            return Status::Error("MSDeformAttn: level " + std::to_string(l) + " (shape " +
                                 std::to_string(shapes[2 * l]) + "x" + std::to_string(shapes[2 * l + 1]) +
                                 ", start " + std::to_string(starts[l]) + ") does not fit in value's " +
                                 std::to_string(p.num_values) + " rows");
    }
    return Status::Ok();
}

template <typename T, typename TS>
void run(const Params& p, const Level* levels, const void* value, const void* loc, const void* attn, void* out,
         const ParallelFor* parallel) {
    msdaCpu<T, TS>(p, levels, static_cast<const T*>(value), static_cast<const TS*>(loc), static_cast<const TS*>(attn),
                   static_cast<T*>(out), parallel);
}

// The sampling tensors in float32, or in value's own type.
template <typename T>
void runSampling(const Params& p, DType sampling_dtype, const Level* levels, const void* value, const void* loc,
                 const void* attn, void* out, const ParallelFor* parallel) {
    if (sampling_dtype == DType::kFloat32) {
        run<T, float>(p, levels, value, loc, attn, out, parallel);
    } else {
        run<T, T>(p, levels, value, loc, attn, out, parallel);
    }
}

}  // namespace

Status runCpu(const Params& p, DType dtype, DType sampling_dtype, IndexType index_type, const void* value,
              const void* spatial_shapes, const void* level_start_index, const void* sampling_locations,
              const void* attention_weights, void* output, const ParallelFor* parallel) {
    Status s = validate(p);
    if (s.ok()) s = checkTypes(dtype, sampling_dtype);
    if (!s.ok()) return s;
    if (spatial_shapes == nullptr || level_start_index == nullptr)
        return Status::Error("MSDeformAttn: spatial_shapes or level_start_index pointer is null");
    Level levels[kMaxLevels];
    switch (index_type) {
        case IndexType::kInt32: s = readLevels<int32_t>(p, spatial_shapes, level_start_index, levels); break;
        case IndexType::kInt64: s = readLevels<int64_t>(p, spatial_shapes, level_start_index, levels); break;
        default: s = Status::Error("MSDeformAttn: unsupported index type " + std::to_string(static_cast<int>(index_type)));
    }
    if (!s.ok()) return s;
    if (p.batch * p.num_queries == 0) return Status::Ok();
    if (value == nullptr || sampling_locations == nullptr || attention_weights == nullptr || output == nullptr)
        return Status::Error("MSDeformAttn: a data pointer is null");
    const void *loc = sampling_locations, *attn = attention_weights;
    switch (dtype) {
        case DType::kFloat32: runSampling<float>(p, sampling_dtype, levels, value, loc, attn, output, parallel); break;
        case DType::kFloat16: runSampling<__half>(p, sampling_dtype, levels, value, loc, attn, output, parallel); break;
        case DType::kBFloat16:
            runSampling<__nv_bfloat16>(p, sampling_dtype, levels, value, loc, attn, output, parallel);
            break;
        default: return Status::Error("MSDeformAttn: unsupported dtype " + std::to_string(static_cast<int>(dtype)));
    }
    return Status::Ok();
}

}  // namespace plugserve::ms_deform_attn
