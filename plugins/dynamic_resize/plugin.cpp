#include "dynamic_resize/plugin.h"

namespace plugserve::trt {

namespace {

namespace dr = dynamic_resize;

// Device input names as the messages give them: index 1 is the legacy size tensor, or scales.
constexpr const char* kInputNames[] = {"X", "size"};
constexpr const char* kScalesInputNames[] = {"X", "scales"};

Status applyAttrs(const DynamicResizeAttrs& attrs, dr::Params* p) {
    if (attrs.align_corners != 0 && attrs.align_corners != 1)
        return Status::Error("field 'align_corners' must be 0 or 1, got " + std::to_string(attrs.align_corners));
    p->align_corners = attrs.align_corners == 1;
    bool given_scales = false;  // only checked here (so at creation); the glue asks givenScales
    if (Status s = dr::parseCoordinateScale(attrs.coordinate_scale.c_str(), &given_scales); !s.ok()) return s;
    return dr::parseMode(attrs.mode.c_str(), &p->mode);
}

bool givenScales(const DynamicResizeAttrs& attrs) { return attrs.coordinate_scale == "scales"; }

}  // namespace

const FieldTable<DynamicResizeAttrs>& DynamicResizePlugin::fields() {
    static const FieldTable<DynamicResizeAttrs> table = {
        {"mode", &DynamicResizeAttrs::mode},
        {"align_corners", &DynamicResizeAttrs::align_corners},
        {"coordinate_scale", &DynamicResizeAttrs::coordinate_scale, true},
    };
    return table;
}

// The kernel's own validation on a 1x1 image, so that a combination it rejects (align_corners
// with nearest) fails when the plugin is created, not when the engine first runs.
Status DynamicResizePlugin::checkAttrs(const DynamicResizeAttrs& attrs) {
    dr::Params p{1, 1, 1, 1, 1, 1, dr::Mode::kNearest, false};
    if (Status s = applyAttrs(attrs, &p); !s.ok()) return s;
    return dr::validate(p);
}

TypeRule DynamicResizePlugin::typeRule(int32_t pos, int32_t nbInputs) const {
    if (pos == 0) return {TypeRule::kFloat};
    if (pos == nbInputs) return {TypeRule::kSameAs, 0};  // the output
    if (pos == 1 && nbInputs == 2) return {givenScales(attrs()) ? TypeRule::kFloat32 : TypeRule::kFloatOrIndex};
    return {TypeRule::kNone};
}

Status DynamicResizePlugin::checkInputs(const nvinfer1::Dims* in, int32_t nbInputs) const {
    if (givenScales(attrs())) {
        if (nbInputs != 2)
            return Status::Error("coordinate_scale 'scales' takes X and scales as device inputs and size as a shape "
                                 "input; got " + std::to_string(nbInputs) + " device inputs");
        if (Status s = checkRanks(in, nbInputs, {4, 1}, kScalesInputNames); !s.ok()) return s;
        if (in[1].d[0] != -1 && in[1].d[0] != 2)
            return Status::Error("scales must hold 2 values (height, width), got " + std::to_string(in[1].d[0]));
        return Status::Ok();
    }
    if (nbInputs == 1) return checkRanks(in, nbInputs, {4}, kInputNames);
    if (nbInputs == 2) {
        if (in[1].nbDims == 1)
            return Status::Error(
                "size is a 1-D device tensor; pass it as a shape input (ONNX node attribute "
                "tensorrt_plugin_shape_input_indices=[1], or addPluginV3's shapeInputs)");
        return checkRanks(in, nbInputs, {4, 4}, kInputNames);
    }
    return Status::Error("expected X and a shape input, or X and a 4-D size tensor; got " + std::to_string(nbInputs) +
                         " device inputs");
}

Status DynamicResizePlugin::outputShape(const nvinfer1::DimsExprs* in, int32_t nbInputs,
                                        const nvinfer1::DimsExprs* shapeInputs, int32_t nbShapeInputs,
                                        nvinfer1::DimsExprs& out, nvinfer1::IExprBuilder& /*builder*/) const {
    const nvinfer1::IDimensionExpr* height = nullptr;
    const nvinfer1::IDimensionExpr* width = nullptr;
    if (nbInputs == 1 || givenScales(attrs())) {
        // The "dims" of a shape input are its values: (output H, output W).
        if (nbShapeInputs != 1 || shapeInputs[0].nbDims != 2)
            return Status::Error("size must be one shape input with 2 values, got " + std::to_string(nbShapeInputs) +
                                 " shape inputs" +
                                 (nbShapeInputs == 1 ? " of " + std::to_string(shapeInputs[0].nbDims) + " values" : ""));
        height = shapeInputs[0].d[0];
        width = shapeInputs[0].d[1];
    } else {
        if (nbShapeInputs != 0)
            return Status::Error("a 4-D size tensor and a shape input were both given; give one of them");
        height = in[1].d[2];
        width = in[1].d[3];
    }
    out.nbDims = 4;
    out.d[0] = in[0].d[0];
    out.d[1] = in[0].d[1];
    out.d[2] = height;
    out.d[3] = width;
    return Status::Ok();
}

Status DynamicResizePlugin::paramsFrom(const nvinfer1::Dims& x, const nvinfer1::Dims& y, dr::Params* p) const {
    p->batch = x.d[0];
    p->channels = x.d[1];
    p->in_h = x.d[2];
    p->in_w = x.d[3];
    p->out_h = y.d[2];
    p->out_w = y.d[3];
    return applyAttrs(attrs(), p);
}

Status DynamicResizePlugin::checkSizes(const nvinfer1::Dims* in, const nvinfer1::Dims& out) const {
    dr::Params p{};
    if (Status s = paramsFrom(in[0], out, &p); !s.ok()) return s;
    return dr::validate(p);
}

Status DynamicResizePlugin::launch(const nvinfer1::PluginTensorDesc* in, const nvinfer1::PluginTensorDesc& out,
                                   const void* const* inputs, void* output, cudaStream_t stream) const {
    dr::Params p{};
    if (Status s = paramsFrom(in[0].dims, out.dims, &p); !s.ok()) return s;
    DType dtype;
    if (Status s = dtypeOf("X", in[0].type, &dtype); !s.ok()) return s;
    if (givenScales(attrs())) p.scales = static_cast<const float*>(inputs[1]);
    return dr::launch(p, dtype, inputs[0], output, stream);
}

}  // namespace plugserve::trt
