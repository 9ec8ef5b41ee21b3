// Drives the TensorRT glue the way TensorRT does, on a machine without TensorRT: creators, field
// parsing and serialization, format negotiation, shape checks at build and run time, and error
// reporting, call by call. getOutputShapes, the ONNX parser's field conversion, the engine round
// trip and enqueue are driven from ONNX nodes by plugins/harness (tests/plugins/test_check_plugins.py).
// Built and run by test_tensorrt_glue.py; prints one line per failed check and exits non-zero.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "dynamic_resize/plugin.h"
#include "ms_deform_attn/plugin.h"

using namespace nvinfer1;
using plugserve::trt::DynamicResizeCreator;
using plugserve::trt::MSDeformAttnCreator;

namespace {

int gFailures = 0;

void check(bool ok, const std::string& what) {
    if (!ok) {
        ++gFailures;
        std::printf("FAILED: %s\n", what.c_str());
    }
}

// Without a logger finder or an error recorder (a library loaded by LD_PRELOAD), errors go to
// stderr: capture it around a call and return what was written.
template <typename Call>
std::string stderrOf(Call&& call) {
    std::fflush(stderr);
    char path[] = "/tmp/trt_glue_check_XXXXXX";
    const int fd = mkstemp(path);
    const int saved = dup(2);
    dup2(fd, 2);
    call();
    std::fflush(stderr);
    dup2(saved, 2);
    close(saved);
    std::string text;
    char buf[4096];
    lseek(fd, 0, SEEK_SET);
    for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) text.append(buf, static_cast<size_t>(n));
    close(fd);
    unlink(path);
    return text;
}

bool contains(const std::string& text, const char* part) { return text.find(part) != std::string::npos; }

Dims dims(std::initializer_list<int64_t> extents) {
    Dims d{};
    for (int64_t e : extents) d.d[d.nbDims++] = e;
    return d;
}

DynamicPluginTensorDesc desc(DataType type, Dims shape, TensorFormat format = TensorFormat::kLINEAR) {
    DynamicPluginTensorDesc d{};
    d.desc.type = type;
    d.desc.format = format;
    d.desc.dims = shape;
    d.min = d.opt = d.max = shape;
    return d;
}

PluginTensorDesc runtimeDesc(DataType type, Dims shape) {
    PluginTensorDesc d{};
    d.type = type;
    d.format = TensorFormat::kLINEAR;
    d.dims = shape;
    return d;
}

struct ResizeFields {
    std::string mode = "bicubic";
    int32_t align_corners = 0;
    std::string coordinate_scale;  // empty: the field is left out, as graphs and plans before it have it
    std::vector<PluginField> fields;
    PluginFieldCollection fc{};

    PluginFieldCollection* collection() {
        fields = {PluginField("mode", mode.c_str(), PluginFieldType::kCHAR, static_cast<int32_t>(mode.size() + 1)),
                  PluginField("align_corners", &align_corners, PluginFieldType::kINT32, 1)};
        if (!coordinate_scale.empty())
            fields.emplace_back("coordinate_scale", coordinate_scale.c_str(), PluginFieldType::kCHAR,
                                static_cast<int32_t>(coordinate_scale.size() + 1));
        fc = {static_cast<int32_t>(fields.size()), fields.data()};
        return &fc;
    }
};

