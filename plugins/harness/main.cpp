// plugserve_harness: drives the plugin glue through TensorRT's ONNX parser, builder and runtime
// steps for each node of a description (description.h) and prints one JSON document. No
// libnvinfer: the parser step is onnx_parser.cpp, the expression builder expr.cpp, and the
// builder's and runtime's calls are made here in the order TensorRT makes them.
//
//   plugserve_harness [--enqueue] [FILE]      FILE or stdin; --enqueue: step 4 on the GPU
//
// Exit status 0 when it ran (failures of nodes are results, in the JSON), 2 on bad input.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <NvInferVersion.h>

#include "common/plugin_base.h"
#include "dynamic_resize/plugin.h"
#include "harness/description.h"
#include "harness/expr.h"
#include "harness/json.h"
#include "harness/nvidia_msda.h"
#include "harness/onnx_parser.h"
#include "ms_deform_attn/plugin.h"

using namespace nvinfer1;
using namespace plugserve::harness;

namespace {

// Everything the plugins report (through the logger finder TensorRT's loadLibrary hands them, or
// the execution context's ErrorRecorder once attached), collected per step.
class Capture final : public ILogger, public ILoggerFinder, public IErrorRecorder, public IPluginResourceContext {
public:
    std::vector<std::string> take() { return std::exchange(mLines, {}); }

    void log(Severity /*severity*/, const char* msg) noexcept override { add(msg); }
    ILogger* findLogger() noexcept override { return this; }

    int32_t getNbErrors() const noexcept override { return 0; }
    ErrorCode getErrorCode(int32_t /*errorIdx*/) const noexcept override { return ErrorCode::kSUCCESS; }
    ErrorDesc getErrorDesc(int32_t /*errorIdx*/) const noexcept override { return ""; }
    bool hasOverflowed() const noexcept override { return false; }
    void clear() noexcept override {}
    bool reportError(ErrorCode /*val*/, ErrorDesc desc) noexcept override {
        add(desc);
        return true;
    }
    RefCount incRefCount() noexcept override { return 1; }
    RefCount decRefCount() noexcept override { return 0; }

    IGpuAllocator* getGpuAllocator() const noexcept override { return nullptr; }
    IErrorRecorder* getErrorRecorder() const noexcept override { return const_cast<Capture*>(this); }

private:
    void add(const char* msg) noexcept {
        try {
            mLines.emplace_back(msg == nullptr ? "" : msg);
        } catch (...) {
        }
    }
    std::vector<std::string> mLines;
};

Capture gCapture;

struct Step {
    std::string name;
    bool ok = true;
    std::string error, fix;
    std::vector<std::string> log;
    Json details = Json::object();

    bool failed(std::string e, std::string f) {
        ok = false;
        error = std::move(e);
        fix = std::move(f);
        return false;
    }
};

const char* typeName(DataType t) { return plugserve::trt::dataTypeName(t); }

int64_t elementSize(DataType t) {
    switch (t) {
        case DataType::kINT64: return 8;
        case DataType::kFLOAT:
        case DataType::kINT32: return 4;
        case DataType::kHALF:
        case DataType::kBF16: return 2;
        default: return 1;
    }
}

// The state one node carries from step to step, as the builder and runtime hold it.
struct Node {
    const NodeDesc& desc;
    const Description& all;
    ParsedNode parsed;
    std::unique_ptr<ExprBuilder> builder;
    std::vector<DimsExprs> inputExprs, shapeExprs, outputExprs;
    std::vector<DataType> outputTypes;
    std::vector<size_t> workspace;  // per profile
    std::unique_ptr<IPluginV3> runtime;

    size_t nbPoints() const { return all.points.size(); }
    size_t nbProfiles() const { return all.points.size() / 3; }

