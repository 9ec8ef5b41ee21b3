// What the ONNX Runtime glue (custom_ops.cpp) does with an op's tensors once ORT has handed them
// over: shape checks, output dims, and the call into the CPU implementation or the CUDA launcher.
// Kept free of ORT types so that tests/plugins/ort_args_check.cpp can drive both device paths
// without ONNX Runtime (and the CUDA path without a GPU: it must reach the launcher, which then
// reports that no device is there).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/parallel.h"
#include "common/status.h"
#include "dynamic_resize/kernel.h"
#include "ms_deform_attn/kernel.h"

namespace plugserve::ort {

enum class Device { kCpu, kCuda };

// ONNX TensorProto element types, the codes ORT's ONNXTensorElementDataType shares.
constexpr int kFloat = 1, kInt32 = 6, kInt64 = 7, kFloat16 = 10, kBFloat16 = 16;

struct Tensor {
    int elem_type;
    std::vector<int64_t> dims;
    const void* data;
};

struct ResizeAttrs {
    dynamic_resize::Mode mode;
    bool align_corners;
    bool given_scales;  // coordinate_scale "scales": the third input holds them
};

// From the node's attributes, once per kernel; a null pointer is an attribute the node lacks
// (coordinate_scale is optional, "size" by default).
Status parseResizeAttrs(const std::string* mode, const int64_t* align_corners, const std::string* coordinate_scale,
                        ResizeAttrs* out);

// Inputs: x [N, C, H, W], size [2] (its values in host memory on every device), and with given_scales
// scales float32 [2] (h, w) in the memory of x, else null.
Status resizeOutputDims(const Tensor& x, const Tensor& size, std::vector<int64_t>* out);
Status runResize(Device, const ResizeAttrs&, const Tensor& x, const Tensor& size, const Tensor* scales, void* y,
                 void* stream, const ParallelFor* parallel);

// Inputs: value, spatial_shapes, level_start_index, sampling_locations, attention_weights.
constexpr size_t kMsdaInputs = 5;
Status msdaOutputDims(const Tensor (&in)[kMsdaInputs], ms_deform_attn::OutputLayout, std::vector<int64_t>* out);
Status runMsda(Device, const Tensor (&in)[kMsdaInputs], void* output, void* stream, const ParallelFor* parallel);

// Inputs the kernel reads in host memory whatever the device: ORT copies them there first.
// DynamicResize's size decides the output shape, so it is read before anything is launched.
bool resizeInputOnHost(size_t index);

}  // namespace plugserve::ort
