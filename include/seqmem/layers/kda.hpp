#pragma once

/// @file
/// Kimi delta attention (KDA): the gated delta rule with one decay per key channel, in all
/// three forms (docs/math.md §8).

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <string_view>
#include <vector>

#include "seqmem/core/layer.hpp"
#include "seqmem/core/state_layout.hpp"
#include "seqmem/core/types.hpp"
#include "seqmem/detail/channel_decay.hpp"
#include "seqmem/detail/checks.hpp"
#include "seqmem/detail/math.hpp"
#include "seqmem/detail/matmul.hpp"
#include "seqmem/detail/scratch.hpp"
#include "seqmem/detail/vector_exp.hpp"

namespace seqmem {

/// Kimi delta attention (docs/math.md §8):
///
///     S̃_t = diag(exp(g_t)) S_{t−1}                  (decay first,
///     S_t = S̃_t + β_t k_tᵀ (v_t − k_t S̃_t)          then the delta write on the decayed state)
///     o_t = scale·q_t S_t
///
/// A class of its own rather than an option of `DeltaNet`: its decay is `T×key_dim`, so the
/// chunk's two triangular matrices are decayed-pair matrices (detail/channel_decay.hpp) rather
/// than `DeltaNet`'s masked `K Kᵀ` and `Q Kᵀ`. With all channels of a token equal it is gated
/// DeltaNet, with g = 0 plain DeltaNet (tests check both).
///
/// Chunkwise (WY/UT form): per chunk one triangular solve gives the pseudo-values V' actually
/// written, then the chunk ends as gated linear attention on V'. The parallel form is one
/// chunk spanning the call: O(T²) memory.
template <class Scalar_>
class KimiDeltaAttention : public LayerBase<KimiDeltaAttention<Scalar_>> {
 public:
  /// The scalar type: float or double.
  using Scalar = Scalar_;
  static_assert(std::is_floating_point_v<Scalar>, "seqmem layers take float or double");

  /// Construction options (an aggregate, for designated initializers).
  struct Options {
    /// Width of q, k and the log-decay rows, and rows of S (one per key channel); must be > 0.
    Index key_dim = 0;
    /// Width of v and of the output and columns of S; must be > 0.
    Index value_dim = 0;
    std::optional<Scalar> scale = std::nullopt;  ///< default 1/sqrt(key_dim)
    /// Tokens per chunk of the chunkwise form; 16: the fastest at d = 64 (+12 % over 32) and d =
    /// 128 (+3 %)
    /// (`layers_bench --suite=chunks`, docs/benchmarks/diagonal_gates.md).
    Index chunk_size = 16;
    /// Divide q and k rows by sqrt(Σx² + 1e-6) inside the layer, before `scale` (as KDA models
    /// do; fla's `use_qk_l2norm_in_kernel`).
    bool qk_l2norm = false;
    /// Reject q, k, v containing NaN or Inf (one pass over the inputs); off skips the check.
    bool check_finite = true;
  };

  /// q, k `T×key_dim`, v `T×value_dim`, `beta` `T×1` in [0, 2], `log_decay` `T×key_dim`,
  /// every entry finite and ≤ 0.
  struct Inputs {
    /// Queries, `T×key_dim`.
    InputRef<Scalar> q;
    /// Keys, `T×key_dim`.
    InputRef<Scalar> k;
    /// Values, `T×value_dim`.
    InputRef<Scalar> v;
    /// Write strength β_t, `T×1`, each in [0, 2].
    GateRef<Scalar> beta;
    /// Per-channel log-decays g_t, `T×key_dim`, every entry finite and ≤ 0 (required).
    InputRef<Scalar> log_decay;
  };

  /// The memory carried from one call to the next.
  struct State {
    Matrix<Scalar> S;  ///< key_dim × value_dim
  };

  /// The state in state files (core/state_layout.hpp).
  struct StateLayout {
    /// The layer kind written in state files.
    static constexpr std::string_view kind = "KimiDeltaAttention";
    /// The options that shape the state: key_dim and value_dim.
    static std::vector<StateParam> params(const KimiDeltaAttention& layer) {
      return {{"key_dim", layer.options().key_dim}, {"value_dim", layer.options().value_dim}};
    }
    /// Visits the parts of the state in file order: `S`.
    template <class S, class V>
    static void visit(const KimiDeltaAttention&, S& state, V& v) {
      v.tensor("S", state.S);
    }
  };

