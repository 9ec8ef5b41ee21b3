// The IPluginV3 machinery both plugins share, so that each plugin's own file holds only what is
// particular to it: its attributes, its shape rules and the translation to the kernel's Params.
//
// Every noexcept override TensorRT calls lives here, once, and runs its body through `guarded`:
// no exception crosses the library boundary, and a failed Status becomes a message to the
// execution context's ErrorRecorder (or the logger) plus a non-zero return.
#pragma once

#include <cstdint>
#include <exception>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include <NvInferRuntime.h>

#include "common/plugin_fields.h"
#include "common/status.h"

namespace plugserve::trt {

inline constexpr const char* kPluginNamespace = "plugserve";
inline constexpr const char* kPluginVersion = "1";

// Stores the finder TensorRT passes to setLoggerFinder (IPluginRegistry::loadLibrary).
void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

// Reports an error from `plugin`'s method `where`: to `recorder` (the execution context's
// ErrorRecorder) when there is one, else to the logger from setLoggerFinder, else to stderr
// (a library registered at load time, by LD_PRELOAD or dlopen, is never given a logger).
void reportError(nvinfer1::IErrorRecorder* recorder, nvinfer1::ErrorCode code, const char* plugin, const char* where,
                 const char* message) noexcept;
nvinfer1::ErrorCode errorCodeOf(const Status& status) noexcept;

template <typename R, typename Body>
R guarded(nvinfer1::IErrorRecorder* recorder, const char* plugin, const char* where, R fallback, Body&& body) noexcept {
    try {
        return body();
    } catch (const std::exception& e) {
        reportError(recorder, nvinfer1::ErrorCode::kINTERNAL_ERROR, plugin, where, e.what());
    } catch (...) {
        reportError(recorder, nvinfer1::ErrorCode::kINTERNAL_ERROR, plugin, where, "unknown exception");
    }
    return fallback;
}

// For the methods that return an int32_t status: 0 on success, else the Status code, reported.
template <typename Body>
int32_t guardedStatus(nvinfer1::IErrorRecorder* recorder, const char* plugin, const char* where, Body&& body) noexcept {
    return guarded(recorder, plugin, where, int32_t{-1}, [&]() -> int32_t {
        const Status s = body();
        if (s.ok()) return 0;
        reportError(recorder, errorCodeOf(s), plugin, where, s.message.c_str());
        return s.code;
    });
}

// TensorRT data types as the kernels' element types; the error names the tensor.
Status dtypeOf(const char* tensor, nvinfer1::DataType type, DType* out);
Status indexTypeOf(const char* tensor, nvinfer1::DataType type, IndexType* out);
const char* dataTypeName(nvinfer1::DataType type);

// What supportsFormatCombination accepts at one position (always with linear format).
struct TypeRule {
    // kFloat32: float32 only; kSameAsOrFloat32: the type of `same_as`, or float32 (mixed precision's fp32 tensors).
    enum Kind { kNone, kFloat, kFloat32, kIndex, kFloatOrIndex, kSameAs, kSameAsOrFloat32 } kind;
    int32_t same_as = 0;  // for kSameAs*: the earlier position whose type this one must equal
};
bool accepts(const TypeRule& rule, const nvinfer1::DynamicPluginTensorDesc* inOut, int32_t pos);

// Shape rules are written once per plugin over Dims in which -1 means "not known yet", so the
// same rule serves getOutputShapes (extents that are build-time constants), configurePlugin
// (the network's extents, with wildcards) and onShapeChange (all extents known).
nvinfer1::Dims knownDims(const nvinfer1::DimsExprs& exprs);
struct Extent {
    int32_t input;
    int32_t axis;
};
// `names` holds one name per input, for the messages.
Status checkRanks(const nvinfer1::Dims* in, int32_t nbInputs, std::initializer_list<int32_t> ranks,
                  const char* const* names);
// All known extents in `extents` are equal (and equal to `expected` when it is >= 0).
Status checkSame(const char* what, const nvinfer1::Dims* in, std::initializer_list<Extent> extents,
                 const char* const* names, int64_t expected = -1);

// Derived provides:
//   static constexpr const char* kName;
//   static const FieldTable<Attrs>& fields();
//   static Status checkAttrs(const Attrs&);                        (the creator's check)
//   TypeRule typeRule(int32_t pos, int32_t nbInputs) const;
//   Status checkInputs(const Dims* in, int32_t nbInputs) const;   (the shape rules, -1 = unknown)
//   Status outputShape(const DimsExprs* in, int32_t nbInputs, const DimsExprs* shapeInputs,
//                      int32_t nbShapeInputs, DimsExprs& out, IExprBuilder&) const;
//   Status checkSizes(const Dims* in, const Dims& out) const;     (Params + the kernel's validate)
//   Status launch(const PluginTensorDesc* in, const PluginTensorDesc& out, const void* const* inputs,
//                 void* output, cudaStream_t) const;
template <typename Derived, typename Attrs>
class PluginV3 : public nvinfer1::IPluginV3,
                 public nvinfer1::IPluginV3OneCore,
                 public nvinfer1::IPluginV3OneBuild,
                 public nvinfer1::IPluginV3OneRuntime {
public:
    explicit PluginV3(Attrs attrs) : mAttrs(std::move(attrs)) {}

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override {
        switch (type) {
            case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
            case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
            case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }
    nvinfer1::IPluginV3* clone() noexcept override { return copy("clone", mRecorder); }

    // IPluginV3OneCore
    const char* getPluginName() const noexcept override { return Derived::kName; }
    const char* getPluginVersion() const noexcept override { return kPluginVersion; }
    const char* getPluginNamespace() const noexcept override { return kPluginNamespace; }

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override { return 1; }

    // Both plugins return one tensor of the type of their first (data) input.
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs, const nvinfer1::DataType* inputTypes,
                               int32_t nbInputs) const noexcept override {
        return status("getOutputDataTypes", [&] {
            if (nbOutputs != 1 || nbInputs < 1) return Status::Error("expected 1 output and at least 1 input");
            DType unused;
            if (Status s = dtypeOf("input 0", inputTypes[0], &unused); !s.ok()) return s;
            outputTypes[0] = inputTypes[0];
            return Status::Ok();
        });
    }

    int32_t getOutputShapes(const nvinfer1::DimsExprs* inputs, int32_t nbInputs, const nvinfer1::DimsExprs* shapeInputs,
                            int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                            nvinfer1::IExprBuilder& exprBuilder) noexcept override {
        return status("getOutputShapes", [&] {
            if (nbOutputs != 1) return Status::Error("expected 1 output, got " + std::to_string(nbOutputs));
            std::vector<nvinfer1::Dims> known;
            for (int32_t i = 0; i < nbInputs; ++i) known.push_back(knownDims(inputs[i]));
            if (Status s = derived().checkInputs(known.data(), nbInputs); !s.ok()) return s;
            return derived().outputShape(inputs, nbInputs, shapeInputs, nbShapeInputs, outputs[0], exprBuilder);
        });
    }

    bool supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* inOut, int32_t nbInputs,
                                   int32_t nbOutputs) noexcept override {
        return guarded(mRecorder, Derived::kName, "supportsFormatCombination", false, [&] {
            return pos >= 0 && pos < nbInputs + nbOutputs && inOut[pos].desc.format == nvinfer1::TensorFormat::kLINEAR &&
                   accepts(derived().typeRule(pos, nbInputs), inOut, pos);
        });
    }

