// TensorRT glue of MSDeformAttn (plugserve::MSDeformAttn, version "1"): translates TensorRT's
// tensors into ms_deform_attn::Params and calls the kernel. Inputs: README.md.
#pragma once

#include "common/plugin_base.h"
#include "ms_deform_attn/kernel.h"

namespace plugserve::trt {

// output_layout (optional, README.md): the shape of the output, "heads_channels" [N, Lq, M, D] or
// "flat" [N, Lq, M*D].
struct MSDeformAttnAttrs {
    std::string output_layout = "heads_channels";
};

class MSDeformAttnPlugin : public PluginV3<MSDeformAttnPlugin, MSDeformAttnAttrs> {
public:
    static constexpr const char* kName = "MSDeformAttn";
    static const FieldTable<MSDeformAttnAttrs>& fields();
    static Status checkAttrs(const MSDeformAttnAttrs& attrs);

    using PluginV3::PluginV3;

private:
    friend class PluginV3<MSDeformAttnPlugin, MSDeformAttnAttrs>;

    TypeRule typeRule(int32_t pos, int32_t nbInputs) const;
    Status checkInputs(const nvinfer1::Dims* in, int32_t nbInputs) const;
    Status outputShape(const nvinfer1::DimsExprs* in, int32_t nbInputs, const nvinfer1::DimsExprs* shapeInputs,
                       int32_t nbShapeInputs, nvinfer1::DimsExprs& out, nvinfer1::IExprBuilder& builder) const;
    Status checkSizes(const nvinfer1::Dims* in, const nvinfer1::Dims& out) const;
    Status launch(const nvinfer1::PluginTensorDesc* in, const nvinfer1::PluginTensorDesc& out,
                  const void* const* inputs, void* output, cudaStream_t stream) const;
};

using MSDeformAttnCreator = Creator<MSDeformAttnPlugin, MSDeformAttnAttrs>;

}  // namespace plugserve::trt
