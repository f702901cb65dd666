#pragma once

/// @file
/// DeltaNet and gated DeltaNet: the delta rule in all three forms (docs/math.md §3).

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <string_view>
#include <vector>

#include "seqmem/core/layer.hpp"
#include "seqmem/core/state_layout.hpp"
#include "seqmem/core/types.hpp"
#include "seqmem/detail/checks.hpp"
#include "seqmem/detail/math.hpp"
#include "seqmem/detail/scratch.hpp"

namespace seqmem {

/// DeltaNet (docs/math.md §3); with a `log_decay` gate, gated DeltaNet:
///
///     S̃_t = exp(g_t) S_{t−1}
///     S_t = S̃_t + β_t k_tᵀ (v_t − k_t S̃_t)        o_t = scale·q_t S_t
///
/// Chunkwise uses the WY/UT transform: per chunk one triangular solve gives the
/// pseudo-values V' actually written, and the rest is decayed linear attention on V'.
/// The parallel form is that algorithm with one chunk spanning the call, so its memory is
/// O(T²) (the `T×T` scores and the triangular system): use chunkwise for long calls.
template <class Scalar_>
class DeltaNet : public LayerBase<DeltaNet<Scalar_>> {
 public:
  /// The scalar type: float or double.
  using Scalar = Scalar_;
  static_assert(std::is_floating_point_v<Scalar>, "seqmem layers take float or double");

  /// Construction options (an aggregate, for designated initializers).
  struct Options {
    /// Width of q and k and rows of S; must be > 0.
    Index key_dim = 0;
    /// Width of v and of the output and columns of S; must be > 0.
    Index value_dim = 0;
    std::optional<Scalar> scale = std::nullopt;  ///< default 1/sqrt(key_dim)
    /// Tokens per chunk of the chunkwise form; 16 was the fastest at d = 64 and 128
    /// (`layers_bench --suite=chunks`, docs/benchmarks/chunk_sweep.md).
    Index chunk_size = 16;
    /// Divide q and k rows by sqrt(Σx² + 1e-6) inside the layer (as DeltaNet models do).
    bool qk_l2norm = false;
    /// Reject q, k, v containing NaN or Inf (one pass over the inputs); off skips the check.
    bool check_finite = true;
  };

  /// q, k `T×key_dim`, v `T×value_dim`, `beta` `T×1` in [0, 2], optional `log_decay` `T×1`
  /// with g_t ≤ 0 (gated DeltaNet).
  struct Inputs {
    /// Queries, `T×key_dim`.
    InputRef<Scalar> q;
    /// Keys, `T×key_dim`.
    InputRef<Scalar> k;
    /// Values, `T×value_dim`.
    InputRef<Scalar> v;
    /// Write strength β_t, `T×1`, each in [0, 2].
    GateRef<Scalar> beta;
    /// Log-decay g_t ≤ 0, `T×1` (gated DeltaNet); absent means no decay.
    std::optional<GateRef<Scalar>> log_decay = std::nullopt;
  };

  /// The memory carried from one call to the next.
  struct State {
    Matrix<Scalar> S;  ///< key_dim × value_dim
  };

  /// The state in state files (core/state_layout.hpp).
  struct StateLayout {
    /// The layer kind written in state files.
    static constexpr std::string_view kind = "DeltaNet";
    /// The options that shape the state: key_dim and value_dim.
    static std::vector<StateParam> params(const DeltaNet& layer) {
      return {{"key_dim", layer.options().key_dim}, {"value_dim", layer.options().value_dim}};
    }
    /// Visits the parts of the state in file order: `S`.
    template <class S, class V>
    static void visit(const DeltaNet&, S& state, V& v) {
      v.tensor("S", state.S);
    }
  };

  /// The layer's name in error messages.
  static constexpr const char* kName = "DeltaNet";

  /// Checks `options` and fills in the default `scale`.
  /// @throws seqmem::invalid_argument unless key_dim, value_dim and chunk_size are > 0 and the
  /// scale is finite.
  explicit DeltaNet(const Options& options) : options_(options) {
    detail::require_positive(kName, "key_dim", options_.key_dim);
    detail::require_positive(kName, "value_dim", options_.value_dim);
    detail::require_positive(kName, "chunk_size", options_.chunk_size);
    options_.scale = detail::scale_or_default(kName, options_.scale, options_.key_dim);
  }

  /// The options, with `scale` filled in.
  const Options& options() const { return options_; }
  /// The factor that multiplies q (the option, or 1/√key_dim).
  Scalar scale() const { return *options_.scale; }

