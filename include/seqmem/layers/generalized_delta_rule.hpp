#pragma once

/// @file
/// The generalized delta rule: a diagonal-plus-low-rank transition per token (DPLR; RWKV-7's
/// state update), in all three forms (docs/math.md §9).

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
#include "seqmem/detail/matmul.hpp"
#include "seqmem/detail/scratch.hpp"
#include "seqmem/detail/vector_exp.hpp"

namespace seqmem {

/// The generalized delta rule (docs/math.md §9):
///
///     S_t = diag(exp(g_t)) S_{t−1} + b_tᵀ (a_t S_{t−1}) + k_tᵀ v_t
///         = (diag(exp(g_t)) + b_tᵀ a_t) S_{t−1} + k_tᵀ v_t
///     o_t = scale·q_t S_t
///
/// a_t reads the previous, undecayed state (a 1×value_dim row) and b_t is the key direction it
/// is written back along (fla's `a`/`b`; the transpose of fla's column-vector comments, as
/// fla's code and ggml's `rwkv_wkv7` compute). RWKV-7 is a_t = −κ̂_t, b_t = κ̂_t ⊙ α_t with scale 1.
/// KDA is a_t = −k_t ⊙ exp(g_t), b_t = β_t k_t with the written key β_t k_t; a = b = 0 is GLA.
///
/// No cheap check certifies stability: with a·b > 0 the transition has an eigenvalue above 1 and
/// the state may grow. The layer accepts such inputs (any finite a, b).
///
/// Chunkwise: per chunk one triangular solve gives the low-rank reads R = [a_i S_{i−1}], then
/// the chunk is per-channel decayed linear attention on the keys K and B with values V and R.
/// The parallel form is one chunk spanning the call: O(T²) memory.
template <class Scalar_>
class GeneralizedDeltaRule : public LayerBase<GeneralizedDeltaRule<Scalar_>> {
 public:
  /// The scalar type: float or double.
  using Scalar = Scalar_;
  static_assert(std::is_floating_point_v<Scalar>, "seqmem layers take float or double");

  /// Construction options (an aggregate, for designated initializers).
  struct Options {
    /// Width of q, k, a, b and the log-decay rows, and rows of S (one per key channel); > 0.
    Index key_dim = 0;
    /// Width of v and of the output and columns of S; must be > 0.
    Index value_dim = 0;
    std::optional<Scalar> scale = std::nullopt;  ///< default 1/sqrt(key_dim)
    /// Tokens per chunk of the chunkwise form; 16: the fastest at d = 64 (+15 % over 32) and d =
    /// 128 (+8 %)
    /// (`layers_bench --suite=chunks`, docs/benchmarks/diagonal_gates.md).
    Index chunk_size = 16;
    /// Reject q, k, v containing NaN or Inf (one pass over the inputs); off skips the check.
    bool check_finite = true;
  };

  /// q, k `T×key_dim`, v `T×value_dim`; `a`, `b` `T×key_dim`, finite; `log_decay` `T×key_dim`,
  /// every entry finite and ≤ 0.
  struct Inputs {
    /// Queries, `T×key_dim`.
    InputRef<Scalar> q;
    /// Keys (the write direction of v), `T×key_dim`.
    InputRef<Scalar> k;
    /// Values, `T×value_dim`.
    InputRef<Scalar> v;
    /// Read vectors a_t, `T×key_dim`, finite: a_t S_{t−1} is the low-rank read of the old state.
    InputRef<Scalar> a;
    /// Write-back directions b_t, `T×key_dim`, finite: the read is written back along b_t.
    InputRef<Scalar> b;
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
    static constexpr std::string_view kind = "GeneralizedDeltaRule";
    /// The options that shape the state: key_dim and value_dim.
    static std::vector<StateParam> params(const GeneralizedDeltaRule& layer) {
      return {{"key_dim", layer.options().key_dim}, {"value_dim", layer.options().value_dim}};
    }
    /// Visits the parts of the state in file order: `S`.
    template <class S, class V>
    static void visit(const GeneralizedDeltaRule&, S& state, V& v) {
      v.tensor("S", state.S);
    }
  };

  /// The layer's name in error messages.
  static constexpr const char* kName = "GeneralizedDeltaRule";

  /// Checks `options` and fills in the default `scale`.
  /// @throws seqmem::invalid_argument unless key_dim, value_dim and chunk_size are > 0 and the
  /// scale is finite.
  explicit GeneralizedDeltaRule(const Options& options) : options_(options) {
    detail::require_positive(kName, "key_dim", options_.key_dim);
    detail::require_positive(kName, "value_dim", options_.value_dim);
    detail::require_positive(kName, "chunk_size", options_.chunk_size);
    options_.scale = detail::scale_or_default(kName, options_.scale, options_.key_dim);
  }

  /// The options, with `scale` filled in.
  const Options& options() const { return options_; }
  /// The factor that multiplies q (the option, or 1/√key_dim).
  Scalar scale() const { return *options_.scale; }

