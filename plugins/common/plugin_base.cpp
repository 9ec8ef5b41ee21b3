#include "common/plugin_base.h"

#include <atomic>
#include <cstdio>

namespace plugserve::trt {

namespace {
std::atomic<nvinfer1::ILoggerFinder*> gLoggerFinder{nullptr};
}  // namespace

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept { gLoggerFinder.store(finder); }

void reportError(nvinfer1::IErrorRecorder* recorder, nvinfer1::ErrorCode code, const char* plugin, const char* where,
                 const char* message) noexcept {
    // A fixed buffer: reporting must work when memory is what ran out.
    char text[2048];
    std::snprintf(text, sizeof(text), "[plugserve] %s::%s: %s", plugin, where, message);
    if (recorder != nullptr) {
        recorder->reportError(code, text);
        return;
    }
    nvinfer1::ILoggerFinder* finder = gLoggerFinder.load();
    // findLogger must run on the thread of the plugin call, so it is asked each time.
    nvinfer1::ILogger* logger = finder == nullptr ? nullptr : finder->findLogger();
    if (logger != nullptr) {
        logger->log(nvinfer1::ILogger::Severity::kERROR, text);
        return;
    }
    std::fprintf(stderr, "%s\n", text);
}

nvinfer1::ErrorCode errorCodeOf(const Status& status) noexcept {
    switch (static_cast<StatusCode>(status.code)) {
        case StatusCode::kOk: return nvinfer1::ErrorCode::kSUCCESS;
        case StatusCode::kInvalidArgument: return nvinfer1::ErrorCode::kINVALID_ARGUMENT;
        case StatusCode::kCudaError: return nvinfer1::ErrorCode::kFAILED_EXECUTION;
        case StatusCode::kInternal: return nvinfer1::ErrorCode::kINTERNAL_ERROR;
    }
    return nvinfer1::ErrorCode::kUNSPECIFIED_ERROR;
}

const char* dataTypeName(nvinfer1::DataType type) {
    using T = nvinfer1::DataType;
    switch (type) {
        case T::kFLOAT: return "float32";
        case T::kHALF: return "float16";
        case T::kBF16: return "bfloat16";
        case T::kINT32: return "int32";
        case T::kINT64: return "int64";
        default: return "a type the plugins do not take";
    }
}

Status dtypeOf(const char* tensor, nvinfer1::DataType type, DType* out) {
    switch (type) {
        case nvinfer1::DataType::kFLOAT: *out = DType::kFloat32; return Status::Ok();
        case nvinfer1::DataType::kHALF: *out = DType::kFloat16; return Status::Ok();
        case nvinfer1::DataType::kBF16: *out = DType::kBFloat16; return Status::Ok();
        default:
            return Status::Error(std::string(tensor) + " must be float32, float16 or bfloat16, got " + dataTypeName(type));
    }
}

Status indexTypeOf(const char* tensor, nvinfer1::DataType type, IndexType* out) {
    switch (type) {
        case nvinfer1::DataType::kINT32: *out = IndexType::kInt32; return Status::Ok();
        case nvinfer1::DataType::kINT64: *out = IndexType::kInt64; return Status::Ok();
        default: return Status::Error(std::string(tensor) + " must be int32 or int64, got " + dataTypeName(type));
    }
}

bool accepts(const TypeRule& rule, const nvinfer1::DynamicPluginTensorDesc* inOut, int32_t pos) {
    const nvinfer1::DataType type = inOut[pos].desc.type;
    DType dtype;
    IndexType itype;
    const bool isFloat = dtypeOf("", type, &dtype).ok();
    const bool isIndex = indexTypeOf("", type, &itype).ok();
    switch (rule.kind) {
        case TypeRule::kNone: return false;
        case TypeRule::kFloat: return isFloat;
        case TypeRule::kFloat32: return type == nvinfer1::DataType::kFLOAT;
        case TypeRule::kIndex: return isIndex;
        case TypeRule::kFloatOrIndex: return isFloat || isIndex;
        case TypeRule::kSameAs: return rule.same_as < pos && type == inOut[rule.same_as].desc.type;
        case TypeRule::kSameAsOrFloat32:
            return rule.same_as < pos && (type == inOut[rule.same_as].desc.type || type == nvinfer1::DataType::kFLOAT);
    }
    return false;
}

nvinfer1::Dims knownDims(const nvinfer1::DimsExprs& exprs) {
    nvinfer1::Dims dims{};
    dims.nbDims = exprs.nbDims;
    for (int32_t i = 0; i < exprs.nbDims; ++i)
        dims.d[i] = exprs.d[i] != nullptr && exprs.d[i]->isConstant() ? exprs.d[i]->getConstantValue() : -1;
    return dims;
}

Status checkRanks(const nvinfer1::Dims* in, int32_t nbInputs, std::initializer_list<int32_t> ranks,
                  const char* const* names) {
    if (nbInputs != static_cast<int32_t>(ranks.size()))
        return Status::Error("expected " + std::to_string(ranks.size()) + " inputs, got " + std::to_string(nbInputs));
    int32_t i = 0;
    for (int32_t rank : ranks) {
        if (in[i].nbDims != rank)
            return Status::Error(std::string(names[i]) + " must be " + std::to_string(rank) + "-D, got " +
                                 std::to_string(in[i].nbDims) + "-D");
        ++i;
    }
    return Status::Ok();
}

Status checkSame(const char* what, const nvinfer1::Dims* in, std::initializer_list<Extent> extents,
                 const char* const* names, int64_t expected) {
    int64_t value = expected;
    const Extent* first = nullptr;
    for (const Extent& e : extents) {
        const int64_t v = in[e.input].d[e.axis];
        if (v < 0) continue;  // not known yet
        if (value < 0) {
            value = v;
            first = &e;
            continue;
        }
        if (v != value) {
            const std::string where =
                first == nullptr ? std::string("expected ") + std::to_string(value)
                                 : std::string(names[first->input]) + "[" + std::to_string(first->axis) + "] is " +
                                       std::to_string(value);
            return Status::Error(std::string(what) + " disagrees: " + names[e.input] + "[" + std::to_string(e.axis) +
                                 "] is " + std::to_string(v) + ", " + where);
        }
    }
    return Status::Ok();
}

}  // namespace plugserve::trt
