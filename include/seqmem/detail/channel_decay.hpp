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
#include "seqmem/detail/math.hpp"
#include "seqmem/detail/matmul.hpp"
#include "seqmem/detail/row_kernels.hpp"
#include "seqmem/detail/vector_exp.hpp"

namespace seqmem::detail {

/// Double-precision matrices of cumulative log-decays (rows are tokens, columns channels).
using DecaySums = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

#if defined(SEQMEM_ROW_KERNELS)
/// sums(i + 1, ·) = sums(i, ·) + max(double(x(i, ·)), lo) for i < rows, on Bytes-wide
/// vectors of double: Eigen has no vectorized float → double cast for AVX, and GCC
/// vectorizes the scalar loop only at -O3 (the -O2 build's chunkwise forms lost 20–40 %).
struct DecaySumPass {
  template <int Bytes, class Scalar>
  [[gnu::always_inline]] static void run(const Scalar* x, Index rows, Index cols, Index ld,
                                         double lo, double* sums) {
    using D = row_kernels::Vec<double, Bytes>;
    using X = row_kernels::Vec<Scalar, Bytes / int(sizeof(double) / sizeof(Scalar))>;
    constexpr Index L = Bytes / Index(sizeof(double));
    for (Index i = 0; i < rows; ++i) {
      const Scalar* xi = x + i * ld;
      const double* prev = sums + i * cols;
      double* next = sums + (i + 1) * cols;
      Index j = 0;
      for (; j + L <= cols; j += L) {
        X xv;
        D p;
        __builtin_memcpy(&xv, xi + j, sizeof xv);
        __builtin_memcpy(&p, prev + j, sizeof p);
        D a = __builtin_convertvector(xv, D);
        a = a < lo ? lo : a;
        p += a;
        __builtin_memcpy(next + j, &p, sizeof p);
      }
      for (; j < cols; ++j)
        next[j] = prev[j] + std::max(double(xi[j]), lo);
    }
  }
};

/// out(i, ·) = Scalar(sign·(g(i, ·) − ref)) for i < rows, on Bytes-wide vectors of double (see
/// DecaySumPass for why not an Eigen expression).
struct ExponentPass {
  template <int Bytes, class Scalar>
  [[gnu::always_inline]] static void run(const double* g, Index rows, Index cols, Index ld,
                                         const double* ref, double sign, Scalar* out) {
    using D = row_kernels::Vec<double, Bytes>;
    using S = row_kernels::Vec<Scalar, Bytes / int(sizeof(double) / sizeof(Scalar))>;
    constexpr Index L = Bytes / Index(sizeof(double));
    for (Index i = 0; i < rows; ++i) {
      const double* gi = g + i * ld;
      Scalar* oi = out + i * cols;
      Index j = 0;
      for (; j + L <= cols; j += L) {
        D a, r;
        __builtin_memcpy(&a, gi + j, sizeof a);
        __builtin_memcpy(&r, ref + j, sizeof r);
        const S e = __builtin_convertvector(sign * (a - r), S);
        __builtin_memcpy(oi + j, &e, sizeof e);
      }
      for (; j < cols; ++j)
        oi[j] = Scalar(sign * (gi[j] - ref[j]));
    }
  }
};
#endif

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
    // A decay below −2000 is 0 in double as much as the given one; the clamp keeps γ finite
    // for double gates near −DBL_MAX (their sum would overflow to −Inf and give Inf − Inf).
#if defined(SEQMEM_ROW_KERNELS)
    if (n > 0 && log_decay.cols() > 0 && log_decay.innerStride() == 1) {
      row_kernels::with_widest_vectors<DecaySumPass>(
          log_decay.row(begin).data(), Index(n), Index(log_decay.cols()),
          Index(log_decay.outerStride()), -kClamp, sums_.data());
      return;
    }
#endif
    for (Index i = 0; i < n; ++i) {
      sums_.row(i + 1) =
          sums_.row(i) + log_decay.row(begin + i).template cast<double>().cwiseMax(-kClamp);
    }
  }

  Index length() const {
    return sums_.rows() - 1;
  }
  const DecaySums& sums() const {
    return sums_;
  }
  auto inclusive() const {
    return sums_.bottomRows(length());
  }
  auto exclusive() const {
    return sums_.topRows(length());
  }
  /// γ_C: the whole chunk's log-decay per channel.
  auto total() const {
    return sums_.row(length());
  }

 private:
  static constexpr double kClamp = 2000.0;
  DecaySums sums_;
};

