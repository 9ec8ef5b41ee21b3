// Validation and mode names: host code shared by the CUDA launcher and the CPU implementation.
#include <cstring>
#include <string>

#include "common/checks.h"
#include "dynamic_resize/kernel.h"

namespace plugserve::dynamic_resize {

Status validate(const Params& p) {
    if (p.batch < 0 || p.channels < 0)
        return Status::Error("DynamicResize: batch and channels must be >= 0, got batch=" + std::to_string(p.batch) +
                             " channels=" + std::to_string(p.channels));
    if (p.in_h < 1 || p.in_w < 1 || p.out_h < 1 || p.out_w < 1)
        return Status::Error("DynamicResize: input and output sizes must be >= 1, got input " + std::to_string(p.in_h) +
                             "x" + std::to_string(p.in_w) + ", output " + std::to_string(p.out_h) + "x" +
                             std::to_string(p.out_w));
    if (p.mode != Mode::kNearest && p.mode != Mode::kBilinear && p.mode != Mode::kBicubic &&
        p.mode != Mode::kNearestExact)
        return Status::Error("DynamicResize: unknown mode " + std::to_string(static_cast<int>(p.mode)));
    if (p.align_corners && (p.mode == Mode::kNearest || p.mode == Mode::kNearestExact))
        return Status::Error("DynamicResize: align_corners is only defined for bilinear and bicubic (as in PyTorch)");
    if (countInt32({p.batch, p.channels, p.in_h, p.in_w}) < 0 || countInt32({p.batch, p.channels, p.out_h, p.out_w}) < 0)
        return Status::Error("DynamicResize: tensors of more than 2^31-1 elements are not supported, got input [" +
                             std::to_string(p.batch) + "," + std::to_string(p.channels) + "," + std::to_string(p.in_h) +
                             "," + std::to_string(p.in_w) + "] output " + std::to_string(p.out_h) + "x" +
                             std::to_string(p.out_w));
    return Status::Ok();
}

Status parseMode(const char* name, Mode* mode) {
    if (name == nullptr || mode == nullptr) return Status::Error("DynamicResize: mode name is null");
    for (Mode m : {Mode::kNearest, Mode::kBilinear, Mode::kBicubic, Mode::kNearestExact}) {
        if (std::strcmp(name, modeName(m)) == 0) {
            *mode = m;
            return Status::Ok();
        }
    }
    return Status::Error(std::string("DynamicResize: mode must be bicubic, bilinear, nearest or nearest-exact, got '") +
                         name + "'");
}

Status parseCoordinateScale(const char* name, bool* given_scales) {
    if (name != nullptr && (std::strcmp(name, "size") == 0 || std::strcmp(name, "scales") == 0)) {
        *given_scales = std::strcmp(name, "scales") == 0;
        return Status::Ok();
    }
    return Status::Error(std::string("DynamicResize: coordinate_scale must be 'size' or 'scales', got '") +
                         (name == nullptr ? "" : name) + "'");
}

const char* modeName(Mode m) {
    switch (m) {
        case Mode::kNearest: return "nearest";
        case Mode::kBilinear: return "bilinear";
        case Mode::kBicubic: return "bicubic";
        case Mode::kNearestExact: return "nearest-exact";
    }
    return "unknown";
}

}  // namespace plugserve::dynamic_resize
