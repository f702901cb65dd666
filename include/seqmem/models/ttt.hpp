#pragma once

/// @file
/// ttt-lm-pytorch's `TTTLinear` and `TTTMLP` layers from x (docs/layers.md; the step-by-step
/// definition is tests/data/golden-layers/README.md, "ttt.TTTLinear and ttt.TTTMLP"):
/// projections (share_qk: one q projection through two short convolutions with bias),
/// interleaved rotary on q and k with the position inside the mini-batch, the learning-rate
/// gate from x, the TTT memory (docs/math.md §4) per head with the head's own inner weights
/// and LayerNorm (`MultiHead` with one parameter set per head), post_norm, the optional
/// tanh-GELU gate and the output projection. `Block` (seq_norm, pre_conv, residuals, MLP) is
/// outside.

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "seqmem/checkpoint.hpp"
#include "seqmem/core/state_layout.hpp"
#include "seqmem/core/types.hpp"
#include "seqmem/detail/checks.hpp"
#include "seqmem/detail/inner_model.hpp"
#include "seqmem/layers/ttt.hpp"
#include "seqmem/models/parts.hpp"
#include "seqmem/multi_head.hpp"
#include "seqmem/pieces/activation.hpp"
#include "seqmem/pieces/linear.hpp"
#include "seqmem/pieces/norm.hpp"
#include "seqmem/pieces/rotary.hpp"
#include "seqmem/pieces/short_conv.hpp"

namespace seqmem::models {

/// Configuration under ttt-lm-pytorch's `TTTConfig` argument names and defaults (the ones
/// the layer module reads).
struct TTTConfig {
  /// Width D of x and y; a multiple of num_attention_heads, with an even head dim.
  Index hidden_size = 2048;
  /// Number of heads H; the head dim is f = hidden_size / H.
  Index num_attention_heads = 32;
  /// b: the TTT mini-batch, which is also the rotary period.
  Index mini_batch_size = 16;
  /// Base of the rotary embedding's angles; finite and > 0.
  double rope_theta = 10000.0;
  /// Scale of the learning-rate gate, lr = ttt_base_lr·sigmoid(·)/f; finite and ≥ 0.
  double ttt_base_lr = 1.0;
  /// Multiply the post-normed output by gelu_tanh(x g_projᵀ) (reads `g_proj.weight`).
  bool use_gate = false;
  /// q and k from the one projection q_proj through two short convolutions with bias (conv_q,
  /// conv_k); off: a separate k_proj and no convolution.
  bool share_qk = false;
  /// Kernel size K of conv_q and conv_k (share_qk).
  Index conv_kernel = 4;
  std::string ttt_layer_type = "linear";  ///< linear or mlp; must match the layer class
  Index num_threads = 1;  ///< threads over the heads (not a peer argument; 0: all cores)
};

/// The TTT layer from x with inner model `Model`: `TTTLinearLayer` (ttt_layer_type
/// "linear") or `TTTMLPLayer` ("mlp"). Two classes rather than one choosing at run time:
/// the memory type (and with it the state type) differs, and a `State` of one concrete type
/// stays a plain struct.
template <class Scalar_, TTTModel Model>
class TTTLayer {
 public:
  /// The scalar type: float or double.
  using Scalar = Scalar_;
  /// The memory of every head: `TTT<Scalar, Model>` with key_dim = f, the mini-batch, the
  /// checkpoint's token-index offsets, LayerNorm ε 1e-6 and ttt-lm-pytorch's `gelu_bwd`; one
  /// parameter set per head.
  using Memory = TTT<Scalar, Model>;
  /// The layer's name in error messages.
  static constexpr const char* kName = Model == TTTModel::linear ? "TTTLinear" : "TTTMLP";
  /// The `ttt_layer_type` this class requires: "linear" or "mlp".
  static constexpr const char* kLayerType = Model == TTTModel::linear ? "linear" : "mlp";
  static constexpr Index kExpansion = 4;  ///< TTT-MLP hidden width 4·head_dim

  /// Every head's memory state (its `position` is the next token's position inside the
  /// mini-batch, the same in every head: the rotary position) and, with share_qk, the
  /// convolution cache: the last conv_kernel − 1 rows of x q_projᵀ, the input both conv_q
  /// and conv_k read (empty without share_qk).
  struct State {
    /// One memory state per head, all at the same mini-batch position.
    typename MultiHead<Memory>::States heads;
    /// With share_qk, `(conv_kernel−1)×hidden_size`; empty (`0×0`) otherwise.
    Matrix<Scalar> conv_cache;
  };

