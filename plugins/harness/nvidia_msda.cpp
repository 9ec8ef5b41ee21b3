#include "harness/nvidia_msda.h"

#include <string>

#include "common/plugin_base.h"

namespace plugserve::harness {

namespace {

using namespace nvinfer1;
using trt::guarded;

constexpr const char* kName = "MultiscaleDeformableAttnPlugin_TRT";

// configurePlugin and onShapeChange make the same checks on the dims they get (:194-230, :260-292),
// with == on the extents, so a wildcard -1 equals only another -1.
Status checkDims(const Dims* d, int32_t nbInputs, int32_t nbOutputs) {
    if (nbInputs != 5) return Status::Error("Expected 5 inputs");
    if (nbOutputs != 1) return Status::Error("Expected 1 output");
    const int32_t ranks[] = {4, 2, 1, 6, 5};
    for (int32_t i = 0; i < 5; ++i)
        if (d[i].nbDims != ranks[i])
            return Status::Error("input " + std::to_string(i) + " must have " + std::to_string(ranks[i]) + " dimensions");
    if (d[0].d[2] != d[3].d[2] || d[0].d[2] != d[4].d[2]) return Status::Error("Inconsistent dimensions for number of heads");
    if (d[1].d[0] != d[2].d[0] || d[1].d[0] != d[3].d[3] || d[1].d[0] != d[4].d[3])
        return Status::Error("Inconsistent dimensions for number of levels");
    if (d[3].d[4] != d[4].d[4]) return Status::Error("Inconsistent dimensions for number of points");
    if (d[3].d[1] != d[4].d[1]) return Status::Error("Inconsistent dimensions for query length");
    return Status::Ok();
}

int32_t report(const char* where, const Status& s) {
    if (s.ok()) return 0;
    trt::reportError(nullptr, ErrorCode::kINVALID_ARGUMENT, kName, where, s.message.c_str());
    return -1;
}

class NvidiaMsdaModel final : public IPluginV3, public IPluginV3OneCore, public IPluginV3OneBuild, public IPluginV3OneRuntime {
public:
    IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override {
        switch (type) {
            case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
            case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
            case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }
    IPluginV3* clone() noexcept override {
        return guarded(nullptr, kName, "clone", static_cast<IPluginV3*>(nullptr), [] { return new NvidiaMsdaModel(); });
    }
    const char* getPluginName() const noexcept override { return kName; }
    const char* getPluginVersion() const noexcept override { return "2"; }
    const char* getPluginNamespace() const noexcept override { return ""; }
    int32_t getNbOutputs() const noexcept override { return 1; }

    // Output type = input 0's type, whatever it is (:101-120).
    int32_t getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, const DataType* inputTypes,
                               int32_t nbInputs) const noexcept override {
        return guarded(nullptr, kName, "getOutputDataTypes", int32_t{-1}, [&] {
            if (nbOutputs < 1 || nbInputs < 1) return report("getOutputDataTypes", Status::Error("nbInputs is not positive"));
            for (int32_t i = 0; i < nbOutputs; ++i) outputTypes[i] = inputTypes[0];
            return 0;
        });
    }

    // [N, Lq, M, D] from value and sampling_locations, nothing checked but the input count (:123-148).
    int32_t getOutputShapes(const DimsExprs* inputs, int32_t nbInputs, const DimsExprs* /*shapeInputs*/,
                            int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
                            IExprBuilder& /*exprBuilder*/) noexcept override {
        return guarded(nullptr, kName, "getOutputShapes", int32_t{-1}, [&] {
            if (nbInputs != 5 || nbOutputs < 1) return report("getOutputShapes", Status::Error("Expected 5 inputs"));
            outputs[0].nbDims = 4;
            outputs[0].d[0] = inputs[0].d[0];
            outputs[0].d[1] = inputs[3].d[1];
            outputs[0].d[2] = inputs[0].d[2];
            outputs[0].d[3] = inputs[0].d[3];
            return 0;
        });
    }

    // Linear only; inputs 1 and 2 INT32 only; 0, 3, 4 and the output FP32 or FP16, all alike (:150-192).
    bool supportsFormatCombination(int32_t pos, const DynamicPluginTensorDesc* inOut, int32_t nbInputs,
                                   int32_t nbOutputs) noexcept override {
        if (nbInputs != 5 || nbOutputs != 1) return false;
        const PluginTensorDesc& desc = inOut[pos].desc;
        if (desc.format != TensorFormat::kLINEAR) return false;
        if (pos == 1 || pos == 2) return desc.type == DataType::kINT32;
        const bool isFloat = desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;
        if (pos == 0) return isFloat;
        return (pos == 3 || pos == 4 || pos == nbInputs) && isFloat && desc.type == inOut[0].desc.type;
    }

    int32_t configurePlugin(const DynamicPluginTensorDesc* in, int32_t nbInputs, const DynamicPluginTensorDesc* /*out*/,
                            int32_t nbOutputs) noexcept override {
        return guarded(nullptr, kName, "configurePlugin", int32_t{-1}, [&] {
            std::vector<Dims> dims;
            for (int32_t i = 0; i < nbInputs; ++i) dims.push_back(in[i].desc.dims);
            return report("configurePlugin", checkDims(dims.data(), nbInputs, nbOutputs));
        });
    }

    // No workspace (:253-258).
    size_t getWorkspaceSize(const DynamicPluginTensorDesc*, int32_t, const DynamicPluginTensorDesc*,
                            int32_t) const noexcept override {
        return 0;
    }

    int32_t onShapeChange(const PluginTensorDesc* in, int32_t nbInputs, const PluginTensorDesc* /*out*/,
                          int32_t nbOutputs) noexcept override {
        return guarded(nullptr, kName, "onShapeChange", int32_t{-1}, [&] {
            std::vector<Dims> dims;
            for (int32_t i = 0; i < nbInputs; ++i) dims.push_back(in[i].dims);
            return report("onShapeChange", checkDims(dims.data(), nbInputs, nbOutputs));
        });
    }

    int32_t enqueue(const PluginTensorDesc*, const PluginTensorDesc*, const void* const*, void* const*, void*,
                    cudaStream_t) noexcept override {
        return guarded(nullptr, kName, "enqueue", int32_t{-1}, [] {
            return report("enqueue", Status::Error("a model of NVIDIA's plugin: its kernel is in libnvinfer_plugin"));
        });
    }

    IPluginV3* attachToContext(IPluginResourceContext* /*context*/) noexcept override { return clone(); }

    // Nothing to serialize (:235-251).
    const PluginFieldCollection* getFieldsToSerialize() noexcept override { return &mEmpty; }

private:
    PluginFieldCollection mEmpty{0, nullptr};
};

}  // namespace

NvidiaMsdaCreator::NvidiaMsdaCreator() = default;

IPluginV3* NvidiaMsdaCreator::createPlugin(const char* /*name*/, const PluginFieldCollection* /*fc*/,
                                           TensorRTPhase /*phase*/) noexcept {
    return guarded(nullptr, kName, "createPlugin", static_cast<IPluginV3*>(nullptr),
                   [] { return static_cast<IPluginV3*>(new NvidiaMsdaModel()); });
}

}  // namespace plugserve::harness
