#include "ort/args.h"

#include <cuda_runtime_api.h>

#include "ms_deform_attn/kernel.h"

namespace plugserve::ort {
namespace {

std::string dimsText(const std::vector<int64_t>& dims) {
    std::string s = "[";
    for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
    return s + "]";
}

Status floatType(int elem_type, const char* what, DType* out) {
    switch (elem_type) {
        case kFloat: *out = DType::kFloat32; return Status::Ok();
        case kFloat16: *out = DType::kFloat16; return Status::Ok();
        case kBFloat16: *out = DType::kBFloat16; return Status::Ok();
    }
    return Status::Error(std::string(what) + " must be float32, float16 or bfloat16, got ONNX element type " +
                         std::to_string(elem_type));
}

Status indexType(int elem_type, const char* what, IndexType* out) {
    switch (elem_type) {
        case kInt32: *out = IndexType::kInt32; return Status::Ok();
        case kInt64: *out = IndexType::kInt64; return Status::Ok();
    }
    return Status::Error(std::string(what) + " must be int32 or int64, got ONNX element type " +
                         std::to_string(elem_type));
}

Status readSize(const Tensor& size, int64_t* out_h, int64_t* out_w) {
    IndexType t;
    if (Status s = indexType(size.elem_type, "DynamicResize: size", &t); !s.ok()) return s;
    if (size.dims.size() != 1 || size.dims[0] != 2)
        return Status::Error("DynamicResize: size must have shape [2] (output height, width), got " +
                             dimsText(size.dims));
    if (size.data == nullptr) return Status::Error("DynamicResize: size has no data");
    if (t == IndexType::kInt32) {
        const int32_t* v = static_cast<const int32_t*>(size.data);
        *out_h = v[0];
        *out_w = v[1];
    } else {
        const int64_t* v = static_cast<const int64_t*>(size.data);
        *out_h = v[0];
        *out_w = v[1];
    }
    return Status::Ok();
}

Status resizeParams(const ResizeAttrs& attrs, const Tensor& x, const Tensor& size, const Tensor* scales,
                    dynamic_resize::Params* p, DType* dtype) {
    if (Status s = floatType(x.elem_type, "DynamicResize: x", dtype); !s.ok()) return s;
    if (x.dims.size() != 4)
        return Status::Error("DynamicResize: x must be 4-D [N, C, H, W], got shape " + dimsText(x.dims));
    int64_t out_h = 0, out_w = 0;
    if (Status s = readSize(size, &out_h, &out_w); !s.ok()) return s;
    *p = {x.dims[0], x.dims[1], x.dims[2], x.dims[3], out_h, out_w, attrs.mode, attrs.align_corners};
    if (attrs.given_scales != (scales != nullptr))
        return Status::Error(attrs.given_scales ? "DynamicResize: coordinate_scale='scales' needs a third input, scales"
                                                : "DynamicResize: a third input (scales) needs coordinate_scale='scales'");
    if (scales != nullptr) {
        if (scales->elem_type != kFloat || scales->dims != std::vector<int64_t>{2})
            return Status::Error("DynamicResize: scales must be float32 [2] (height, width), got ONNX element type " +
                                 std::to_string(scales->elem_type) + " " + dimsText(scales->dims));
        p->scales = static_cast<const float*>(scales->data);
    }
    return dynamic_resize::validate(*p);
}

// The sizes [N, S, M, D, L, Lq, P] once the five shapes agree (the kernels trust them).
Status msdaParams(const Tensor (&in)[kMsdaInputs], ms_deform_attn::Params* p, DType* dtype, DType* sampling_dtype,
                  IndexType* index) {
    const auto& [value, shapes, starts, loc, attn] = in;
    if (Status s = floatType(value.elem_type, "MSDeformAttn: value", dtype); !s.ok()) return s;
    if (Status s = floatType(loc.elem_type, "MSDeformAttn: sampling_locations", sampling_dtype); !s.ok()) return s;
    if (attn.elem_type != loc.elem_type)
        return Status::Error("MSDeformAttn: sampling_locations and attention_weights must share an element type");
    if (Status s = ms_deform_attn::checkTypes(*dtype, *sampling_dtype); !s.ok()) return s;
    if (Status s = indexType(shapes.elem_type, "MSDeformAttn: spatial_shapes", index); !s.ok()) return s;
    if (starts.elem_type != shapes.elem_type)
        return Status::Error("MSDeformAttn: spatial_shapes and level_start_index must share an element type");
    if (value.dims.size() != 4)
        return Status::Error("MSDeformAttn: value must be [N, S, M, D], got shape " + dimsText(value.dims));
    if (loc.dims.size() != 6 || loc.dims[5] != 2)
        return Status::Error("MSDeformAttn: sampling_locations must be [N, Lq, M, L, P, 2], got shape " +
                             dimsText(loc.dims));
    const int64_t n = value.dims[0], m = value.dims[2], lq = loc.dims[1], levels = loc.dims[3], points = loc.dims[4];
    if (loc.dims[0] != n || loc.dims[2] != m)
        return Status::Error("MSDeformAttn: sampling_locations " + dimsText(loc.dims) + " does not match value " +
                             dimsText(value.dims) + " in N or M");
    if (attn.dims != std::vector<int64_t>{n, lq, m, levels, points})
        return Status::Error("MSDeformAttn: attention_weights must be " + dimsText({n, lq, m, levels, points}) +
                             ", got " + dimsText(attn.dims));
    if (shapes.dims != std::vector<int64_t>{levels, 2} || starts.dims != std::vector<int64_t>{levels})
        return Status::Error("MSDeformAttn: spatial_shapes must be " + dimsText({levels, 2}) +
                             " and level_start_index " + dimsText({levels}) + ", got " + dimsText(shapes.dims) +
                             " and " + dimsText(starts.dims));
    *p = {n, value.dims[1], m, value.dims[3], levels, lq, points};
    return ms_deform_attn::validate(*p);
}

}  // namespace

Status parseResizeAttrs(const std::string* mode, const int64_t* align_corners, const std::string* coordinate_scale,
                        ResizeAttrs* out) {
    if (mode == nullptr) return Status::Error("DynamicResize: the node has no string attribute 'mode'");
    if (align_corners == nullptr)
        return Status::Error("DynamicResize: the node has no int attribute 'align_corners' (0 or 1)");
    if (*align_corners != 0 && *align_corners != 1)
        return Status::Error("DynamicResize: attribute 'align_corners' must be 0 or 1, got " +
                             std::to_string(*align_corners));
    if (Status s = dynamic_resize::parseMode(mode->c_str(), &out->mode); !s.ok()) return s;
    out->align_corners = *align_corners == 1;
    out->given_scales = false;
    if (coordinate_scale != nullptr) {
        if (Status s = dynamic_resize::parseCoordinateScale(coordinate_scale->c_str(), &out->given_scales); !s.ok())
            return s;
    }
    // The kernel's own rules on a 1x1 image, so that a combination it rejects (align_corners with
    // nearest) fails when the session is created, not at the first run.
    return dynamic_resize::validate({1, 1, 1, 1, 1, 1, out->mode, out->align_corners});
}

Status resizeOutputDims(const Tensor& x, const Tensor& size, std::vector<int64_t>* out) {
    if (x.dims.size() != 4)
        return Status::Error("DynamicResize: x must be 4-D [N, C, H, W], got shape " + dimsText(x.dims));
    int64_t out_h = 0, out_w = 0;
    if (Status s = readSize(size, &out_h, &out_w); !s.ok()) return s;
    if (out_h < 1 || out_w < 1)
        return Status::Error("DynamicResize: output size must be >= 1, got " + dimsText({out_h, out_w}));
    *out = {x.dims[0], x.dims[1], out_h, out_w};
    return Status::Ok();
}

Status runResize(Device device, const ResizeAttrs& attrs, const Tensor& x, const Tensor& size, const Tensor* scales,
                 void* y, void* stream, const ParallelFor* parallel) {
    dynamic_resize::Params p;
    DType dtype;
    if (Status s = resizeParams(attrs, x, size, scales, &p, &dtype); !s.ok()) return s;
    if (device == Device::kCuda)
        return dynamic_resize::launch(p, dtype, x.data, y, static_cast<cudaStream_t>(stream));
    return dynamic_resize::runCpu(p, dtype, x.data, y, parallel);
}

Status msdaOutputDims(const Tensor (&in)[kMsdaInputs], ms_deform_attn::OutputLayout layout,
                      std::vector<int64_t>* out) {
    ms_deform_attn::Params p;
    DType dtype, sampling_dtype;
    IndexType index;
    if (Status s = msdaParams(in, &p, &dtype, &sampling_dtype, &index); !s.ok()) return s;
    *out = ms_deform_attn::outputDims(p, layout);
    return Status::Ok();
}

Status runMsda(Device device, const Tensor (&in)[kMsdaInputs], void* output, void* stream,
               const ParallelFor* parallel) {
    ms_deform_attn::Params p;
    DType dtype, sampling_dtype;
    IndexType index;
    if (Status s = msdaParams(in, &p, &dtype, &sampling_dtype, &index); !s.ok()) return s;
    const auto& [value, shapes, starts, loc, attn] = in;
    if (device == Device::kCuda)
        return ms_deform_attn::launch(p, dtype, sampling_dtype, index, value.data, shapes.data, starts.data, loc.data, attn.data,
                                      output, static_cast<cudaStream_t>(stream));
    return ms_deform_attn::runCpu(p, dtype, sampling_dtype, index, value.data, shapes.data, starts.data, loc.data, attn.data, output,
                                  parallel);
}

bool resizeInputOnHost(size_t index) { return index == 1; }

}  // namespace plugserve::ort