  /// The state in state files (docs/state_format.md): kind `ttt.TTTLinear` or `ttt.TTTMLP`,
  /// every head's memory state as `heads[h].<field>`, then the convolution cache.
  struct StateLayout {
    /// The layer kind written in state files.
    static constexpr std::string_view kind =
        Model == TTTModel::linear ? "ttt.TTTLinear" : "ttt.TTTMLP";
    /// The options that shape the state: num_attention_heads, head_dim, mini_batch_size and
    /// conv_kernel (0 without share_qk).
    static std::vector<StateParam> params(const TTTLayer& layer) {
      const auto& c = layer.config_;
      return {{"num_attention_heads", c.num_attention_heads},
              {"head_dim", layer.head_dim()},
              {"mini_batch_size", c.mini_batch_size},
              {"conv_kernel", c.share_qk ? c.conv_kernel : 0}};
    }
    /// Visits the parts of the state in file order: every head's memory state as
    /// `heads[h].<field>` (the `TTT` fields), then `conv_cache`.
    template <class S, class V>
    static void visit(const TTTLayer& layer, S& state, V& v) {
      detail::visit_heads(
          [&layer](std::size_t h) -> const Memory& { return layer.heads_->layer(Index(h)); },
          state.heads, v);
      v.tensor("conv_cache", state.conv_cache);
    }
  };

  /// The checkpoint tensors `config` reads (README table): names under the layer's prefix
  /// and shapes. Throws when the configuration is invalid.
  /// Valid: hidden_size, num_attention_heads, mini_batch_size and conv_kernel > 0, an even head
  /// dim hidden_size/num_attention_heads, rope_theta finite and > 0, ttt_base_lr finite and ≥ 0,
  /// ttt_layer_type equal to `kLayerType`, num_threads ≥ 0.
  static std::vector<TensorSpec> tensor_specs(const TTTConfig& config) {
    const TTTConfig c = checked(config);
    const Index D = c.hidden_size, H = c.num_attention_heads, f = D / H;
    const Index b = c.mini_batch_size, K = c.conv_kernel;
    std::vector<TensorSpec> specs = {{"q_proj.weight", {D, D}},
                                     {"v_proj.weight", {D, D}},
                                     {"o_proj.weight", {D, D}},
                                     {"learnable_token_idx", {b}},
                                     {"learnable_ttt_lr_weight", {H, 1, D}},
                                     {"learnable_ttt_lr_bias", {H, 1}},
                                     {"ttt_norm_weight", {H, f}},
                                     {"ttt_norm_bias", {H, f}},
                                     {"post_norm.weight", {D}},
                                     {"post_norm.bias", {D}}};
    if (c.share_qk) {
      for (const char* conv : {"conv_q", "conv_k"}) {
        specs.push_back({std::string(conv) + ".weight", {D, 1, K}});
        specs.push_back({std::string(conv) + ".bias", {D}});
      }
    } else {
      specs.push_back({"k_proj.weight", {D, D}});
    }
    if (c.use_gate) specs.push_back({"g_proj.weight", {D, D}});
    if (Model == TTTModel::linear) {
      specs.push_back({"W1", {H, f, f}});
      specs.push_back({"b1", {H, 1, f}});
    } else {
      specs.push_back({"W1", {H, f, kExpansion * f}});
      specs.push_back({"b1", {H, 1, kExpansion * f}});
      specs.push_back({"W2", {H, kExpansion * f, f}});
      specs.push_back({"b2", {H, 1, f}});
    }
    return specs;
  }

  /// The layer `config` describes, with the weights under `prefix` in `file`.
  /// @throws seqmem::invalid_argument when `config` is invalid (see `tensor_specs`) or a tensor
  /// under `prefix` is missing, unexpected, mis-shaped or not finite.
  TTTLayer(const TTTConfig& config, const SafetensorsFile& file, const std::string& prefix)
      : config_(checked(config)) {
    auto w = load_tensors<Scalar>(file, prefix, tensor_specs(config_));
    const auto take = [&w](const char* name) { return std::move(w.at(name)); };
    const auto linear = [&](const char* name) {
      return pieces::Linear<Scalar>(take(name), std::nullopt, kName);
    };
    q_proj_.emplace(linear("q_proj.weight"));
    v_proj_.emplace(linear("v_proj.weight"));
    o_proj_.emplace(linear("o_proj.weight"));
    if (config_.share_qk) {
      conv_q_.emplace(take("conv_q.weight"), take("conv_q.bias"), kName);
      conv_k_.emplace(take("conv_k.weight"), take("conv_k.bias"), kName);
    } else {
      k_proj_.emplace(linear("k_proj.weight"));
    }
    if (config_.use_gate) g_proj_.emplace(linear("g_proj.weight"));
    // 3. The learning-rate gate: head h's logit x · lr_weight[h, 0] + lr_bias[h, 0].
    lr_gate_.emplace(take("learnable_ttt_lr_weight"),
                     Matrix<Scalar>(take("learnable_ttt_lr_bias").transpose()), kName);
    post_norm_weight_ = take("post_norm.weight");
    post_norm_bias_ = take("post_norm.bias");
    heads_.emplace(head_memories(w), config_.num_threads);
  }

