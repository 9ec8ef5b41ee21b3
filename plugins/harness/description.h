// The description of plugin nodes the Python driver (plugserve.check_plugins) writes: one
// token-separated line per fact, strings hex-encoded so that names and attribute values may
// hold any byte. Grammar (one node per `node` ... `end` block):
//
//   point <label>                          a concrete point, in order: profile k's min, opt, max
//   sym <name> <value at each point>       a symbolic extent or shape-tensor value
//   node <name hex> <op type hex>
//   attr <name hex> <ONNX AttributeType> <values>   INT v | FLOAT v | STRING hex | INTS n v.. |
//                                           FLOATS n v.. | STRINGS n hex.. | TENSOR <elem> n hex-bytes | <other type>
//   input <index> <ONNX elem type> <rank> <extent>..    extents: integers or symbol names;
//                                           `input <index> empty` for an omitted optional input
//   value <index> <n> <v>..                 the values of a shape tensor input (integers or symbols)
//   data <directory>                        enqueue: in<i>.<point>.bin files, out.<point>.bin written
//   end
#pragma once

#include <cstdint>
#include <istream>
#include <map>
#include <string>
#include <vector>

namespace plugserve::harness {

struct Extent {
    bool symbolic = false;
    int64_t value = 0;
    std::string symbol;
};

struct AttrDesc {
    std::string name;
    std::string type;                 // ONNX AttributeProto type name: INT, STRING, INTS, ...
    std::vector<std::string> values;  // decoded: numbers as text, strings as bytes
    std::string tensorType;           // TENSOR: the ONNX element type of the tensor
};

struct InputDesc {
    bool empty = false;
    std::string dtype;  // ONNX element type name: FLOAT, FLOAT16, INT64, ...
    std::vector<Extent> dims;
    bool hasValues = false;
    std::vector<Extent> values;
};

struct NodeDesc {
    std::string name;
    std::string op;
    std::vector<AttrDesc> attrs;
    std::vector<InputDesc> inputs;
    std::string dataDir;

    const AttrDesc* attr(const std::string& attrName) const;
};

struct Description {
    std::vector<std::string> points;
    std::map<std::string, std::vector<int64_t>> symbols;
    std::vector<NodeDesc> nodes;
};

// Throws std::runtime_error naming the line on malformed input.
Description readDescription(std::istream& in);

}  // namespace plugserve::harness
