// Drives plugins/ort/args.{h,cpp}, what the ONNX Runtime kernels of both execution providers run
// once ORT hands them their tensors, without ONNX Runtime: the CUDA path's arguments (host-side
// size, stream, the launcher reached) and the CPU path's split over a caller's pool. Prints one
// line per failed check and "ort args check: OK: <n> failed checks" at the end; exits non-zero
// on failure. Built and run by tests/plugins/test_ort_args.py.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "ort/args.h"

using namespace plugserve;
using namespace plugserve::ort;

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
    if (!ok) {
        ++failures;
        std::printf("FAILED: %s\n", what.c_str());
    }
}

bool contains(const Status& s, const char* text) { return s.message.find(text) != std::string::npos; }

// A pool that runs tasks in reverse order on the calling thread and counts them: results must not
// depend on the order, and every index must be run once.
struct CountingPool {
    size_t calls = 0, tasks = 0;
    static void run(void* self, size_t n, void (*body)(void*, size_t), void* arg) {
        auto* pool = static_cast<CountingPool*>(self);
        ++pool->calls;
        pool->tasks += n;
        for (size_t i = n; i-- > 0;) body(arg, i);
    }
};

// coordinate_scale="scales": the third input is required with it and refused without it, must be
// float32 [2], and samples by 1/scale: scales 9/4 and 7/5 (= out/in) give the size path's numbers.
void scalesChecks(const ResizeAttrs& by_size, const Tensor& x, const Tensor& size, size_t n_in) {
    ResizeAttrs attrs;
    const std::string bicubic = "bicubic", scales_name = "scales", bogus = "scale";
    const int64_t zero = 0;
    check(parseResizeAttrs(&bicubic, &zero, &scales_name, &attrs).ok() && attrs.given_scales, "coordinate_scale parses");
    check(contains(parseResizeAttrs(&bicubic, &zero, &bogus, &attrs), "coordinate_scale must be 'size' or 'scales'"),
          "unknown coordinate_scale named");
    check(parseResizeAttrs(&bicubic, &zero, &scales_name, &attrs).ok(), "attrs reset");
    std::vector<float> ramp(n_in), y_size(2 * 3 * 9 * 7), y_scales(y_size.size());
    for (size_t i = 0; i < ramp.size(); ++i) ramp[i] = static_cast<float>(i % 17) * 0.25f;
    const Tensor in{kFloat, x.dims, ramp.data()};
    const float exact[2] = {9.f / 4.f, 7.f / 5.f}, other[2] = {2.3f, 1.5f}, negative[2] = {-1.f, 1.f};
    const Tensor scales{kFloat, {2}, exact};
    check(runResize(Device::kCpu, by_size, in, size, nullptr, y_size.data(), nullptr, nullptr).ok(), "size path runs");
    check(runResize(Device::kCpu, attrs, in, size, &scales, y_scales.data(), nullptr, nullptr).ok(), "scales path runs");
    float worst = 0.f;
    for (size_t i = 0; i < y_size.size(); ++i) worst = std::max(worst, std::abs(y_size[i] - y_scales[i]));
    check(worst <= 1e-5f, "scales out/in give the size path's numbers, worst " + std::to_string(worst));
    const Tensor other_scales{kFloat, {2}, other};
    check(runResize(Device::kCpu, attrs, in, size, &other_scales, y_scales.data(), nullptr, nullptr).ok(),
          "other scales run");
    bool differs = false;
    for (size_t i = 0; i < y_size.size(); ++i) differs = differs || std::abs(y_size[i] - y_scales[i]) > 1e-3f;
    check(differs, "scales other than out/in sample elsewhere");
    const Tensor bad_scales[] = {{kFloat, {2}, negative}, {kInt64, {2}, exact}, {kFloat, {3}, exact}};
    const char* bad_messages[] = {"scales must be finite and > 0", "scales must be float32 [2]",
                                  "scales must be float32 [2]"};
    for (int i = 0; i < 3; ++i)
        check(contains(runResize(Device::kCpu, attrs, in, size, &bad_scales[i], y_scales.data(), nullptr, nullptr),
                       bad_messages[i]),
              std::string("bad scales refused: ") + bad_messages[i]);
    check(contains(runResize(Device::kCpu, attrs, in, size, nullptr, y_scales.data(), nullptr, nullptr),
                   "needs a third input"), "missing scales named");
    check(contains(runResize(Device::kCpu, by_size, in, size, &scales, y_scales.data(), nullptr, nullptr),
                   "needs coordinate_scale='scales'"), "scales without the attribute named");
}

