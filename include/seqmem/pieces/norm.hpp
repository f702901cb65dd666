#pragma once

/// @file
/// The normalizations of the layers from x, each over the last dimension of `width`
/// consecutive columns (one head, or a group), row by row, in place:
///
///     rms_norm:        z / sqrt(mean(z²) + eps) · weight
///     gated_rms_norm:  rms_norm(z) · silu(gate)            (fla's gated output norm)
///     layer_norm:      (z − mean) / sqrt(var + eps) · weight + bias   (var divides by n)
///     l2_normalize:    z / sqrt(Σ z² + eps)                 (fla's in-kernel eps 1e-6)
///
/// `weight` and `bias` are `1×width` and shared by every group of a row (RMSNorm also takes a
/// `1×cols` weight, one per channel: Mamba2 normalizes groups of I/G channels of an I-wide
/// weight).

#include <cmath>

#include "seqmem/core/types.hpp"
#include "seqmem/detail/checks.hpp"
#include "seqmem/pieces/activation.hpp"

namespace seqmem::pieces {

/// RMSNorm of every `width`-column group of every row of `z`; `weight` is `1×width` (shared
/// by the groups) or `1×z.cols()` (one per channel).
template <class Scalar>
void rms_norm(MatrixRef<Scalar> z, const Matrix<Scalar>& weight, Scalar eps, Index width) {
  if (weight.rows() != 1 || (weight.cols() != width && weight.cols() != z.cols())) {
    detail::fail("rms_norm", "weight must be 1x", width, " or 1x", z.cols(), ", got ",
                 weight.rows(), "x", weight.cols());
  }
  const bool per_channel = weight.cols() != width;
  for (Index i = 0; i < z.rows(); ++i) {
    for (Index c = 0; c + width <= z.cols(); c += width) {
      auto g = z.row(i).segment(c, width);
      const auto w = weight.row(0).segment(per_channel ? c : 0, width);
      const Scalar scale = Scalar(1) / std::sqrt(g.squaredNorm() / Scalar(width) + eps);
      g = (g.array() * scale * w.array()).matrix();
    }
  }
}

/// rms_norm, then times silu(gate) (`gate` the same shape as `z`).
template <class Scalar>
void gated_rms_norm(MatrixRef<Scalar> z, const MatrixCRef<Scalar>& gate,
                    const Matrix<Scalar>& weight, Scalar eps, Index width) {
  rms_norm<Scalar>(z, weight, eps, width);
  z.array() *= silu(gate.array());
}

/// LayerNorm (biased variance) of every `width`-column group of every row of `z`.
template <class Scalar>
void layer_norm(MatrixRef<Scalar> z, const Matrix<Scalar>& weight, const Matrix<Scalar>& bias,
                Scalar eps, Index width) {
  for (Index i = 0; i < z.rows(); ++i) {
    for (Index c = 0; c + width <= z.cols(); c += width) {
      auto g = z.row(i).segment(c, width);
      const Scalar mean = g.mean();
      const Scalar var = (g.array() - mean).square().sum() / Scalar(width);
      g = (((g.array() - mean) / std::sqrt(var + eps)) * weight.row(0).array() +
           bias.row(0).array())
              .matrix();
    }
  }
}

/// z / sqrt(Σ z² + eps) for every `width`-column group of every row of `z`.
template <class Scalar>
void l2_normalize(MatrixRef<Scalar> z, Scalar eps, Index width) {
  for (Index i = 0; i < z.rows(); ++i) {
    for (Index c = 0; c + width <= z.cols(); c += width) {
      auto g = z.row(i).segment(c, width);
      g /= std::sqrt(g.squaredNorm() + eps);
    }
  }
}

}  // namespace seqmem::pieces
