// The JSON the harness prints: just enough of a value type to build its report.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace plugserve::harness {

class Json {
public:
    Json(std::nullptr_t) : mText("null") {}
    explicit Json(bool b) : mText(b ? "true" : "false") {}
    explicit Json(int64_t v) : mText(std::to_string(v)) {}
    explicit Json(const std::string& s) : mText(quote(s)) {}
    explicit Json(const char* s) : mText(quote(s == nullptr ? "" : s)) {}
    static Json object() { return Json('{'); }
    static Json array() { return Json('['); }

    Json& set(const std::string& key, const Json& value) {
        mMembers.emplace_back(quote(key) + ":" + value.dump());
        return *this;
    }
    Json& push(const Json& value) {
        mMembers.push_back(value.dump());
        return *this;
    }
    std::string dump() const {
        if (mKind == 0) return mText;
        std::string out(1, mKind);
        for (size_t i = 0; i < mMembers.size(); ++i) out += (i ? "," : "") + mMembers[i];
        return out + (mKind == '{' ? '}' : ']');
    }

private:
    explicit Json(char kind) : mKind(kind) {}
    static std::string quote(const std::string& s) {
        std::string out = "\"";
        for (unsigned char c : s) {
            if (c == '"' || c == '\\') {
                out += '\\';
                out += static_cast<char>(c);
            } else if (c < 0x20 || c >= 0x7f) {
                char buf[8];
                std::snprintf(buf, sizeof buf, "\\u%04x", c);
                out += buf;
            } else {
                out += static_cast<char>(c);
            }
        }
        return out + "\"";
    }
    char mKind = 0;
    std::string mText;
    std::vector<std::string> mMembers;
};

}  // namespace plugserve::harness