  /// The gates `LayerBase` checks and slices, all per key channel (`T×key_dim`): `a` and `b` (any
  /// finite value) and `log_decay` ≤ 0.
  static constexpr auto gates() {
    constexpr double kInf = std::numeric_limits<double>::infinity();
    constexpr auto kPerChannel = detail::GateShape::per_key_channel;
    return std::tuple{detail::GateSpec{&Inputs::a, "a", -kInf, kInf, kPerChannel},
                      detail::GateSpec{&Inputs::b, "b", -kInf, kInf, kPerChannel},
                      detail::GateSpec{&Inputs::log_decay, "log_decay", -kInf, 0.0, kPerChannel}};
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
    const Matrix<Scalar> q = in.q * scale();
    const Index chunk = form == Form::parallel ? q.rows() : options_.chunk_size;
    detail::ChannelChunkWorkspace<Scalar> ws;
    for (Index begin = 0; begin < q.rows(); begin += chunk) {
      const Index n = std::min(chunk, q.rows() - begin);
      ws.decay.assign(in.log_decay, begin, n);
      run_chunk(q.middleRows(begin, n), in.k.middleRows(begin, n), in.v.middleRows(begin, n),
                in.a.middleRows(begin, n), in.b.middleRows(begin, n), state.S,
                out.middleRows(begin, n), ws);
    }
  }

 private:
  /// One chunk (docs/math.md §9), with the pair matrices A^xy of its rows (a-rows on the
  /// exclusive γ⁻, strictly lower; q-rows on γ, diagonal included):
  ///
  ///     (I − A^ab) R = A^ak V + (Ā ⊙ exp(Γ⁻)) S              (forward substitution)
  ///     O = (Q ⊙ exp(Γ)) S + A^qb R + A^qk V
  ///     S ← diag(exp(γ_C)) S + ([B; K] ⊙ exp(γ_C − Γ))ᵀ [R; V]
  ///
  /// The four pair matrices come from one computation ([Ā; Q] against [B; K]), and the two
  /// products with the start state from one GEMM.
  template <class QBlock, class KBlock, class VBlock, class ABlock, class BBlock, class OBlock>
  static void run_chunk(const QBlock& q, const KBlock& k, const VBlock& v, const ABlock& a,
                        const BBlock& b, Matrix<Scalar>& S, OBlock&& out,
                        detail::ChannelChunkWorkspace<Scalar>& ws) {
    using detail::PairRows;
    const Index n = k.rows(), dk = k.cols();
    const detail::ChannelDecay& decay = ws.decay;
    const auto gamma = decay.inclusive();
    const auto before = decay.exclusive();
    ws.pairs.compute(
        std::array{PairRows<Scalar>{a, before, false}, PairRows<Scalar>{q, gamma, true}},
        std::array{MatrixCRef<Scalar>(b), MatrixCRef<Scalar>(k)}, gamma, ws.scores);
    ws.weighted.resize(2 * n, dk);
    const auto start = detail::from_start(dk);
    detail::scale_by_decay(a, before, start, 1.0, ws.weighted.topRows(n), ws.exponent);
    detail::scale_by_decay(q, gamma, start, 1.0, ws.weighted.bottomRows(n), ws.exponent);
    detail::multiply<Scalar>(ws.products, ws.weighted, S);

    // [R; V]: the low-rank reads, solved, over the values.
    ws.values.resize(2 * n, v.cols());
    auto reads = ws.values.topRows(n);
    ws.values.bottomRows(n) = v;
    reads = ws.products.topRows(n);
    detail::multiply_into<Scalar>(reads, ws.scores.block(0, n, n, n), v, true);
    auto ab = ws.scores.topLeftCorner(n, n);
    ab = -ab;
    detail::solve_unit_lower_in_place(ab, reads);

    out = ws.products.bottomRows(n);
    detail::multiply_into<Scalar>(out, ws.scores.bottomRows(n), ws.values, true);

    detail::decay_state(S, decay);
    detail::scale_by_decay(b, gamma, decay.total(), -1.0, ws.weighted.topRows(n), ws.exponent);
    detail::scale_by_decay(k, gamma, decay.total(), -1.0, ws.weighted.bottomRows(n), ws.exponent);
    detail::multiply_transposed<Scalar>(S, ws.weighted, ws.values, true);
  }

  /// Per-thread buffers of the recurrent form (no allocation once they have grown).
  struct RecurrentWorkspace {
    detail::Scratch<Scalar> decay, decayed_q, read;
  };

  /// The definition, token by token: the reads of the old state S_{t−1},
  ///     r = a S_{t−1},   o = scale·((q ⊙ e^g) S_{t−1} + (q·b) r + (q·k) v),
  /// then one pass that updates S = e^g S + bᵀr + kᵀv.
  void recurrent(const Inputs& in, State& state, MatrixRef<Scalar>& out) const {
    auto& ws = detail::thread_workspace<RecurrentWorkspace>();
    auto decay = ws.decay.column(options_.key_dim);
    auto decayed_q = ws.decayed_q.row(options_.key_dim);
    auto read = ws.read.row(options_.value_dim);
    for (Index t = 0; t < in.q.rows(); ++t) {
      decay = in.log_decay.row(t).transpose();
      detail::exp_in_place(decay);
      const auto q = in.q.row(t);
      const auto a = in.a.row(t);
      const auto b = in.b.row(t);
      const auto k = in.k.row(t);
      const auto v = in.v.row(t);
      decayed_q = q.cwiseProduct(decay.transpose());
      detail::read_rows(state.S, a, read, decayed_q, out.row(t));  // a: the undecayed state
      out.row(t) = scale() * (out.row(t) + q.dot(b) * read + q.dot(k) * v);
      detail::decay_and_write_rows(state.S, decay, detail::RankOne{b, read}, detail::RankOne{k, v});
    }
  }

  Options options_;
};

}  // namespace seqmem
