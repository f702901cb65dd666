#pragma once

/// @file
/// A linear map in a checkpoint's orientation: PyTorch's `nn.Linear.weight` is `[out, in]`,
/// so `y = x Wᵀ (+ b)` with x `T×in` and y `T×out`.

#include <optional>
#include <string_view>
#include <utility>

#include "seqmem/core/types.hpp"
#include "seqmem/detail/checks.hpp"

namespace seqmem::pieces {

/// A linear map y = x Wᵀ + b with W in checkpoint orientation (`out×in`, as `nn.Linear.weight`)
/// and an optional bias `1×out`. Immutable after construction.
template <class Scalar>
class Linear {
 public:
  /// `weight` `out×in`; `bias`, if any, `1×out`. `name` is used in messages.
  /// @throws seqmem::invalid_argument unless the bias is `1×out` and every weight is finite.
  Linear(Matrix<Scalar> weight, std::optional<Matrix<Scalar>> bias = std::nullopt,
         std::string_view name = "Linear")
      : weight_(std::move(weight)), bias_(std::move(bias)) {
    if (bias_) detail::require_shape(name, "bias", *bias_, 1, weight_.rows());
    if (!detail::all_finite(weight_) || (bias_ && !detail::all_finite(*bias_))) {
      detail::fail(name, "weights must be finite");
    }
  }

  /// Width of x (W's columns).
  Index in_features() const { return weight_.cols(); }
  /// Width of y (W's rows).
  Index out_features() const { return weight_.rows(); }
  /// W, `out×in`.
  const Matrix<Scalar>& weight() const { return weight_; }
  /// b, `1×out`, or absent.
  const std::optional<Matrix<Scalar>>& bias() const { return bias_; }

  /// y = x Wᵀ + b for x `T×in` (any row stride), into y `T×out`.
  template <class X>
  void apply(const Eigen::MatrixBase<X>& x, MatrixRef<Scalar> y) const {
    y.noalias() = x * weight_.transpose();
    if (bias_) y.rowwise() += bias_->row(0);
  }

  /// y = x Wᵀ + b, returned.
  template <class X>
  Matrix<Scalar> operator()(const Eigen::MatrixBase<X>& x) const {
    Matrix<Scalar> y(x.rows(), out_features());
    apply(x, y);
    return y;
  }

 private:
  Matrix<Scalar> weight_;
  std::optional<Matrix<Scalar>> bias_;
};

}  // namespace seqmem::pieces
