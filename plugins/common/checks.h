// Checks shared by the launchers and the CPU code: CUDA errors and sizes as Status values.
#pragma once

#include <climits>
#include <cstdint>
#include <initializer_list>
#include <string>

#include <cuda_runtime_api.h>

#include "common/status.h"

namespace plugserve {

// The status of the last CUDA call on this thread (a failed launch, a bad stream, ...).
inline Status cudaStatus(cudaError_t err, const char* what) {
    if (err == cudaSuccess) return Status::Ok();
    return Status::Error(StatusCode::kCudaError,
                         std::string(what) + ": " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
}

// Element count of a tensor of the given dims, or -1 when a dim is negative or the count
// does not fit the kernels' 32-bit indexing.
inline int64_t countInt32(std::initializer_list<int64_t> dims) {
    int64_t n = 1;
    for (int64_t d : dims) {
        if (d < 0) return -1;
        if (d != 0 && n > INT32_MAX / d) return -1;
        n *= d;
    }
    return n;
}

}  // namespace plugserve
