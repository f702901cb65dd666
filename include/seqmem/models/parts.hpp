#pragma once

/// @file
/// Parts that several layers from x share (docs/layers.md): an input stream (a projection of
/// x, then optionally the causal short convolution with its cache) and the output stage of
/// the delta-rule layers (per-head RMSNorm, optionally gated by silu(x g_projᵀ), then o_proj).

#include <optional>
#include <string>
#include <utility>

#include "seqmem/core/types.hpp"
#include "seqmem/pieces/linear.hpp"
#include "seqmem/pieces/norm.hpp"
#include "seqmem/pieces/short_conv.hpp"

namespace seqmem::models {

/// `conv(x projᵀ)` (or `x projᵀ` without a convolution), continuing from a cache.
template <class Scalar>
struct ConvProjection {
  pieces::Linear<Scalar> proj;
  std::optional<pieces::ShortConv<Scalar>> conv;

  /// The cache at the start of a sequence (empty without a convolution).
  Matrix<Scalar> initial_cache() const { return conv ? conv->initial_cache() : Matrix<Scalar>(); }

  Matrix<Scalar> operator()(const MatrixCRef<Scalar>& x, Matrix<Scalar>& cache) const {
    Matrix<Scalar> z = proj(x);
    if (!conv) return z;
    Matrix<Scalar> out(z.rows(), z.cols());
    conv->apply(z, cache, out);
    return out;
  }
};

/// Per value head (width `head_dim`): o ← o / sqrt(mean(o²) + eps) · norm_weight, times
/// silu(x g_projᵀ) when gated; then y = o o_projᵀ.
template <class Scalar>
struct GatedOutput {
  Matrix<Scalar> norm_weight;  ///< 1 × head_dim, shared by the heads
  std::optional<pieces::Linear<Scalar>> gate;
  pieces::Linear<Scalar> proj;
  Scalar eps;
  Index head_dim;

  void operator()(Matrix<Scalar>& o, const MatrixCRef<Scalar>& x, MatrixRef<Scalar> y) const {
    if (gate) {
      pieces::gated_rms_norm<Scalar>(o, (*gate)(x), norm_weight, eps, head_dim);
    } else {
      pieces::rms_norm<Scalar>(o, norm_weight, eps, head_dim);
    }
    proj.apply(o, y);
  }
};

}  // namespace seqmem::models