/// `exponent = Scalar(sign·(g − ref))` row by row (`g` a block of γ rows, `ref` one γ row),
/// formed in double and rounded once; `exponent` is resized.
template <class Scalar, class G, class Ref>
void round_exponents(const G& g, const Ref& ref, double sign, Matrix<Scalar>& exponent) {
  exponent.resize(g.rows(), g.cols());
#if defined(SEQMEM_ROW_KERNELS)
  const double* r = contiguous_data(ref);
  if (g.size() > 0 && g.innerStride() == 1 && r != nullptr) {
    row_kernels::with_widest_vectors<ExponentPass>(g.data(), Index(g.rows()), Index(g.cols()),
                                                   Index(g.outerStride()), r, sign,
                                                   exponent.data());
    return;
  }
#endif
  exponent = (sign * (g.rowwise() - ref)).template cast<Scalar>();
}

/// `out = x ⊙ exp(sign·(g − ref))`: `g` a block of γ rows, `ref` one γ row (or a broadcast
/// row). The exponent is formed in double and rounded once to Scalar, so its error is relative
/// to its own (small) size, not to γ's; the exponential runs vectorized in Scalar (`exponent`
/// is a caller's buffer, so the call allocates nothing once the buffers have grown). `out` is a
/// Matrix (resized) or a block of the right shape.
template <class Scalar, class X, class G, class Ref, class Out>
void scale_by_decay(const X& x, const G& g, const Ref& ref, double sign, Out&& out,
                    Matrix<Scalar>& exponent) {
  round_exponents(g, ref, sign, exponent);
  exp_in_place(exponent);
  out = x.array() * exponent.array();
}

/// One side of the decayed-pair matrices: rows x (C×dk) with their exponents g (the chunk's
/// inclusive γ, or for §9's a-rows the exclusive γ⁻), and whether a row pairs with itself.
template <class Scalar>
struct PairRows {
  MatrixCRef<Scalar> x;
  Eigen::Ref<const DecaySums> g;
  bool diagonal;
};

/// Decayed-pair matrices (docs/math.md §7, "Strong decays"): for L row operands (x_l, gx_l) and
/// R column operands y_r sharing their exponents gy (all C rows), block (l, r) of the
/// `(L·C)×(R·C)` result is
///
///     A(i, j) = Σ_c x_ic y_jc exp(gx_ic − gy_jc)      for j < i (j ≤ i when x_l is diagonal),
///                                                       0 above
///
/// where gx_i ≤ gy_{i−1} and gy is non-increasing down the rows (γ over a chunk). Never formed as
/// (x ⊙ e^{gx})(y ⊙ e^{−gy})ᵀ, which overflows under strong decays. Instead, over a diagonal
/// block of rows:
///
/// - When every exponent of the block lies within `kSpan` per channel, one GEMM on factors
///   centred per channel: (x ⊙ e^{gx − p})(y ⊙ e^{p − gy})ᵀ with p the midpoint of the block's
///   range, so no factor exceeds e^{kSpan/2}: nothing overflows, and each product is exact to
///   rounding. All L·R blocks of a whole chunk come from one GEMM of the stacked factors.
/// - Otherwise the block is halved. Its lower-left quarter is one GEMM on factors split at the
///   boundary ρ = gy_{m−1} (m the first row of the lower half): e^{gx_i − ρ} for i ≥ m and
///   e^{ρ − gy_j} for j < m, both in [0, 1], so an underflow drops only a term smaller still.
///   The two diagonal halves recurse; a single row pairs only with itself (exponent gx_i − gy_i,
///   0 for the inclusive rows that keep their diagonal).
///
/// Blocks of more than `kDirect` rows are halved regardless, so a long parallel call does not
/// compute its upper triangle.
template <class Scalar>
class DecayedPairs {
 public:
  template <std::size_t L, std::size_t R>
  void compute(const std::array<PairRows<Scalar>, L>& rows,
               const std::array<MatrixCRef<Scalar>, R>& cols, const Eigen::Ref<const DecaySums>& gy,
               Matrix<Scalar>& out) {
    const Index n = gy.rows();
    out.resize(Index(L) * n, Index(R) * n);
    if (n > 0) block(rows, cols, gy, out, 0, n);
  }

