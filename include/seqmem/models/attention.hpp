#pragma once

/// @file
/// flash-linear-attention's `Attention` layer from x (docs/layers.md; the step-by-step
/// definition is tests/data/golden-layers/README.md, "fla.Attention"): q/k/v projections,
/// optional per-head q/k RMSNorm, rotary embedding ("rotate half") at the absolute position,
/// causal softmax attention with an optional sliding window and grouped-query heads, and the
/// output projection. The memory is `seqmem::SoftmaxAttention` with `query_heads` = H/HK run
/// over the HK KV heads through `MultiHead`: each KV head keeps one KV cache, shared by its
/// query heads, and q, k, v are passed as views (docs/math.md §1, implementation notes).

#include <cmath>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "seqmem/checkpoint.hpp"
#include "seqmem/core/state_layout.hpp"
#include "seqmem/core/types.hpp"
#include "seqmem/detail/checks.hpp"
#include "seqmem/layers/softmax_attention.hpp"
#include "seqmem/multi_head.hpp"
#include "seqmem/pieces/linear.hpp"
#include "seqmem/pieces/norm.hpp"
#include "seqmem/pieces/rotary.hpp"

namespace seqmem::models {

/// Configuration under the peer's constructor argument names and defaults.
struct AttentionConfig {
  /// Width D of x and y; a multiple of num_heads, with an even head dim d = D/num_heads.
  Index hidden_size = 2048;
  /// Number of query heads H.
  Index num_heads = 32;
  Index num_kv_heads = 0;  ///< 0 (None): num_heads
  /// Biases on q_proj, k_proj and v_proj.
  bool qkv_bias = false;
  /// Per-head RMSNorm of q and k before the rotary embedding (reads `q_norm.weight` and
  /// `k_norm.weight`, `[d]`).
  bool qk_norm = false;
  Index window_size = 0;  ///< 0 (None): all earlier tokens; W: the last W keys, own one included
  /// Base of the rotary embedding's angles; finite and > 0.
  double rope_theta = 10000.0;
  /// Accepted for the peer's sake: it only sizes the peer's rotary table (0: None).
  Index max_position_embeddings = 0;
  Index chunk_size = 64;  ///< of the memory's chunkwise form (not a peer argument)
  Index num_threads = 1;  ///< threads over the KV heads (not a peer argument; 0: all cores)
};

/// fla's `Attention` layer from x (see the file comment): x `T×hidden_size` in, y
/// `T×hidden_size` out, over num_kv_heads KV caches, each shared by num_heads/num_kv_heads query
/// heads. Built from a checkpoint and immutable; everything a sequence carries is in `State`.
template <class Scalar_>
class Attention {
 public:
  /// The scalar type: float or double.
  using Scalar = Scalar_;
  /// The memory of every KV head: `SoftmaxAttention` with key_dim = value_dim = `head_dim()`, the
  /// window and query_heads = num_heads/num_kv_heads.
  using Memory = SoftmaxAttention<Scalar>;
  /// The layer's name in error messages.
  static constexpr const char* kName = "Attention";
  /// eps of the q/k RMSNorm (fla's RMSNorm default; README step 2).
  static constexpr double kQkNormEps = 1e-5;

  /// One KV cache per KV head and the number of tokens seen.
  struct State {
    /// One per KV head (num_kv_heads); every head's `tokens()` is the number of tokens seen,
    /// the rotary position of the next token.
    typename MultiHead<Memory>::States heads;
  };

  /// The state in state files (docs/state_format.md): kind `fla.Attention`, every KV head's
  /// cache as `heads[h].<field>` (the `SoftmaxAttention` fields).
  struct StateLayout {
    /// The layer kind written in state files.
    static constexpr std::string_view kind = "fla.Attention";
    /// The options that shape the state: num_heads, num_kv_heads, head_dim and window_size.
    static std::vector<StateParam> params(const Attention& layer) {
      const auto& c = layer.config_;
      return {{"num_heads", c.num_heads},
              {"num_kv_heads", c.num_kv_heads},
              {"head_dim", layer.head_dim()},
              {"window_size", c.window_size}};
    }
    /// Visits the parts of the state in file order: every KV head's `heads[h].keys`,
    /// `heads[h].values` and `heads[h].tokens`.
    template <class S, class V>
    static void visit(const Attention& layer, S& state, V& v) {
      detail::visit_heads([&layer](std::size_t) -> const Memory& { return layer.heads_.layer(); },
                          state.heads, v);
    }
    /// Rebuilds the state from the parts `visit` writes; throws unless every KV head has seen as
    /// many tokens.
    template <class V>
    static State restore(const Attention& layer, V& v) {
      State state;
      for (Index h = 0; h < layer.config_.num_kv_heads; ++h) {
        detail::PrefixedVisitor<V> part{v, detail::head_prefix(std::size_t(h))};
        state.heads.push_back(Memory::StateLayout::restore(layer.heads_.layer(), part));
      }
      (void)tokens_seen(state);  // the heads must agree
      return state;
    }
  };

