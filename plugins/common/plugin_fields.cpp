#include "common/plugin_fields.h"

#include <cstring>

namespace plugserve::trt {

const char* fieldTypeName(nvinfer1::PluginFieldType type) {
    using T = nvinfer1::PluginFieldType;
    switch (type) {
        case T::kFLOAT16: return "kFLOAT16";
        case T::kFLOAT32: return "kFLOAT32";
        case T::kFLOAT64: return "kFLOAT64";
        case T::kINT8: return "kINT8";
        case T::kINT16: return "kINT16";
        case T::kINT32: return "kINT32";
        case T::kCHAR: return "kCHAR";
        case T::kDIMS: return "kDIMS";
        case T::kUNKNOWN: return "kUNKNOWN";
        case T::kBF16: return "kBF16";
        case T::kINT64: return "kINT64";
        case T::kFP8: return "kFP8";
        case T::kINT4: return "kINT4";
        case T::kFP4: return "kFP4";
    }
    return "an unknown field type";
}

static std::string got(const nvinfer1::PluginField& f) {
    return std::string(fieldTypeName(f.type)) + " with " + std::to_string(f.length) + " value(s)";
}

Status readField(const nvinfer1::PluginField& f, int32_t* value) {
    if (f.type != nvinfer1::PluginFieldType::kINT32 || f.length != 1 || f.data == nullptr)
        return Status::Error(std::string("field '") + f.name + "' must be kINT32 with 1 value, got " + got(f));
    std::memcpy(value, f.data, sizeof(int32_t));
    return Status::Ok();
}

Status readField(const nvinfer1::PluginField& f, std::string* value) {
    if (f.type != nvinfer1::PluginFieldType::kCHAR || f.length < 1 || f.data == nullptr)
        return Status::Error(std::string("field '") + f.name + "' must be a kCHAR string, got " + got(f));
    // The ONNX parser counts the terminating NUL in `length`; Python callers often do not.
    const char* chars = static_cast<const char*>(f.data);
    value->assign(chars, strnlen(chars, static_cast<size_t>(f.length)));
    return Status::Ok();
}

}  // namespace plugserve::trt
