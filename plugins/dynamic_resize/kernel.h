// DynamicResize: F.interpolate (antialias off) on NCHW tensors, on the GPU and the CPU.
// The TensorRT glue and the C ABI call only these functions.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "common/parallel.h"
#include "common/status.h"

namespace plugserve::dynamic_resize {

enum class Mode { kNearest, kBilinear, kBicubic, kNearestExact };

struct Params {
    int64_t batch, channels, in_h, in_w, out_h, out_w;
    Mode mode;
    bool align_corners;
    // Null: source coordinates scale by in/out (F.interpolate(size=...)). Else two floats (h, w),
    // device memory for launch and host memory for runCpu: coordinates scale by 1/scale, as ONNX
    // Resize with scales and F.interpolate(scale_factor=..., recompute_scale_factor=False) do
    // (align_corners ignores them, as both do). The output size still comes from out_h, out_w.
    const float* scales = nullptr;
};

// Spatial sizes >= 1, batch and channels >= 0 (an empty tensor is a no-op), element counts
// that fit the kernels' 32-bit indexing, and align_corners only with bilinear or bicubic
// (PyTorch rejects it with nearest, so a graph asking for it is wrong).
Status validate(const Params&);
// Asynchronous on `stream`; `in` and `out` are device pointers. Validates first.
Status launch(const Params&, DType, const void* in, void* out, cudaStream_t stream);
// Same result on host pointers (the reference for the tests and the CPU path of the torch op);
// output rows are spread over `parallel` when given. Scales must be finite and > 0 (checked here;
// the GPU cannot tell the host, so there they are the caller's to check).
Status runCpu(const Params&, DType, const void* in, void* out, const ParallelFor* parallel = nullptr);

// "nearest" | "bilinear" | "bicubic" | "nearest-exact" (PyTorch's names, exact).
Status parseMode(const char* name, Mode* mode);
const char* modeName(Mode);
// The coordinate_scale attribute: "size" (coordinates scale by in/out) or "scales" (by the given
// scales, Params::scales).
Status parseCoordinateScale(const char* name, bool* given_scales);

}  // namespace plugserve::dynamic_resize
