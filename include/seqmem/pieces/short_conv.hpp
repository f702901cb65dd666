#pragma once

/// @file
/// The causal depthwise short convolution of the layers from x, with its cache. With weight
/// `w` (checkpoint shape [C, 1, K], kept as C×K) and optional bias `b` (`1×C`):
///
///     out[t, c] = Σ_{i=0}^{K−1} w[c, i] · z[t − K + 1 + i, c]  (+ b[c])
///
/// where w[c, K−1] multiplies the current token and rows before the sequence start are zero.
/// The cache holds the last K − 1 input rows of the sequence so far (zeros at its start), so
/// that any split of a sequence into calls, a single token included, gives the output of one
/// call. No activation: the layer applies its own.

#include <string_view>
#include <utility>

#include "seqmem/core/types.hpp"
#include "seqmem/detail/checks.hpp"

namespace seqmem::pieces {

/// The causal depthwise short convolution over C channels with kernel size K (see the file
/// comment). The layer is immutable; the cache, `(K−1)×C`, belongs to the caller's state.
template <class Scalar>
class ShortConv {
 public:
  /// `weight` `C×K` (the checkpoint's [C, 1, K] with the middle axis dropped); `bias`, if any,
  /// `1×C` (empty matrix: none).
  /// `name` is used in messages and kept as a view: it must outlive the object (a literal).
  /// @throws seqmem::invalid_argument unless K ≥ 1, the bias (if any) is `1×C` and every weight
  /// is finite.
  explicit ShortConv(Matrix<Scalar> weight, Matrix<Scalar> bias = {},
                     std::string_view name = "ShortConv")
      : weight_(std::move(weight)),
        taps_(weight_.transpose()),
        bias_(std::move(bias)),
        name_(name) {
    detail::require_positive(name_, "kernel size (weight columns)", weight_.cols());
    if (bias_.size() != 0) detail::require_shape(name_, "bias", bias_, 1, weight_.rows());
    if (!detail::all_finite(weight_) || !detail::all_finite(bias_)) {
      detail::fail(name_, "weights must be finite");
    }
  }

  /// C: channels (the weight's rows).
  Index channels() const { return weight_.rows(); }
  /// K: kernel size (the weight's columns).
  Index kernel_size() const { return weight_.cols(); }

  /// The cache at the start of a sequence: K − 1 zero rows.
  Matrix<Scalar> initial_cache() const {
    return Matrix<Scalar>::Zero(kernel_size() - 1, channels());
  }

  /// Throws unless `z` is `T×C` and `cache` `(K−1)×C` (before anything changes).
  template <class Z>
  void check(const Eigen::MatrixBase<Z>& z, const Matrix<Scalar>& cache) const {
    detail::require_shape(name_, "input", z, z.rows(), channels());
    detail::require_shape(name_, "cache", cache, kernel_size() - 1, channels());
  }

  /// out = conv(z) for z `T×C`, continuing from `cache`, which then holds the last K − 1 rows
  /// of the sequence. `out` (`T×C`) must not alias `z`.
  template <class Z>
  void apply(const Eigen::MatrixBase<Z>& z, Matrix<Scalar>& cache, MatrixRef<Scalar> out) const {
    check(z, cache);
    const Index T = z.rows(), K = kernel_size(), C = channels();
    detail::require_shape(name_, "out", out, T, C);
    // The padded sequence is [cache; z]: its row p is cache row p for p < K − 1, else z row
    // p − (K − 1). Output row t takes padded rows t … t + K − 1, tap i on row t + i.
    for (Index t = 0; t < T; ++t) {
      if (bias_.size() != 0) {
        out.row(t) = bias_.row(0);
      } else {
        out.row(t).setZero();
      }
      for (Index i = 0; i < K; ++i) {
        const Index p = t + i;
        if (p < K - 1) {
          out.row(t).array() += taps_.row(i).array() * cache.row(p).array();
        } else {
          out.row(t).array() += taps_.row(i).array() * z.row(p - (K - 1)).array();
        }
      }
    }
    // The new cache: padded rows T … T + K − 2.
    Matrix<Scalar> next(K - 1, C);
    for (Index r = 0; r < K - 1; ++r) {
      const Index p = T + r;
      if (p < K - 1) {
        next.row(r) = cache.row(p);
      } else {
        next.row(r) = z.row(p - (K - 1));
      }
    }
    cache = std::move(next);
  }

 private:
  Matrix<Scalar> weight_;
  Matrix<Scalar> taps_;  ///< weightᵀ, `K×C`: tap i of every channel in one contiguous row
  Matrix<Scalar> bias_;
  std::string_view name_;
};

}  // namespace seqmem::pieces
