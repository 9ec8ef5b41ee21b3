// ONNX Runtime custom-op glue: plugserve::DynamicResize and plugserve::MSDeformAttn for the CPU and
// CUDA execution providers, registered by RegisterCustomOps (SessionOptions.register_custom_ops_library,
// Triton's model_operations.op_library_filename).
//
// Written against the C API alone: the C++ wrappers report errors by throwing, and nothing may
// throw across ORT's C boundary, so every entry point here returns an OrtStatus instead. ORT picks
// one kernel per node by execution provider and input element types, so each op is registered once
// for each (provider, float type, index type), MSDeformAttn also with float32 sampling locations and
// attention weights beside a float16/bfloat16 value (mixed precision); all registrations share one
// kernel implementation.
#include <climits>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <onnxruntime_c_api.h>

#include "ort/args.h"

namespace plugserve::ort {
namespace {

static_assert(ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT == kFloat && ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 == kInt32 &&
                  ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 == kInt64 && ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 == kFloat16 &&
                  ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16 == kBFloat16,
              "args.h uses the ONNX element type codes");

constexpr const char* kDomain = "plugserve";

enum class OpKind { kResize, kMsda };
constexpr size_t kResizeInputs = 3;  // x, size, and optionally scales

// Set once by the first RegisterCustomOps; every kernel call goes through it.
const OrtApi* g_api = nullptr;

OrtStatus* toOrt(const Status& s) {
    if (s.ok()) return nullptr;
    const OrtErrorCode code = s.code == static_cast<int>(StatusCode::kInvalidArgument) ? ORT_INVALID_ARGUMENT : ORT_FAIL;
    return g_api->CreateStatus(code, s.message.c_str());
}

template <typename F>
OrtStatus* guarded(F&& body) noexcept {
    try {
        return body();
    } catch (const std::exception& e) {
        return g_api->CreateStatus(ORT_RUNTIME_EXCEPTION, (std::string("plugserve: ") + e.what()).c_str());
    } catch (...) {
        return g_api->CreateStatus(ORT_RUNTIME_EXCEPTION, "plugserve: unknown exception");
    }
}

#define PS_ORT_RETURN_IF_ERROR(expr)          \
    do {                                      \
        if (OrtStatus* _status = (expr)) return _status; \
    } while (0)

struct OpDef : OrtCustomOp {
    OpKind kind;
    Device device;
    ONNXTensorElementDataType float_type, index_type;
    ONNXTensorElementDataType sampling_type;  // MSDeformAttn's sampling_locations and attention_weights
};

const OpDef& def(const OrtCustomOp* op) { return *static_cast<const OpDef*>(op); }

struct Kernel {
    OpKind kind;
    Device device;
    ResizeAttrs resize;
    ms_deform_attn::OutputLayout msda_layout;
};

OrtStatus* readTensor(const OrtValue* value, const char* name, Tensor* t) {
    if (value == nullptr) return g_api->CreateStatus(ORT_INVALID_ARGUMENT, (std::string("missing input ") + name).c_str());
    OrtTensorTypeAndShapeInfo* raw = nullptr;
    PS_ORT_RETURN_IF_ERROR(g_api->GetTensorTypeAndShape(value, &raw));
    const std::unique_ptr<OrtTensorTypeAndShapeInfo, void (*)(OrtTensorTypeAndShapeInfo*)> info(
        raw, g_api->ReleaseTensorTypeAndShapeInfo);
    ONNXTensorElementDataType type;
    size_t rank = 0;
    PS_ORT_RETURN_IF_ERROR(g_api->GetTensorElementType(info.get(), &type));
    PS_ORT_RETURN_IF_ERROR(g_api->GetDimensionsCount(info.get(), &rank));
    t->elem_type = static_cast<int>(type);
    t->dims.resize(rank);
    PS_ORT_RETURN_IF_ERROR(g_api->GetDimensions(info.get(), t->dims.data(), rank));
    return g_api->GetTensorData(value, &t->data);
}

OrtStatus* readInputs(OrtKernelContext* context, const char* const* names, size_t count, Tensor* out) {
    for (size_t i = 0; i < count; ++i) {
        const OrtValue* value = nullptr;
        PS_ORT_RETURN_IF_ERROR(g_api->KernelContext_GetInput(context, i, &value));
        PS_ORT_RETURN_IF_ERROR(readTensor(value, names[i], &out[i]));
    }
    return nullptr;
}

OrtStatus* allocateOutput(OrtKernelContext* context, const std::vector<int64_t>& dims, void** data) {
    OrtValue* output = nullptr;
    PS_ORT_RETURN_IF_ERROR(g_api->KernelContext_GetOutput(context, 0, dims.data(), dims.size(), &output));
    return g_api->GetTensorMutableData(output, data);
}

// The CPU paths split their loops over the session's intra-op thread pool, so they use the
// threads the session was configured with and no more.
void runOnIntraOpPool(void* context, size_t n, void (*body)(void*, size_t), void* arg) {
    OrtStatus* s = g_api->KernelContext_ParallelFor(static_cast<const OrtKernelContext*>(context), body, n, 0, arg);
    if (s == nullptr) return;
    // Rejected before any task ran (ORT checks only its arguments): the same work on this thread.
    g_api->ReleaseStatus(s);
    for (size_t i = 0; i < n; ++i) body(arg, i);
}

OrtStatus* compute(const Kernel& k, OrtKernelContext* context) {
    void* stream = nullptr;
    if (k.device == Device::kCuda) PS_ORT_RETURN_IF_ERROR(g_api->KernelContext_GetGPUComputeStream(context, &stream));
    const ParallelFor pool{runOnIntraOpPool, context};
    const ParallelFor* parallel = k.device == Device::kCpu ? &pool : nullptr;
    std::vector<int64_t> dims;
    void* out = nullptr;
    if (k.kind == OpKind::kResize) {
        static constexpr const char* names[] = {"x", "size", "scales"};
        Tensor in[kResizeInputs];
        size_t given = 0;
        PS_ORT_RETURN_IF_ERROR(g_api->KernelContext_GetInputCount(context, &given));
        // scales, the optional third input, counts as absent when given as "".
        const OrtValue* scales = nullptr;
        if (given == kResizeInputs) PS_ORT_RETURN_IF_ERROR(g_api->KernelContext_GetInput(context, 2, &scales));
        PS_ORT_RETURN_IF_ERROR(readInputs(context, names, scales == nullptr ? 2 : 3, in));
        PS_ORT_RETURN_IF_ERROR(toOrt(resizeOutputDims(in[0], in[1], &dims)));
        PS_ORT_RETURN_IF_ERROR(allocateOutput(context, dims, &out));
        return toOrt(runResize(k.device, k.resize, in[0], in[1], scales == nullptr ? nullptr : &in[2], out, stream,
                               parallel));
    }
    static constexpr const char* names[kMsdaInputs] = {"value", "spatial_shapes", "level_start_index",
                                                       "sampling_locations", "attention_weights"};
    Tensor in[kMsdaInputs];
    PS_ORT_RETURN_IF_ERROR(readInputs(context, names, kMsdaInputs, in));
    PS_ORT_RETURN_IF_ERROR(toOrt(msdaOutputDims(in, k.msda_layout, &dims)));
    PS_ORT_RETURN_IF_ERROR(allocateOutput(context, dims, &out));
    return toOrt(runMsda(k.device, in, out, stream, parallel));
}

// An attribute the node may lack: `present` false (and ORT's complaint dropped) when it does.
OrtStatus* stringAttribute(const OrtKernelInfo* info, const char* name, std::string* value, bool* present) {
    size_t size = 0;
    if (OrtStatus* s = g_api->KernelInfoGetAttribute_string(info, name, nullptr, &size)) {
        g_api->ReleaseStatus(s);
        *present = false;
        return nullptr;
    }
    value->resize(size);
    PS_ORT_RETURN_IF_ERROR(g_api->KernelInfoGetAttribute_string(info, name, value->data(), &size));
    value->resize(size > 0 ? size - 1 : 0);  // size counts the terminating NUL
    *present = true;
    return nullptr;
}

void intAttribute(const OrtKernelInfo* info, const char* name, int64_t* value, bool* present) {
    OrtStatus* s = g_api->KernelInfoGetAttribute_int64(info, name, value);
    *present = s == nullptr;
    if (s != nullptr) g_api->ReleaseStatus(s);
}

OrtStatus* ORT_API_CALL createKernel(const OrtCustomOp* op, const OrtApi*, const OrtKernelInfo* info,
                                     void** kernel) noexcept {
    return guarded([&]() -> OrtStatus* {
        auto k = std::make_unique<Kernel>(Kernel{def(op).kind, def(op).device, {}, {}});
        if (k->kind == OpKind::kResize) {
            std::string mode, coordinate_scale;
            int64_t align_corners = 0;
            bool has_mode = false, has_align = false, has_coordinate_scale = false;
            PS_ORT_RETURN_IF_ERROR(stringAttribute(info, "mode", &mode, &has_mode));
            PS_ORT_RETURN_IF_ERROR(stringAttribute(info, "coordinate_scale", &coordinate_scale, &has_coordinate_scale));
            intAttribute(info, "align_corners", &align_corners, &has_align);
            PS_ORT_RETURN_IF_ERROR(toOrt(parseResizeAttrs(has_mode ? &mode : nullptr,
                                                          has_align ? &align_corners : nullptr,
                                                          has_coordinate_scale ? &coordinate_scale : nullptr,
                                                          &k->resize)));
        } else {
            std::string layout = "heads_channels";  // the attribute is optional, as in the TensorRT plugin
            bool has_layout = false;
            PS_ORT_RETURN_IF_ERROR(stringAttribute(info, "output_layout", &layout, &has_layout));
            PS_ORT_RETURN_IF_ERROR(toOrt(ms_deform_attn::parseOutputLayout(layout, &k->msda_layout)));
        }
        *kernel = k.release();
        return nullptr;
    });
}

OrtStatus* ORT_API_CALL computeKernel(void* kernel, OrtKernelContext* context) noexcept {
    return guarded([&] { return compute(*static_cast<const Kernel*>(kernel), context); });
}

void ORT_API_CALL destroyKernel(void* kernel) noexcept { delete static_cast<Kernel*>(kernel); }

const char* ORT_API_CALL opName(const OrtCustomOp* op) noexcept {
    return def(op).kind == OpKind::kResize ? "DynamicResize" : "MSDeformAttn";
}

const char* ORT_API_CALL providerName(const OrtCustomOp* op) noexcept {
    return def(op).device == Device::kCpu ? "CPUExecutionProvider" : "CUDAExecutionProvider";
}

size_t ORT_API_CALL inputCount(const OrtCustomOp* op) noexcept {
    return def(op).kind == OpKind::kResize ? kResizeInputs : kMsdaInputs;
}

ONNXTensorElementDataType ORT_API_CALL inputType(const OrtCustomOp* op, size_t index) noexcept {
    const OpDef& d = def(op);
    if (d.kind == OpKind::kResize && index == 2) return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;  // scales
    const bool is_index = d.kind == OpKind::kResize ? index == 1 : index == 1 || index == 2;
    if (is_index) return d.index_type;
    return d.kind == OpKind::kMsda && (index == 3 || index == 4) ? d.sampling_type : d.float_type;
}

size_t ORT_API_CALL outputCount(const OrtCustomOp*) noexcept { return 1; }

ONNXTensorElementDataType ORT_API_CALL outputType(const OrtCustomOp* op, size_t) noexcept { return def(op).float_type; }

OrtCustomOpInputOutputCharacteristic ORT_API_CALL required(const OrtCustomOp*, size_t) noexcept {
    return INPUT_OUTPUT_REQUIRED;
}

// DynamicResize's scales (input 2) exist only with coordinate_scale="scales".
OrtCustomOpInputOutputCharacteristic ORT_API_CALL inputCharacteristic(const OrtCustomOp* op, size_t index) noexcept {
    return def(op).kind == OpKind::kResize && index == 2 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
}

OrtMemType ORT_API_CALL inputMemory(const OrtCustomOp* op, size_t index) noexcept {
    const OpDef& d = def(op);
    return d.device == Device::kCuda && d.kind == OpKind::kResize && resizeInputOnHost(index) ? OrtMemTypeCPUInput
                                                                                               : OrtMemTypeDefault;
}

int ORT_API_CALL variadicArity(const OrtCustomOp*) noexcept { return 1; }
int ORT_API_CALL variadicHomogeneity(const OrtCustomOp*) noexcept { return 1; }
int ORT_API_CALL startVersion(const OrtCustomOp*) noexcept { return 1; }
int ORT_API_CALL endVersion(const OrtCustomOp*) noexcept { return INT_MAX; }

size_t ORT_API_CALL noPairs(int** input_index, int** output_index) noexcept {
    *input_index = nullptr;
    *output_index = nullptr;
    return 0;
}
void ORT_API_CALL releaseNoPairs(int*, int*) noexcept {}

OpDef makeOp(OpKind kind, Device device, ONNXTensorElementDataType float_type, ONNXTensorElementDataType index_type,
             ONNXTensorElementDataType sampling_type) {
    OpDef d{};
    d.version = ORT_API_VERSION;
    d.GetName = opName;
    d.GetExecutionProviderType = providerName;
    d.GetInputType = inputType;
    d.GetInputTypeCount = inputCount;
    d.GetOutputType = outputType;
    d.GetOutputTypeCount = outputCount;
    d.KernelDestroy = destroyKernel;
    d.GetInputCharacteristic = inputCharacteristic;
    d.GetOutputCharacteristic = required;
    d.GetInputMemoryType = inputMemory;
    d.GetVariadicInputMinArity = variadicArity;
    d.GetVariadicInputHomogeneity = variadicHomogeneity;
    d.GetVariadicOutputMinArity = variadicArity;
    d.GetVariadicOutputHomogeneity = variadicHomogeneity;
    // CreateKernel and KernelCompute stay null: ORT then calls the V2 entry points, which return a status.
    d.CreateKernelV2 = createKernel;
    d.KernelComputeV2 = computeKernel;
    d.GetStartVersion = startVersion;
    d.GetEndVersion = endVersion;
    d.GetMayInplace = noPairs;
    d.ReleaseMayInplace = releaseNoPairs;
    d.GetAliasMap = noPairs;
    d.ReleaseAliasMap = releaseNoPairs;
    d.kind = kind;
    d.device = device;
    d.float_type = float_type;
    d.index_type = index_type;
    d.sampling_type = sampling_type;
    return d;
}

const std::vector<OpDef>& ops() {
    static const std::vector<OpDef> all = [] {
        std::vector<OpDef> v;
        for (Device device : {Device::kCpu, Device::kCuda})
            for (OpKind kind : {OpKind::kResize, OpKind::kMsda})
                for (auto t : {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16,
                               ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16})
                    for (auto i : {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64}) {
                        v.push_back(makeOp(kind, device, t, i, t));
                        if (kind == OpKind::kMsda && t != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
                            v.push_back(makeOp(kind, device, t, i, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT));
                    }
        return v;
    }();
    return all;
}

// One domain for the process: ORT only reads it, every session options object may share it, and
// it must outlive every session created from them, so it is never released.
OrtStatus* domain(OrtCustomOpDomain** out) {
    static std::mutex mutex;
    static OrtCustomOpDomain* shared = nullptr;
    const std::lock_guard<std::mutex> lock(mutex);
    if (shared == nullptr) {
        OrtCustomOpDomain* d = nullptr;
        PS_ORT_RETURN_IF_ERROR(g_api->CreateCustomOpDomain(kDomain, &d));
        for (const OpDef& op : ops()) {
            if (OrtStatus* s = g_api->CustomOpDomain_Add(d, &op)) {
                g_api->ReleaseCustomOpDomain(d);
                return s;
            }
        }
        shared = d;
    }
    *out = shared;
    return nullptr;
}

}  // namespace
}  // namespace plugserve::ort

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) noexcept {
    using namespace plugserve::ort;
    const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
    if (api == nullptr) {
        // Every runtime serves version 1, enough to say why the library cannot be used.
        const std::string message = std::string("libplugserve_ort.so needs ONNX Runtime API version ") +
                                    std::to_string(ORT_API_VERSION) + " (ONNX Runtime 1." +
                                    std::to_string(ORT_API_VERSION) + "+), this runtime is " +
                                    api_base->GetVersionString();
        return api_base->GetApi(1)->CreateStatus(ORT_FAIL, message.c_str());
    }
    g_api = api;
    return guarded([&]() -> OrtStatus* {
        OrtCustomOpDomain* d = nullptr;
        PS_ORT_RETURN_IF_ERROR(domain(&d));
        return g_api->AddCustomOpDomain(options, d);
    });
}
