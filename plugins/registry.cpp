// How TensorRT finds the plugserve creators, for each way users load a plugin library:
// - IPluginRegistry::loadLibrary (trtexec --dynamicPlugins, a plan with serialized plugin
//   libraries): TensorRT calls the exported getCreators and setLoggerFinder and registers the
//   creators itself.
// - LD_PRELOAD, Triton's --backend-config=tensorrt,plugins=..., Python ctypes.CDLL, trtexec
//   --staticPlugins: the library is only loaded, so a static initializer registers the creators
//   in the global registry (what REGISTER_TENSORRT_PLUGIN does, with errors reported).
// loadLibrary fails when any creator it is given is registered already, and it loads the library
// with dlopen, which runs the static initializer first. So the initializer skips registration when
// the dlopen was called from inside TensorRT: it walks the stack and looks for a libnvinfer* frame.
// When the library was loaded before and registered itself (LD_PRELOAD or ctypes, then
// loadLibrary on the same path: dlopen does not run initializers twice), getCreators leaves out
// the creators already registered, so loadLibrary is not handed duplicates.
#include <dlfcn.h>
#include <unwind.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "dynamic_resize/plugin.h"
#include "ms_deform_attn/plugin.h"

namespace plugserve::trt {
namespace {

// TensorRT keeps pointers to the creators, so they live as long as the library.
nvinfer1::IPluginCreatorInterface* const* creators(int32_t* count) {
    static DynamicResizeCreator dynamicResize;
    static MSDeformAttnCreator msDeformAttn;
    static nvinfer1::IPluginCreatorInterface* const list[] = {&dynamicResize, &msDeformAttn};
    *count = static_cast<int32_t>(sizeof(list) / sizeof(list[0]));
    return list;
}

// libnvinfer.so, libnvinfer_lean.so and libnvinfer_dispatch.so all implement loadLibrary.
bool isTensorRTLibrary(const char* path) {
    const char* slash = std::strrchr(path, '/');
    return std::strncmp(slash == nullptr ? path : slash + 1, "libnvinfer", 10) == 0;
}

bool loadedByTensorRT() {
    bool found = false;
    _Unwind_Backtrace(
        [](_Unwind_Context* context, void* arg) -> _Unwind_Reason_Code {
            Dl_info info{};
            const uintptr_t pc = _Unwind_GetIP(context);
            if (pc != 0 && dladdr(reinterpret_cast<void*>(pc), &info) != 0 && info.dli_fname != nullptr &&
                isTensorRTLibrary(info.dli_fname)) {
                *static_cast<bool*>(arg) = true;
                return _URC_END_OF_STACK;
            }
            return _URC_NO_REASON;
        },
        &found);
    return found;
}

class StaticRegistration {
public:
    StaticRegistration() {
        try {
            int32_t count = 0;
            nvinfer1::IPluginCreatorInterface* const* list = creators(&count);
            if (!loadedByTensorRT()) registerAll(list, count);
            for (int32_t i = 0; i < count; ++i) {
                if (std::find(mRegistered.begin(), mRegistered.end(), list[i]) == mRegistered.end())
                    mForLoadLibrary.push_back(list[i]);
            }
        } catch (const std::exception& e) {
            reportError(nullptr, nvinfer1::ErrorCode::kINTERNAL_ERROR, "registry", "static registration", e.what());
        }
    }

    // A library that is unloaded (dlclose) must not leave dangling creators in the registry.
    ~StaticRegistration() {
        if (mRegistered.empty()) return;
        nvinfer1::IPluginRegistry* registry = getPluginRegistry();
        if (registry == nullptr) return;
        for (nvinfer1::IPluginCreatorInterface* creator : mRegistered) registry->deregisterCreator(*creator);
    }

    StaticRegistration(const StaticRegistration&) = delete;
    StaticRegistration& operator=(const StaticRegistration&) = delete;

    // What getCreators hands to loadLibrary: the creators this copy did not register itself.
    nvinfer1::IPluginCreatorInterface* const* forLoadLibrary(int32_t* count) const {
        *count = static_cast<int32_t>(mForLoadLibrary.size());
        // Never null, even when empty: an empty list is "nothing left to register", not a failure.
        int32_t all = 0;
        return mForLoadLibrary.empty() ? creators(&all) : mForLoadLibrary.data();
    }

private:
    void registerAll(nvinfer1::IPluginCreatorInterface* const* list, int32_t count) {
        nvinfer1::IPluginRegistry* registry = getPluginRegistry();
        if (registry == nullptr) return;
        for (int32_t i = 0; i < count; ++i) {
            auto* creator = static_cast<nvinfer1::IPluginCreatorV3One*>(list[i]);
            if (registry->registerCreator(*creator, kPluginNamespace)) {
                mRegistered.push_back(creator);
                continue;
            }
            const std::string message = std::string(kPluginNamespace) + "::" + creator->getPluginName() + " version " +
                                        kPluginVersion +
                                        " is registered already; is a second copy of libplugserve.so loaded "
                                        "(LD_PRELOAD plus a plan with serialized plugin libraries)?";
            reportError(nullptr, nvinfer1::ErrorCode::kINVALID_STATE, creator->getPluginName(), "static registration",
                        message.c_str());
        }
    }

    std::vector<nvinfer1::IPluginCreatorInterface*> mRegistered;
    std::vector<nvinfer1::IPluginCreatorInterface*> mForLoadLibrary;
};

const StaticRegistration gStaticRegistration;

}  // namespace
}  // namespace plugserve::trt

extern "C" __attribute__((visibility("default"))) nvinfer1::IPluginCreatorInterface* const* getCreators(
    int32_t& nbCreators) {
    try {
        return plugserve::trt::gStaticRegistration.forLoadLibrary(&nbCreators);
    } catch (...) {
        nbCreators = 0;
        return nullptr;
    }
}

extern "C" __attribute__((visibility("default"))) void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
    plugserve::trt::setLoggerFinder(finder);
}