  /// The layer's name in error messages.
  static constexpr const char* kName = "KimiDeltaAttention";

  /// Checks `options` and fills in the default `scale`.
  /// @throws seqmem::invalid_argument unless key_dim, value_dim and chunk_size are > 0 and the
  /// scale is finite.
  explicit KimiDeltaAttention(const Options& options) : options_(options) {
    detail::require_positive(kName, "key_dim", options_.key_dim);
    detail::require_positive(kName, "value_dim", options_.value_dim);
    detail::require_positive(kName, "chunk_size", options_.chunk_size);
    options_.scale = detail::scale_or_default(kName, options_.scale, options_.key_dim);
  }

  /// The options, with `scale` filled in.
  const Options& options() const { return options_; }
  /// The factor that multiplies q (the option, or 1/√key_dim).
  Scalar scale() const { return *options_.scale; }

  /// The gates `LayerBase` checks and slices: `beta` in [0, 2] per token (`T×1`) and `log_decay`
  /// ≤ 0 per key channel (`T×key_dim`).
  static constexpr auto gates() {
    return std::tuple{
        detail::GateSpec{&Inputs::beta, "beta", 0.0, 2.0},
        detail::GateSpec{&Inputs::log_decay, "log_decay", -std::numeric_limits<double>::infinity(),
                         0.0, detail::GateShape::per_key_channel}};
  }

  /// A chunk takes nothing from the ones before it but the state (LayerBase::exact_split).
  static constexpr bool kChunksCarryOnlyState = true;

  /// The empty memory: S = 0, `key_dim×value_dim`.
  State initial_state() const {
    return {Matrix<Scalar>::Zero(options_.key_dim, options_.value_dim)};
  }

  /// Throws `seqmem::invalid_argument` unless `state.S` is `key_dim×value_dim`.
  void check_state(Form, Index, const State& state) const {
    detail::require_shape(kName, "state.S", state.S, options_.key_dim, options_.value_dim);
  }

  /// The math of one checked call with T > 0.
  void run(Form form, const Inputs& in, State& state, MatrixRef<Scalar> out) const {
    if (form == Form::recurrent) return recurrent(in, state, out);
    if (!options_.qk_l2norm) return run_form(form, in.q, in.k, in, state, out);
    Matrix<Scalar> q = in.q, k = in.k;
    detail::l2_normalize_rows(q);
    detail::l2_normalize_rows(k);
    run_form(form, q, k, in, state, out);
  }

 private:
  /// One call on q (not yet scaled) and k (normalized when `qk_l2norm`).
  template <class QMatrix, class KMatrix>
  void run_form(Form form, const QMatrix& q_in, const KMatrix& k, const Inputs& in, State& state,
                MatrixRef<Scalar>& out) const {
    const Matrix<Scalar> q = q_in * scale();
    const Index chunk = form == Form::parallel ? q.rows() : options_.chunk_size;
    detail::ChannelChunkWorkspace<Scalar> ws;
    for (Index begin = 0; begin < q.rows(); begin += chunk) {
      const Index n = std::min(chunk, q.rows() - begin);
      ws.decay.assign(in.log_decay, begin, n);
      run_chunk(q.middleRows(begin, n), k.middleRows(begin, n), in.v.middleRows(begin, n),
                in.beta.middleRows(begin, n), state.S, out.middleRows(begin, n), ws);
    }
  }