    // Build time: the shape rules on the network's extents, and the kernel's size limits on the
    // profile's largest shapes (limits that hold there hold for every smaller shape).
    int32_t configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nbInputs,
                            const nvinfer1::DynamicPluginTensorDesc* out, int32_t nbOutputs) noexcept override {
        return status("configurePlugin", [&] {
            if (nbOutputs != 1) return Status::Error("expected 1 output, got " + std::to_string(nbOutputs));
            std::vector<nvinfer1::Dims> dims, largest;
            for (int32_t i = 0; i < nbInputs; ++i) {
                dims.push_back(in[i].desc.dims);
                largest.push_back(in[i].max);
            }
            if (Status s = derived().checkInputs(dims.data(), nbInputs); !s.ok()) return s;
            return derived().checkSizes(largest.data(), out[0].max);
        });
    }

    const char* getMetadataString() noexcept override {
        return guarded(mRecorder, Derived::kName, "getMetadataString", static_cast<const char*>(nullptr), [&] {
            mMetadata = describeAttrs(Derived::fields(), mAttrs);
            return mMetadata.c_str();
        });
    }

    // IPluginV3OneRuntime
    int32_t onShapeChange(const nvinfer1::PluginTensorDesc* in, int32_t nbInputs, const nvinfer1::PluginTensorDesc* out,
                          int32_t nbOutputs) noexcept override {
        return status("onShapeChange", [&] {
            if (nbOutputs != 1) return Status::Error("expected 1 output, got " + std::to_string(nbOutputs));
            std::vector<nvinfer1::Dims> dims;
            for (int32_t i = 0; i < nbInputs; ++i) dims.push_back(in[i].dims);
            if (Status s = derived().checkInputs(dims.data(), nbInputs); !s.ok()) return s;
            return derived().checkSizes(dims.data(), out[0].dims);
        });
    }

    int32_t enqueue(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc* outputDesc,
                    const void* const* inputs, void* const* outputs, void* /*workspace*/,
                    cudaStream_t stream) noexcept override {
        return status("enqueue", [&] { return derived().launch(inputDesc, outputDesc[0], inputs, outputs[0], stream); });
    }

    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override {
        return copy("attachToContext", context == nullptr ? nullptr : context->getErrorRecorder());
    }

    const nvinfer1::PluginFieldCollection* getFieldsToSerialize() noexcept override {
        return guarded(mRecorder, Derived::kName, "getFieldsToSerialize",
                       static_cast<const nvinfer1::PluginFieldCollection*>(nullptr), [&] {
                           emitFields(Derived::fields(), mAttrs, &mSerialized);
                           mSerializedCollection.nbFields = static_cast<int32_t>(mSerialized.size());
                           mSerializedCollection.fields = mSerialized.data();
                           return &mSerializedCollection;
                       });
    }

