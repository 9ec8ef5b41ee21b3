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
};

// Spatial sizes >= 1, batch and channels >= 0 (an empty tensor is a no-op), element counts
// that fit the kernels' 32-bit indexing, and align_corners only with bilinear or bicubic
// (PyTorch rejects it with nearest, so a graph asking for it is wrong).
Status validate(const Params&);
// Asynchronous on `stream`; `in` and `out` are device pointers. Validates first.
Status launch(const Params&, DType, const void* in, void* out, cudaStream_t stream);
// Same result on host pointers (the reference for the tests and the CPU path of the torch op);
// output rows are spread over `parallel` when given.
Status runCpu(const Params&, DType, const void* in, void* out, const ParallelFor* parallel = nullptr);

// "nearest" | "bilinear" | "bicubic" | "nearest-exact" (PyTorch's names, exact).
Status parseMode(const char* name, Mode* mode);
const char* modeName(Mode);

}  // namespace plugserve::dynamic_resize
