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
/// `weight` and `bias` are `1×width` and shared by every group of a row.

#include <cmath>

#include "seqmem/core/types.hpp"
#include "seqmem/pieces/activation.hpp"

namespace seqmem::pieces {

/// RMSNorm of every `width`-column group of every row of `z`.
template <class Scalar>
void rms_norm(MatrixRef<Scalar> z, const Matrix<Scalar>& weight, Scalar eps, Index width) {
  for (Index i = 0; i < z.rows(); ++i) {
    for (Index c = 0; c + width <= z.cols(); c += width) {
      auto g = z.row(i).segment(c, width);
      const Scalar scale = Scalar(1) / std::sqrt(g.squaredNorm() / Scalar(width) + eps);
      g = (g.array() * scale * weight.row(0).array()).matrix();
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
