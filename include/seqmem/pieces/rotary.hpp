#pragma once

/// @file
/// Rotary position embedding. Token t of a call is at position p = first + t (or, with a
/// `period` > 0, p = (first + t) mod period: TTT's position inside its mini-batch). In every
/// `width`-column head, pair i < width/2 is rotated by θ_i = p · base^(−2i/width):
///
///     a' = a cos θ_i − b sin θ_i,   b' = b cos θ_i + a sin θ_i
///
/// where the pair (a, b) is (element i, element i + width/2) in the GPT-NeoX "rotate half"
/// layout (flash-linear-attention) and (element 2i, element 2i + 1) in the interleaved layout
/// (ttt-lm-pytorch). Angles are computed in double.

#include <cmath>

#include "seqmem/core/types.hpp"

namespace seqmem::pieces {

/// Which elements of a head form the rotated pairs.
enum class RotaryLayout {
  half,         ///< pairs (i, i + width/2)
  interleaved,  ///< pairs (2i, 2i + 1)
};

/// Rotary position embedding settings (an aggregate); `apply` rotates q or k in place.
struct Rotary {
  double base = 10000.0;  ///< rope_theta
  /// Pair layout: `half` (fla) or `interleaved` (ttt-lm-pytorch).
  RotaryLayout layout = RotaryLayout::half;
  Index period = 0;  ///< > 0: positions wrap (p mod period)

  /// Rotates every `width`-column head of every row of `x` in place; row t is at position
  /// first + t.
  template <class Scalar>
  void apply(MatrixRef<Scalar> x, Index width, Index first) const {
    const Index half = width / 2;
    for (Index t = 0; t < x.rows(); ++t) {
      const Index p = period > 0 ? (first + t) % period : first + t;
      for (Index i = 0; i < half; ++i) {
        const double angle = double(p) * std::pow(base, -2.0 * double(i) / double(width));
        const auto c = static_cast<Scalar>(std::cos(angle));
        const auto s = static_cast<Scalar>(std::sin(angle));
        const Index ia = layout == RotaryLayout::half ? i : 2 * i;
        const Index ib = layout == RotaryLayout::half ? i + half : 2 * i + 1;
        for (Index h = 0; h + width <= x.cols(); h += width) {
          const Scalar a = x(t, h + ia), b = x(t, h + ib);
          x(t, h + ia) = a * c - b * s;
          x(t, h + ib) = b * c + a * s;
        }
      }
    }
  }
};

}  // namespace seqmem::pieces
