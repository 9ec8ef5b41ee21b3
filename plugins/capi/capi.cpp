// extern "C" wrappers over the kernels: argument decoding, Status -> code + thread-local
// message, and no exception ever crossing the boundary.
#include "capi/plugserve.h"

#include <exception>
#include <string>

#include <cuda_runtime_api.h>

#include "dynamic_resize/kernel.h"
#include "ms_deform_attn/kernel.h"

#ifndef PLUGSERVE_VERSION
#error "PLUGSERVE_VERSION must be defined by the build"
#endif
#ifndef PLUGSERVE_CUDA_ARCHS
#error "PLUGSERVE_CUDA_ARCHS must be defined by the build"
#endif
#ifndef PLUGSERVE_TENSORRT
#error "PLUGSERVE_TENSORRT must be defined by the build"
#endif

#define PLUGSERVE_API extern "C" __attribute__((visibility("default")))

namespace {

using plugserve::DType;
using plugserve::IndexType;
using plugserve::Status;

thread_local std::string g_last_error;

int finish(const Status& s) {
    if (s.ok()) {
        g_last_error.clear();
        return PLUGSERVE_OK;
    }
    g_last_error = s.message;
    return s.code;
}

template <typename F>
int guarded(F&& body) {
    try {
        return finish(body());
    } catch (const std::exception& e) {
        return finish(Status::Error(plugserve::StatusCode::kInternal, std::string("plugserve: ") + e.what()));
    } catch (...) {
        return finish(Status::Error(plugserve::StatusCode::kInternal, "plugserve: unknown exception"));
    }
}

Status toDType(int code, const char* op, DType* out) {
    switch (code) {
        case PLUGSERVE_FLOAT32: *out = DType::kFloat32; return Status::Ok();
        case PLUGSERVE_FLOAT16: *out = DType::kFloat16; return Status::Ok();
        case PLUGSERVE_BFLOAT16: *out = DType::kBFloat16; return Status::Ok();
    }
    return Status::Error(std::string(op) + ": unsupported dtype code " + std::to_string(code) +
                         " (0 float32, 1 float16, 2 bfloat16)");
}

Status toIndexType(int code, IndexType* out) {
    switch (code) {
        case PLUGSERVE_INT32: *out = IndexType::kInt32; return Status::Ok();
        case PLUGSERVE_INT64: *out = IndexType::kInt64; return Status::Ok();
    }
    return Status::Error("MSDeformAttn: unsupported index type code " + std::to_string(code) + " (0 int32, 1 int64)");
}

Status resizeArgs(int64_t batch, int64_t channels, int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w,
                  const char* mode, int align_corners, const float* scales, int dtype,
                  plugserve::dynamic_resize::Params* p, DType* t) {
    plugserve::dynamic_resize::Mode m;
    Status s = plugserve::dynamic_resize::parseMode(mode, &m);
    if (!s.ok()) return s;
    *p = {batch, channels, in_h, in_w, out_h, out_w, m, align_corners != 0, scales};
    return toDType(dtype, "DynamicResize", t);
}

Status msdaArgs(int dtype, int sampling_dtype, int index_type, DType* t, DType* st, IndexType* it) {
    Status s = toDType(dtype, "MSDeformAttn", t);
    if (s.ok()) s = toDType(sampling_dtype, "MSDeformAttn (sampling_dtype)", st);
    return s.ok() ? toIndexType(index_type, it) : s;
}

std::string buildInfo() {
    const int cuda = CUDART_VERSION;
    return std::string("plugserve ") + PLUGSERVE_VERSION + "; CUDA runtime " + std::to_string(cuda / 1000) + "." +
           std::to_string(cuda % 1000 / 10) + "; archs " + PLUGSERVE_CUDA_ARCHS + "; TensorRT glue: " +
           PLUGSERVE_TENSORRT;
}

}  // namespace

PLUGSERVE_API const char* plugserve_version(void) { return PLUGSERVE_VERSION; }

PLUGSERVE_API const char* plugserve_build_info(void) {
    static const std::string info = buildInfo();
    return info.c_str();
}

PLUGSERVE_API const char* plugserve_last_error(void) { return g_last_error.c_str(); }

PLUGSERVE_API int plugserve_dynamic_resize(int64_t batch, int64_t channels, int64_t in_h, int64_t in_w, int64_t out_h,
                                           int64_t out_w, const char* mode, int align_corners, const float* scales,
                                           int dtype, const void* x, void* y, void* stream) {
    return guarded([&] {
        plugserve::dynamic_resize::Params p;
        DType t;
        const Status s = resizeArgs(batch, channels, in_h, in_w, out_h, out_w, mode, align_corners, scales, dtype, &p,
                                    &t);
        return s.ok() ? plugserve::dynamic_resize::launch(p, t, x, y, static_cast<cudaStream_t>(stream)) : s;
    });
}

PLUGSERVE_API int plugserve_dynamic_resize_cpu(int64_t batch, int64_t channels, int64_t in_h, int64_t in_w,
                                               int64_t out_h, int64_t out_w, const char* mode, int align_corners,
                                               const float* scales, int dtype, const void* x, void* y) {
    return guarded([&] {
        plugserve::dynamic_resize::Params p;
        DType t;
        const Status s = resizeArgs(batch, channels, in_h, in_w, out_h, out_w, mode, align_corners, scales, dtype, &p,
                                    &t);
        return s.ok() ? plugserve::dynamic_resize::runCpu(p, t, x, y) : s;
    });
}

PLUGSERVE_API int plugserve_ms_deform_attn(int64_t batch, int64_t num_values, int64_t num_heads, int64_t head_dim,
                                           int64_t num_levels, int64_t num_queries, int64_t num_points, int dtype,
                                           int sampling_dtype, int index_type, const void* value, const void* spatial_shapes,
                                           const void* level_start_index, const void* sampling_locations,
                                           const void* attention_weights, void* output, void* stream) {
    return guarded([&] {
        const plugserve::ms_deform_attn::Params p{batch, num_values, num_heads, head_dim,
                                                  num_levels, num_queries, num_points};
        DType t, st;
        IndexType it;
        const Status s = msdaArgs(dtype, sampling_dtype, index_type, &t, &st, &it);
        return s.ok() ? plugserve::ms_deform_attn::launch(p, t, st, it, value, spatial_shapes, level_start_index,
                                                          sampling_locations, attention_weights, output,
                                                          static_cast<cudaStream_t>(stream))
                      : s;
    });
}

PLUGSERVE_API int plugserve_ms_deform_attn_cpu(int64_t batch, int64_t num_values, int64_t num_heads,
                                               int64_t head_dim, int64_t num_levels, int64_t num_queries,
                                               int64_t num_points, int dtype, int sampling_dtype, int index_type,
                                               const void* value,
                                               const void* spatial_shapes, const void* level_start_index,
                                               const void* sampling_locations, const void* attention_weights,
                                               void* output) {
    return guarded([&] {
        const plugserve::ms_deform_attn::Params p{batch, num_values, num_heads, head_dim,
                                                  num_levels, num_queries, num_points};
        DType t, st;
        IndexType it;
        const Status s = msdaArgs(dtype, sampling_dtype, index_type, &t, &st, &it);
        return s.ok() ? plugserve::ms_deform_attn::runCpu(p, t, st, it, value, spatial_shapes, level_start_index,
                                                          sampling_locations, attention_weights, output)
                      : s;
    });
}
