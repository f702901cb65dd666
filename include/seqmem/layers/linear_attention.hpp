#pragma once

/// @file
/// Linear attention, optionally gated (simple GLA), normalized and feature-mapped
/// (docs/math.md §2).

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "seqmem/core/layer.hpp"
#include "seqmem/core/state_layout.hpp"
#include "seqmem/core/types.hpp"
#include "seqmem/detail/checks.hpp"
#include "seqmem/detail/math.hpp"
#include "seqmem/detail/scratch.hpp"

namespace seqmem {

/// Linear attention (docs/math.md §2):
///
///     S_t = exp(g_t) S_{t−1} + φ(k_t)ᵀ v_t           o_t = scale·φ(q_t) S_t
///     z_t = exp(g_t) z_{t−1} + φ(k_t)                 (normalized: o_t /= scale·φ(q_t)·z_t + ε)
///
/// The parallel form is the chunkwise algorithm with one chunk spanning the call.
template <class Scalar_>
class LinearAttention : public LayerBase<LinearAttention<Scalar_>> {
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
    /// Feature map φ applied to q and k; the layer's query is scale·φ(q) (the scale after the
    /// map, docs/math.md §2, as fla); identity by default.
    FeatureMap feature_map = FeatureMap::identity;
    /// Divide each output row by q̃_t·z_t + `norm_eps`, q̃_t = scale·φ(q_t) the query as the
    /// layer uses it; the state then carries z.
    bool normalize = false;
    Scalar norm_eps = Scalar(1e-10);  ///< ε added to the signed denominator (as fla)
    /// Tokens per chunk of the chunkwise form; 32: the fastest at d = 128, 10–17 % behind 16
    /// at d = 64 (`layers_bench --suite=chunks`, docs/benchmarks/chunk_sweep.md).
    Index chunk_size = 32;
    /// Reject q, k, v containing NaN or Inf (one pass over the inputs); off skips the check.
    bool check_finite = true;
  };

  /// One head's inputs for one call: q, k `T×key_dim`, v `T×value_dim`, optional
  /// `log_decay` `T×1` with g_t ≤ 0.
  struct Inputs {
    /// Queries, `T×key_dim`.
    InputRef<Scalar> q;
    /// Keys, `T×key_dim`.
    InputRef<Scalar> k;
    /// Values, `T×value_dim`.
    InputRef<Scalar> v;
    /// Log-decay g_t ≤ 0, `T×1`; absent means no decay.
    std::optional<GateRef<Scalar>> log_decay = std::nullopt;
  };

  /// S (`key_dim×value_dim`) and, when normalized, z (`1×key_dim`; empty otherwise).
  struct State {
    /// The memory, `key_dim×value_dim`.
    Matrix<Scalar> S;
    /// The normalizer: `1×key_dim` when `normalize`, else `0×0`.
    Matrix<Scalar> z;
  };

  /// The state in state files (core/state_layout.hpp).
  struct StateLayout {
    /// The layer kind written in state files.
    static constexpr std::string_view kind = "LinearAttention";
    /// The options that shape the state: key_dim, value_dim and normalize.
    static std::vector<StateParam> params(const LinearAttention& layer) {
      const auto& o = layer.options();
      return {{"key_dim", o.key_dim}, {"value_dim", o.value_dim}, {"normalize", o.normalize}};
    }
    /// Visits the parts of the state in file order: `S`, then `z`.
    template <class S, class V>
    static void visit(const LinearAttention&, S& state, V& v) {
      v.tensor("S", state.S);
      v.tensor("z", state.z);
    }
  };

  /// The layer's name in error messages.
  static constexpr const char* kName = "LinearAttention";

  /// Checks `options` and fills in the default `scale`.
  /// @throws seqmem::invalid_argument unless key_dim, value_dim and chunk_size are > 0, the scale
  /// is finite and norm_eps ≥ 0.
  explicit LinearAttention(const Options& options) : options_(options) {
    detail::require_positive(kName, "key_dim", options_.key_dim);
    detail::require_positive(kName, "value_dim", options_.value_dim);
    detail::require_positive(kName, "chunk_size", options_.chunk_size);
    options_.scale = detail::scale_or_default(kName, options_.scale, options_.key_dim);
    if (!(options_.norm_eps >= Scalar(0))) {
      detail::fail(kName, "norm_eps must be >= 0, got ", options_.norm_eps);
    }
  }

  /// The options, with `scale` filled in.
  const Options& options() const { return options_; }
  /// The factor that multiplies q (the option, or 1/√key_dim).
  Scalar scale() const { return *options_.scale; }

  /// The gates `LayerBase` checks and slices: optional `log_decay` ≤ 0, per token.
  static constexpr auto gates() {
    return std::tuple{detail::GateSpec{&Inputs::log_decay, "log_decay",
                                       -std::numeric_limits<double>::infinity(), 0.0}};
  }

  /// A chunk takes nothing from the ones before it but the state (LayerBase::exact_split).
  static constexpr bool kChunksCarryOnlyState = true;

  /// The empty memory: S = 0 (`key_dim×value_dim`) and, when normalized, z = 0 (`1×key_dim`).
  State initial_state() const {
    State state;
    state.S = Matrix<Scalar>::Zero(options_.key_dim, options_.value_dim);
    if (options_.normalize) state.z = Matrix<Scalar>::Zero(1, options_.key_dim);
    return state;
  }

