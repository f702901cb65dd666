#pragma once

/// @file
/// The weights of a test-time-training layer's inner model (TTT, Titans) and the outer-loop
/// parameters such a layer is built from.

#include <vector>

#include "seqmem/core/types.hpp"

namespace seqmem {

/// The inner model's trainable weights: `W[l]` is `d_l × d_{l+1}`, `b[l]` is `1 × d_{l+1}`
/// (no entries when the model has no bias).
template <class Scalar>
struct Weights {
  /// One matrix per layer of the inner model: `W[l]` is `d_l × d_{l+1}`.
  std::vector<Matrix<Scalar>> W;
  /// One bias row per layer, `b[l]` is `1 × d_{l+1}`; empty when the model has no bias.
  std::vector<Matrix<Scalar>> b;
};

/// The outer-loop parameters of a test-time-training layer (TTT, Titans), learned elsewhere:
/// the inner model's initial weights and the LayerNorm weight and bias (`1 × d_L`). A layer
/// built without them uses its documented defaults; empty `ln_weight` / `ln_bias` mean LN weight 1
/// and LN bias 0.
template <class Scalar>
struct InnerParameters {
  /// The inner model's initial weights (those of `initial_state()`).
  Weights<Scalar> initial;
  /// LayerNorm weight, `1 × d_L` (d_L: the inner model's output width); empty means 1.
  Matrix<Scalar> ln_weight, ln_bias;
  /// @var ln_bias
  /// LayerNorm bias, `1 × d_L`; empty means 0.
};

}  // namespace seqmem