    const Expr* expr(const Extent& e) {
        if (!e.symbolic) return builder->makeConstant(e.value);
        auto it = all.symbols.find(e.symbol);
        return builder->makeSymbol(e.symbol, it == all.symbols.end() ? std::vector<int64_t>{} : it->second);
    }
    // Build-time dims (-1 where symbolic) or the dims at concrete point k (nullopt when unknown).
    static Dims buildDims(const DimsExprs& e) { return plugserve::trt::knownDims(e); }
    std::optional<Dims> dimsAt(const DimsExprs& e, size_t k) const {
        Dims d{};
        d.nbDims = e.nbDims;
        for (int32_t i = 0; i < e.nbDims; ++i) {
            const auto v = static_cast<const Expr*>(e.d[i])->at(k);
            if (!v) return std::nullopt;
            d.d[i] = *v;
        }
        return d;
    }
    IPluginV3OneBuild* build() const {
        return static_cast<IPluginV3OneBuild*>(parsed.plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    }
    static IPluginV3OneRuntime* runtimeOf(IPluginV3* p) {
        return static_cast<IPluginV3OneRuntime*>(p->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    }
    int32_t nbInputs() const { return static_cast<int32_t>(inputExprs.size()); }
    int32_t nbOutputs() const { return static_cast<int32_t>(outputExprs.size()); }
    DataType ioType(int32_t pos) const {
        return pos < nbInputs() ? parsed.deviceTypes[pos] : outputTypes[pos - nbInputs()];
    }
    const DimsExprs& ioExprs(int32_t pos) const {
        return pos < nbInputs() ? inputExprs[pos] : outputExprs[pos - nbInputs()];
    }
    std::string ioName(int32_t pos) const {
        return pos < nbInputs() ? "input " + std::to_string(parsed.deviceInputs[pos])
                                : "output " + std::to_string(pos - nbInputs());
    }
    // One profile's DynamicPluginTensorDesc per tensor, as configurePlugin and getWorkspaceSize get them.
    std::vector<DynamicPluginTensorDesc> profileDescs(size_t profile) const {
        std::vector<DynamicPluginTensorDesc> out;
        for (int32_t pos = 0; pos < nbInputs() + nbOutputs(); ++pos) {
            DynamicPluginTensorDesc d{};
            d.desc.type = ioType(pos);
            d.desc.format = TensorFormat::kLINEAR;
            d.desc.dims = buildDims(ioExprs(pos));
            d.min = dimsAt(ioExprs(pos), 3 * profile).value_or(d.desc.dims);
            d.opt = dimsAt(ioExprs(pos), 3 * profile + 1).value_or(d.desc.dims);
            d.max = dimsAt(ioExprs(pos), 3 * profile + 2).value_or(d.desc.dims);
            out.push_back(d);
        }
        return out;
    }
    bool profileKnown(size_t profile) const {
        for (int32_t pos = 0; pos < nbInputs() + nbOutputs(); ++pos)
            for (size_t k = 3 * profile; k < 3 * profile + 3; ++k)
                if (!dimsAt(ioExprs(pos), k)) return false;
        return true;
    }
};

Json dimsJson(const Dims& d) {
    Json a = Json::array();
    for (int32_t i = 0; i < d.nbDims; ++i) a.push(Json(d.d[i]));
    return a;
}

Json exprsJson(const DimsExprs& e) {
    Json a = Json::array();
    for (int32_t i = 0; i < e.nbDims; ++i) a.push(Json(static_cast<const Expr*>(e.d[i])->text()));
    return a;
}

std::string fieldValue(const PluginField& f) {
    std::ostringstream s;
    if (f.data == nullptr) return "null";
    if (f.type == PluginFieldType::kCHAR) {
        const char* c = static_cast<const char*>(f.data);
        return std::string(c, strnlen(c, static_cast<size_t>(f.length)));
    }
    for (int32_t i = 0; i < f.length; ++i) {
        if (i) s << ",";
        if (f.type == PluginFieldType::kINT32) s << static_cast<const int32_t*>(f.data)[i];
        else if (f.type == PluginFieldType::kFLOAT32) s << static_cast<const float*>(f.data)[i];
        else s << "?";
    }
    return s.str();
}

Json fieldsJson(const PluginField* fields, int32_t n) {
    Json a = Json::array();
    for (int32_t i = 0; i < n; ++i) {
        Json f = Json::object();
        f.set("name", Json(fields[i].name)).set("type", Json(plugserve::trt::fieldTypeName(fields[i].type)));
        f.set("length", Json(int64_t{fields[i].length}));
        if (fields[i].data != nullptr) f.set("value", Json(fieldValue(fields[i])));
        a.push(f);
    }
    return a;
}

// --- step 1 -------------------------------------------------------------------------------------

bool parserStep(Node& n, const Registry& registry, Step& s) {
    Failure failure;
    const bool ok = parseNode(n.desc, registry, &n.parsed, &failure);
    s.log = n.parsed.log;
    if (n.parsed.creator != nullptr) {
        const PluginFieldCollection* names = n.parsed.creator->getFieldNames();
        Json creator = Json::object();
        creator.set("name", Json(n.parsed.creator->getPluginName()))
            .set("version", Json(n.parsed.creator->getPluginVersion()))
            .set("namespace", Json(n.parsed.creator->getPluginNamespace()))
            .set("field_names", fieldsJson(names->fields, names->nbFields));
        s.details.set("creator", creator);
    }
    s.details.set("lookup", Json::object().set("version", Json(n.parsed.version)).set("namespace", Json(n.parsed.ns)));
    s.details.set("fields", fieldsJson(n.parsed.fields.data(), static_cast<int32_t>(n.parsed.fields.size())));
    Json ignored = Json::array();
    for (const auto& a : n.parsed.ignoredAttributes) ignored.push(Json(a));
    s.details.set("ignored_attributes", ignored);
    Json shapeInputs = Json::array(), types = Json::array();
    for (int32_t i : n.parsed.shapeInputs) shapeInputs.push(Json(int64_t{i}));
    for (DataType t : n.parsed.deviceTypes) types.push(Json(typeName(t)));
    s.details.set("shape_inputs", shapeInputs).set("device_input_types", types);
    if (!ok) return s.failed(failure.error, failure.fix);
    return true;
}

// --- step 2 -------------------------------------------------------------------------------------

bool formats(Node& n, Step& s) {
    static const DataType types[] = {DataType::kFLOAT, DataType::kHALF,  DataType::kBF16,  DataType::kINT32,
                                     DataType::kINT64, DataType::kINT8,  DataType::kUINT8, DataType::kBOOL};
    static const TensorFormat layouts[] = {TensorFormat::kLINEAR, TensorFormat::kCHW2,  TensorFormat::kHWC8,
                                           TensorFormat::kCHW4,   TensorFormat::kCHW16, TensorFormat::kCHW32};
    const int32_t nbIO = n.nbInputs() + n.nbOutputs();
    std::vector<DynamicPluginTensorDesc> io = n.profileDescs(0);
    Json accepted = Json::array();
    // The builder decides position by position: inOut[0..pos-1] hold what it chose (here the
    // network's types, linear), inOut[pos] the candidate, and later positions are not decided
    // yet, so they hold a combination no plugin accepts: a plugin that reads ahead is caught.
    for (int32_t pos = 0; pos < nbIO; ++pos) {
        for (int32_t later = pos; later < nbIO; ++later) {
            io[later].desc.type = DataType::kBOOL;
            io[later].desc.format = TensorFormat::kCHW32;
        }
        Json here = Json::array();
        bool networkTypeAccepted = false;
        for (DataType t : types) {
            for (TensorFormat f : layouts) {
                io[pos].desc.type = t;
                io[pos].desc.format = f;
                if (!n.build()->supportsFormatCombination(pos, io.data(), n.nbInputs(), n.nbOutputs())) continue;
                here.push(Json(std::string(typeName(t)) + (f == TensorFormat::kLINEAR ? "" : "/format" +
                                                                       std::to_string(static_cast<int>(f)))));
                networkTypeAccepted |= t == n.ioType(pos) && f == TensorFormat::kLINEAR;
            }
        }
        accepted.push(Json::object().set("tensor", Json(n.ioName(pos))).set("network_type", Json(typeName(n.ioType(pos))))
                          .set("accepted", here));
        if (!networkTypeAccepted) {
            s.details.set("formats", accepted);
            return s.failed("supportsFormatCombination refuses " + std::string(typeName(n.ioType(pos))) +
                                " (linear) at position " + std::to_string(pos) + " (" + n.ioName(pos) +
                                ") after the positions before it: TensorRT finds no implementation of the layer",
                            "give " + n.ioName(pos) + " one of the types accepted there (a Cast before the node), " +
                                "see formats");
        }
        io[pos].desc.type = n.ioType(pos);
        io[pos].desc.format = TensorFormat::kLINEAR;
    }
    s.details.set("formats", accepted);
    return true;
}

bool buildStep(Node& n, Step& s) {
    n.builder = std::make_unique<ExprBuilder>(n.nbPoints());
    IPluginV3OneBuild* b = n.build();
    const auto& inputs = n.desc.inputs;
    for (int32_t i : n.parsed.deviceInputs) {
        DimsExprs e{};
        e.nbDims = static_cast<int32_t>(inputs[i].dims.size());
        for (int32_t k = 0; k < e.nbDims; ++k) e.d[k] = n.expr(inputs[i].dims[k]);
        n.inputExprs.push_back(e);
    }
    // A shape input's values reach getOutputShapes as expressions: constants where the network
    // computes them at build time, symbolic otherwise (NvInferRuntime.h, IPluginV3OneBuild::getOutputShapes).
    for (int32_t i : n.parsed.shapeInputs) {
        if (inputs[i].dims.size() == 1 && inputs[i].dims[0].symbolic)
            return s.failed("shape input " + std::to_string(i) + " has a length known only at run time",
                            "a shape input needs a build-time length, e.g. [2]");
        if (!inputs[i].hasValues)
            return s.failed("the driver could not tell the values of shape input " + std::to_string(i),
                            "compute it from shapes or graph inputs (TensorRT evaluates it at build time)");
        DimsExprs e{};
        e.nbDims = static_cast<int32_t>(inputs[i].values.size());
        for (int32_t k = 0; k < e.nbDims; ++k) e.d[k] = n.expr(inputs[i].values[k]);
        n.shapeExprs.push_back(e);
    }

    const int32_t nbOutputs = b->getNbOutputs();
    n.outputTypes.assign(nbOutputs, DataType::kFLOAT);
    if (b->getOutputDataTypes(n.outputTypes.data(), nbOutputs, n.parsed.deviceTypes.data(), n.nbInputs()) != 0)
        return s.failed("getOutputDataTypes failed", "give input 0 a type the plugin computes in");
    Json outTypes = Json::array();
    for (DataType t : n.outputTypes) outTypes.push(Json(typeName(t)));
    s.details.set("output_types", outTypes);

    n.outputExprs.assign(nbOutputs, DimsExprs{});
    if (b->getOutputShapes(n.inputExprs.data(), n.nbInputs(), n.shapeExprs.data(),
                           static_cast<int32_t>(n.shapeExprs.size()), n.outputExprs.data(), nbOutputs,
                           *n.builder) != 0)
        return s.failed("getOutputShapes failed", "the plugin's message (above) says what it needs");
    for (const DimsExprs& e : n.outputExprs)
        for (int32_t k = 0; k < e.nbDims; ++k)
            if (n.builder->find(e.d[k]) == nullptr)
                return s.failed("getOutputShapes returned an expression the builder did not make",
                                "a glue bug: build output extents from the inputs or the IExprBuilder");
    for (const auto& error : n.builder->errors()) s.log.push_back(error);
    Json shapes = Json::array();
    for (const DimsExprs& e : n.outputExprs) {
        Json perProfile = Json::array();
        for (size_t p = 0; p < n.nbProfiles(); ++p) {
            Json point = Json::object();
            for (size_t j = 0; j < 3; ++j) {
                const auto d = n.dimsAt(e, 3 * p + j);
                point.set(j == 0 ? "min" : j == 1 ? "opt" : "max", d ? dimsJson(*d) : Json(nullptr));
                for (int32_t k = 0; d && k < d->nbDims; ++k)
                    if (d->d[k] < 0)
                        return s.failed("output extent " + std::to_string(k) + " is negative at " +
                                            n.all.points[3 * p + j],
                                        "check the profile in models.yaml against the op's shape rule");
            }
            perProfile.push(point);
        }
        shapes.push(Json::object().set("expressions", exprsJson(e)).set("profiles", perProfile));
    }
    s.details.set("output_shapes", shapes);

    if (!formats(n, s)) return false;

    Json workspace = Json::array();
    for (size_t p = 0; p < n.nbProfiles(); ++p) {
        if (!n.profileKnown(p)) {
            s.log.push_back("profile " + std::to_string(p) + ": shapes not known at every point; configurePlugin skipped");
            continue;
        }
        auto io = n.profileDescs(p);
        if (b->configurePlugin(io.data(), n.nbInputs(), io.data() + n.nbInputs(), n.nbOutputs()) != 0)
            return s.failed("configurePlugin refuses profile " + std::to_string(p),
                            "keep the profile's shapes within the op's limits (README of the op), or fix models.yaml");
        n.workspace.push_back(b->getWorkspaceSize(io.data(), n.nbInputs(), io.data() + n.nbInputs(), n.nbOutputs()));
        workspace.push(Json(static_cast<int64_t>(n.workspace.back())));
    }
    if (n.nbProfiles() == 0) s.log.push_back("no profiles given: configurePlugin and getWorkspaceSize not asked");
    s.details.set("workspace_bytes", workspace);
    return true;
}

// --- step 3 -------------------------------------------------------------------------------------

size_t fieldBytes(PluginFieldType t) {
    using F = PluginFieldType;
    switch (t) {
        case F::kCHAR:
        case F::kINT8: return 1;
        case F::kFLOAT16:
        case F::kINT16:
        case F::kBF16: return 2;
        case F::kFLOAT64:
        case F::kINT64: return 8;
        default: return 4;
    }
}

// How a plan holds plugin fields: name, type, count and the bytes, read back into fields that
// point into the plan, not into the plugin that wrote them.
std::vector<uint8_t> serialize(const PluginFieldCollection& fc) {
    std::vector<uint8_t> out;
    const auto put = [&](const void* p, size_t n) {
        const auto* b = static_cast<const uint8_t*>(p);
        out.insert(out.end(), b, b + n);
    };
    put(&fc.nbFields, sizeof(int32_t));
    for (int32_t i = 0; i < fc.nbFields; ++i) {
        const PluginField& f = fc.fields[i];
        const std::string name = f.name;
        const auto nameLength = static_cast<int32_t>(name.size());
        put(&nameLength, sizeof nameLength);
        put(name.data(), name.size());
        put(&f.type, sizeof f.type);
        put(&f.length, sizeof f.length);
        put(f.data, fieldBytes(f.type) * static_cast<size_t>(f.length));
    }
    return out;
}

struct Deserialized {
    std::vector<std::string> names;
    std::vector<PluginField> fields;
    PluginFieldCollection fc{};
};

Deserialized deserialize(const std::vector<uint8_t>& plan) {
    Deserialized d;
    size_t at = 0;
    const auto get = [&](void* p, size_t n) {
        std::memcpy(p, plan.data() + at, n);
        at += n;
    };
    int32_t count = 0;
    get(&count, sizeof count);
    std::vector<std::tuple<PluginFieldType, int32_t, size_t>> meta;
    for (int32_t i = 0; i < count; ++i) {
        int32_t nameLength = 0;
        get(&nameLength, sizeof nameLength);
        d.names.emplace_back(reinterpret_cast<const char*>(plan.data() + at), static_cast<size_t>(nameLength));
        at += static_cast<size_t>(nameLength);
        PluginFieldType type{};
        int32_t length = 0;
        get(&type, sizeof type);
        get(&length, sizeof length);
        d.fields.emplace_back(nullptr, plan.data() + at, type, length);
        at += fieldBytes(type) * static_cast<size_t>(length);
    }
    for (size_t i = 0; i < d.fields.size(); ++i) d.fields[i].name = d.names[i].c_str();
    d.fc = {count, d.fields.data()};
    return d;
}

bool runtimeStep(Node& n, const Registry& registry, Step& s) {
    IPluginV3OneRuntime* built = Node::runtimeOf(n.parsed.plugin.get());
    const PluginFieldCollection* fc = built->getFieldsToSerialize();
    if (fc == nullptr) return s.failed("getFieldsToSerialize returned null", "a glue bug: the plugin's message (above) says where");
    const std::vector<uint8_t> plan = serialize(*fc);
    s.details.set("serialized_fields", fieldsJson(fc->fields, fc->nbFields))
        .set("plan_bytes", Json(static_cast<int64_t>(plan.size())));
    const Deserialized read = deserialize(plan);

    // Deserialization finds the creator by what the plugin says it is, not by the ONNX node.
    auto* core = static_cast<IPluginV3OneCore*>(n.parsed.plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
    IPluginCreatorV3One* creator =
        registry.find(core->getPluginName(), core->getPluginVersion(), core->getPluginNamespace());
    if (creator == nullptr)
        return s.failed(std::string("no creator registers ") + core->getPluginName() + " version '" +
                            core->getPluginVersion() + "' namespace '" + core->getPluginNamespace() +
                            "', which the plugin reports: the plan cannot be deserialized",
                        "a glue bug: the plugin's name, version and namespace must be its creator's");
    std::unique_ptr<IPluginV3> restored(creator->createPlugin(n.desc.name.c_str(), &read.fc, TensorRTPhase::kRUNTIME));
    if (!restored)
        return s.failed("createPlugin(kRUNTIME) refuses what getFieldsToSerialize wrote",
                        "a glue bug: getFieldsToSerialize must emit the fields createPlugin reads");
    const PluginFieldCollection* again = Node::runtimeOf(restored.get())->getFieldsToSerialize();
    if (again == nullptr || serialize(*again) != plan)
        return s.failed("the restored plugin serializes to other bytes", "a glue bug: the round trip must be exact");

    n.runtime.reset(Node::runtimeOf(restored.get())->attachToContext(&gCapture));
    if (!n.runtime) return s.failed("attachToContext returned null", "a glue bug: the plugin's message (above) says where");
    std::unique_ptr<IPluginV3> cloned(n.runtime->clone());
    if (!cloned) return s.failed("clone returned null", "a glue bug: the plugin's message (above) says where");

    Json checked = Json::array();
    for (size_t k = 0; k < n.nbPoints(); ++k) {
        std::vector<PluginTensorDesc> in, out;
        bool known = true;
        for (int32_t pos = 0; pos < n.nbInputs() + n.nbOutputs() && known; ++pos) {
            const auto d = n.dimsAt(n.ioExprs(pos), k);
            known = d.has_value();
            PluginTensorDesc t{};
            t.dims = d.value_or(Dims{});
            t.type = n.ioType(pos);
            t.format = TensorFormat::kLINEAR;
            (pos < n.nbInputs() ? in : out).push_back(t);
        }
        if (!known) continue;
        if (Node::runtimeOf(n.runtime.get())->onShapeChange(in.data(), n.nbInputs(), out.data(), n.nbOutputs()) != 0)
            return s.failed("onShapeChange refuses the shapes of " + n.all.points[k],
                            "keep the profile's shapes within the op's limits (README of the op), or fix models.yaml");
        checked.push(Json(n.all.points[k]));
    }
    s.details.set("on_shape_change", checked);
    return true;
}

// --- step 4 -------------------------------------------------------------------------------------

bool readFile(const std::string& path, std::vector<char>* out) {
    std::ifstream f(path, std::ios::binary);
    if (!f) return false;
    out->assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    return true;
}

bool enqueueStep(Node& n, Step& s) {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        s.log.push_back("no CUDA device: enqueue not run");
        return true;
    }
    const auto cuda = [&](cudaError_t e, const char* what) {
        if (e == cudaSuccess) return true;
        return s.failed(std::string(what) + ": " + cudaGetErrorString(e), "a kernel or glue bug: see the log");
    };
    cudaStream_t stream{};
    if (!cuda(cudaStreamCreate(&stream), "cudaStreamCreate")) return false;
    Json ran = Json::array();
    bool ok = true;
    for (size_t k = 0; k < n.nbPoints() && ok; ++k) {
        const std::string& label = n.all.points[k];
        std::vector<PluginTensorDesc> in, out;
        std::vector<void*> buffers;
        bool present = true;
        for (int32_t pos = 0; pos < n.nbInputs() + n.nbOutputs() && ok && present; ++pos) {
            const auto d = n.dimsAt(n.ioExprs(pos), k);
            PluginTensorDesc t{};
            t.dims = d.value_or(Dims{});
            t.type = n.ioType(pos);
            t.format = TensorFormat::kLINEAR;
            int64_t bytes = elementSize(t.type);
            for (int32_t i = 0; i < t.dims.nbDims; ++i) bytes *= t.dims.d[i];
            void* device = nullptr;
            ok = d.has_value() && cuda(cudaMalloc(&device, static_cast<size_t>(std::max<int64_t>(bytes, 1))), "cudaMalloc");
            buffers.push_back(device);
            if (ok && pos < n.nbInputs()) {
                std::vector<char> host;
                const std::string path = n.desc.dataDir + "/in" + std::to_string(n.parsed.deviceInputs[pos]) + "." +
                                         label + ".bin";
                present = readFile(path, &host);
                if (present && static_cast<int64_t>(host.size()) != bytes)
                    ok = s.failed(path + " holds " + std::to_string(host.size()) + " bytes, expected " +
                                      std::to_string(bytes),
                                  "a driver bug: inputs must match the profile shapes");
                if (present && ok) ok = cuda(cudaMemcpy(device, host.data(), host.size(), cudaMemcpyHostToDevice), "copy in");
            }
            (pos < n.nbInputs() ? in : out).push_back(t);
        }
        if (ok && present) {
            // Exactly what getWorkspaceSize asked for, filled with garbage, so memcheck sees any overrun.
            const size_t size = n.workspace.empty() ? 0 : n.workspace[std::min(k / 3, n.workspace.size() - 1)];
            void* workspace = nullptr;
            if (size > 0) ok = cuda(cudaMalloc(&workspace, size), "cudaMalloc workspace") &&
                               cuda(cudaMemset(workspace, 0xff, size), "cudaMemset workspace");
            std::vector<const void*> inputs(buffers.begin(), buffers.begin() + n.nbInputs());
            std::vector<void*> outputs(buffers.begin() + n.nbInputs(), buffers.end());
            if (ok && Node::runtimeOf(n.runtime.get())->enqueue(in.data(), out.data(), inputs.data(), outputs.data(),
                                                                 workspace, stream) != 0)
                ok = s.failed("enqueue failed at " + label, "the plugin's message (above) says what it needs");
            ok = ok && cuda(cudaStreamSynchronize(stream), "kernel");
            for (int32_t j = 0; ok && j < n.nbOutputs(); ++j) {
                int64_t bytes = elementSize(out[j].type);
                for (int32_t i = 0; i < out[j].dims.nbDims; ++i) bytes *= out[j].dims.d[i];
                std::vector<char> host(static_cast<size_t>(bytes));
                ok = cuda(cudaMemcpy(host.data(), outputs[j], host.size(), cudaMemcpyDeviceToHost), "copy out");
                std::ofstream(n.desc.dataDir + "/out" + std::to_string(j) + "." + label + ".bin", std::ios::binary)
                    .write(host.data(), static_cast<std::streamsize>(host.size()));
            }
            cudaFree(workspace);
            if (ok) ran.push(Json(label));
        }
        for (void* b : buffers) cudaFree(b);
    }
    cudaStreamDestroy(stream);
    s.details.set("ran", ran);
    return ok;
}

// --- driver -------------------------------------------------------------------------------------

Json runNode(const NodeDesc& desc, const Description& all, const Registry& registry, bool enqueue) {
    Node n{desc, all, {}, {}, {}, {}, {}, {}, {}, {}};
    Json steps = Json::array();
    Json result = Json::object();
    result.set("node", Json(desc.name)).set("op", Json(desc.op));
    using StepFn = bool (*)(Node&, const Registry&, Step&);
    const std::pair<const char*, StepFn> order[] = {
        {"parser", [](Node& x, const Registry& r, Step& s) { return parserStep(x, r, s); }},
        {"build", [](Node& x, const Registry&, Step& s) { return buildStep(x, s); }},
        {"runtime", [](Node& x, const Registry& r, Step& s) { return runtimeStep(x, r, s); }},
        {"enqueue", [](Node& x, const Registry&, Step& s) { return enqueueStep(x, s); }},
    };
    Json failedStep(nullptr);
    for (const auto& [name, fn] : order) {
        if (std::strcmp(name, "enqueue") == 0 && (!enqueue || desc.dataDir.empty())) break;
        Step s;
        s.name = name;
        gCapture.take();
        const bool ok = fn(n, registry, s);
        const std::vector<std::string> reported = gCapture.take();
        s.log.insert(s.log.end(), reported.begin(), reported.end());
        // The plugin's own message names the problem better than the call that failed.
        if (!ok && !reported.empty()) s.error += ": " + reported.back();
        Json log = Json::array();
        for (const auto& line : s.log) log.push(Json(line));
        Json step = Json::object();
        step.set("step", Json(s.name)).set("ok", Json(ok)).set("log", log).set("details", s.details);
        if (!ok) step.set("error", Json(s.error)).set("fix", Json(s.fix));
        steps.push(step);
        if (!ok) {
            failedStep = Json(std::string(name));
            break;
        }
    }
    result.set("failed_step", failedStep).set("steps", steps);
    return result;
}

}  // namespace

int main(int argc, char** argv) {
    bool enqueue = false;
    const char* path = nullptr;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--enqueue") == 0) enqueue = true;
        else path = argv[i];
    }
    Description description;
    try {
        std::ifstream file;
        if (path != nullptr) file.open(path);
        if (path != nullptr && !file) throw std::runtime_error(std::string("cannot read ") + path);
        description = readDescription(path != nullptr ? static_cast<std::istream&>(file) : std::cin);
        if (description.points.size() % 3 != 0) throw std::runtime_error("points come in min, opt, max triples");
    } catch (const std::exception& e) {
        std::fprintf(stderr, "plugserve_harness: %s\n", e.what());
        return 2;
    }
    // What IPluginRegistry::loadLibrary does before it registers the creators.
    plugserve::trt::setLoggerFinder(&gCapture);
    plugserve::trt::DynamicResizeCreator dynamicResize;
    plugserve::trt::MSDeformAttnCreator msDeformAttn;
    NvidiaMsdaCreator nvidiaMsda;
    Registry registry;
    registry.add(&dynamicResize);
    registry.add(&msDeformAttn);
    registry.add(&nvidiaMsda);

    Json nodes = Json::array();
    for (const NodeDesc& node : description.nodes) nodes.push(runNode(node, description, registry, enqueue));
    Json out = Json::object();
    out.set("tensorrt", Json(std::to_string(NV_TENSORRT_MAJOR) + "." + std::to_string(NV_TENSORRT_MINOR) + "." +
                             std::to_string(NV_TENSORRT_PATCH)));
    out.set("nvidia_model", Json(std::string("MultiscaleDeformableAttnPlugin_TRT version 2 is a model of NVIDIA's plugin "
                                             "source (harness/nvidia_msda.h), not NVIDIA's code")));
    out.set("nodes", nodes);
    std::cout << out.dump() << "\n";
    return 0;
}
