// MSDeformAttn: multi-scale deformable attention sampling (Deformable DETR), on the GPU and the CPU.
// The TensorRT glue and the C ABI call only these functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "common/parallel.h"
#include "common/status.h"

namespace plugserve::ms_deform_attn {

// Tensors (row-major):
//   value               [batch, num_values, num_heads, head_dim]                       DType
//   spatial_shapes      [num_levels, 2]  (H, W) per level                              IndexType
//   level_start_index   [num_levels]     first row of each level in `value`            IndexType
//   sampling_locations  [batch, num_queries, num_heads, num_levels, num_points, 2] (x, y) in [0, 1]   SamplingDType
//   attention_weights   [batch, num_queries, num_heads, num_levels, num_points]       SamplingDType
//   output              [batch, num_queries, num_heads, head_dim]                      DType
// SamplingDType is DType, or float32 with a float16/bfloat16 value (mixed precision, as mmcv accepts
// and fp16 TensorRT engines produce when the sampling offsets stay fp32). Either way coordinates and
// accumulation are fp32 and the output has value's type.
struct Params {
    int64_t batch, num_values /*S*/, num_heads /*M*/, head_dim /*D*/, num_levels /*L*/,
        num_queries /*Lq*/, num_points /*P*/;
};

// The shape the output is given. Both are the same bytes (row-major [N, Lq, M, D] is [N, Lq, M*D]),
// so the kernels take no layout: only the shape the glue reports follows it.
//   kHeadsChannels  "heads_channels"  [batch, num_queries, num_heads, head_dim]   (NVIDIA's plugin)
//   kFlat           "flat"            [batch, num_queries, num_heads * head_dim]  (Deformable DETR, mmcv, mmdeploy)
enum class OutputLayout { kHeadsChannels, kFlat };
Status parseOutputLayout(const std::string& name, OutputLayout* out);
std::vector<int64_t> outputDims(const Params&, OutputLayout);

// The combination of value's and the sampling tensors' dtypes, as above.
Status checkTypes(DType dtype, DType sampling_dtype);

// 1 <= L <= 8, P >= 1, D >= 1, M >= 1, batch/S/Lq >= 0, element counts that fit the kernels'
// 32-bit indexing. (The CUDA launcher picks its fast path where D and the points allow, kernel.cu.)
Status validate(const Params&);

// spatial_shapes and level_start_index are DEVICE pointers here (as TensorRT passes them).
// Levels whose shape or start index is inconsistent with `value` are skipped in the kernel
// (they contribute zero) instead of being read out of bounds. Asynchronous on `stream`.
Status launch(const Params&, DType dtype, DType sampling_dtype, IndexType, const void* value, const void* spatial_shapes,
              const void* level_start_index, const void* sampling_locations,
              const void* attention_weights, void* output, cudaStream_t stream);

// Host pointers. Here the indices are checked up front, and inconsistent ones are an error.
// (batch, query) pairs are spread over `parallel` when given; each is computed as on one thread.
Status runCpu(const Params&, DType dtype, DType sampling_dtype, IndexType, const void* value, const void* spatial_shapes,
              const void* level_start_index, const void* sampling_locations,
              const void* attention_weights, void* output, const ParallelFor* parallel = nullptr);

}  // namespace plugserve::ms_deform_attn
