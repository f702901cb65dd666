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
  using Scalar = Scalar_;
  static_assert(std::is_floating_point_v<Scalar>, "seqmem layers take float or double");

  struct Options {
    Index key_dim = 0;
    Index value_dim = 0;
    std::optional<Scalar> scale = std::nullopt;  ///< default 1/sqrt(key_dim)
    /// Tokens per chunk of the chunkwise form.
    Index chunk_size = 64;
    /// Divide q and k rows by sqrt(Σx² + 1e-6) inside the layer, before `scale` (as KDA models
    /// do; fla's `use_qk_l2norm_in_kernel`).
    bool qk_l2norm = false;
    /// Reject q, k, v containing NaN or Inf (one pass over the inputs); off skips the check.
    bool check_finite = true;
  };

  /// q, k `T×key_dim`, v `T×value_dim`, `beta` `T×1` in [0, 2], `log_decay` `T×key_dim`,
  /// every entry finite and ≤ 0.
  struct Inputs {
    InputRef<Scalar> q;
    InputRef<Scalar> k;
    InputRef<Scalar> v;
    GateRef<Scalar> beta;
    InputRef<Scalar> log_decay;
  };

  struct State {
    Matrix<Scalar> S;  ///< key_dim × value_dim
  };

  /// The state in state files (core/state_layout.hpp).
  struct StateLayout {
    static constexpr std::string_view kind = "KimiDeltaAttention";
    static std::vector<StateParam> params(const KimiDeltaAttention& layer) {
      return {{"key_dim", layer.options().key_dim}, {"value_dim", layer.options().value_dim}};
    }
    template <class S, class V>
    static void visit(const KimiDeltaAttention&, S& state, V& v) {
      v.tensor("S", state.S);
    }
  };

  static constexpr const char* kName = "KimiDeltaAttention";

  explicit KimiDeltaAttention(const Options& options) : options_(options) {
    detail::require_positive(kName, "key_dim", options_.key_dim);
    detail::require_positive(kName, "value_dim", options_.value_dim);
    detail::require_positive(kName, "chunk_size", options_.chunk_size);
    options_.scale = detail::scale_or_default(kName, options_.scale, options_.key_dim);
  }

  const Options& options() const { return options_; }
  Scalar scale() const { return *options_.scale; }

  static constexpr auto gates() {
    return std::tuple{
        detail::GateSpec{&Inputs::beta, "beta", 0.0, 2.0},
        detail::GateSpec{&Inputs::log_decay, "log_decay", -std::numeric_limits<double>::infinity(),
                         0.0, detail::GateShape::per_key_channel}};
  }

  State initial_state() const {
    return {Matrix<Scalar>::Zero(options_.key_dim, options_.value_dim)};
  }

  void check_state(Form, Index, const State& state) const {
    detail::require_shape(kName, "state.S", state.S, options_.key_dim, options_.value_dim);
  }

  /// The math of one checked call with T > 0.
  void run(Form form, const Inputs& in, State& state, MatrixRef<Scalar> out) const {
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
  template <class KMatrix>
  void run_form(Form form, const Matrix<Scalar>& q, const KMatrix& k, const Inputs& in,
                State& state, MatrixRef<Scalar>& out) const {
    if (form == Form::recurrent) return recurrent(q, k, in, state, out);
    const Index chunk = form == Form::parallel ? q.rows() : options_.chunk_size;
    detail::ChannelChunkWorkspace<Scalar> ws;
    for (Index begin = 0; begin < q.rows(); begin += chunk) {
      const Index n = std::min(chunk, q.rows() - begin);
      ws.decay.assign(in.log_decay, begin, n);
      const auto kc = k.middleRows(begin, n);
      pseudo_values(kc, in.v.middleRows(begin, n), in.beta.middleRows(begin, n), state.S, ws);
      detail::channel_decayed_chunk(q.middleRows(begin, n), kc, ws.values, state.S,
                                    out.middleRows(begin, n), ws);
    }
  }

  /// The values the delta rule actually writes in one chunk (docs/math.md §8):
  ///     (I + A) V' = diag(β) (V − (K ⊙ exp(Γ)) S),   A_ij = β_i Σ_c k_ic k_jc e^{γ_ic − γ_jc}, j <
  ///     i
  /// solved by forward substitution (A is strictly lower triangular).
  template <class KBlock, class VBlock, class BetaBlock>
  static void pseudo_values(const KBlock& k, const VBlock& v, const BetaBlock& beta,
                            const Matrix<Scalar>& S, detail::ChannelChunkWorkspace<Scalar>& ws) {
    const auto gamma = ws.decay.inclusive();
    detail::scale_by_decay(k, gamma, Eigen::RowVectorXd::Zero(k.cols()), 1.0, ws.weighted);
    ws.values = v;
    ws.values.noalias() -= ws.weighted * S;
    ws.values.array().colwise() *= beta.col(0).array();
    ws.pairs.compute(k, gamma, std::array{&k}, gamma, /*diagonal=*/false, {&ws.scores});
    ws.scores.array().colwise() *= beta.col(0).array();
    ws.scores.template triangularView<Eigen::UnitLower>().solveInPlace(ws.values);
  }

  /// The definition, token by token (q already scaled).
  template <class KMatrix>
  void recurrent(const Matrix<Scalar>& q, const KMatrix& k, const Inputs& in, State& state,
                 MatrixRef<Scalar>& out) const {
    Vector<Scalar> decay(options_.key_dim);
    RowVector<Scalar> u(options_.value_dim);
    for (Index t = 0; t < q.rows(); ++t) {
      // u = β (v − k S̃) with k S̃ = (k ⊙ e^g) S; then S = e^g S + kᵀu in one pass over S.
      decay = in.log_decay.row(t).transpose().array().exp();
      u.noalias() = (k.row(t).array() * decay.transpose().array()).matrix() * state.S;
      u = in.beta(t, 0) * (in.v.row(t) - u);
      state.S = decay.asDiagonal() * state.S + k.row(t).transpose().lazyProduct(u);
      out.row(t).noalias() = q.row(t) * state.S;
    }
  }

  Options options_;
};

}  // namespace seqmem
