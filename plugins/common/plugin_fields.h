// The one typed field table per plugin. The same table gives the creator's getFieldNames, parses
// the PluginFieldCollection in createPlugin and emits getFieldsToSerialize, so what TensorRT
// serializes into a plan is exactly what the creator reads back (roiAlignPlugin's rule, kept by
// construction instead of by care).
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include <NvInferRuntime.h>

#include "common/status.h"

namespace plugserve::trt {

// One attribute: its field name and the member of the plugin's attribute struct that holds it.
// int32_t members travel as kINT32 with one value, std::string members as kCHAR. An optional field
// that a node or plan lacks keeps the value the attribute struct is initialized with: attributes
// added later stay readable from graphs and plans written before them.
template <typename Attrs>
struct Field {
    const char* name;
    std::variant<int32_t Attrs::*, std::string Attrs::*> member;
    bool optional = false;
};

template <typename Attrs>
using FieldTable = std::vector<Field<Attrs>>;

// Readers for one PluginField; the error names the field and what was expected.
Status readField(const nvinfer1::PluginField& field, int32_t* value);
Status readField(const nvinfer1::PluginField& field, std::string* value);
// "kINT32", "kCHAR", ... for messages.
const char* fieldTypeName(nvinfer1::PluginFieldType type);

template <typename Attrs>
nvinfer1::PluginFieldType fieldType(const Field<Attrs>& f) {
    return std::holds_alternative<int32_t Attrs::*>(f.member) ? nvinfer1::PluginFieldType::kINT32
                                                              : nvinfer1::PluginFieldType::kCHAR;
}

// getFieldNames: names and types, no data (the ONNX parser reads the types from here).
template <typename Attrs>
std::vector<nvinfer1::PluginField> describeFields(const FieldTable<Attrs>& table) {
    std::vector<nvinfer1::PluginField> out;
    for (const auto& f : table) {
        const nvinfer1::PluginFieldType type = fieldType(f);
        out.emplace_back(f.name, nullptr, type, type == nvinfer1::PluginFieldType::kINT32 ? 1 : 0);
    }
    return out;
}

// createPlugin: every field of the table must be present exactly once with its type (optional ones
// at most once), and no other field may be present (a misspelt attribute is an error, not a silent default).
template <typename Attrs>
Status parseFields(const FieldTable<Attrs>& table, const nvinfer1::PluginFieldCollection* fc, Attrs* attrs) {
    const int32_t n = fc == nullptr ? 0 : fc->nbFields;
    if (n > 0 && fc->fields == nullptr)
        return Status::Error("the field collection has " + std::to_string(n) + " fields but no field array");
    std::vector<bool> seen(table.size(), false);
    for (int32_t i = 0; i < n; ++i) {
        const nvinfer1::PluginField& pf = fc->fields[i];
        const std::string name = pf.name == nullptr ? "" : pf.name;
        size_t k = 0;
        while (k < table.size() && name != table[k].name) ++k;
        if (k == table.size()) {
            std::string known;
            for (const auto& f : table) known += (known.empty() ? "" : ", ") + std::string(f.name);
            return Status::Error("unknown field '" + name + "' (fields: " + (known.empty() ? "none" : known) + ")");
        }
        if (seen[k]) return Status::Error("field '" + name + "' is given twice");
        seen[k] = true;
        Status s = std::visit([&](auto member) { return readField(pf, &(attrs->*member)); }, table[k].member);
        if (!s.ok()) return s;
    }
    for (size_t k = 0; k < table.size(); ++k) {
        if (!seen[k] && !table[k].optional)
            return Status::Error(std::string("missing field '") + table[k].name + "' (" +
                                 fieldTypeName(fieldType(table[k])) + ")");
    }
    return Status::Ok();
}

// getFieldsToSerialize: the fields point into `attrs`, which must outlive their use.
template <typename Attrs>
void emitFields(const FieldTable<Attrs>& table, const Attrs& attrs, std::vector<nvinfer1::PluginField>* out) {
    out->clear();
    for (const auto& f : table) {
        if (auto m = std::get_if<int32_t Attrs::*>(&f.member)) {
            out->emplace_back(f.name, &(attrs.*(*m)), nvinfer1::PluginFieldType::kINT32, 1);
        } else {
            const std::string& s = attrs.*std::get<std::string Attrs::*>(f.member);
            // Length counts the terminating NUL, as the ONNX parser passes strings.
            out->emplace_back(f.name, s.c_str(), nvinfer1::PluginFieldType::kCHAR, static_cast<int32_t>(s.size() + 1));
        }
    }
}

// "mode=bicubic align_corners=0": the plugin's metadata string in engine inspector output.
template <typename Attrs>
std::string describeAttrs(const FieldTable<Attrs>& table, const Attrs& attrs) {
    std::string out;
    for (const auto& f : table) {
        out += (out.empty() ? "" : " ") + std::string(f.name) + "=";
        std::visit(
            [&](auto member) {
                const auto& v = attrs.*member;
                if constexpr (std::is_same_v<std::decay_t<decltype(v)>, std::string>) {
                    out += v;
                } else {
                    out += std::to_string(v);
                }
            },
            f.member);
    }
    return out;
}

}  // namespace plugserve::trt