void resizeChecks(bool gpu_present) {
    ResizeAttrs attrs;
    const std::string bicubic = "bicubic", nearest = "nearest";
    const int64_t zero = 0, one = 1, two = 2;
    check(parseResizeAttrs(&bicubic, &zero, nullptr, &attrs).ok(), "bicubic, align_corners 0 parses");
    check(contains(parseResizeAttrs(nullptr, &zero, nullptr, &attrs), "no string attribute 'mode'"), "missing mode is named");
    check(contains(parseResizeAttrs(&bicubic, nullptr, nullptr, &attrs), "no int attribute 'align_corners'"),
          "missing align_corners is named");
    check(contains(parseResizeAttrs(&bicubic, &two, nullptr, &attrs), "must be 0 or 1, got 2"), "align_corners 2 refused");
    check(contains(parseResizeAttrs(&nearest, &one, nullptr, &attrs), "align_corners is only defined"),
          "nearest with align_corners refused at creation");
    check(parseResizeAttrs(&bicubic, &zero, nullptr, &attrs).ok(), "attrs reset");

    std::vector<float> x(2 * 3 * 4 * 5, 1.f), y_cpu(2 * 3 * 9 * 7), y_pool(y_cpu.size());
    const int64_t size64[2] = {9, 7};
    const int32_t size32[2] = {9, 7};
    const Tensor in{kFloat, {2, 3, 4, 5}, x.data()};
    std::vector<int64_t> dims;
    for (const Tensor& size : {Tensor{kInt64, {2}, size64}, Tensor{kInt32, {2}, size32}}) {
        check(resizeOutputDims(in, size, &dims).ok() && dims == std::vector<int64_t>{2, 3, 9, 7},
              "output dims from a host size of either index type");
    }
    const Tensor size{kInt64, {2}, size64};
    check(resizeInputOnHost(1) && !resizeInputOnHost(0), "only size is read in host memory");
    check(runResize(Device::kCpu, attrs, in, size, nullptr, y_cpu.data(), nullptr, nullptr).ok(), "CPU resize runs serially");
    CountingPool pool;
    const ParallelFor parallel{CountingPool::run, &pool};
    check(runResize(Device::kCpu, attrs, in, size, nullptr, y_pool.data(), nullptr, &parallel).ok(), "CPU resize on a pool");
    check(pool.calls == 1 && pool.tasks == 2 * 3 * 9, "one pool call, one task per output row of each plane");
    check(std::memcmp(y_cpu.data(), y_pool.data(), y_cpu.size() * sizeof(float)) == 0, "pool result is the serial one");

    // Argument errors come back the same on both devices, before anything is launched.
    const Tensor bad_type{kInt32, {2, 3, 4, 5}, x.data()};
    const Tensor bad_rank{kFloat, {3, 4, 5}, x.data()};
    const int64_t zero_size[2] = {0, 7};
    for (Device device : {Device::kCpu, Device::kCuda}) {
        const char* name = device == Device::kCpu ? "CPU" : "CUDA";
        Status s = runResize(device, attrs, bad_type, size, nullptr, y_cpu.data(), nullptr, nullptr);
        check(s.code == 1 && contains(s, "x must be float32, float16 or bfloat16"), std::string(name) + ": int x refused");
        s = runResize(device, attrs, bad_rank, size, nullptr, y_cpu.data(), nullptr, nullptr);
        check(s.code == 1 && contains(s, "x must be 4-D"), std::string(name) + ": 3-D x refused");
        s = runResize(device, attrs, in, Tensor{kInt64, {2}, zero_size}, nullptr,
                      y_cpu.data(), nullptr, nullptr);
        check(s.code == 1 && contains(s, "sizes must be >= 1"), std::string(name) + ": zero output size refused");
    }
    scalesChecks(attrs, in, size, x.size());
    if (!gpu_present) {
        const Status s = runResize(Device::kCuda, attrs, in, size, nullptr, y_cpu.data(), nullptr, nullptr);
        check(s.code == 2 && contains(s, "DynamicResize: cudaGetDevice"),
              "CUDA resize with valid arguments reaches the launcher (here: no device), got: " + s.message);
    }
}

