#pragma once

// Helpers shared by the tests: random matrices, tolerances of docs/math.md §6 and a
// near-comparison that says where two matrices differ.

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <sstream>
#include <type_traits>

#include <seqmem/seqmem.hpp>

#include "compiled_layers.hpp"

namespace seqmem::test {

using Rng = std::mt19937_64;

/// Uniform in [lo, hi), drawn in double so float and double tests see the same values.
template <class Scalar>
Matrix<Scalar> uniform(Rng& rng, Index rows, Index cols, double lo = -1.0, double hi = 1.0) {
  std::uniform_real_distribution<double> dist(lo, hi);
  Matrix<Scalar> m(rows, cols);
  for (Index i = 0; i < rows; ++i)
    for (Index j = 0; j < cols; ++j)
      m(i, j) = static_cast<Scalar>(dist(rng));
  return m;
}

inline Index uniform_index(Rng& rng, Index lo, Index hi) {  // in [lo, hi]
  return std::uniform_int_distribution<Index>(lo, hi)(rng);
}

/// Cross-form tolerance of docs/math.md §6, relative to 1 + max|value|.
template <class Scalar>
constexpr double cross_form_tolerance() {
  return std::is_same_v<Scalar, double> ? 1e-10 : 2e-4;
}

/// max|got − want| ≤ rel_tol · (1 + max|want|), with the place of the worst difference.
template <class A, class B>
::testing::AssertionResult near(const Eigen::MatrixBase<A>& got, const Eigen::MatrixBase<B>& want,
                                double rel_tol) {
  if (got.rows() != want.rows() || got.cols() != want.cols()) {
    return ::testing::AssertionFailure() << "shape " << got.rows() << "x" << got.cols()
                                         << " != expected " << want.rows() << "x" << want.cols();
  }
  double worst = 0.0, scale = 0.0;
  Index wi = 0, wj = 0;
  for (Index i = 0; i < want.rows(); ++i) {
    for (Index j = 0; j < want.cols(); ++j) {
      const double g = static_cast<double>(got(i, j)), w = static_cast<double>(want(i, j));
      scale = std::max(scale, std::abs(w));
      const double diff = std::isfinite(g) ? std::abs(g - w) : HUGE_VAL;
      if (diff > worst || std::isnan(diff)) {
        worst = diff;
        wi = i;
        wj = j;
      }
    }
  }
  const double bound = rel_tol * (1.0 + scale);
  if (worst <= bound) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "max |diff| " << worst << " at (" << wi << ", " << wj
                                       << "): got " << static_cast<double>(got(wi, wj)) << ", want "
                                       << static_cast<double>(want(wi, wj)) << "; bound " << bound;
}

}  // namespace seqmem::test