  /// The configuration.
  const TTTConfig& config() const { return config_; }
  /// f = hidden_size / num_attention_heads.
  Index head_dim() const { return config_.hidden_size / config_.num_attention_heads; }

  /// The state at the start of a sequence: every head at its checkpoint inner weights (W1, b1
  /// and, for TTT-MLP, W2, b2) with G = 0 at position 0, and a zero convolution cache (empty
  /// without share_qk).
  State initial_state() const {
    return {heads_->initial_state(), conv_q_ ? conv_q_->initial_cache() : Matrix<Scalar>()};
  }

  /// y (`T×hidden_size`) for x (`T×hidden_size`), continuing from `state`.
  Matrix<Scalar> forward(Form form, const MatrixCRef<Scalar>& x, State& state) const {
    Matrix<Scalar> y(x.rows(), config_.hidden_size);
    forward(form, x, state, y);
    return y;
  }

  /// As above, writing y into `out`. A call that throws leaves `state` as it was.
  void forward(Form form, const MatrixCRef<Scalar>& x, State& state, MatrixRef<Scalar> out) const {
    const Index T = x.rows(), D = config_.hidden_size, f = head_dim();
    const Index b = config_.mini_batch_size;
    detail::require_shape(kName, "x", x, T, D);
    detail::require_shape(kName, "out", out, T, D);
    if (!detail::all_finite(x)) detail::fail(kName, "x must be finite");
    const Index position = shared_position(kName, state.heads, config_.num_attention_heads, b);
    detail::require_shape(kName, "state.conv_cache", state.conv_cache,
                          conv_q_ ? config_.conv_kernel - 1 : 0, conv_q_ ? D : 0);
    if (T == 0) return;
    State next = state;  // strong guarantee: the caller's state changes only at the end
    // 1. Projections; with share_qk both convolutions read p = x q_projᵀ (with bias, no
    //    activation).
    Matrix<Scalar> q = (*q_proj_)(x), k(T, D);
    if (conv_q_) {
      const Matrix<Scalar> p = std::move(q);
      q.resize(T, D);
      Matrix<Scalar> k_cache = next.conv_cache;
      conv_q_->apply(p, next.conv_cache, q);
      conv_k_->apply(p, k_cache, k);
    } else {
      k_proj_->apply(x, k);
    }
    const Matrix<Scalar> v = (*v_proj_)(x);
    // 2. Interleaved rotary, position taken modulo mini_batch_size.
    const pieces::Rotary rotary{config_.rope_theta, pieces::RotaryLayout::interleaved, b};
    rotary.apply<Scalar>(q, f, position);
    rotary.apply<Scalar>(k, f, position);
    // 3. lr = ttt_base_lr · sigmoid(x lr_weightᵀ + lr_bias) / head_dim per token and head; the
    //    memory's token scale c_i = max(1/(i+1) + learnable_token_idx[i], 0) makes
    //    η[i][j] = c_i · lr_j (docs/math.md §4).
    Matrix<Scalar> lr = pieces::sigmoid((*lr_gate_)(x).array()).matrix();
    lr *= static_cast<Scalar>(config_.ttt_base_lr / double(f));
    // 4. The TTT memory per head: XQ + LN(f_res(XQ; W_i)). Its parallel form covers one
    //    mini-batch at most, so a parallel call is cut at mini-batch ends.
    Matrix<Scalar> o(T, D);
    mini_batch_pieces(form, T, position, b, [&](Index begin, Index n) {
      heads_->forward(form,
                      {.q = q.middleRows(begin, n),
                       .k = k.middleRows(begin, n),
                       .v = v.middleRows(begin, n),
                       .learning_rate = GateRef<Scalar>(lr.middleRows(begin, n))},
                      next.heads, o.middleRows(begin, n));
    });
    // 5. post_norm over all D channels, the tanh-GELU gate, o_proj.
    pieces::layer_norm<Scalar>(o, post_norm_weight_, post_norm_bias_, Scalar(1e-6), D);
    if (g_proj_) {
      Matrix<Scalar> gate(T, D);
      detail::activate(Activation::gelu_tanh, (*g_proj_)(x), gate);
      o.array() *= gate.array();
    }
    o_proj_->apply(o, out);
    state = std::move(next);
  }

