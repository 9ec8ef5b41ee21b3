// Validation of MSDeformAttn sizes: host code shared by the CUDA launcher and the CPU implementation.
#include <string>

#include "common/checks.h"
#include "ms_deform_attn/kernel.cuh"

namespace plugserve::ms_deform_attn {

Status parseOutputLayout(const std::string& name, OutputLayout* out) {
    if (name == "heads_channels") {
        *out = OutputLayout::kHeadsChannels;
    } else if (name == "flat") {
        *out = OutputLayout::kFlat;
    } else {
        return Status::Error("MSDeformAttn: output_layout must be 'heads_channels' ([N, Lq, M, D]) or 'flat' "
                             "([N, Lq, M*D]), got '" + name + "'");
    }
    return Status::Ok();
}

std::vector<int64_t> outputDims(const Params& p, OutputLayout layout) {
    if (layout == OutputLayout::kFlat) return {p.batch, p.num_queries, p.num_heads * p.head_dim};
    return {p.batch, p.num_queries, p.num_heads, p.head_dim};
}

Status checkTypes(DType dtype, DType sampling_dtype) {
    if (sampling_dtype == dtype || sampling_dtype == DType::kFloat32) return Status::Ok();
    return Status::Error(std::string("MSDeformAttn: sampling_locations and attention_weights must be value's dtype (") +
                         dtypeName(dtype) + ") or float32, got " + dtypeName(sampling_dtype) +
                         "; cast them to float32 (coordinates are computed in float32 either way)");
}

Status validate(const Params& p) {
    const auto str = [](int64_t v) { return std::to_string(v); };
    if (p.num_levels < 1 || p.num_levels > kMaxLevels)
        return Status::Error("MSDeformAttn: number of levels must be in [1, 8] (the kernels' level table), got " +
                             str(p.num_levels) +
                             "; the op is a sum over levels: split them over calls of at most 8 and add the outputs");
    if (p.num_points < 1) return Status::Error("MSDeformAttn: number of points must be >= 1, got " + str(p.num_points));
    if (p.head_dim < 1) return Status::Error("MSDeformAttn: head dim must be >= 1, got " + str(p.head_dim));
    if (p.num_heads < 1) return Status::Error("MSDeformAttn: number of heads must be >= 1, got " + str(p.num_heads));
    if (p.batch < 0 || p.num_values < 0 || p.num_queries < 0)
        return Status::Error("MSDeformAttn: batch, number of values and number of queries must be >= 0, got " +
                             str(p.batch) + ", " + str(p.num_values) + ", " + str(p.num_queries));
    if (countInt32({p.batch, p.num_values, p.num_heads, p.head_dim}) < 0 ||
        countInt32({p.batch, p.num_queries, p.num_heads, p.num_levels, p.num_points, 2}) < 0 ||
        countInt32({p.batch, p.num_queries, p.num_heads, p.head_dim}) < 0)
        return Status::Error("MSDeformAttn: tensors of more than 2^31-1 elements are not supported (batch " +
                             str(p.batch) + ", values " + str(p.num_values) + ", queries " + str(p.num_queries) + ")");
    return Status::Ok();
}

}  // namespace plugserve::ms_deform_attn
