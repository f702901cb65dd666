#pragma once

/// @file
/// Math shared by the diagonal-gate layers (docs/math.md §7–§9): the per-channel decay table of
/// a chunk, the decayed-pair matrices built without overflow, and the per-channel decayed
/// linear-attention chunk that GLA, KDA and the generalized delta rule all end with.

#include <algorithm>
#include <array>
#include <cmath>
#include <type_traits>

#include "seqmem/core/types.hpp"

namespace seqmem::detail {

/// Double-precision matrices of cumulative log-decays (rows are tokens, columns channels).
using DecaySums = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// The cumulative per-channel log-decays of one chunk (docs/math.md §7), local to the chunk
/// and summed in double: row r of `sums()` is γ after r tokens of the chunk (row 0 = 0, the
/// chunk start). Token i (0-based) has the inclusive γ_i = `inclusive().row(i)` (its own decay
/// applied) and the exclusive γ⁻_i = `exclusive().row(i)` (before its decay; §9's a-rows).
class ChannelDecay {
 public:
  /// γ for rows [begin, begin + n) of `log_decay` (`T×dk`, entries ≤ 0).
  template <class Gate>
  void assign(const Gate& log_decay, Index begin, Index n) {
    sums_.resize(n + 1, log_decay.cols());
    sums_.row(0).setZero();
    for (Index i = 0; i < n; ++i) {
      // A decay below −2000 is 0 in double as much as the given one; the clamp keeps γ finite
      // for double gates near −DBL_MAX (their sum would overflow to −Inf and give Inf − Inf).
      sums_.row(i + 1) =
          sums_.row(i) + log_decay.row(begin + i).template cast<double>().cwiseMax(-kClamp);
    }
  }

  Index length() const { return sums_.rows() - 1; }
  const DecaySums& sums() const { return sums_; }
  auto inclusive() const { return sums_.bottomRows(length()); }
  auto exclusive() const { return sums_.topRows(length()); }
  /// γ_C: the whole chunk's log-decay per channel.
  auto total() const { return sums_.row(length()); }

 private:
  static constexpr double kClamp = 2000.0;
  DecaySums sums_;
};

/// `out = x ⊙ exp(sign·(g − ref))` row by row: `g` a block of γ rows, `ref` one γ row (or a
/// broadcast row). The exponent is formed in double and rounded once to Scalar, so its error is
/// relative to its own (small) size, not to γ's.
template <class Scalar, class X, class G, class Ref>
void scale_by_decay(const X& x, const G& g, const Ref& ref, double sign, Matrix<Scalar>& out) {
  out.resize(x.rows(), x.cols());
  for (Index i = 0; i < x.rows(); ++i) {
    out.row(i).array() =
        x.row(i).array() * (sign * (g.row(i) - ref)).template cast<Scalar>().array().exp();
  }
}

/// Decayed-pair matrices (docs/math.md §7, "Strong decays"): for N right-hand operands Y_n that
/// share their exponents gy,
///
///     A_n(i, j) = Σ_c x_ic y_njc exp(gx_ic − gy_jc)      for j < i (j ≤ i with `diagonal`),
///                                                          0 above
///
/// where gx_i ≤ gy_{i−1} ≤ gy_i row by row (γ is non-increasing down a chunk; the rows of x use
/// the inclusive γ or, for §9's a-rows, the exclusive one). Never formed as (x ⊙ e^{gx})(y ⊙
/// e^{−gy})ᵀ, which overflows under strong decays. Instead, over a diagonal block of rows:
///
/// - When every exponent of the block spans at most `kSpan` per channel, one GEMM on factors
///   centred per channel: (x ⊙ e^{gx − p})(y ⊙ e^{p − gy})ᵀ with p the midpoint of the block's
///   range, so no factor exceeds e^{kSpan/2}: no overflow, and each product is exact to rounding.
/// - Otherwise the block is halved. The lower-left quarter is one GEMM on factors split at the
///   boundary ρ = gy_{m−1} (m the first row of the lower half): e^{gx_i − ρ} for i ≥ m and
///   e^{ρ − gy_j} for j < m, both in [0, 1]; an underflow drops only a term smaller still. The
///   two diagonal halves recurse. A block of one row is its own diagonal pair.
///
/// Blocks wider than `kDirect` rows are halved regardless, so the upper triangle costs no work.
template <class Scalar, std::size_t N>
class DecayedPairs {
 public:
  template <class X, class GX, class Y, class GY>
  void compute(const X& x, const GX& gx, const std::array<const Y*, N>& y, const GY& gy,
               bool diagonal, std::array<Matrix<Scalar>*, N> out) {
    const Index n = x.rows();
    for (Matrix<Scalar>* a : out)
      a->setZero(n, n);
    if (n > 0) block(x, gx, y, gy, diagonal, out, 0, n);
  }

 private:
  static constexpr double kSpan = std::is_same_v<Scalar, float> ? 40.0 : 400.0;
  static constexpr Index kDirect = 64;