  /// The gates `LayerBase` checks and slices: `beta` in [0, 2] and optional `log_decay` ≤ 0, both
  /// per token.
  static constexpr auto gates() {
    return std::tuple{detail::GateSpec{&Inputs::beta, "beta", 0.0, 2.0},
                      detail::GateSpec{&Inputs::log_decay, "log_decay", -kInf, 0.0}};
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
    Matrix<Scalar> q = in.q;
    if (options_.qk_l2norm) {
      detail::l2_normalize_rows(q);
      Matrix<Scalar> k = in.k;
      detail::l2_normalize_rows(k);
      q *= scale();
      run_form(form, q, k, in, state, out);
    } else {
      q *= scale();
      run_form(form, q, in.k, in, state, out);
    }
  }

 private:
  static constexpr double kInf = std::numeric_limits<double>::infinity();

  template <class KMatrix>
  void run_form(Form form, const Matrix<Scalar>& q, const KMatrix& k, const Inputs& in,
                State& state, MatrixRef<Scalar>& out) const {
    const Index chunk = form == Form::parallel ? q.rows() : options_.chunk_size;
    detail::ChunkWorkspace<Scalar> ws;
    for (Index begin = 0; begin < q.rows(); begin += chunk) {
      const Index n = std::min(chunk, q.rows() - begin);
      ws.decay.assign(in.log_decay, begin, n);
      const auto kc = k.middleRows(begin, n);
      pseudo_values(kc, in.v.middleRows(begin, n), in.beta.middleRows(begin, n), state.S, ws);
      detail::decayed_linear_chunk(q.middleRows(begin, n), kc, ws.values, state.S,
                                   out.middleRows(begin, n), ws);
    }
  }

  /// The values the delta rule actually writes in one chunk (docs/math.md §3):
  ///     (I + A) V' = diag(β)(V − diag(Γ) K S),   A_ij = β_i (Γ_i/Γ_j) k_i·k_j  for i > j
  /// solved by forward substitution (A is strictly lower triangular).
  template <class KBlock, class VBlock, class BetaBlock>
  static void pseudo_values(const KBlock& k, const VBlock& v, const BetaBlock& beta,
                            const Matrix<Scalar>& S, detail::ChunkWorkspace<Scalar>& ws) {
    const auto& decay = ws.decay;
    if (decay.gated()) {
      ws.weighted.noalias() = decay.to_start().asDiagonal() * k;
      detail::multiply<Scalar>(ws.values, ws.weighted, S);
    } else {
      detail::multiply<Scalar>(ws.values, k, S);
    }
    // diag(β)·X, not X.colwise() * β: on row-major X the latter is a scalar loop below -O3.
    ws.values = beta.col(0).asDiagonal() * (v - ws.values);
    detail::multiply_by_transpose<Scalar>(ws.scores, k, k, ws.transposed);
    decay.mask(ws.scores, /*keep_diagonal=*/false);
    ws.scores = beta.col(0).asDiagonal() * ws.scores;
    detail::solve_unit_lower_in_place(ws.scores, ws.values);
  }

  /// Per-thread buffers of the recurrent form: one token's q and k, and u.
  struct RecurrentWorkspace {
    detail::Scratch<Scalar> q, k, u;
  };

  /// The definition, token by token (no allocation once the thread's buffers have grown).
  void recurrent(const Inputs& in, State& state, MatrixRef<Scalar>& out) const {
    auto& ws = detail::thread_workspace<RecurrentWorkspace>();
    auto q = ws.q.row(options_.key_dim);
    auto k = ws.k.row(options_.key_dim);
    auto u = ws.u.row(options_.value_dim);
    for (Index t = 0; t < in.q.rows(); ++t) {
      q = in.q.row(t);
      if (options_.qk_l2norm) {
        detail::l2_normalize_rows(q);
        k = in.k.row(t);
        detail::l2_normalize_rows(k);
        q *= scale();
        step(q, k, u, in, t, state, out);
      } else {
        q *= scale();
        step(q, in.k.row(t), u, in, t, state, out);
      }
    }
  }

  /// Token t (docs/math.md §3; q already scaled): the reads of the old state S_{t−1} by GEMVs,
  ///     u = β (v − e^g k S_{t−1}),   o = q S_t = e^g q S_{t−1} + (q·k) u,
  /// then one pass that updates S = e^g S + kᵀu (detail::decay_and_write_rows).
  template <class QRow, class KRow, class URow>
  void step(const QRow& qt, const KRow& kt, URow& u, const Inputs& in, Index t, State& state,
            MatrixRef<Scalar>& out) const {
    const Scalar decay = in.log_decay ? std::exp((*in.log_decay)(t, 0)) : Scalar(1);
    auto o = out.row(t);
    detail::read_rows(state.S, kt, u, qt, o);
    u = in.beta(t, 0) * (in.v.row(t) - decay * u);
    o = decay * o + qt.dot(kt) * u;
    detail::decay_and_write_rows(
        state.S, [decay](Index) { return decay; }, detail::RankOne{kt, u});
  }

  Options options_;
};

}  // namespace seqmem
