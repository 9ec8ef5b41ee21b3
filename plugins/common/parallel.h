// How the CPU implementations spread their outer loop over threads without owning any: the caller
// passes its pool (ONNX Runtime's intra-op pool, sized by the session's thread count), or nothing,
// and the loop runs on the calling thread.
#pragma once

#include <cstddef>
#include <type_traits>

namespace plugserve {

struct ParallelFor {
    // Calls body(arg, i) once for each i in [0, n), on any of the pool's threads, and returns when all are done.
    void (*run)(void* pool, size_t n, void (*body)(void* arg, size_t i), void* arg);
    void* pool;
};

// f(i) for i in [0, n): through `parallel` when given, else serially.
template <typename F>
void parallelFor(const ParallelFor* parallel, size_t n, F&& f) {
    if (parallel == nullptr || n <= 1) {
        for (size_t i = 0; i < n; ++i) f(i);
        return;
    }
    using Body = std::remove_reference_t<F>;
    parallel->run(
        parallel->pool, n, [](void* arg, size_t i) { (*static_cast<Body*>(arg))(i); },
        const_cast<void*>(static_cast<const void*>(&f)));
}

}  // namespace plugserve