 private:
  static TTTConfig checked(TTTConfig c) {
    detail::require_positive(kName, "hidden_size", c.hidden_size);
    detail::require_positive(kName, "num_attention_heads", c.num_attention_heads);
    detail::require_positive(kName, "mini_batch_size", c.mini_batch_size);
    detail::require_positive(kName, "conv_kernel", c.conv_kernel);
    if (c.hidden_size % c.num_attention_heads != 0) {
      detail::fail(kName, "hidden_size (", c.hidden_size,
                   ") must be a multiple of num_attention_heads (", c.num_attention_heads, ")");
    }
    if ((c.hidden_size / c.num_attention_heads) % 2 != 0) {
      detail::fail(kName, "head_dim (hidden_size / num_attention_heads = ",
                   c.hidden_size / c.num_attention_heads, ") must be even (rotary pairs)");
    }
    if (!(c.rope_theta > 0) || !std::isfinite(c.rope_theta)) {
      detail::fail(kName, "rope_theta must be finite and > 0, got ", c.rope_theta);
    }
    if (!(c.ttt_base_lr >= 0) || !std::isfinite(c.ttt_base_lr)) {
      detail::fail(kName, "ttt_base_lr must be finite and >= 0, got ", c.ttt_base_lr);
    }
    if (c.ttt_layer_type != kLayerType) {
      detail::fail(kName, "ttt_layer_type must be '", kLayerType, "' for this layer, got '",
                   c.ttt_layer_type, "'");
    }
    if (c.num_threads < 0) detail::fail(kName, "num_threads must be >= 0, got ", c.num_threads);
    return c;
  }

  /// One memory per head: the shared token-index offsets λ = learnable_token_idx and the
  /// head's initial inner weights and LayerNorm (eps 1e-6). A checkpoint's [H, r, c] tensor
  /// is loaded as H rows of r·c (row-major), so head h's r×c matrix is row h reshaped.
  std::vector<Memory> head_memories(std::map<std::string, Matrix<Scalar>>& w) const {
    const Index H = config_.num_attention_heads, f = head_dim();
    const Matrix<Scalar> lambda = w.at("learnable_token_idx");
    std::vector<Scalar> offsets(lambda.data(), lambda.data() + lambda.size());
    const auto slice = [&w](const char* name, Index h, Index rows, Index cols) {
      return Matrix<Scalar>(Eigen::Map<const Matrix<Scalar>>(w.at(name).row(h).data(), rows, cols));
    };
    const Index hidden = Model == TTTModel::linear ? f : kExpansion * f;
    std::vector<Memory> heads;
    for (Index h = 0; h < H; ++h) {
      typename Memory::Parameters p;
      p.initial.W.push_back(slice("W1", h, f, hidden));
      p.initial.b.push_back(slice("b1", h, 1, hidden));
      if (Model == TTTModel::mlp) {
        p.initial.W.push_back(slice("W2", h, hidden, f));
        p.initial.b.push_back(slice("b2", h, 1, f));
      }
      p.ln_weight = w.at("ttt_norm_weight").row(h);
      p.ln_bias = w.at("ttt_norm_bias").row(h);
      heads.emplace_back(typename Memory::Options{.key_dim = f,
                                                  .mini_batch = config_.mini_batch_size,
                                                  .token_scale_offset = offsets,
                                                  .ln_eps = Scalar(1e-6),
                                                  .expansion = kExpansion,
                                                  .ttt_lm_gelu_bwd = true},
                         std::move(p));
    }
    return heads;
  }

  TTTConfig config_;
  std::optional<pieces::Linear<Scalar>> q_proj_, k_proj_, v_proj_, o_proj_, g_proj_, lr_gate_;
  std::optional<pieces::ShortConv<Scalar>> conv_q_, conv_k_;
  Matrix<Scalar> post_norm_weight_, post_norm_bias_;
  std::optional<MultiHead<Memory>> heads_;
};

/// ttt-lm-pytorch `TTTLinear` (ttt_layer_type "linear").
template <class Scalar>
using TTTLinearLayer = TTTLayer<Scalar, TTTModel::linear>;

/// ttt-lm-pytorch `TTTMLP` (ttt_layer_type "mlp").
template <class Scalar>
using TTTMLPLayer = TTTLayer<Scalar, TTTModel::mlp>;

}  // namespace seqmem::models
