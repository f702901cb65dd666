#pragma once

/// @file
/// Math shared by several layers: feature maps, log-space decay tables (docs/math.md §0) and the
/// decayed linear-attention chunk that linear attention and DeltaNet both end with
/// (docs/math.md §2, §3).

#include <array>
#include <cmath>
#include <optional>

#include "seqmem/core/types.hpp"
#include "seqmem/detail/matmul.hpp"
#include "seqmem/detail/row_kernels.hpp"
#include "seqmem/detail/vector_exp.hpp"

/// Inlines every call in a function's body (recursively) where the compiler can.
#ifndef SEQMEM_FLATTEN
#if defined(__GNUC__) || defined(__clang__)
#define SEQMEM_FLATTEN [[gnu::flatten]]
#else
#define SEQMEM_FLATTEN
#endif
#endif

namespace seqmem {

namespace detail {

/// φ on every entry of `x` (a Matrix, or a view such as a Scratch row), in place.
template <class Derived>
void apply_feature_map(FeatureMap map, Eigen::MatrixBase<Derived>& x) {
  using Scalar = typename Derived::Scalar;
  switch (map) {
    case FeatureMap::identity: break;
    case FeatureMap::elu_plus_one:
      x = x.unaryExpr([](Scalar v) { return v > Scalar(0) ? v + Scalar(1) : std::exp(v); });
      break;
    case FeatureMap::relu: x = x.cwiseMax(Scalar(0)); break;
  }
}

/// Divides each row by sqrt(Σx² + 1e-6): the q/k normalization of DeltaNet and KDA models (fla's
/// l2norm, eps inside the root; docs/math.md §8). Row by row, without a temporary (a decode
/// step normalizes one row per call).
template <class Derived>
void l2_normalize_rows(Eigen::MatrixBase<Derived>& x) {
  using Scalar = typename Derived::Scalar;
  for (Index i = 0; i < x.rows(); ++i)
    x.row(i) /= std::sqrt(x.row(i).squaredNorm() + Scalar(1e-6));
}

/// Log-space decay table of one chunk (docs/math.md §0). The cumulative sums γ are kept in double
/// even for float: γ grows with the chunk length, and a float γ would lose the small
/// differences γ_i − γ_j that the factors are made of.
template <class Scalar>
class DecayTable {
 public:
  /// Fills the table for gate rows [begin, begin + length); no gate = no decay.
  void assign(const std::optional<GateRef<Scalar>>& log_decay, Index begin, Index length) {
    gated_ = log_decay.has_value();
    length_ = length;
    if (!gated_) return;
    gamma_.resize(length);
    double sum = 0.0;
    for (Index i = 0; i < length; ++i) {
      sum += static_cast<double>((*log_decay)(begin + i, 0));
      gamma_(i) = sum;
    }
    // Every exponent is formed in double and the exp taken in Scalar on the stored vector or
    // row, vectorized (vector_exp.hpp). An exp in the same expression as the cast ran as one
    // libm call per entry (issue 17: 5–9 % of 4-head gated linear attention; in a -march=native
    // AVX-512 build the 2 libm calls per token here took 40 % of 4-head gated DeltaNet, d = 64).
    to_start_ = gamma_.template cast<Scalar>();  // Γ_i = exp(γ_i): decay from the chunk start to i
    exp_in_place(to_start_);
    // Γ_C/Γ_j = exp(γ_C − γ_j): decay from j to the chunk end
    to_end_ = (gamma_(length - 1) - gamma_.array()).template cast<Scalar>();
    exp_in_place(to_end_);
    // [Γ_i/Γ_j] on the lower triangle, diagonal included (= 1); computed once per chunk and
    // shared by every masked product of the chunk.
    ratios_.resize(length, length);
    for (Index i = 0; i < length; ++i) {
      auto row = ratios_.row(i).head(i + 1);
      row = (gamma_(i) - gamma_.head(i + 1).array()).template cast<Scalar>().transpose();
      exp_in_place(row);
    }
  }

  bool gated() const { return gated_; }
  Index length() const { return length_; }
  const Vector<Scalar>& to_start() const { return to_start_; }
  const Vector<Scalar>& to_end() const { return to_end_; }
  Scalar total() const { return gated_ ? to_start_(length_ - 1) : Scalar(1); }

  /// `scores ⊙ [Γ_i/Γ_j]` on the lower triangle (diagonal kept when `keep_diagonal`),
  /// zero above it. The exponent is formed only where j ≤ i, so it never overflows.
  void mask(Matrix<Scalar>& scores, bool keep_diagonal) const {
    const Index n = scores.rows();
    for (Index i = 0; i < n; ++i) {
      const Index last = keep_diagonal ? i + 1 : i;
      if (gated_) scores.row(i).head(last).array() *= ratios_.row(i).head(last).array();
      scores.row(i).tail(n - last).setZero();
    }
  }