 private:
  static constexpr double kSpan = std::is_same_v<Scalar, float> ? 40.0 : 400.0;
  static constexpr Index kDirect = 64;

  template <std::size_t L, std::size_t R>
  void block(const std::array<PairRows<Scalar>, L>& rows,
             const std::array<MatrixCRef<Scalar>, R>& cols, const Eigen::Ref<const DecaySums>& gy,
             Matrix<Scalar>& out, Index r0, Index r1) {
    const Index n = gy.rows(), size = r1 - r0;
    if (size == 1) return single_row(rows, cols, gy, out, r0);
    Eigen::RowVectorXd top = gy.row(r0), bottom = gy.row(r1 - 1);
    for (const PairRows<Scalar>& side : rows) {
      top = top.cwiseMax(side.g.row(r0));
      bottom = bottom.cwiseMin(side.g.row(r1 - 1));
    }
    if (size <= kDirect && (top - bottom).maxCoeff() <= kSpan) {
      const Eigen::RowVectorXd mid = 0.5 * (top + bottom);
      left_.resize(Index(L) * size, gy.cols());
      right_.resize(Index(R) * size, gy.cols());
      for (std::size_t l = 0; l < L; ++l) {
        scale_by_decay(rows[l].x.middleRows(r0, size), rows[l].g.middleRows(r0, size), mid, 1.0,
                       factor_, exponent_);
        left_.middleRows(Index(l) * size, size) = factor_;
      }
      for (std::size_t r = 0; r < R; ++r) {
        scale_by_decay(cols[r].middleRows(r0, size), gy.middleRows(r0, size), mid, -1.0, factor_,
                       exponent_);
        right_.middleRows(Index(r) * size, size) = factor_;
      }
      if (size == n) {
        // every block of the chunk at once
        multiply_by_transpose<Scalar>(out, left_, right_, transposed_);
      } else {
        for (std::size_t l = 0; l < L; ++l) {
          for (std::size_t r = 0; r < R; ++r) {
            auto pair = out.block(Index(l) * n + r0, Index(r) * n + r0, size, size);
            multiply_by_transpose_into<Scalar>(pair, left_.middleRows(Index(l) * size, size),
                                               right_.middleRows(Index(r) * size, size),
                                               transposed_);
          }
        }
      }
      for (std::size_t l = 0; l < L; ++l) {
        for (std::size_t r = 0; r < R; ++r) {
          auto a = out.block(Index(l) * n + r0, Index(r) * n + r0, size, size);
          for (Index i = 0; i < size; ++i) {
            const Index keep = rows[l].diagonal ? i + 1 : i;
            a.row(i).tail(size - keep).setZero();
          }
        }
      }
      return;
    }
    const Index m = r0 + size / 2;
    const Eigen::RowVectorXd boundary = gy.row(m - 1);
    for (std::size_t l = 0; l < L; ++l) {
      scale_by_decay(rows[l].x.middleRows(m, r1 - m), rows[l].g.middleRows(m, r1 - m), boundary,
                     1.0, left_, exponent_);
      for (std::size_t r = 0; r < R; ++r) {
        scale_by_decay(cols[r].middleRows(r0, m - r0), gy.middleRows(r0, m - r0), boundary, -1.0,
                       right_, exponent_);
        auto pair = out.block(Index(l) * n + m, Index(r) * n + r0, r1 - m, m - r0);
        multiply_by_transpose_into<Scalar>(pair, left_, right_, transposed_);
        out.block(Index(l) * n + r0, Index(r) * n + m, m - r0, r1 - m).setZero();
      }
    }
    block(rows, cols, gy, out, r0, m);
    block(rows, cols, gy, out, m, r1);
  }

