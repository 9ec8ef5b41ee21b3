#include "ms_deform_attn/plugin.h"

namespace plugserve::trt {

namespace {

namespace msda = ms_deform_attn;

enum Input { kValue, kSpatialShapes, kLevelStartIndex, kSamplingLocations, kAttentionWeights, kNbInputs };
constexpr const char* kInputNames[] = {"value", "spatial_shapes", "level_start_index", "sampling_locations",
                                       "attention_weights"};

// The one translation to the kernel's Params, from the five inputs' dims.
msda::Params paramsFrom(const nvinfer1::Dims* in) {
    msda::Params p{};
    p.batch = in[kValue].d[0];
    p.num_values = in[kValue].d[1];
    p.num_heads = in[kValue].d[2];
    p.head_dim = in[kValue].d[3];
    p.num_levels = in[kSpatialShapes].d[0];
    p.num_queries = in[kSamplingLocations].d[1];
    p.num_points = in[kSamplingLocations].d[4];
    return p;
}

}  // namespace

const FieldTable<MSDeformAttnAttrs>& MSDeformAttnPlugin::fields() {
    static const FieldTable<MSDeformAttnAttrs> table = {
        {"output_layout", &MSDeformAttnAttrs::output_layout, /*optional=*/true}};
    return table;
}

Status MSDeformAttnPlugin::checkAttrs(const MSDeformAttnAttrs& attrs) {
    msda::OutputLayout unused;
    return msda::parseOutputLayout(attrs.output_layout, &unused);
}

TypeRule MSDeformAttnPlugin::typeRule(int32_t pos, int32_t nbInputs) const {
    if (nbInputs != kNbInputs) return {TypeRule::kNone};
    switch (pos) {
        case kValue: return {TypeRule::kFloat};
        case kSpatialShapes: return {TypeRule::kIndex};
        case kLevelStartIndex: return {TypeRule::kSameAs, kSpatialShapes};
        // value's type, or float32 with a half value: coordinates are fp32 in the kernel either way.
        case kSamplingLocations: return {TypeRule::kSameAsOrFloat32, kValue};
        case kAttentionWeights: return {TypeRule::kSameAs, kSamplingLocations};
        default: return {TypeRule::kSameAs, kValue};  // the output
    }
}

// value [N,S,M,D], spatial_shapes [L,2], level_start_index [L], sampling_locations
// [N,Lq,M,L,P,2], attention_weights [N,Lq,M,L,P]. Whether S matches the level sizes depends on
// the index values, which live on the device: the kernel skips inconsistent levels instead.
Status MSDeformAttnPlugin::checkInputs(const nvinfer1::Dims* in, int32_t nbInputs) const {
    const auto* n = kInputNames;
    if (Status s = checkRanks(in, nbInputs, {4, 2, 1, 6, 5}, n); !s.ok()) return s;
    for (Status s : {
             checkSame("batch", in, {{kValue, 0}, {kSamplingLocations, 0}, {kAttentionWeights, 0}}, n),
             checkSame("number of heads", in, {{kValue, 2}, {kSamplingLocations, 2}, {kAttentionWeights, 2}}, n),
             checkSame("number of levels", in,
                       {{kSpatialShapes, 0}, {kLevelStartIndex, 0}, {kSamplingLocations, 3}, {kAttentionWeights, 3}}, n),
             checkSame("number of queries", in, {{kSamplingLocations, 1}, {kAttentionWeights, 1}}, n),
             checkSame("number of points", in, {{kSamplingLocations, 4}, {kAttentionWeights, 4}}, n),
             checkSame("(H, W) pair size", in, {{kSpatialShapes, 1}}, n, 2),
             checkSame("(x, y) pair size", in, {{kSamplingLocations, 5}}, n, 2),
         }) {
        if (!s.ok()) return s;
    }
    return Status::Ok();
}

Status MSDeformAttnPlugin::outputShape(const nvinfer1::DimsExprs* in, int32_t /*nbInputs*/,
                                       const nvinfer1::DimsExprs* /*shapeInputs*/, int32_t nbShapeInputs,
                                       nvinfer1::DimsExprs& out, nvinfer1::IExprBuilder& builder) const {
    if (nbShapeInputs != 0) return Status::Error("takes no shape inputs, got " + std::to_string(nbShapeInputs));
    msda::OutputLayout layout;
    if (Status s = msda::parseOutputLayout(attrs().output_layout, &layout); !s.ok()) return s;
    out.d[0] = in[kValue].d[0];
    out.d[1] = in[kSamplingLocations].d[1];
    if (layout == msda::OutputLayout::kFlat) {  // [N, Lq, M*D]
        out.nbDims = 3;
        out.d[2] = builder.operation(nvinfer1::DimensionOperation::kPROD, *in[kValue].d[2], *in[kValue].d[3]);
    } else {  // [N, Lq, M, D]
        out.nbDims = 4;
        out.d[2] = in[kValue].d[2];
        out.d[3] = in[kValue].d[3];
    }
    return Status::Ok();
}

Status MSDeformAttnPlugin::checkSizes(const nvinfer1::Dims* in, const nvinfer1::Dims& /*out*/) const {
    return msda::validate(paramsFrom(in));
}

Status MSDeformAttnPlugin::launch(const nvinfer1::PluginTensorDesc* in, const nvinfer1::PluginTensorDesc& /*out*/,
                                  const void* const* inputs, void* output, cudaStream_t stream) const {
    nvinfer1::Dims dims[kNbInputs];
    for (int32_t i = 0; i < kNbInputs; ++i) dims[i] = in[i].dims;
    DType dtype, sampling_dtype;
    IndexType itype;
    if (Status s = dtypeOf(kInputNames[kValue], in[kValue].type, &dtype); !s.ok()) return s;
    if (Status s = dtypeOf(kInputNames[kSamplingLocations], in[kSamplingLocations].type, &sampling_dtype); !s.ok())
        return s;
    if (Status s = indexTypeOf(kInputNames[kSpatialShapes], in[kSpatialShapes].type, &itype); !s.ok()) return s;
    return msda::launch(paramsFrom(dims), dtype, sampling_dtype, itype, inputs[kValue], inputs[kSpatialShapes],
                        inputs[kLevelStartIndex], inputs[kSamplingLocations], inputs[kAttentionWeights], output,
                        stream);
}

}  // namespace plugserve::trt
