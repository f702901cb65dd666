#pragma once

/// @file
/// Gated linear attention (GLA): linear attention with one decay per key channel, in all three
/// forms (docs/math.md §7). RWKV-6 and HGRN-2 update their state the same way.

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
#include "seqmem/detail/scratch.hpp"
#include "seqmem/detail/vector_exp.hpp"

namespace seqmem {

/// Gated linear attention (docs/math.md §7):
///
///     S_t = diag(exp(g_t)) S_{t−1} + k_tᵀ v_t          o_t = scale·q_t S_t
///
/// with `log_decay` g_t a row of key_dim log-decays (row c of S is key channel c).
///
/// A class of its own rather than an option of `LinearAttention`: the gate is `T×key_dim`, and
/// the decay sits inside the sum over channels, so the chunk's score matrix is a decayed-pair
/// matrix (detail/channel_decay.hpp) instead of `LinearAttention`'s masked `Q Kᵀ`; the two
/// share nothing past the last two lines of a chunk. With all channels of a token equal it is
/// `LinearAttention` with that scalar decay (a test checks it).
///
/// Chunkwise builds each chunk's pairs without ever forming exp(−γ), so any finite decay
/// (g = −30, or −1e30) is exact in float as in double. The parallel form is the chunkwise
/// algorithm with one chunk spanning the call: O(T²) memory.
template <class Scalar_>
class GatedLinearAttention : public LayerBase<GatedLinearAttention<Scalar_>> {
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
    /// Tokens per chunk of the chunkwise form; 32: the fastest at d = 128 and within 1 % of 16 at d
    /// = 64
    /// (`layers_bench --suite=chunks`, docs/benchmarks/diagonal_gates.md).
    Index chunk_size = 32;
    /// Reject q, k, v containing NaN or Inf (one pass over the inputs); off skips the check.
    bool check_finite = true;
  };

  /// q, k `T×key_dim`, v `T×value_dim`, `log_decay` `T×key_dim`, every entry finite and ≤ 0.
  struct Inputs {
    /// Queries, `T×key_dim`.
    InputRef<Scalar> q;
    /// Keys, `T×key_dim`.
    InputRef<Scalar> k;
    /// Values, `T×value_dim`.
    InputRef<Scalar> v;
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
    static constexpr std::string_view kind = "GatedLinearAttention";
    /// The options that shape the state: key_dim and value_dim.
    static std::vector<StateParam> params(const GatedLinearAttention& layer) {
      return {{"key_dim", layer.options().key_dim}, {"value_dim", layer.options().value_dim}};
    }
    /// Visits the parts of the state in file order: `S`.
    template <class S, class V>
    static void visit(const GatedLinearAttention&, S& state, V& v) {
      v.tensor("S", state.S);
    }
  };

  /// The layer's name in error messages.
  static constexpr const char* kName = "GatedLinearAttention";

  /// Checks `options` and fills in the default `scale`.
  /// @throws seqmem::invalid_argument unless key_dim, value_dim and chunk_size are > 0 and the
  /// scale is finite.
  explicit GatedLinearAttention(const Options& options) : options_(options) {
    detail::require_positive(kName, "key_dim", options_.key_dim);
    detail::require_positive(kName, "value_dim", options_.value_dim);
    detail::require_positive(kName, "chunk_size", options_.chunk_size);
    options_.scale = detail::scale_or_default(kName, options_.scale, options_.key_dim);
  }

  /// The options, with `scale` filled in.
  const Options& options() const { return options_; }
  /// The factor that multiplies q (the option, or 1/√key_dim).
  Scalar scale() const { return *options_.scale; }

  /// The gates `LayerBase` checks and slices: `log_decay` ≤ 0, per key channel (`T×key_dim`).
  static constexpr auto gates() {
    return std::tuple{detail::GateSpec{&Inputs::log_decay, "log_decay",
                                       -std::numeric_limits<double>::infinity(), 0.0,
                                       detail::GateShape::per_key_channel}};
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
      detail::channel_decayed_chunk(q.middleRows(begin, n), in.k.middleRows(begin, n),
                                    in.v.middleRows(begin, n), state.S, out.middleRows(begin, n),
                                    ws);
    }
  }

 private:
  /// Per-thread buffers of the recurrent form (no allocation once they have grown).
  struct RecurrentWorkspace {
    detail::Scratch<Scalar> decay;
  };

  /// The definition, token by token: S = diag(e^g) S + kᵀ v and o = scale·(q S) from the new S,
  /// in one pass over S (detail::decay_write_and_read_rows).
  void recurrent(const Inputs& in, State& state, MatrixRef<Scalar>& out) const {
    auto& ws = detail::thread_workspace<RecurrentWorkspace>();
    auto decay = ws.decay.column(options_.key_dim);
    for (Index t = 0; t < in.q.rows(); ++t) {
      decay = in.log_decay.row(t).transpose();
      detail::exp_in_place(decay);
      const auto v = in.v.row(t);
      auto o = out.row(t);
      detail::decay_write_and_read_rows(state.S, decay, in.q.row(t), o,
                                        detail::RankOne{in.k.row(t), v});
      o *= scale();
    }
  }

  Options options_;
};

}  // namespace seqmem