  template <std::size_t L, std::size_t R>
  static void single_row(const std::array<PairRows<Scalar>, L>& rows,
                         const std::array<MatrixCRef<Scalar>, R>& cols,
                         const Eigen::Ref<const DecaySums>& gy, Matrix<Scalar>& out, Index i) {
    const Index n = gy.rows();
    for (std::size_t l = 0; l < L; ++l) {
      for (std::size_t r = 0; r < R; ++r) {
        Scalar value(0);
        if (rows[l].diagonal) {
          value = (rows[l].x.row(i).array() * cols[r].row(i).array() *
                   (rows[l].g.row(i) - gy.row(i)).template cast<Scalar>().array().exp())
                      .sum();
        }
        out(Index(l) * n + i, Index(r) * n + i) = value;
      }
    }
  }

  Matrix<Scalar> left_, right_, factor_, exponent_;
  std::array<Matrix<Scalar>, 2> transposed_;  // scratch of multiply_by_transpose
};

/// Buffers of one per-channel decayed chunk, reused across the chunks of a call.
template <class Scalar>
struct ChannelChunkWorkspace {
  ChannelDecay decay;
  DecayedPairs<Scalar> pairs;
  Matrix<Scalar> scores;    // the chunk's decayed-pair matrices
  Matrix<Scalar> weighted;  // rows scaled by decays
  Matrix<Scalar> exponent;  // the decays' exponents
  Matrix<Scalar> values;    // pseudo-values, low-rank reads
  Matrix<Scalar> products;  // products with the start state
};

/// Zero exponent: `x ⊙ exp(γ_i)` scales row i by the decay from the chunk start.
inline Eigen::RowVectorXd from_start(Index width) {
  return Eigen::RowVectorXd::Zero(width);
}

/// `S ← diag(exp(γ_C)) S`: the whole chunk's decay, row c of S by channel c's (dk
/// exponentials, not one per entry of S).
template <class Scalar>
void decay_state(Matrix<Scalar>& state, const ChannelDecay& decay) {
  Vector<Scalar> factor = decay.total().transpose().template cast<Scalar>();
  exp_in_place(factor);
  state = factor.asDiagonal() * state;
}

/// The chunk's write into its state after the decay (docs/math.md §7):
/// `S ← diag(exp(γ_C)) S + (K ⊙ exp(γ_C − Γ))ᵀ V`, for keys K (C×dk) and values V (C×dv).
template <class Scalar, class KBlock, class VBlock>
void decay_and_write(const KBlock& k, const VBlock& v, Matrix<Scalar>& state,
                     ChannelChunkWorkspace<Scalar>& ws) {
  const ChannelDecay& decay = ws.decay;
  decay_state(state, decay);
  scale_by_decay(k, decay.inclusive(), decay.total(), -1.0, ws.weighted, ws.exponent);
  multiply_transposed<Scalar>(state, ws.weighted, v, true);
}

/// One chunk of per-channel decayed linear attention (docs/math.md §7) with start state S, the
/// chunk's `ws.decay` already assigned:
///
///     O = (Q ⊙ exp(Γ)) S + A V,     A_ij = Σ_c q_ic k_jc exp(γ_ic − γ_jc)  (j ≤ i)
///     S ← diag(exp(γ_C)) S + (K ⊙ exp(γ_C − Γ))ᵀ V
///
/// Q is already scaled.
template <class Scalar, class QBlock, class KBlock, class VBlock, class OBlock>
void channel_decayed_chunk(const QBlock& q, const KBlock& k, const VBlock& v, Matrix<Scalar>& state,
                           OBlock&& out, ChannelChunkWorkspace<Scalar>& ws) {
  const auto gamma = ws.decay.inclusive();
  ws.pairs.compute(std::array{PairRows<Scalar>{q, gamma, true}}, std::array{MatrixCRef<Scalar>(k)},
                   gamma, ws.scores);
  multiply_into<Scalar>(out, ws.scores, v);
  scale_by_decay(q, gamma, from_start(q.cols()), 1.0, ws.weighted, ws.exponent);
  multiply_into<Scalar>(out, ws.weighted, state, true);
  decay_and_write(k, v, state, ws);
}

}  // namespace seqmem::detail
