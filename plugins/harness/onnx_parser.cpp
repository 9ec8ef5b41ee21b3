#include "harness/onnx_parser.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "common/plugin_fields.h"

namespace plugserve::harness {

nvinfer1::IPluginCreatorV3One* Registry::find(const std::string& name, const std::string& version,
                                              const std::string& ns) const {
    for (auto* c : mCreators)
        if (name == c->getPluginName() && version == c->getPluginVersion() && ns == c->getPluginNamespace()) return c;
    return nullptr;
}

std::string Registry::describe(const std::string& name) const {
    std::string out;
    for (auto* c : mCreators) {
        if (name != c->getPluginName()) continue;
        out += std::string(out.empty() ? "" : ", ") + c->getPluginName() + " version '" + c->getPluginVersion() +
               "' namespace '" + c->getPluginNamespace() + "'";
    }
    return out;
}

bool tensorRTType(const std::string& onnxType, nvinfer1::DataType* out) {
    using T = nvinfer1::DataType;
    static const std::pair<const char*, T> types[] = {{"FLOAT", T::kFLOAT}, {"FLOAT16", T::kHALF}, {"BFLOAT16", T::kBF16},
                                                      {"INT32", T::kINT32}, {"INT64", T::kINT64},  {"INT8", T::kINT8},
                                                      {"UINT8", T::kUINT8}, {"BOOL", T::kBOOL}};
    for (const auto& [name, type] : types) {
        if (onnxType == name) {
            *out = type;
            return true;
        }
    }
    return false;
}

namespace {

// The ONNX attribute type that yields a creator's field type in loadFields, for the fix.
std::string attributeFor(const nvinfer1::PluginField& f) {
    switch (f.type) {
        case nvinfer1::PluginFieldType::kINT32: return f.length > 1 ? "INTS" : "INT";
        case nvinfer1::PluginFieldType::kFLOAT32: return f.length > 1 ? "FLOATS" : "FLOAT";
        case nvinfer1::PluginFieldType::kCHAR: return "STRING";
        default: return std::string("TENSOR of ") + trt::fieldTypeName(f.type);
    }
}

std::string expectedAttributes(nvinfer1::IPluginCreatorV3One* creator) {
    const nvinfer1::PluginFieldCollection* names = creator->getFieldNames();
    std::string out;
    for (int32_t i = 0; names != nullptr && i < names->nbFields; ++i)
        out += std::string(out.empty() ? "" : ", ") + names->fields[i].name + " (" + attributeFor(names->fields[i]) + ")";
    return out.empty() ? "no attributes besides plugin_version and plugin_namespace" : out;
}

template <typename T>
std::vector<uint8_t> bytesOf(const std::vector<T>& values) {
    std::vector<uint8_t> out(values.size() * sizeof(T));
    if (!out.empty()) std::memcpy(out.data(), values.data(), out.size());
    return out;
}

// One attribute as loadFields turns it into a field (onnxOpImporters.cpp@10.1-GA:6133-6213): the
// field type follows the ONNX attribute type, never the type the creator lists in getFieldNames.
bool loadField(const AttrDesc& a, nvinfer1::PluginFieldType* type, std::vector<uint8_t>* data, int32_t* length,
               std::string* error) {
    using F = nvinfer1::PluginFieldType;
    if (a.type == "INT" || a.type == "INTS") {
        // OnnxAttrs::get<int32_t> narrows the int64 of the proto (OnnxAttrs.cpp@10.1-GA:24-29).
        std::vector<int32_t> v;
        for (const auto& s : a.values) v.push_back(static_cast<int32_t>(std::stoll(s)));
        *type = F::kINT32;
        *length = static_cast<int32_t>(v.size());
        *data = bytesOf(v);
    } else if (a.type == "FLOAT" || a.type == "FLOATS") {
        std::vector<float> v;
        for (const auto& s : a.values) v.push_back(std::stof(s));
        *type = F::kFLOAT32;
        *length = static_cast<int32_t>(v.size());
        *data = bytesOf(v);
    } else if (a.type == "STRING" || a.type == "STRINGS") {
        // Each string is copied with its terminating NUL and the length counts it (:6080-6100).
        data->clear();
        for (const auto& s : a.values) {
            data->insert(data->end(), s.begin(), s.end());
            data->push_back('\0');
        }
        *type = F::kCHAR;
        *length = static_cast<int32_t>(data->size());
    } else if (a.type == "TENSOR") {
        static const std::pair<const char*, std::pair<F, int>> tensorTypes[] = {
            {"FLOAT", {F::kFLOAT32, 4}}, {"INT8", {F::kINT8, 1}},    {"INT16", {F::kINT16, 2}},
            {"INT32", {F::kINT32, 4}},   {"FLOAT16", {F::kFLOAT16, 2}}, {"BFLOAT16", {F::kBF16, 2}},
            {"DOUBLE", {F::kFLOAT64, 8}}};
        const auto* hit = std::find_if(std::begin(tensorTypes), std::end(tensorTypes),
                                       [&](const auto& t) { return a.tensorType == t.first; });
        if (hit == std::end(tensorTypes)) {
            *error = "Tensor type: " + a.tensorType + " is unsupported in plugin fields.";  // :6167-6188
            return false;
        }
        *type = hit->second.first;
        const std::string raw = a.values.empty() ? std::string() : a.values[0];
        *data = std::vector<uint8_t>(raw.begin(), raw.end());
        *length = static_cast<int32_t>(data->size() / static_cast<size_t>(hit->second.second));
    } else {
        *error = "Attributes of type: " + a.type + " are unsupported as plugin fields.";  // :6196-6211
        return false;
    }
    return true;
}

bool fail(Failure* failure, std::string error, std::string fix) {
    failure->error = std::move(error);
    failure->fix = std::move(fix);
    return false;
}

// FallbackPluginImporter reads both with attrs.get<std::string>(name, default)
// (onnxOpImporters.cpp@10.1-GA:6442-6443): a missing attribute gives the default; one of another
// type gives the protobuf's empty s(), so the lookup asks for "" (OnnxAttrs.cpp@10.1-GA:50-55).
std::string lookupAttribute(const NodeDesc& node, const char* name, const char* fallback, ParsedNode* out) {
    const AttrDesc* a = node.attr(name);
    if (a == nullptr) return fallback;
    if (a->type == "STRING") return a->values.at(0);
    out->log.push_back(std::string("attribute ") + name + " is " + a->type + ", read as a STRING: \"\"");
    return "";
}

// onlySupportInt32TRTPlugin (onnxOpImporters.cpp@10.1-GA:118-134, the same list in 0137504):
// the parser casts these plugins' int64 inputs to int32 itself.
bool parserCastsInt64(const std::string& op) {
    static const char* const names[] = {"CustomQKVToContextPluginDynamic", "EfficientNMS_TRT", "EfficientNMS_ONNX_TRT",
                                        "EfficientNMS_Implicit_TF_TRT", "EfficientNMS_Explicit_TF_TRT",
                                        "VoxelGeneratorPlugin", "ScatterND", "ROIAlign_TRT", "PillarScatterPlugin",
                                        "MultiscaleDeformableAttnPlugin_TRT", "CustomEmbLayerNormPluginDynamic"};
    return std::any_of(std::begin(names), std::end(names), [&](const char* n) { return op == n; });
}

}  // namespace

bool parseNode(const NodeDesc& node, const Registry& registry, ParsedNode* out, Failure* failure) {
    out->version = lookupAttribute(node, "plugin_version", "1", out);
    out->ns = lookupAttribute(node, "plugin_namespace", "", out);
    // importPluginCreator: the registry's getCreator(name, version, namespace)
    // (importerUtils.cpp@10.1-GA:878-900); the node's domain plays no part.
    out->creator = registry.find(node.op, out->version, out->ns);
    if (out->creator == nullptr) {
        const std::string known = registry.describe(node.op);
        return fail(failure,
                    "Plugin not found, are the plugin name, version, and namespace correct? (looked up " + node.op +
                        " version '" + out->version + "' namespace '" + out->ns + "')",
                    known.empty() ? "no loaded library registers a creator named " + node.op +
                                        "; check the op type, or load the library that provides it"
                                  : "set the node's STRING attributes plugin_version and plugin_namespace to one of: " +
                                        known);
    }

    // loadFields (onnxOpImporters.cpp@10.1-GA:6112-6216): only the names in getFieldNames are
    // looked up; a name the node lacks is skipped with a warning (:6118-6125); an attribute the
    // creator does not list is never read.
    const nvinfer1::PluginFieldCollection* names = out->creator->getFieldNames();
    std::set<std::string> listed;
    for (int32_t i = 0; names != nullptr && i < names->nbFields; ++i) {
        const std::string name = names->fields[i].name;
        listed.insert(name);
        const AttrDesc* a = node.attr(name);
        if (a == nullptr) {
            out->log.push_back("Attribute " + name +
                               " not found in plugin node! Ensure that the plugin creator has a default value "
                               "defined or the engine may fail to build.");
            continue;
        }
        nvinfer1::PluginFieldType type{};
        std::vector<uint8_t> data;
        int32_t length = 0;
        std::string error;
        if (!loadField(*a, &type, &data, &length, &error))
            return fail(failure, error,
                        "give attribute " + name + " as " + attributeFor(names->fields[i]) + " (the creator lists " +
                            trt::fieldTypeName(names->fields[i].type) + ")");
        out->fieldNames.push_back(name);
        out->fieldData.push_back(std::move(data));
        out->fields.emplace_back(nullptr, nullptr, type, length);
    }
    for (size_t i = 0; i < out->fields.size(); ++i) {
        out->fields[i].name = out->fieldNames[i].c_str();
        out->fields[i].data = out->fieldData[i].empty() ? nullptr : out->fieldData[i].data();
    }
    for (const auto& a : node.attrs)
        if (listed.count(a.name) == 0) out->ignoredAttributes.push_back(a.name);

    // The shape-input split (onnxOpImporters.cpp@10.1-GA:6248-6279): INTS only, each index in
    // [-n, n-1], negative ones counted from the end, duplicates warned about.
    const auto nbInputs = static_cast<int32_t>(node.inputs.size());
    std::set<int32_t> shapeSet;
    if (const AttrDesc* a = node.attr("tensorrt_plugin_shape_input_indices")) {
        if (a->type != "INTS")
            return fail(failure,
                        "Shape input indices defined, but attribute tensorrt_plugin_shape_input_indices has unsupported "
                        "type. Only AttributeProto::INTS is supported.",
                        "write tensorrt_plugin_shape_input_indices as a list of ints (INTS), e.g. [1], not " + a->type);
        for (const auto& s : a->values) {
            const auto index = static_cast<int32_t>(std::stoll(s));
            if (index >= nbInputs || index < -nbInputs)
                return fail(failure, "Out-of-range shape input index: " + s,
                            "the node has " + std::to_string(nbInputs) + " inputs; use an index in [" +
                                std::to_string(-nbInputs) + ", " + std::to_string(nbInputs - 1) + "]");
            if (!shapeSet.insert(index >= 0 ? index : nbInputs + index).second)
                out->log.push_back("Node " + node.name + " has duplicate shape input index: " + s);
        }
    }

    // createPlugin(node name, fields, kBUILD) (importerUtils.cpp@10.1-GA:917-931); a null plugin
    // is "Could not create the plugin." (onnxOpImporters.cpp@10.1-GA:6285).
    nvinfer1::PluginFieldCollection fc{static_cast<int32_t>(out->fields.size()), out->fields.data()};
    out->plugin.reset(out->creator->createPlugin(node.name.c_str(), &fc, nvinfer1::TensorRTPhase::kBUILD));
    if (!out->plugin)
        return fail(failure, "Could not create the plugin.",
                    "the creator's message above names the field; " + node.op + " takes " +
                        expectedAttributes(out->creator));

    // Inputs (onnxOpImporters.cpp@10.1-GA:6290-6311): each goes to the shape inputs or the device
    // inputs; an omitted optional input is passed as a null tensor.
    for (int32_t i = 0; i < nbInputs; ++i) {
        const InputDesc& input = node.inputs[i];
        const bool shape = shapeSet.count(i) != 0;
        if (input.empty)
            return fail(failure, "input " + std::to_string(i) + " is omitted: addPluginV3 gets a null ITensor",
                        "give every plugin input a tensor");
        nvinfer1::DataType type{};
        if (!tensorRTType(input.dtype, &type))
            return fail(failure, "input " + std::to_string(i) + " has type " + input.dtype + ", which TensorRT lacks",
                        "cast it to a type TensorRT has (FLOAT, FLOAT16, BFLOAT16, INT32, INT64, ...)");
        if (parserCastsInt64(node.op) && type == nvinfer1::DataType::kINT64) {
            out->log.push_back("The TRT plugin (" + node.op + ") doesn't support INT64 for inputs, will cast to INT32.");
            type = nvinfer1::DataType::kINT32;
        }
        if (shape) {
            // The values of a shape input become IDimensionExprs, so it is an integer tensor of rank
            // 0 or 1 whose length the builder knows (NvInfer.h, ITensor::isShapeTensor).
            if ((type != nvinfer1::DataType::kINT32 && type != nvinfer1::DataType::kINT64) || input.dims.size() > 1)
                return fail(failure,
                            "shape input " + std::to_string(i) + " must be a 0-D or 1-D INT32/INT64 tensor, got " +
                                input.dtype + " of rank " + std::to_string(input.dims.size()),
                            "remove index " + std::to_string(i) + " from tensorrt_plugin_shape_input_indices, or "
                                                                   "compute a 1-D integer size for it");
            out->shapeInputs.push_back(i);
        } else {
            out->deviceInputs.push_back(i);
            out->deviceTypes.push_back(type);
        }
    }
    return true;
}

}  // namespace plugserve::harness
