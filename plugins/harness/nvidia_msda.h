// A model of NVIDIA's MultiscaleDeformableAttnPlugin_TRT version "2" (NVIDIA/TensorRT
// plugin/multiscaleDeformableAttnPlugin/multiscaleDeformableAttnPlugin.cpp, the same in
// release/10.13.3, release/10.16, release/11.1 and main), so the node we emit for it goes through
// the same steps as ours. It lives in libnvinfer_plugin, which we cannot run: this reproduces what
// its creator and build methods accept (fields, versions, types, shapes), never its kernel.
// Lines cited as multiscaleDeformableAttnPlugin.cpp@release/10.16:<line>.
#pragma once

#include <NvInferRuntime.h>

namespace plugserve::harness {

class NvidiaMsdaCreator final : public nvinfer1::IPluginCreatorV3One {
public:
    NvidiaMsdaCreator();
    // No fields (:371-376); version "2" (:28); the namespace initLibNvInferPlugins is given,
    // "" in every TensorRT sample and in trtexec.
    const nvinfer1::PluginFieldCollection* getFieldNames() noexcept override { return &mCollection; }
    const char* getPluginName() const noexcept override { return "MultiscaleDeformableAttnPlugin_TRT"; }
    const char* getPluginVersion() const noexcept override { return "2"; }
    const char* getPluginNamespace() const noexcept override { return ""; }
    // Ignores the fields it is given (:393-405).
    nvinfer1::IPluginV3* createPlugin(const char* name, const nvinfer1::PluginFieldCollection* fc,
                                      nvinfer1::TensorRTPhase phase) noexcept override;

private:
    nvinfer1::PluginFieldCollection mCollection{0, nullptr};
};

}  // namespace plugserve::harness