void msdaChecks(bool gpu_present) {
    const int64_t n = 2, m = 2, d = 4, q = 3, levels = 2, p = 2, s_rows = 4 * 4 + 2 * 2;
    std::vector<float> value(n * s_rows * m * d, 0.5f), loc(n * q * m * levels * p * 2, 0.4f),
        attn(n * q * m * levels * p, 1.f), out_cpu(n * q * m * d), out_pool(out_cpu.size());
    const int32_t shapes[4] = {4, 4, 2, 2}, starts[2] = {0, 16};
    Tensor in[kMsdaInputs] = {{kFloat, {n, s_rows, m, d}, value.data()},
                              {kInt32, {levels, 2}, shapes},
                              {kInt32, {levels}, starts},
                              {kFloat, {n, q, m, levels, p, 2}, loc.data()},
                              {kFloat, {n, q, m, levels, p}, attn.data()}};
    std::vector<int64_t> dims;
    check(msdaOutputDims(in, ms_deform_attn::OutputLayout::kHeadsChannels, &dims).ok() &&
              dims == std::vector<int64_t>{n, q, m, d},
          "MSDA output dims");
    check(msdaOutputDims(in, ms_deform_attn::OutputLayout::kFlat, &dims).ok() && dims == std::vector<int64_t>{n, q, m * d},
          "MSDA flat output dims");
    check(runMsda(Device::kCpu, in, out_cpu.data(), nullptr, nullptr).ok(), "CPU MSDA runs serially");
    CountingPool pool;
    const ParallelFor parallel{CountingPool::run, &pool};
    check(runMsda(Device::kCpu, in, out_pool.data(), nullptr, &parallel).ok(), "CPU MSDA on a pool");
    check(pool.calls == 1 && pool.tasks == static_cast<size_t>(n * q), "one task per (batch, query)");
    check(std::memcmp(out_cpu.data(), out_pool.data(), out_cpu.size() * sizeof(float)) == 0,
          "pool result is the serial one");

    for (Device device : {Device::kCpu, Device::kCuda}) {
        const std::string name = device == Device::kCpu ? "CPU" : "CUDA";
        Tensor bad[kMsdaInputs] = {in[0], in[1], in[2], in[3], in[4]};
        bad[4].dims = {n, q, m, levels, p + 1};
        Status s = runMsda(device, bad, out_cpu.data(), nullptr, nullptr);
        check(s.code == 1 && contains(s, "attention_weights must be [2, 3, 2, 2, 2], got [2, 3, 2, 2, 3]"),
              name + ": mismatched attention_weights refused: " + s.message);
        bad[4] = in[4];
        bad[2].elem_type = kInt64;
        s = runMsda(device, bad, out_cpu.data(), nullptr, nullptr);
        check(s.code == 1 && contains(s, "must share an element type"), name + ": mixed index types refused");
        bad[2] = in[2];
        bad[3].elem_type = kFloat16;
        s = runMsda(device, bad, out_cpu.data(), nullptr, nullptr);
        check(s.code == 1 && contains(s, "must share an element type"), name + ": mixed float types refused");
    }
    if (!gpu_present) {
        const Status s = runMsda(Device::kCuda, in, out_cpu.data(), nullptr, nullptr);
        check(s.code == 2 && contains(s, "MSDeformAttn: cudaGetDevice"),
              "CUDA MSDA with valid arguments reaches the launcher (here: no device), got: " + s.message);
    }
}

}  // namespace

int main() {
    int devices = 0;
    const bool gpu_present = cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0;
    resizeChecks(gpu_present);
    msdaChecks(gpu_present);
    std::printf("ort args check: %s: %d failed checks%s\n", failures ? "FAILED" : "OK", failures,
                gpu_present ? " (a GPU is present: the launches with host pointers were not tried)" : "");
    return failures ? 1 : 0;
}
