// IExprBuilder without libnvinfer. IDimensionExpr and IExprBuilder are thin forwarders to the
// abstract apiv::VDimensionExpr / apiv::VExprBuilder of NvInferImpl.h (NvInferRuntime.h: each
// method is `return mImpl->...`), so implementing those two classes is all TensorRT's builder
// contributes to getOutputShapes.
//
// An expression is either a build-time constant (folded as TensorRT folds it) or symbolic; a
// symbolic expression carries its value at every concrete point the driver gave (the min, opt
// and max shapes of each profile), so the output shapes a plugin returns can be evaluated per
// profile without TensorRT.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <NvInferRuntime.h>

namespace plugserve::harness {

class Expr;

class ExprImpl final : public nvinfer1::apiv::VDimensionExpr {
public:
    explicit ExprImpl(const Expr& owner) : mOwner(owner) {}
    bool isConstant() const override;
    int64_t getConstantValue() const override;
    bool isSizeTensor() const override { return false; }

private:
    const Expr& mOwner;
};

class Expr final : public nvinfer1::IDimensionExpr {
public:
    // `samples` holds the value at each concrete point; empty when the points are unknown.
    Expr(std::string text, std::optional<int64_t> constant, std::vector<int64_t> samples);
    ~Expr() noexcept override = default;

    bool constant() const { return mConstant.has_value(); }
    int64_t constantValue() const { return *mConstant; }
    const std::string& text() const { return mText; }
    // The value at concrete point `k`, or nullopt when it is not known.
    std::optional<int64_t> at(size_t k) const;

private:
    friend class ExprImpl;
    ExprImpl mSelf{*this};
    std::string mText;
    std::optional<int64_t> mConstant;
    std::vector<int64_t> mSamples;
};

class ExprBuilder final : public nvinfer1::IExprBuilder {
public:
    explicit ExprBuilder(size_t nbPoints);
    ~ExprBuilder() noexcept override = default;

    const Expr* makeConstant(int64_t value);
    const Expr* makeSymbol(const std::string& name, std::vector<int64_t> samples);
    // The Expr behind a pointer a plugin returned, or null when this builder did not make it
    // (a plugin that invents expressions would crash TensorRT).
    const Expr* find(const nvinfer1::IDimensionExpr* e) const;
    // Errors of operations TensorRT would reject (division by zero), for the build step's report.
    const std::vector<std::string>& errors() const { return mErrors; }

private:
    class Impl final : public nvinfer1::apiv::VExprBuilder {
    public:
        explicit Impl(ExprBuilder& owner) : mOwner(owner) {}
        const nvinfer1::IDimensionExpr* constant(int64_t value) override;
        const nvinfer1::IDimensionExpr* operation(nvinfer1::DimensionOperation op, const nvinfer1::IDimensionExpr& first,
                                                  const nvinfer1::IDimensionExpr& second) override;
        const nvinfer1::IDimensionExpr* declareSizeTensor(int32_t outputIndex, const nvinfer1::IDimensionExpr& opt,
                                                          const nvinfer1::IDimensionExpr& upper) override;

    private:
        ExprBuilder& mOwner;
    };

    const Expr* keep(std::unique_ptr<Expr> e);
    const Expr* apply(nvinfer1::DimensionOperation op, const Expr& a, const Expr& b);

    Impl mSelf{*this};
    size_t mNbPoints;
    std::vector<std::unique_ptr<Expr>> mOwned;
    std::vector<std::string> mErrors;
};

}  // namespace plugserve::harness
