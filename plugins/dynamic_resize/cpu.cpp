// DynamicResize on the CPU: the same window math as the CUDA kernel, one output pixel at a time.
#include <cmath>
#include <string>
#include <vector>

#include "dynamic_resize/kernel.cuh"

namespace plugserve::dynamic_resize {
namespace {

template <typename T, Mode M>
void resizeCpu(const Params& p, const T* in, T* out, const ParallelFor* parallel) {
    constexpr int K = Taps<M>::value;
    const int in_h = static_cast<int>(p.in_h), in_w = static_cast<int>(p.in_w);
    const int out_h = static_cast<int>(p.out_h), out_w = static_cast<int>(p.out_w);
    const float scale_h = areaScale(in_h, out_h, p.align_corners, p.scales);
    const float scale_w = areaScale(in_w, out_w, p.align_corners, p.scales == nullptr ? nullptr : p.scales + 1);

    // Column windows are the same for every row and plane.
    std::vector<Window<K>> cols(out_w);
    std::vector<int> col_index(static_cast<size_t>(out_w) * K);
    for (int x = 0; x < out_w; ++x) {
        cols[x] = window<M>(x, in_w, scale_w, p.align_corners);
        for (int k = 0; k < K; ++k) col_index[static_cast<size_t>(x) * K + k] = clampIndex(cols[x].start + k, in_w);
    }
    // One output row of one plane per task.
    parallelFor(parallel, static_cast<size_t>(p.batch * p.channels * out_h), [&](size_t task) {
        const int64_t plane = static_cast<int64_t>(task) / out_h;
        const int y = static_cast<int>(static_cast<int64_t>(task) % out_h);
        const T* src = in + plane * in_h * in_w;
        T* dst = out + (plane * out_h + y) * out_w;
        const Window<K> wy = window<M>(y, in_h, scale_h, p.align_corners);
        const T* rows[K];
        for (int k = 0; k < K; ++k) rows[k] = src + static_cast<int64_t>(clampIndex(wy.start + k, in_h)) * in_w;
        for (int x = 0; x < out_w; ++x) {
            int ci[K];
            for (int k = 0; k < K; ++k) ci[k] = col_index[static_cast<size_t>(x) * K + k];
            float h[K];
            for (int k = 0; k < K; ++k) h[k] = filterRow<T, K>(rows[k], ci, cols[x].w);
            dst[x] = fromFloat<T>(combine<K>(wy.w, h));
        }
    });
}

template <typename T>
void dispatchMode(const Params& p, const void* in, void* out, const ParallelFor* parallel) {
    const T* src = static_cast<const T*>(in);
    T* dst = static_cast<T*>(out);
    switch (p.mode) {
        case Mode::kNearest: resizeCpu<T, Mode::kNearest>(p, src, dst, parallel); break;
        case Mode::kBilinear: resizeCpu<T, Mode::kBilinear>(p, src, dst, parallel); break;
        case Mode::kBicubic: resizeCpu<T, Mode::kBicubic>(p, src, dst, parallel); break;
        case Mode::kNearestExact: resizeCpu<T, Mode::kNearestExact>(p, src, dst, parallel); break;
    }
}

}  // namespace

Status runCpu(const Params& p, DType dtype, const void* in, void* out, const ParallelFor* parallel) {
    Status s = validate(p);
    if (!s.ok()) return s;
    if (p.batch * p.channels == 0) return Status::Ok();
    if (in == nullptr || out == nullptr) return Status::Error("DynamicResize: input or output pointer is null");
    if (p.scales != nullptr) {
        for (int i = 0; i < 2; ++i)
            if (!(std::isfinite(p.scales[i]) && p.scales[i] > 0.f))
                return Status::Error(std::string("DynamicResize: scales must be finite and > 0, got ") +
                                     (i == 0 ? "height " : "width ") + std::to_string(p.scales[i]));
    }
    switch (dtype) {
        case DType::kFloat32: dispatchMode<float>(p, in, out, parallel); break;
        case DType::kFloat16: dispatchMode<__half>(p, in, out, parallel); break;
        case DType::kBFloat16: dispatchMode<__nv_bfloat16>(p, in, out, parallel); break;
        default: return Status::Error("DynamicResize: unsupported dtype " + std::to_string(static_cast<int>(dtype)));
    }
    return Status::Ok();
}

}  // namespace plugserve::dynamic_resize