  /// One chunk (docs/math.md §8): the pseudo-values V' the delta rule actually writes,
  ///     (I + diag(β) A^kk) V' = diag(β) (V − (K ⊙ exp(Γ)) S)      (forward substitution)
  /// then gated linear attention on them, O = (Q ⊙ exp(Γ)) S + A^qk V', S ← D S + (K ⊙ ·)ᵀ V'.
  /// A^kk (strictly lower) and A^qk come from one pair computation, and (K ⊙ e^Γ) S and
  /// (Q ⊙ e^Γ) S from one product.
  template <class QBlock, class KBlock, class VBlock, class BetaBlock, class OBlock>
  static void run_chunk(const QBlock& q, const KBlock& k, const VBlock& v, const BetaBlock& beta,
                        Matrix<Scalar>& S, OBlock&& out,
                        detail::ChannelChunkWorkspace<Scalar>& ws) {
    using detail::PairRows;
    const Index n = k.rows();
    const auto gamma = ws.decay.inclusive();
    ws.pairs.compute(
        std::array{PairRows<Scalar>{k, gamma, false}, PairRows<Scalar>{q, gamma, true}},
        std::array{MatrixCRef<Scalar>(k)}, gamma, ws.scores);
    ws.weighted.resize(2 * n, k.cols());
    const auto start = detail::from_start(k.cols());
    detail::scale_by_decay(k, gamma, start, 1.0, ws.weighted.topRows(n), ws.exponent);
    detail::scale_by_decay(q, gamma, start, 1.0, ws.weighted.bottomRows(n), ws.exponent);
    detail::multiply<Scalar>(ws.products, ws.weighted, S);

    // diag(β)·X, not X.colwise() * β: on row-major X the latter is a scalar loop below -O3.
    ws.values = beta.col(0).asDiagonal() * (v - ws.products.topRows(n));
    auto kk = ws.scores.topRows(n);
    kk = beta.col(0).asDiagonal() * kk;
    detail::solve_unit_lower_in_place(kk, ws.values);

    out = ws.products.bottomRows(n);
    detail::multiply_into<Scalar>(out, ws.scores.bottomRows(n), ws.values, true);
    detail::decay_and_write(k, ws.values, S, ws);
  }

  /// Per-thread buffers of the recurrent form: one token's q and k (when normalized), the
  /// decays, decayed rows and u.
  struct RecurrentWorkspace {
    detail::Scratch<Scalar> q, k, decay, decayed_k, decayed_q, u;
  };

  /// The definition, token by token (no allocation once the thread's buffers have grown).
  void recurrent(const Inputs& in, State& state, MatrixRef<Scalar>& out) const {
    auto& ws = detail::thread_workspace<RecurrentWorkspace>();
    auto q = ws.q.row(options_.key_dim);
    auto k = ws.k.row(options_.key_dim);
    for (Index t = 0; t < in.q.rows(); ++t) {
      if (options_.qk_l2norm) {
        q = in.q.row(t);
        k = in.k.row(t);
        detail::l2_normalize_rows(q);
        detail::l2_normalize_rows(k);
        step(q, k, in, t, state, out, ws);
      } else {
        step(in.q.row(t), in.k.row(t), in, t, state, out, ws);
      }
    }
  }

  /// Token t: the reads of the old state S_{t−1},
  ///     u = β (v − (k ⊙ e^g) S_{t−1}),   o = scale·((q ⊙ e^g) S_{t−1} + (q·k) u),
  /// then one pass that updates S = e^g S + kᵀu.
  template <class QRow, class KRow>
  void step(const QRow& qt, const KRow& kt, const Inputs& in, Index t, State& state,
            MatrixRef<Scalar>& out, RecurrentWorkspace& ws) const {
    auto decay = ws.decay.column(options_.key_dim);
    auto decayed_k = ws.decayed_k.row(options_.key_dim);
    auto decayed_q = ws.decayed_q.row(options_.key_dim);
    auto u = ws.u.row(options_.value_dim);
    decay = in.log_decay.row(t).transpose();
    detail::exp_in_place(decay);
    decayed_k = kt.cwiseProduct(decay.transpose());
    decayed_q = qt.cwiseProduct(decay.transpose());
    detail::read_rows(state.S, decayed_k, u, decayed_q, out.row(t));
    u = in.beta(t, 0) * (in.v.row(t) - u);
    out.row(t) = scale() * (out.row(t) + qt.dot(kt) * u);
    detail::decay_and_write_rows(state.S, decay, detail::RankOne{kt, u});
  }

  Options options_;
};

}  // namespace seqmem