IPluginV3OneBuild* build(IPluginV3* p) {
    return static_cast<IPluginV3OneBuild*>(p->getCapabilityInterface(PluginCapabilityType::kBUILD));
}
IPluginV3OneRuntime* runtime(IPluginV3* p) {
    return static_cast<IPluginV3OneRuntime*>(p->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
}

void creatorFieldsRoundTrip() {
    DynamicResizeCreator creator;
    const PluginFieldCollection* names = creator.getFieldNames();
    check(names->nbFields == 3, "DynamicResize advertises 3 fields");
    check(std::strcmp(names->fields[0].name, "mode") == 0 && names->fields[0].type == PluginFieldType::kCHAR,
          "field 0 is mode, kCHAR");
    check(std::strcmp(names->fields[1].name, "align_corners") == 0 && names->fields[1].type == PluginFieldType::kINT32,
          "field 1 is align_corners, kINT32");
    check(std::strcmp(names->fields[2].name, "coordinate_scale") == 0 && names->fields[2].type == PluginFieldType::kCHAR,
          "field 2 is coordinate_scale, kCHAR");
    check(std::strcmp(creator.getPluginNamespace(), "plugserve") == 0 && std::strcmp(creator.getPluginVersion(), "1") == 0,
          "namespace plugserve, version 1");

    ResizeFields f;
    f.align_corners = 1;
    IPluginV3* plugin = creator.createPlugin("resize", f.collection(), TensorRTPhase::kBUILD);
    check(plugin != nullptr, "createPlugin without the optional coordinate_scale succeeds");
    if (plugin == nullptr) return;
    const PluginFieldCollection* serialized = runtime(plugin)->getFieldsToSerialize();
    check(serialized->nbFields == 3, "getFieldsToSerialize emits 3 fields (coordinate_scale's default too)");
    IPluginV3* restored = creator.createPlugin("resize", serialized, TensorRTPhase::kRUNTIME);
    check(restored != nullptr, "the creator accepts what getFieldsToSerialize emits");
    if (restored != nullptr) {
        const char* meta = build(restored)->getMetadataString();
        check(meta != nullptr && std::strcmp(meta, "mode=bicubic align_corners=1 coordinate_scale=size") == 0,
              std::string("attributes survive serialization, got ") + (meta ? meta : "null"));
        delete restored;
    }
    IPluginV3* copy = plugin->clone();
    check(copy != nullptr && std::strcmp(build(copy)->getMetadataString(), "mode=bicubic align_corners=1 coordinate_scale=size") == 0,
          "clone keeps the attributes");
    delete copy;
    delete plugin;

    // Python callers often pass strings without the terminating NUL.
    const char bilinear[] = {'b', 'i', 'l', 'i', 'n', 'e', 'a', 'r'};
    int32_t zero = 0;
    PluginField raw[] = {PluginField("mode", bilinear, PluginFieldType::kCHAR, 8),
                         PluginField("align_corners", &zero, PluginFieldType::kINT32, 1)};
    PluginFieldCollection rawFc{2, raw};
    IPluginV3* unterminated = creator.createPlugin("resize", &rawFc, TensorRTPhase::kBUILD);
    check(unterminated != nullptr && std::strcmp(build(unterminated)->getMetadataString(),
                                                 "mode=bilinear align_corners=0 coordinate_scale=size") == 0,
          "a kCHAR field without NUL is read by its length");
    delete unterminated;
}

void creatorRejectsBadFields() {
    DynamicResizeCreator creator;
    const auto rejected = [&](PluginFieldCollection* fc, const char* part, const char* what) {
        IPluginV3* plugin = nullptr;
        const std::string err = stderrOf([&] { plugin = creator.createPlugin("layer7", fc, TensorRTPhase::kBUILD); });
        check(plugin == nullptr, std::string(what) + ": createPlugin returns null");
        check(contains(err, part) && contains(err, "layer7"), std::string(what) + ": message names '" + part +
                                                                  "' and the layer, got: " + err);
        delete plugin;
    };
    ResizeFields f;
    PluginFieldCollection* full = f.collection();
    PluginFieldCollection onlyMode{1, full->fields};
    rejected(&onlyMode, "missing field 'align_corners'", "missing field");

    float wrong = 1.0F;
    f.fields[1] = PluginField("align_corners", &wrong, PluginFieldType::kFLOAT32, 1);
    rejected(&f.fc, "'align_corners' must be kINT32", "mistyped field");

    ResizeFields misspelt;
    misspelt.collection();
    misspelt.fields[1].name = "align_corner";
    rejected(&misspelt.fc, "unknown field 'align_corner'", "unknown field");

    ResizeFields badMode;
    badMode.mode = "cubic";
    rejected(badMode.collection(), "'cubic'", "unknown mode");

    ResizeFields nearest;
    nearest.mode = "nearest";
    nearest.align_corners = 1;
    rejected(nearest.collection(), "align_corners", "align_corners with nearest");

    ResizeFields two;
    two.align_corners = 2;
    rejected(two.collection(), "'align_corners' must be 0 or 1", "align_corners out of range");

    ResizeFields badScale;
    badScale.coordinate_scale = "scale";
    rejected(badScale.collection(), "coordinate_scale must be 'size' or 'scales'", "unknown coordinate_scale");

    MSDeformAttnCreator msda;
    IPluginV3* plugin = msda.createPlugin("attn", nullptr, TensorRTPhase::kBUILD);
    check(plugin != nullptr, "MSDeformAttn needs no fields (output_layout is optional)");
    delete plugin;
    const char flat[] = "flat";
    PluginField layout("output_layout", flat, PluginFieldType::kCHAR, sizeof(flat));
    PluginFieldCollection layoutFc{1, &layout};
    plugin = msda.createPlugin("attn", &layoutFc, TensorRTPhase::kBUILD);
    check(plugin != nullptr, "MSDeformAttn takes output_layout=flat");
    if (plugin != nullptr) {
        const PluginFieldCollection* saved = runtime(plugin)->getFieldsToSerialize();
        check(saved->nbFields == 1 && std::string(saved->fields[0].name) == "output_layout" &&
                  std::string(static_cast<const char*>(saved->fields[0].data)) == "flat",
              "MSDeformAttn serializes the output_layout it was created with");
    }
    delete plugin;
    const char rows[] = "rows";
    PluginField badLayout("output_layout", rows, PluginFieldType::kCHAR, sizeof(rows));
    PluginFieldCollection badLayoutFc{1, &badLayout};
    std::string layoutErr = stderrOf([&] { plugin = msda.createPlugin("attn", &badLayoutFc, TensorRTPhase::kBUILD); });
    check(plugin == nullptr && contains(layoutErr, "output_layout must be 'heads_channels' ([N, Lq, M, D]) or 'flat'"),
          "MSDeformAttn rejects an unknown output_layout naming both, got: " + layoutErr);
    delete plugin;
    int32_t one = 1;
    PluginField extra("im2col_step", &one, PluginFieldType::kINT32, 1);
    PluginFieldCollection extraFc{1, &extra};
    const std::string err = stderrOf([&] { plugin = msda.createPlugin("attn", &extraFc, TensorRTPhase::kBUILD); });
    check(plugin == nullptr && contains(err, "unknown field 'im2col_step' (fields: output_layout)"),
          "MSDeformAttn rejects an unexpected field, got: " + err);
    delete plugin;
}

void resizeFormats() {
    DynamicResizeCreator creator;
    ResizeFields f;
    IPluginV3* plugin = creator.createPlugin("resize", f.collection(), TensorRTPhase::kBUILD);
    IPluginV3OneBuild* b = build(plugin);
    const Dims x = dims({1, 3, 8, 8});
    for (DataType t : {DataType::kFLOAT, DataType::kHALF, DataType::kBF16}) {
        DynamicPluginTensorDesc io[] = {desc(t, x), desc(t, x)};
        check(b->supportsFormatCombination(0, io, 1, 1), "X accepts float types");
        check(b->supportsFormatCombination(1, io, 1, 1), "output of X's type is accepted");
        DataType out{};
        check(b->getOutputDataTypes(&out, 1, &t, 1) == 0 && out == t, "output type is X's type");
    }
    DynamicPluginTensorDesc mixed[] = {desc(DataType::kHALF, x), desc(DataType::kFLOAT, x)};
    check(!b->supportsFormatCombination(1, mixed, 1, 1), "output of another type is refused");
    DynamicPluginTensorDesc ints[] = {desc(DataType::kINT32, x)};
    check(!b->supportsFormatCombination(0, ints, 1, 1), "int32 X is refused");
    DynamicPluginTensorDesc vectorized[] = {desc(DataType::kHALF, x, TensorFormat::kCHW2)};
    check(!b->supportsFormatCombination(0, vectorized, 1, 1), "non-linear formats are refused");
    // Legacy form: the 4-D size tensor may be of any float or index type.
    for (DataType t : {DataType::kFLOAT, DataType::kINT32, DataType::kINT64}) {
        DynamicPluginTensorDesc legacy[] = {desc(DataType::kHALF, x), desc(t, dims({1, 1, 16, 16})),
                                            desc(DataType::kHALF, x)};
        check(b->supportsFormatCombination(1, legacy, 2, 1), "legacy size tensor accepts its type");
        check(b->supportsFormatCombination(2, legacy, 2, 1), "legacy output takes X's type");
    }
    DataType in = DataType::kINT32;
    DataType out{};
    std::string err = stderrOf([&] { check(b->getOutputDataTypes(&out, 1, &in, 1) != 0, "int32 X has no output type"); });
    check(contains(err, "input 0 must be float32, float16 or bfloat16, got int32"), "type error is named: " + err);
    delete plugin;
}

void resizeShapes() {
    DynamicResizeCreator creator;
    ResizeFields f;
    IPluginV3* plugin = creator.createPlugin("resize", f.collection(), TensorRTPhase::kBUILD);
    IPluginV3OneBuild* b = build(plugin);
    IPluginV3OneRuntime* r = runtime(plugin);

    DynamicPluginTensorDesc in[] = {desc(DataType::kFLOAT, dims({-1, 3, -1, -1}))};
    in[0].max = dims({8, 3, 256, 256});
    DynamicPluginTensorDesc out[] = {desc(DataType::kFLOAT, dims({-1, 3, -1, -1}))};
    out[0].max = dims({8, 3, 1024, 1024});
    check(b->configurePlugin(in, 1, out, 1) == 0, "configurePlugin accepts a dynamic profile");

    out[0].max = dims({8, 3, 100000, 100000});
    std::string err = stderrOf([&] { check(b->configurePlugin(in, 1, out, 1) != 0, "an overflowing profile fails"); });
    check(contains(err, "2^31-1"), "the overflow is named: " + err);

    DynamicPluginTensorDesc flat[] = {desc(DataType::kFLOAT, dims({1, 3, 8, 8})), desc(DataType::kINT64, dims({2}))};
    err = stderrOf([&] { check(b->configurePlugin(flat, 2, out, 1) != 0, "a 1-D device size input fails"); });
    check(contains(err, "tensorrt_plugin_shape_input_indices"), "the message says how to pass a shape input: " + err);

    PluginTensorDesc x = runtimeDesc(DataType::kFLOAT, dims({2, 3, 5, 7}));
    PluginTensorDesc y = runtimeDesc(DataType::kFLOAT, dims({2, 3, 11, 13}));
    check(r->onShapeChange(&x, 1, &y, 1) == 0, "onShapeChange accepts a valid shape");
    PluginTensorDesc empty = runtimeDesc(DataType::kFLOAT, dims({2, 3, 0, 13}));
    err = stderrOf([&] { check(r->onShapeChange(&x, 1, &empty, 1) != 0, "a 0-pixel output fails"); });
    check(contains(err, "DynamicResize::onShapeChange") && contains(err, ">= 1"), "the size error is named: " + err);

    // enqueue validates before it launches: no device work for a bad size.
    const void* inputs[] = {nullptr};
    void* outputs[] = {nullptr};
    err = stderrOf([&] {
        check(r->enqueue(&x, &empty, inputs, outputs, nullptr, nullptr) != 0, "enqueue of a 0-pixel output fails");
    });
    check(contains(err, "DynamicResize::enqueue"), "enqueue reports its error: " + err);
    delete plugin;
}

// coordinate_scale "scales": device inputs X and scales (float32 only, [2]), size as the shape input.
void resizeWithScales() {
    DynamicResizeCreator creator;
    ResizeFields f;
    f.coordinate_scale = "scales";
    IPluginV3* plugin = creator.createPlugin("resize", f.collection(), TensorRTPhase::kBUILD);
    check(plugin != nullptr, "createPlugin with coordinate_scale=scales succeeds");
    if (plugin == nullptr) return;
    check(std::strcmp(build(plugin)->getMetadataString(), "mode=bicubic align_corners=0 coordinate_scale=scales") == 0,
          "coordinate_scale=scales is kept");
    IPluginV3OneBuild* b = build(plugin);
    const Dims x = dims({1, 3, 8, 8});
    for (DataType t : {DataType::kFLOAT, DataType::kHALF, DataType::kINT32, DataType::kINT64}) {
        DynamicPluginTensorDesc io[] = {desc(DataType::kHALF, x), desc(t, dims({2})), desc(DataType::kHALF, x)};
        check(b->supportsFormatCombination(1, io, 2, 1) == (t == DataType::kFLOAT), "scales are float32 only");
    }
    DynamicPluginTensorDesc in[] = {desc(DataType::kFLOAT, dims({-1, 3, -1, -1})), desc(DataType::kFLOAT, dims({2}))};
    in[0].max = dims({8, 3, 256, 256});
    DynamicPluginTensorDesc out[] = {desc(DataType::kFLOAT, dims({-1, 3, -1, -1}))};
    out[0].max = dims({8, 3, 1024, 1024});
    check(b->configurePlugin(in, 2, out, 1) == 0, "configurePlugin accepts X and scales");
    std::string err = stderrOf([&] { check(b->configurePlugin(in, 1, out, 1) != 0, "X alone fails"); });
    check(contains(err, "X and scales as device inputs"), "the missing scales are named: " + err);
    DynamicPluginTensorDesc three[] = {in[0], desc(DataType::kFLOAT, dims({3}))};
    err = stderrOf([&] { check(b->configurePlugin(three, 2, out, 1) != 0, "3 scales fail"); });
    check(contains(err, "scales must hold 2 values"), "the scales' extent is named: " + err);
    delete plugin;
}

void msdaShapes() {
    MSDeformAttnCreator creator;
    IPluginV3* plugin = creator.createPlugin("attn", nullptr, TensorRTPhase::kBUILD);
    IPluginV3OneBuild* b = build(plugin);
    IPluginV3OneRuntime* r = runtime(plugin);
    const int64_t N = 2, S = 100 * 167 + 50 * 84 + 25 * 42 + 13 * 21, M = 8, D = 32, L = 4, P = 4, Lq = S;
    const Dims shapes[] = {dims({N, S, M, D}), dims({L, 2}), dims({L}), dims({N, Lq, M, L, P, 2}),
                           dims({N, Lq, M, L, P}), dims({N, Lq, M, D})};

    for (DataType f : {DataType::kFLOAT, DataType::kHALF, DataType::kBF16}) {
        for (DataType i : {DataType::kINT32, DataType::kINT64}) {
            DynamicPluginTensorDesc io[6];
            const DataType types[] = {f, i, i, f, f, f};
            for (int k = 0; k < 6; ++k) io[k] = desc(types[k], shapes[k]);
            bool all = true;
            for (int pos = 0; pos < 6; ++pos) all = all && b->supportsFormatCombination(pos, io, 5, 1);
            check(all, "every float x index type combination is accepted");
        }
    }
    DynamicPluginTensorDesc mixed[6];
    const DataType mixedTypes[] = {DataType::kHALF, DataType::kINT64, DataType::kINT32, DataType::kFLOAT,
                                   DataType::kHALF, DataType::kHALF};
    for (int k = 0; k < 6; ++k) mixed[k] = desc(mixedTypes[k], shapes[k]);
    check(!b->supportsFormatCombination(2, mixed, 5, 1), "level_start_index must match spatial_shapes' type");
    check(b->supportsFormatCombination(3, mixed, 5, 1), "float32 sampling_locations beside a half value (mixed)");
    check(!b->supportsFormatCombination(4, mixed, 5, 1), "attention_weights must match sampling_locations' type");
    mixed[3] = desc(DataType::kBF16, shapes[3]);
    check(!b->supportsFormatCombination(3, mixed, 5, 1), "sampling_locations: value's type or float32 only");
    mixed[3] = desc(DataType::kFLOAT, shapes[3]);
    mixed[4] = desc(DataType::kFLOAT, shapes[4]);
    check(b->supportsFormatCombination(4, mixed, 5, 1) && b->supportsFormatCombination(5, mixed, 5, 1),
          "mixed precision: float32 weights, output in value's type");
    mixed[5] = desc(DataType::kFLOAT, shapes[5]);
    check(!b->supportsFormatCombination(5, mixed, 5, 1), "the output has value's type, not the locations'");

    DynamicPluginTensorDesc in[5];
    for (int k = 0; k < 5; ++k) in[k] = desc(k == 1 || k == 2 ? DataType::kINT64 : DataType::kHALF, shapes[k]);
    DynamicPluginTensorDesc out[] = {desc(DataType::kHALF, shapes[5])};
    check(b->configurePlugin(in, 5, out, 1) == 0, "configurePlugin accepts the encoder shapes");

    in[3].desc.dims = dims({N, Lq, M, 3, P, 2});
    std::string err = stderrOf([&] { check(b->configurePlugin(in, 5, out, 1) != 0, "mismatched levels fail"); });
    check(contains(err, "number of levels disagrees: sampling_locations[3] is 3, spatial_shapes[0] is 4"),
          "the mismatch names both tensors: " + err);

    PluginTensorDesc rin[5];
    for (int k = 0; k < 5; ++k) rin[k] = runtimeDesc(in[k].desc.type, shapes[k]);
    PluginTensorDesc rout = runtimeDesc(DataType::kHALF, shapes[5]);
    check(r->onShapeChange(rin, 5, &rout, 1) == 0, "onShapeChange accepts the encoder shapes");
    rin[3].dims = dims({N, Lq, M, L, 32, 2});
    rin[4].dims = dims({N, Lq, M, L, 32});
    check(r->onShapeChange(rin, 5, &rout, 1) == 0, "P = 32 (mmdeploy's) is accepted");
    rin[3].dims = dims({N, Lq, M, L, 0, 2});
    rin[4].dims = dims({N, Lq, M, L, 0});
    err = stderrOf([&] { check(r->onShapeChange(rin, 5, &rout, 1) != 0, "P = 0 fails"); });
    check(contains(err, "number of points must be >= 1, got 0"), "the kernel's limit is reported: " + err);
    rin[4].dims = dims({N, Lq, M, L, 4});
    err = stderrOf([&] { check(r->onShapeChange(rin, 5, &rout, 1) != 0, "weights with another P fail"); });
    check(contains(err, "number of points disagrees"), "the mismatch is reported: " + err);
    err = stderrOf([&] { check(r->onShapeChange(rin, 4, &rout, 1) != 0, "4 inputs fail"); });
    check(contains(err, "expected 5 inputs, got 4"), "the input count is reported: " + err);
    delete plugin;
}

}  // namespace

int main() {
    creatorFieldsRoundTrip();
    creatorRejectsBadFields();
    resizeFormats();
    resizeShapes();
    resizeWithScales();
    msdaShapes();
    std::printf("%s: %d failed checks\n", gFailures == 0 ? "OK" : "FAILED", gFailures);
    return gFailures == 0 ? 0 : 1;
}