protected:
    const Attrs& attrs() const { return mAttrs; }

private:
    const Derived& derived() const { return static_cast<const Derived&>(*this); }

    template <typename Body>
    int32_t status(const char* where, Body&& body) const noexcept {
        return guardedStatus(mRecorder, Derived::kName, where, std::forward<Body>(body));
    }

    nvinfer1::IPluginV3* copy(const char* where, nvinfer1::IErrorRecorder* recorder) const noexcept {
        return guarded(mRecorder, Derived::kName, where, static_cast<nvinfer1::IPluginV3*>(nullptr), [&] {
            auto* plugin = new Derived(derived());
            static_cast<PluginV3*>(plugin)->mRecorder = recorder;
            return static_cast<nvinfer1::IPluginV3*>(plugin);
        });
    }

    Attrs mAttrs;
    // Set by attachToContext: errors at run time go to the execution context's recorder.
    nvinfer1::IErrorRecorder* mRecorder = nullptr;
    // Storage behind the pointers getFieldsToSerialize and getMetadataString return.
    std::vector<nvinfer1::PluginField> mSerialized;
    nvinfer1::PluginFieldCollection mSerializedCollection{};
    std::string mMetadata;
};

// The creator of Plugin: its field names, and createPlugin that parses them through the same
// table and rejects missing, unknown or mistyped fields with a message naming the field.
template <typename Plugin, typename Attrs>
class Creator : public nvinfer1::IPluginCreatorV3One {
public:
    Creator() : mFieldNames(describeFields(Plugin::fields())) {
        mCollection.nbFields = static_cast<int32_t>(mFieldNames.size());
        mCollection.fields = mFieldNames.data();
    }

    const nvinfer1::PluginFieldCollection* getFieldNames() noexcept override { return &mCollection; }
    const char* getPluginName() const noexcept override { return Plugin::kName; }
    const char* getPluginVersion() const noexcept override { return kPluginVersion; }
    const char* getPluginNamespace() const noexcept override { return kPluginNamespace; }

    // Build and runtime phases take the same fields: getFieldsToSerialize emits the table.
    nvinfer1::IPluginV3* createPlugin(const char* name, const nvinfer1::PluginFieldCollection* fc,
                                      nvinfer1::TensorRTPhase /*phase*/) noexcept override {
        return guarded(nullptr, Plugin::kName, "createPlugin", static_cast<nvinfer1::IPluginV3*>(nullptr),
                       [&]() -> nvinfer1::IPluginV3* {
                           Attrs attrs{};
                           Status s = parseFields(Plugin::fields(), fc, &attrs);
                           if (s.ok()) s = Plugin::checkAttrs(attrs);
                           if (!s.ok()) {
                               const std::string message =
                                   "layer '" + std::string(name == nullptr ? "" : name) + "': " + s.message;
                               reportError(nullptr, nvinfer1::ErrorCode::kINVALID_ARGUMENT, Plugin::kName,
                                           "createPlugin", message.c_str());
                               return nullptr;
                           }
                           return new Plugin(std::move(attrs));
                       });
    }

private:
    std::vector<nvinfer1::PluginField> mFieldNames;
    nvinfer1::PluginFieldCollection mCollection{};
};

}  // namespace plugserve::trt