  /// Throws `seqmem::invalid_argument` unless `state.S` is `key_dim×value_dim` and `state.z`
  /// `1×key_dim` when normalized, `0×0` otherwise.
  void check_state(Form, Index, const State& state) const {
    const Index dk = options_.key_dim;
    detail::require_shape(kName, "state.S", state.S, dk, options_.value_dim);
    detail::require_shape(kName, "state.z", state.z, options_.normalize ? 1 : 0,
                          options_.normalize ? dk : 0);
  }

  /// The math of one checked call with T > 0.
  void run(Form form, const Inputs& in, State& state, MatrixRef<Scalar> out) const {
    if (form == Form::recurrent) return recurrent(in, state, out);
    Matrix<Scalar> q;
    to_query(in.q, q);
    if (options_.feature_map == FeatureMap::identity) {
      run_form(form, q, in.k, in, state, out);
    } else {
      Matrix<Scalar> k = in.k;
      detail::apply_feature_map(options_.feature_map, k);
      run_form(form, q, k, in, state, out);
    }
  }

 private:
  template <class KMatrix>
  void run_form(Form form, const Matrix<Scalar>& q, const KMatrix& k, const Inputs& in,
                State& state, MatrixRef<Scalar>& out) const {
    const Index chunk = form == Form::parallel ? q.rows() : options_.chunk_size;
    if (!options_.normalize) return chunked(q, k, in.v, in.log_decay, chunk, state.S, out);
    // Normalized: z is one more value column, fed by a constant 1 (z_t = Σ Γ φ(k)ᵀ·1).
    const Index T = q.rows(), dv = options_.value_dim;
    Matrix<Scalar> v(T, dv + 1), s(options_.key_dim, dv + 1), o(T, dv + 1);
    v << in.v, Vector<Scalar>::Ones(T);
    s << state.S, state.z.transpose();
    chunked(q, k, v, in.log_decay, chunk, s, o);
    state.S = s.leftCols(dv);
    state.z = s.col(dv).transpose();
    out = o.leftCols(dv).array().colwise() / (o.col(dv).array() + options_.norm_eps);
  }

  template <class KMatrix, class VMatrix, class OMatrix>
  static void chunked(const Matrix<Scalar>& q, const KMatrix& k, const VMatrix& v,
                      const std::optional<GateRef<Scalar>>& log_decay, Index chunk,
                      Matrix<Scalar>& state, OMatrix& out) {
    detail::ChunkWorkspace<Scalar> ws;
    for (Index begin = 0; begin < q.rows(); begin += chunk) {
      const Index n = std::min(chunk, q.rows() - begin);
      ws.decay.assign(log_decay, begin, n);
      detail::decayed_linear_chunk(q.middleRows(begin, n), k.middleRows(begin, n),
                                   v.middleRows(begin, n), state, out.middleRows(begin, n), ws);
    }
  }

  /// q = scale·φ(x): the map first, then the scale (docs/math.md §2, as fla; for elu+1,
  /// φ(scale·x) would be another function). The identity map takes one pass, as before.
  template <class X, class Q>
  void to_query(const X& x, Q& q) const {
    if (options_.feature_map == FeatureMap::identity) {
      q = x * scale();
      return;
    }
    q = x;
    detail::apply_feature_map(options_.feature_map, q);
    q *= scale();
  }

  /// Per-thread buffers of the recurrent form: one token's scale·φ(q) and φ(k).
  struct RecurrentWorkspace {
    detail::Scratch<Scalar> q, k;
  };

  /// The definition, token by token (no allocation once the thread's buffers have grown).
  void recurrent(const Inputs& in, State& state, MatrixRef<Scalar>& out) const {
    auto& ws = detail::thread_workspace<RecurrentWorkspace>();
    auto q = ws.q.row(options_.key_dim);
    auto k = ws.k.row(options_.key_dim);
    for (Index t = 0; t < in.q.rows(); ++t) {
      to_query(in.q.row(t), q);
      if (options_.feature_map == FeatureMap::identity) {
        step(q, in.k.row(t), in, t, state, out);
      } else {
        k = in.k.row(t);
        detail::apply_feature_map(options_.feature_map, k);
        step(q, k, in, t, state, out);
      }
    }
  }

  /// Token t: S = e^g S + φ(k)ᵀ v and the output scale·φ(q) S from the new S, in one pass over
  /// S (detail::decay_write_and_read_rows).
  template <class QRow, class KRow>
  void step(const QRow& qt, const KRow& kt, const Inputs& in, Index t, State& state,
            MatrixRef<Scalar>& out) const {
    const Scalar decay = in.log_decay ? std::exp((*in.log_decay)(t, 0)) : Scalar(1);
    const auto v = in.v.row(t);
    auto o = out.row(t);
    detail::decay_write_and_read_rows(
        state.S, [decay](Index) { return decay; }, qt, o, detail::RankOne{kt, v});
    if (options_.normalize) {
      state.z = decay * state.z + kt;
      o /= qt.dot(state.z.row(0)) + options_.norm_eps;
    }
  }

  Options options_;
};

}  // namespace seqmem