  /// The checkpoint tensors `config` reads (names under the layer's prefix, peer shapes).
  /// Throws when the configuration is invalid.
  /// Valid: hidden_size, num_heads and chunk_size > 0, hidden_size a multiple of num_heads with an
  /// even quotient, num_kv_heads ≥ 0 (0: num_heads) dividing num_heads, window_size ≥ 0,
  /// rope_theta finite and > 0, max_position_embeddings ≥ 0, num_threads ≥ 0.
  static std::vector<TensorSpec> tensor_specs(const AttentionConfig& config) {
    const AttentionConfig c = checked(config);
    const Index D = c.hidden_size, d = D / c.num_heads, kv = c.num_kv_heads * d;
    std::vector<TensorSpec> specs = {{"q_proj.weight", {D, D}},
                                     {"k_proj.weight", {kv, D}},
                                     {"v_proj.weight", {kv, D}},
                                     {"o_proj.weight", {D, D}}};
    if (c.qkv_bias) {
      specs.push_back({"q_proj.bias", {D}});
      specs.push_back({"k_proj.bias", {kv}});
      specs.push_back({"v_proj.bias", {kv}});
    }
    if (c.qk_norm) {
      specs.push_back({"q_norm.weight", {d}});
      specs.push_back({"k_norm.weight", {d}});
    }
    return specs;
  }

  /// The layer `config` describes, with the weights under `prefix` in `file`.
  /// @throws seqmem::invalid_argument when `config` is invalid (see `tensor_specs`) or a tensor
  /// under `prefix` is missing, unexpected, mis-shaped or not finite.
  Attention(const AttentionConfig& config, const SafetensorsFile& file, const std::string& prefix)
      : config_(checked(config)),
        heads_(Memory({.key_dim = head_dim(),
                       .value_dim = head_dim(),
                       .window = config_.window_size,
                       .query_heads = config_.num_heads / config_.num_kv_heads,
                       .chunk_size = config_.chunk_size}),
               config_.num_kv_heads, config_.num_threads),
        rotary_{.base = config_.rope_theta, .layout = pieces::RotaryLayout::half} {
    auto w = load_tensors<Scalar>(file, prefix, tensor_specs(config_));
    const auto take = [&w](const std::string& name) { return std::move(w.at(name)); };
    const auto bias = [&](const std::string& name) -> std::optional<Matrix<Scalar>> {
      if (!config_.qkv_bias) return std::nullopt;
      return take(name);
    };
    q_proj_.emplace(take("q_proj.weight"), bias("q_proj.bias"), kName);
    k_proj_.emplace(take("k_proj.weight"), bias("k_proj.bias"), kName);
    v_proj_.emplace(take("v_proj.weight"), bias("v_proj.bias"), kName);
    o_proj_.emplace(take("o_proj.weight"), std::nullopt, kName);
    if (config_.qk_norm) {
      q_norm_ = take("q_norm.weight");
      k_norm_ = take("k_norm.weight");
    }
  }

  /// The configuration, with num_kv_heads resolved.
  const AttentionConfig& config() const { return config_; }
  /// d = hidden_size / num_heads.
  Index head_dim() const { return config_.hidden_size / config_.num_heads; }

  /// The state at the start of a sequence: num_kv_heads empty KV caches (position 0).
  State initial_state() const { return {heads_.initial_state()}; }

  /// y (`T×hidden_size`) for x (`T×hidden_size`), continuing from `state`.
  Matrix<Scalar> forward(Form form, const MatrixCRef<Scalar>& x, State& state) const {
    Matrix<Scalar> y(x.rows(), config_.hidden_size);
    forward(form, x, state, y);
    return y;
  }