 private:
  bool gated_ = false;
  Index length_ = 0;
  Eigen::VectorXd gamma_;
  Vector<Scalar> to_start_, to_end_;
  Matrix<Scalar> ratios_;
};

/// Buffers of one decayed chunk, reused across chunks of a call.
template <class Scalar>
struct ChunkWorkspace {
  DecayTable<Scalar> decay;
  Matrix<Scalar> scores;                     // C×C
  Matrix<Scalar> weighted;                   // C×dk (rows scaled by a decay)
  Matrix<Scalar> values;                     // C×dv (DeltaNet pseudo-values)
  std::array<Matrix<Scalar>, 2> transposed;  // scratch of multiply_by_transpose
};

/// B ← L⁻¹ B for the unit lower-triangular L whose strictly lower part is A's (the WY/UT
/// solves of docs/math.md §3, §8, §9), by forward substitution: row i of the solution is
/// b_i − A_i,<i X_<i, one GEMV over the rows already solved. For a chunk's C ≤ 64 rows this is
/// 4–5× faster than Eigen's triangular solve at -O3 and 20–30× at -O2, whose inner loop GCC
/// only vectorizes at -O3.
template <class ADerived, class BDerived>
void solve_unit_lower_in_place(const Eigen::MatrixBase<ADerived>& A,
                               Eigen::MatrixBase<BDerived>& B) {
  for (Index i = 1; i < B.rows(); ++i) {
    B.row(i).noalias() -= A.row(i).head(i) * B.topRows(i);
  }
}

/// One chunk of decayed linear attention with start state S (docs/math.md §2, also the last two
/// lines of the DeltaNet chunk in §3), `ws.decay` already assigned for this chunk:
///
///     O = diag(Γ) Q S + (tril₀(Q Kᵀ) ⊙ [Γ_i/Γ_j]) V
///     S ← Γ_C S + (diag(Γ_C/Γ_j) K)ᵀ V
///
/// Q is already scaled (and feature-mapped).
template <class Scalar, class QBlock, class KBlock, class VBlock, class OBlock>
void decayed_linear_chunk(const QBlock& q, const KBlock& k, const VBlock& v, Matrix<Scalar>& state,
                          OBlock&& out, ChunkWorkspace<Scalar>& ws) {
  // The products run on detail/matmul.hpp (libxsmm's small-GEMM kernels when enabled).
  const DecayTable<Scalar>& decay = ws.decay;
  multiply_by_transpose<Scalar>(ws.scores, q, k, ws.transposed);
  decay.mask(ws.scores, /*keep_diagonal=*/true);
  multiply_into<Scalar>(out, ws.scores, v);
  if (decay.gated()) {
    ws.weighted.noalias() = decay.to_start().asDiagonal() * q;
    multiply_into<Scalar>(out, ws.weighted, state, true);
    state *= decay.total();
    ws.weighted.noalias() = decay.to_end().asDiagonal() * k;
    multiply_transposed<Scalar>(state, ws.weighted, v, true);
  } else {
    multiply_into<Scalar>(out, q, state, true);
    multiply_transposed<Scalar>(state, k, v, true);
  }
}

/// One rank-1 term `xᵀ y` of a token's write into S: x over key channels, y over values.
template <class X, class Y>
struct RankOne {
  const X& x;
  const Y& y;
};
template <class X, class Y>
RankOne(const X&, const Y&) -> RankOne<X, Y>;

/// One token's update of S in one pass (the recurrent forms of docs/math.md §2, §3, §7–§9): row c
/// becomes `decay(c)·S_c + Σ_n x_n(c)·y_n` for the token's rank-1 `terms`. The delta-rule forms
/// read what they need from the old state first (one pass: KDA's k S̃ with q S̃, the generalized
/// rule's a S with q S) and then make this read-write pass. The pass runs
/// on detail/row_kernels.hpp (the widest vectors the CPU has, also in a build without -march);
/// the Eigen loop below is the fallback for strided terms and other compilers. There, one Eigen
/// expression per row stays vectorized at -O2 (a whole-matrix `diag(d) S + kᵀ.lazyProduct(v)`
/// does not), and `flatten` inlines Eigen's assignment loop into the row loop.
template <class Scalar, class Decay, class... Terms>
SEQMEM_FLATTEN void decay_and_write_rows(Matrix<Scalar>& S, const Decay& decay,
                                         const Terms&... terms) {
  constexpr int N = int(sizeof...(Terms));
  if (write_rows_with_kernels<Scalar, N>(S, decay, {contiguous_data(terms.x)...},
                                         {contiguous_data(terms.y)...})) {
    return;
  }
  for (Index c = 0; c < S.rows(); ++c) {
    auto row = S.row(c);
    row = ((decay(c) * row) + ... + (terms.x(c) * terms.y));
  }
}

/// The same pass, reading the new rows as it writes them: `out = q S` of the updated S (linear
/// attention and GLA, whose output is the new state's read), so the whole step is one pass over
/// S. The fallback (strided vectors, other compilers) makes the two passes.
template <class Scalar, class Decay, class Q, class Out, class... Terms>
void decay_write_and_read_rows(Matrix<Scalar>& S, const Decay& decay, const Q& q, Out&& out,
                               const Terms&... terms) {
  constexpr int N = int(sizeof...(Terms));
  if (write_read_rows_with_kernels<Scalar, N>(S, decay, {contiguous_data(terms.x)...},
                                              {contiguous_data(terms.y)...}, contiguous_data(q),
                                              contiguous_data(out))) {
    return;
  }
  decay_and_write_rows(S, decay, terms...);
  read_rows(S, q, out);
}

}  // namespace detail
}  // namespace seqmem
