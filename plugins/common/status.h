// Status and element types shared by the kernels, the C ABI and the TensorRT glue.
// No TensorRT and no CUDA types here, so every layer can include it.
#pragma once

#include <string>
#include <utility>

namespace plugserve {

enum class DType { kFloat32, kFloat16, kBFloat16 };
enum class IndexType { kInt32, kInt64 };

// Codes are part of the C ABI (plugserve_* functions return them), so values never change.
enum class StatusCode : int {
    kOk = 0,
    kInvalidArgument = 1,  // shapes, sizes, dtypes or attributes the op does not accept
    kCudaError = 2,        // a CUDA runtime call failed (launch, configuration, device)
    kInternal = 3,         // an exception or a state the code did not expect
};

struct Status {
    int code = 0;
    std::string message;

    bool ok() const { return code == 0; }
    static Status Ok() { return Status{}; }
    static Status Error(std::string msg) { return Error(StatusCode::kInvalidArgument, std::move(msg)); }
    static Status Error(StatusCode c, std::string msg) {
        Status s;
        s.code = static_cast<int>(c);
        s.message = std::move(msg);
        return s;
    }
};

inline const char* dtypeName(DType t) {
    switch (t) {
        case DType::kFloat32: return "float32";
        case DType::kFloat16: return "float16";
        case DType::kBFloat16: return "bfloat16";
    }
    return "unknown";
}

inline const char* indexTypeName(IndexType t) {
    switch (t) {
        case IndexType::kInt32: return "int32";
        case IndexType::kInt64: return "int64";
    }
    return "unknown";
}

// Size in bytes of one element, for callers that compute buffer sizes.
inline int dtypeSize(DType t) { return t == DType::kFloat32 ? 4 : 2; }
inline int indexTypeSize(IndexType t) { return t == IndexType::kInt32 ? 4 : 8; }

}  // namespace plugserve
