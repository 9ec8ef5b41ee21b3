#include "harness/description.h"

#include <cctype>
#include <sstream>
#include <stdexcept>

namespace plugserve::harness {

const AttrDesc* NodeDesc::attr(const std::string& attrName) const {
    for (const auto& a : attrs)
        if (a.name == attrName) return &a;
    return nullptr;
}

namespace {

std::string unhex(const std::string& hex) {
    if (hex == "-") return "";
    if (hex.size() % 2 != 0) throw std::runtime_error("odd-length hex string '" + hex + "'");
    std::string out;
    for (size_t i = 0; i < hex.size(); i += 2) out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
    return out;
}

Extent extent(const std::string& token) {
    Extent e;
    const bool number = !token.empty() && (std::isdigit(static_cast<unsigned char>(token[0])) || token[0] == '-');
    if (number) {
        e.value = std::stoll(token);
    } else {
        e.symbolic = true;
        e.symbol = token;
    }
    return e;
}

std::vector<Extent> extents(std::istringstream& line, size_t n) {
    std::vector<Extent> out;
    std::string token;
    for (size_t i = 0; i < n && line >> token; ++i) out.push_back(extent(token));
    if (out.size() != n) throw std::runtime_error("expected " + std::to_string(n) + " extents");
    return out;
}

AttrDesc attribute(std::istringstream& line) {
    AttrDesc a;
    std::string name;
    line >> name >> a.type;
    a.name = unhex(name);
    std::string token;
    size_t n = 1;
    bool strings = a.type == "STRING" || a.type == "STRINGS" || a.type == "TENSOR";
    if (a.type == "TENSOR") line >> a.tensorType;
    if (a.type == "INTS" || a.type == "FLOATS" || a.type == "STRINGS" || a.type == "TENSOR") line >> n;
    if (a.type != "INT" && a.type != "FLOAT" && a.type != "STRING" && a.type != "INTS" && a.type != "FLOATS" &&
        a.type != "STRINGS" && a.type != "TENSOR")
        n = 0;  // a type loadFields refuses: only its name matters
    for (size_t i = 0; i < n; ++i) {
        if (!(line >> token)) throw std::runtime_error("attribute '" + a.name + "' has too few values");
        a.values.push_back(strings ? unhex(token) : token);
    }
    return a;
}

}  // namespace

Description readDescription(std::istream& in) {
    Description d;
    std::string text;
    int lineNo = 0;
    NodeDesc* node = nullptr;
    while (std::getline(in, text)) {
        ++lineNo;
        std::istringstream line(text);
        std::string key;
        if (!(line >> key) || key[0] == '#') continue;
        try {
            if (key == "point") {
                std::string label;
                line >> label;
                d.points.push_back(label);
            } else if (key == "sym") {
                std::string name;
                line >> name;
                std::vector<int64_t> values;
                for (int64_t v; line >> v;) values.push_back(v);
                d.symbols[name] = values;
            } else if (key == "node") {
                std::string name, op;
                line >> name >> op;
                d.nodes.emplace_back();
                node = &d.nodes.back();
                node->name = unhex(name);
                node->op = unhex(op);
            } else if (node == nullptr) {
                throw std::runtime_error("'" + key + "' outside a node block");
            } else if (key == "attr") {
                node->attrs.push_back(attribute(line));
            } else if (key == "input" || key == "value") {
                size_t index = 0;
                line >> index;
                if (node->inputs.size() <= index) node->inputs.resize(index + 1);
                InputDesc& input = node->inputs[index];
                if (key == "value") {
                    size_t n = 0;
                    line >> n;
                    input.hasValues = true;
                    input.values = extents(line, n);
                } else {
                    std::string dtype;
                    line >> dtype;
                    if (dtype == "empty") {
                        input.empty = true;
                    } else {
                        size_t rank = 0;
                        line >> rank;
                        input.dtype = dtype;
                        input.dims = extents(line, rank);
                    }
                }
            } else if (key == "data") {
                line >> node->dataDir;
            } else if (key == "end") {
                node = nullptr;
            } else {
                throw std::runtime_error("unknown key '" + key + "'");
            }
        } catch (const std::exception& e) {
            throw std::runtime_error("description line " + std::to_string(lineNo) + ": " + e.what());
        }
    }
    return d;
}

}  // namespace plugserve::harness