  template <class X, class GX, class Y, class GY>
  void block(const X& x, const GX& gx, const std::array<const Y*, N>& y, const GY& gy,
             bool diagonal, const std::array<Matrix<Scalar>*, N>& out, Index r0, Index r1) {
    const Index rows = r1 - r0;
    const Eigen::RowVectorXd top = gx.row(r0).cwiseMax(gy.row(r0));
    const Eigen::RowVectorXd bottom = gx.row(r1 - 1).cwiseMin(gy.row(r1 - 1));
    const bool fits = (top - bottom).maxCoeff() <= kSpan;
    if (rows == 1 || (fits && rows <= kDirect)) {
      if (rows == 1 && !diagonal) return;  // a strictly lower row pair of one row: 0
      const Eigen::RowVectorXd mid = 0.5 * (top + bottom);
      scale_by_decay(x.middleRows(r0, rows), gx.middleRows(r0, rows), mid, 1.0, left_);
      for (std::size_t t = 0; t < N; ++t) {
        scale_by_decay(y[t]->middleRows(r0, rows), gy.middleRows(r0, rows), mid, -1.0, right_);
        auto a = out[t]->block(r0, r0, rows, rows);
        a.noalias() = left_ * right_.transpose();
        for (Index i = 0; i < rows; ++i) {
          const Index keep = diagonal ? i + 1 : i;
          a.row(i).tail(rows - keep).setZero();
        }
      }
      return;
    }
    const Index m = r0 + rows / 2;
    const auto boundary = gy.row(m - 1);
    scale_by_decay(x.middleRows(m, r1 - m), gx.middleRows(m, r1 - m), boundary, 1.0, left_);
    for (std::size_t t = 0; t < N; ++t) {
      scale_by_decay(y[t]->middleRows(r0, m - r0), gy.middleRows(r0, m - r0), boundary, -1.0,
                     right_);
      out[t]->block(m, r0, r1 - m, m - r0).noalias() = left_ * right_.transpose();
    }
    block(x, gx, y, gy, diagonal, out, r0, m);
    block(x, gx, y, gy, diagonal, out, m, r1);
  }

  Matrix<Scalar> left_, right_;
};

/// Buffers of one per-channel decayed chunk, reused across the chunks of a call.
template <class Scalar>
struct ChannelChunkWorkspace {
  ChannelDecay decay;
  DecayedPairs<Scalar, 1> pairs;
  DecayedPairs<Scalar, 2> pairs2;
  Matrix<Scalar> scores, scores2;  // C×C decayed-pair matrices
  Matrix<Scalar> weighted;         // C×dk (rows scaled by decays)
  Matrix<Scalar> values, reads;    // C×dv (pseudo-values, low-rank reads)
};

/// The two terms of a chunk that touch its start state S (docs/math.md §7):
/// `O += (Q ⊙ exp(Γ)) S`, then `S ← diag(exp(γ_C)) S + (K ⊙ exp(γ_C − Γ))ᵀ V`.
template <class Scalar, class QBlock, class KBlock, class VBlock, class OBlock>
void add_start_and_update(const QBlock& q, const KBlock& k, const VBlock& v, Matrix<Scalar>& state,
                          OBlock&& out, ChannelChunkWorkspace<Scalar>& ws) {
  const ChannelDecay& decay = ws.decay;
  scale_by_decay(q, decay.inclusive(), Eigen::RowVectorXd::Zero(q.cols()), 1.0, ws.weighted);
  out.noalias() += ws.weighted * state;
  state.array().colwise() *= decay.total().transpose().template cast<Scalar>().array().exp();
  scale_by_decay(k, decay.inclusive(), decay.total(), -1.0, ws.weighted);
  state.noalias() += ws.weighted.transpose() * v;
}

/// One chunk of per-channel decayed linear attention (docs/math.md §7) with start state S, the
/// chunk's `ws.decay` already assigned:
///
///     O = (Q ⊙ exp(Γ)) S + A V,     A_ij = Σ_c q_ic k_jc exp(γ_ic − γ_jc)  (j ≤ i)
///     S ← diag(exp(γ_C)) S + (K ⊙ exp(γ_C − Γ))ᵀ V
///
/// Q is already scaled. KDA ends its chunk with this on its pseudo-values (§8).
template <class Scalar, class QBlock, class KBlock, class VBlock, class OBlock>
void channel_decayed_chunk(const QBlock& q, const KBlock& k, const VBlock& v, Matrix<Scalar>& state,
                           OBlock&& out, ChannelChunkWorkspace<Scalar>& ws) {
  const ChannelDecay& decay = ws.decay;
  ws.pairs.compute(q, decay.inclusive(), std::array{&k}, decay.inclusive(), /*diagonal=*/true,
                   {&ws.scores});
  out.noalias() = ws.scores * v;
  add_start_and_update(q, k, v, state, out, ws);
}

}  // namespace seqmem::detail
