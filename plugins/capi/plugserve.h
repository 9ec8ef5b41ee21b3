/* C ABI of libplugserve.so: the kernels without TensorRT, for ctypes, Triton's python backend
 * and any C caller. Every function returns a plugserve_status (0 = success); on failure
 * plugserve_last_error() returns the message, valid until the calling thread's next call.
 * Tensors are dense row-major; element types and index types are given by the enums below.
 * `stream` is a cudaStream_t (NULL = the legacy default stream); launches are asynchronous. */
#ifndef PLUGSERVE_CAPI_H
#define PLUGSERVE_CAPI_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum plugserve_status {
    PLUGSERVE_OK = 0,
    PLUGSERVE_INVALID_ARGUMENT = 1,
    PLUGSERVE_CUDA_ERROR = 2,
    PLUGSERVE_INTERNAL = 3
};
enum plugserve_dtype { PLUGSERVE_FLOAT32 = 0, PLUGSERVE_FLOAT16 = 1, PLUGSERVE_BFLOAT16 = 2 };
enum plugserve_index_type { PLUGSERVE_INT32 = 0, PLUGSERVE_INT64 = 1 };

/* "0.1.0" */
const char* plugserve_version(void);
/* One line: version, CUDA runtime, target architectures, whether the TensorRT glue is in. */
const char* plugserve_build_info(void);
/* Message of the calling thread's last failed call ("" if none). */
const char* plugserve_last_error(void);

/* x [batch, channels, in_h, in_w] -> y [batch, channels, out_h, out_w]; mode "bicubic" |
 * "bilinear" | "nearest" | "nearest-exact"; align_corners 0/1. Same results as torch.nn.functional.interpolate.
 * scales: NULL, or two floats (h, w) > 0 by which source coordinates scale (1/scale) instead of by
 * in/out, as F.interpolate(scale_factor=..., recompute_scale_factor=False) and ONNX Resize with
 * scales do; in the memory of x (device for the GPU call, where they are not checked). */
int plugserve_dynamic_resize(int64_t batch, int64_t channels, int64_t in_h, int64_t in_w, int64_t out_h,
                             int64_t out_w, const char* mode, int align_corners, const float* scales, int dtype,
                             const void* x, void* y, void* stream);
int plugserve_dynamic_resize_cpu(int64_t batch, int64_t channels, int64_t in_h, int64_t in_w, int64_t out_h,
                                 int64_t out_w, const char* mode, int align_corners, const float* scales, int dtype,
                                 const void* x, void* y);

/* value [batch, num_values, num_heads, head_dim], spatial_shapes [num_levels, 2],
 * level_start_index [num_levels], sampling_locations [batch, num_queries, num_heads, num_levels,
 * num_points, 2], attention_weights [batch, num_queries, num_heads, num_levels, num_points] ->
 * output [batch, num_queries, num_heads, head_dim], which is also the plugin's "flat" output layout
 * [batch, num_queries, num_heads * head_dim] byte for byte. For the GPU call all pointers are device
 * pointers; levels inconsistent with `value` contribute zero there, while the CPU call rejects them.
 * `dtype` is value's and the output's, `sampling_dtype` that of sampling_locations and attention_weights:
 * `dtype` again, or PLUGSERVE_FLOAT32 with a float16/bfloat16 value (mixed precision). */
int plugserve_ms_deform_attn(int64_t batch, int64_t num_values, int64_t num_heads, int64_t head_dim,
                             int64_t num_levels, int64_t num_queries, int64_t num_points, int dtype, int sampling_dtype,
                             int index_type, const void* value, const void* spatial_shapes, const void* level_start_index,
                             const void* sampling_locations, const void* attention_weights, void* output,
                             void* stream);
int plugserve_ms_deform_attn_cpu(int64_t batch, int64_t num_values, int64_t num_heads, int64_t head_dim,
                                 int64_t num_levels, int64_t num_queries, int64_t num_points, int dtype,
                                 int sampling_dtype, int index_type, const void* value, const void* spatial_shapes,
                                 const void* level_start_index, const void* sampling_locations,
                                 const void* attention_weights, void* output);

#ifdef __cplusplus
}
#endif

#endif /* PLUGSERVE_CAPI_H */
