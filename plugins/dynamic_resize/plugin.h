// TensorRT glue of DynamicResize (plugserve::DynamicResize, version "1"): translates TensorRT's
// tensors into dynamic_resize::Params and calls the kernel. Inputs and attributes: README.md.
#pragma once

#include <string>

#include "common/plugin_base.h"
#include "dynamic_resize/kernel.h"

namespace plugserve::trt {

struct DynamicResizeAttrs {
    std::string mode;                        // "bicubic" | "bilinear" | "nearest" | "nearest-exact"
    int32_t align_corners;                   // 0 or 1
    std::string coordinate_scale = "size";  // "size" | "scales" (optional: plans before it have none)
};

// With coordinate_scale "scales": X and `scales` (float32 [2], read by the kernel on the device) as
// device inputs plus `size` as a shape input; shape tensors must be integer, so the output extents
// still come from `size` and only the source coordinates from `scales`. Otherwise two input forms,
// told apart by the number of device inputs:
// - X plus `size` as a shape input: TensorRT gives the values of a shape input to V3 plugins
//   only in getOutputShapes (as the `shapeInputs` expressions), never to enqueue, so the output
//   extents come from there and enqueue reads them back from the output's dims. The ONNX parser
//   routes an input there when the node carries `tensorrt_plugin_shape_input_indices=[1]`.
//   int32 and int64 shape tensors both work; TensorRT evaluates them itself.
// - X plus a 4-D tensor whose last two extents are the output size (tutorial-era
//   Test::DynamicTRTResize graphs): a device input whose data is never read.
class DynamicResizePlugin : public PluginV3<DynamicResizePlugin, DynamicResizeAttrs> {
public:
    static constexpr const char* kName = "DynamicResize";
    static const FieldTable<DynamicResizeAttrs>& fields();
    static Status checkAttrs(const DynamicResizeAttrs& attrs);

    using PluginV3::PluginV3;

private:
    friend class PluginV3<DynamicResizePlugin, DynamicResizeAttrs>;

    TypeRule typeRule(int32_t pos, int32_t nbInputs) const;
    Status checkInputs(const nvinfer1::Dims* in, int32_t nbInputs) const;
    Status outputShape(const nvinfer1::DimsExprs* in, int32_t nbInputs, const nvinfer1::DimsExprs* shapeInputs,
                       int32_t nbShapeInputs, nvinfer1::DimsExprs& out, nvinfer1::IExprBuilder& builder) const;
    Status checkSizes(const nvinfer1::Dims* in, const nvinfer1::Dims& out) const;
    Status launch(const nvinfer1::PluginTensorDesc* in, const nvinfer1::PluginTensorDesc& out,
                  const void* const* inputs, void* output, cudaStream_t stream) const;

    // The one translation to the kernel's Params, from X's and the output's dims.
    Status paramsFrom(const nvinfer1::Dims& x, const nvinfer1::Dims& y, dynamic_resize::Params* p) const;
};

using DynamicResizeCreator = Creator<DynamicResizePlugin, DynamicResizeAttrs>;

}  // namespace plugserve::trt