  /// As above, writing y into `out`. A call that throws leaves `state` as it was.
  void forward(Form form, const MatrixCRef<Scalar>& x, State& state, MatrixRef<Scalar> out) const {
    const Index T = x.rows(), d = head_dim();
    detail::require_shape(kName, "x", x, T, config_.hidden_size);
    detail::require_shape(kName, "out", out, T, config_.hidden_size);
    if (!detail::all_finite(x)) detail::fail(kName, "x must be finite");
    if (static_cast<Index>(state.heads.size()) != config_.num_kv_heads) {
      detail::fail(kName, "state must hold ", config_.num_kv_heads, " KV head states, got ",
                   state.heads.size());
    }
    const Index position = tokens_seen(state);
    if (T == 0) return;
    State next = state;  // strong guarantee: the caller's state changes only at the end
    // 1. Projections (q: H heads of d; k, v: HK heads of d).
    Matrix<Scalar> q = (*q_proj_)(x), k = (*k_proj_)(x);
    const Matrix<Scalar> v = (*v_proj_)(x);
    // 2. Per-head q/k RMSNorm, before the rotary embedding.
    if (config_.qk_norm) {
      pieces::rms_norm<Scalar>(q, q_norm_, static_cast<Scalar>(kQkNormEps), d);
      pieces::rms_norm<Scalar>(k, k_norm_, static_cast<Scalar>(kQkNormEps), d);
    }
    // 3. Rotary embedding of q and k at the absolute positions position … position + T − 1.
    rotary_.apply<Scalar>(q, d, position);
    rotary_.apply<Scalar>(k, d, position);
    // 4. Causal (windowed) softmax attention, scale d^−½, per KV head h with its query heads
    //    h·G … h·G + G − 1 (query head j uses KV head j / G): views into q, k, v.
    Matrix<Scalar> o(T, config_.hidden_size);
    heads_.forward(form, {.q = q, .k = k, .v = v}, next.heads, o);
    // 5. y = o o_projᵀ.
    o_proj_->apply(o, out);
    state = std::move(next);
  }

 private:
  /// The tokens the state has seen; throws unless every KV head has seen as many.
  static Index tokens_seen(const State& state) {
    const Index tokens = state.heads.front().tokens();
    for (std::size_t h = 1; h < state.heads.size(); ++h) {
      if (state.heads[h].tokens() != tokens) {
        detail::fail(kName, "state.heads[", h, "] has seen ", state.heads[h].tokens(),
                     " tokens, state.heads[0] ", tokens);
      }
    }
    return tokens;
  }

  static AttentionConfig checked(AttentionConfig c) {
    detail::require_positive(kName, "hidden_size", c.hidden_size);
    detail::require_positive(kName, "num_heads", c.num_heads);
    detail::require_positive(kName, "chunk_size", c.chunk_size);
    if (c.num_kv_heads < 0) detail::fail(kName, "num_kv_heads must be >= 0, got ", c.num_kv_heads);
    if (c.num_kv_heads == 0) c.num_kv_heads = c.num_heads;
    if (c.hidden_size % c.num_heads != 0) {
      detail::fail(kName, "hidden_size (", c.hidden_size, ") must be a multiple of num_heads (",
                   c.num_heads, ")");
    }
    if ((c.hidden_size / c.num_heads) % 2 != 0) {
      detail::fail(kName, "the head dim hidden_size/num_heads must be even (rotary pairs), got ",
                   c.hidden_size / c.num_heads);
    }
    if (c.num_heads % c.num_kv_heads != 0) {
      detail::fail(kName, "num_heads (", c.num_heads, ") must be a multiple of num_kv_heads (",
                   c.num_kv_heads, ")");
    }
    if (c.window_size < 0) detail::fail(kName, "window_size must be >= 0, got ", c.window_size);
    if (!(c.rope_theta > 0) || !std::isfinite(c.rope_theta)) {
      detail::fail(kName, "rope_theta must be finite and > 0, got ", c.rope_theta);
    }
    if (c.max_position_embeddings < 0) {
      detail::fail(kName, "max_position_embeddings must be >= 0, got ", c.max_position_embeddings);
    }
    if (c.num_threads < 0) detail::fail(kName, "num_threads must be >= 0, got ", c.num_threads);
    return c;
  }

  AttentionConfig config_;
  MultiHead<Memory> heads_;
  pieces::Rotary rotary_;
  std::optional<pieces::Linear<Scalar>> q_proj_, k_proj_, v_proj_, o_proj_;
  Matrix<Scalar> q_norm_, k_norm_;  ///< 1×d each (qk_norm)
};

}  // namespace seqmem::models
