#include "harness/expr.h"

#include <algorithm>
#include <limits>

namespace plugserve::harness {

bool ExprImpl::isConstant() const { return mOwner.constant(); }

// NvInferRuntime.h documents INT64_MIN for the value of a non-constant expression.
int64_t ExprImpl::getConstantValue() const {
    return mOwner.constant() ? mOwner.constantValue() : std::numeric_limits<int64_t>::min();
}

Expr::Expr(std::string text, std::optional<int64_t> constant, std::vector<int64_t> samples)
    : mText(std::move(text)), mConstant(constant), mSamples(std::move(samples)) {
    mImpl = &mSelf;
}

std::optional<int64_t> Expr::at(size_t k) const {
    if (mConstant) return mConstant;
    if (k < mSamples.size()) return mSamples[k];
    return std::nullopt;
}

ExprBuilder::ExprBuilder(size_t nbPoints) : mNbPoints(nbPoints) { mImpl = &mSelf; }

const Expr* ExprBuilder::keep(std::unique_ptr<Expr> e) {
    mOwned.push_back(std::move(e));
    return mOwned.back().get();
}

const Expr* ExprBuilder::makeConstant(int64_t value) {
    return keep(std::make_unique<Expr>(std::to_string(value), value, std::vector<int64_t>{}));
}

const Expr* ExprBuilder::makeSymbol(const std::string& name, std::vector<int64_t> samples) {
    if (samples.size() != mNbPoints) samples.clear();
    return keep(std::make_unique<Expr>(name, std::nullopt, std::move(samples)));
}

const Expr* ExprBuilder::find(const nvinfer1::IDimensionExpr* e) const {
    for (const auto& owned : mOwned)
        if (owned.get() == e) return owned.get();
    return nullptr;
}

namespace {

const char* opName(nvinfer1::DimensionOperation op) {
    using O = nvinfer1::DimensionOperation;
    switch (op) {
        case O::kSUM: return "+";
        case O::kPROD: return "*";
        case O::kMAX: return "max";
        case O::kMIN: return "min";
        case O::kSUB: return "-";
        case O::kEQUAL: return "==";
        case O::kLESS: return "<";
        case O::kFLOOR_DIV: return "//";
        case O::kCEIL_DIV: return "ceildiv";
    }
    return "?";
}

std::optional<int64_t> evaluate(nvinfer1::DimensionOperation op, int64_t a, int64_t b) {
    using O = nvinfer1::DimensionOperation;
    switch (op) {
        case O::kSUM: return a + b;
        case O::kPROD: return a * b;
        case O::kMAX: return std::max(a, b);
        case O::kMIN: return std::min(a, b);
        case O::kSUB: return a - b;
        case O::kEQUAL: return a == b ? 1 : 0;
        case O::kLESS: return a < b ? 1 : 0;
        case O::kFLOOR_DIV:
            if (b == 0) return std::nullopt;
            return a / b - ((a % b != 0) && ((a < 0) != (b < 0)) ? 1 : 0);
        case O::kCEIL_DIV:
            if (b == 0) return std::nullopt;
            return a / b + ((a % b != 0) && ((a < 0) == (b < 0)) ? 1 : 0);
    }
    return std::nullopt;
}

}  // namespace

const Expr* ExprBuilder::apply(nvinfer1::DimensionOperation op, const Expr& a, const Expr& b) {
    const std::string text = "(" + a.text() + " " + opName(op) + " " + b.text() + ")";
    if (a.constant() && b.constant()) {
        const auto v = evaluate(op, a.constantValue(), b.constantValue());
        if (v) return keep(std::make_unique<Expr>(std::to_string(*v), *v, std::vector<int64_t>{}));
        mErrors.push_back("division by zero in " + text);
        return keep(std::make_unique<Expr>(text, std::nullopt, std::vector<int64_t>{}));
    }
    std::vector<int64_t> samples;
    for (size_t k = 0; k < mNbPoints; ++k) {
        const auto x = a.at(k), y = b.at(k);
        const auto v = x && y ? evaluate(op, *x, *y) : std::nullopt;
        if (!v) {
            if (x && y) mErrors.push_back("division by zero in " + text + " at point " + std::to_string(k));
            samples.clear();
            break;
        }
        samples.push_back(*v);
    }
    return keep(std::make_unique<Expr>(text, std::nullopt, std::move(samples)));
}

const nvinfer1::IDimensionExpr* ExprBuilder::Impl::constant(int64_t value) { return mOwner.makeConstant(value); }

const nvinfer1::IDimensionExpr* ExprBuilder::Impl::operation(nvinfer1::DimensionOperation op,
                                                             const nvinfer1::IDimensionExpr& first,
                                                             const nvinfer1::IDimensionExpr& second) {
    const Expr* a = mOwner.find(&first);
    const Expr* b = mOwner.find(&second);
    if (a == nullptr || b == nullptr) {
        mOwner.mErrors.push_back("operation() got an expression this builder did not make");
        return mOwner.makeSymbol("?", {});
    }
    return mOwner.apply(op, *a, *b);
}

// Data-dependent output sizes: the value is only known when the plugin runs.
const nvinfer1::IDimensionExpr* ExprBuilder::Impl::declareSizeTensor(int32_t outputIndex,
                                                                     const nvinfer1::IDimensionExpr& /*opt*/,
                                                                     const nvinfer1::IDimensionExpr& /*upper*/) {
    return mOwner.makeSymbol("size_tensor" + std::to_string(outputIndex), {});
}

}  // namespace plugserve::harness
