// Step 1: what the TensorRT ONNX parser does with a node it has no importer for, reproduced.
//
// Followed: onnx/onnx-tensorrt branch 10.1-GA (96e7811, the newest 10.x branch in our mirror;
// TensorRT 10.13-11.1 pin parsers/onnx to later commits we cannot fetch) and the newest
// onnxOpImporters.cpp / importerUtils.cpp the code index holds (0137504 / fa5aa9f: the same
// logic behind the ONNXTRT_CHECK_NODE macros, plus IPluginCreatorV3Quick). Lines cited as
// onnxOpImporters.cpp@10.1-GA:<line>.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <NvInferRuntime.h>

#include "harness/description.h"

namespace plugserve::harness {

// What IPluginRegistry::getCreator does: an exact (name, version, namespace) match.
class Registry {
public:
    void add(nvinfer1::IPluginCreatorV3One* creator) { mCreators.push_back(creator); }
    nvinfer1::IPluginCreatorV3One* find(const std::string& name, const std::string& version,
                                        const std::string& ns) const;
    // "DynamicResize version 1 namespace 'plugserve', ..." for every creator named `name`.
    std::string describe(const std::string& name) const;

private:
    std::vector<nvinfer1::IPluginCreatorV3One*> mCreators;
};

struct Failure {
    std::string error;  // what TensorRT reports
    std::string fix;    // what to change in the ONNX (or the glue)
};

struct ParsedNode {
    nvinfer1::IPluginCreatorV3One* creator = nullptr;
    std::string version, ns;
    std::vector<nvinfer1::PluginField> fields;  // point into fieldData
    std::vector<std::vector<uint8_t>> fieldData;
    std::vector<std::string> fieldNames;
    std::vector<std::string> ignoredAttributes;  // attributes loadFields never looks at
    std::vector<int32_t> shapeInputs;            // node input indices
    std::vector<int32_t> deviceInputs;           // node input indices, in addPluginV3 order
    std::vector<nvinfer1::DataType> deviceTypes;  // after the parser's own int64 -> int32 casts
    std::vector<std::string> log;                // the parser's warnings and notes
    std::unique_ptr<nvinfer1::IPluginV3> plugin;
};

bool tensorRTType(const std::string& onnxType, nvinfer1::DataType* out);

// Fills `out` and returns true, or returns false with `failure` set where the parser would fail.
bool parseNode(const NodeDesc& node, const Registry& registry, ParsedNode* out, Failure* failure);

}  // namespace plugserve::harness
