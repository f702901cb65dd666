#pragma once

/// @file
/// flash-linear-attention's `DeltaNet` layer from x (docs/layers.md; the step-by-step
/// definition is tests/data/golden-layers/README.md, "fla.DeltaNet"): projections, short
/// convolutions, the q/k activation and normalization, β from x, DeltaNet (docs/math.md §3,
/// no decay) over the heads through `MultiHead`, and the output stage it shares with
/// GatedDeltaNet (models/parts.hpp).

#include <algorithm>
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
#include "seqmem/layers/delta_net.hpp"
#include "seqmem/models/parts.hpp"
#include "seqmem/multi_head.hpp"
#include "seqmem/pieces/activation.hpp"
#include "seqmem/pieces/norm.hpp"

namespace seqmem::models {

/// Configuration under the peer's constructor argument names and defaults.
struct DeltaNetConfig {
  /// Width D of x and y.
  Index hidden_size = 1024;
  /// The q/k width of all heads together is int(hidden_size·expand_k), a multiple of num_heads.
  double expand_k = 1;
  /// The value width of all heads together is int(hidden_size·expand_v), a multiple of num_heads.
  double expand_v = 1;
  /// Number of heads H.
  Index num_heads = 4;
  /// β = sigmoid(x b_projᵀ) per token and head (reads `b_proj.weight`); off: β = 1.
  bool use_beta = true;
  /// Gate the output RMSNorm by silu(x g_projᵀ) (reads `g_proj.weight`).
  bool use_gate = false;
  /// Short convolutions on the q, k and v streams.
  bool use_short_conv = true;
  /// Kernel size K of the short convolutions.
  Index conv_size = 4;
  /// Whether the short convolutions have a bias.
  bool conv_bias = false;
  /// Double β, so that it lies in [0, 2].
  bool allow_neg_eigval = false;
  std::string qk_activation = "silu";  ///< silu, relu, elu (elu + 1) or identity
  std::string qk_norm = "l2";          ///< l2 or sum
  /// ε of the output RMSNorm; must be > 0.
  double norm_eps = 1e-5;
  Index chunk_size = 16;  ///< of the memory's chunkwise form (not a peer argument)
  Index num_threads = 1;  ///< threads over the heads (not a peer argument; 0: all cores)
  /// Rows of x per block of the forward pass, rounded to a multiple of chunk_size (bounds its
  /// scratch memory, models/parts.hpp; not a peer argument; 0: the whole call at once).
  Index block_size = 256;
};

/// fla's `DeltaNet` layer from x (see the file comment): x `T×hidden_size` in, y
/// `T×hidden_size` out, over num_heads DeltaNet memories run by `MultiHead`. Built from a
/// checkpoint and immutable; everything a sequence carries is in `State`.
template <class Scalar_>
class DeltaNetLayer {
 public:
  /// The scalar type: float or double.
  using Scalar = Scalar_;
  /// The memory of every head: `DeltaNet` with key_dim = `key_dim()` and value_dim = `value_dim()`.
  using Memory = DeltaNet<Scalar>;
  /// The layer's name in error messages.
  static constexpr const char* kName = "DeltaNet";

  /// Every head's memory state and the three convolution caches (empty without short conv).
  struct State {
    /// One memory state per head.
    typename MultiHead<Memory>::States heads;
    /// The q stream's convolution cache, `(conv_size−1)×(num_heads·key_dim)`.
    Matrix<Scalar> q_cache, k_cache, v_cache;
    /// @var k_cache
    /// The k stream's convolution cache, `(conv_size−1)×(num_heads·key_dim)`.
    ///
    /// @var v_cache
    /// The v stream's convolution cache, `(conv_size−1)×(num_heads·value_dim)`.
  };

  /// The state in state files (docs/state_format.md): kind `fla.DeltaNet`, every head's memory
  /// state as `heads[h].<field>`, then the convolution caches.
  struct StateLayout {
    /// The layer kind written in state files.
    static constexpr std::string_view kind = "fla.DeltaNet";
    /// The options that shape the state: num_heads, key_dim, value_dim and conv_size (0 without
    /// short convolutions).
    static std::vector<StateParam> params(const DeltaNetLayer& layer) {
      const auto& c = layer.config_;
      return {{"num_heads", c.num_heads},
              {"key_dim", layer.key_dim()},
              {"value_dim", layer.value_dim()},
              {"conv_size", c.use_short_conv ? c.conv_size : 0}};
    }
    /// Visits the parts of the state in file order: every head's `heads[h].S`, then `q_cache`,
    /// `k_cache` and `v_cache`.
    template <class S, class V>
    static void visit(const DeltaNetLayer& layer, S& state, V& v) {
      detail::visit_heads([&layer](std::size_t) -> const Memory& { return layer.heads_.layer(); },
                          state.heads, v);
      v.tensor("q_cache", state.q_cache);
      v.tensor("k_cache", state.k_cache);
      v.tensor("v_cache", state.v_cache);
    }
  };

  /// The layer `config` describes, with the weights under `prefix` in `file`.
  /// @throws seqmem::invalid_argument when `config` is invalid (see `tensor_specs`; also
  /// chunk_size ≤ 0 or num_threads < 0) or a tensor under `prefix` is missing, unexpected,
  /// mis-shaped or not finite.
  DeltaNetLayer(const DeltaNetConfig& config, const SafetensorsFile& file,
                const std::string& prefix)
      : config_(checked(config)),
        heads_(
            Memory(
                {.key_dim = key_dim(), .value_dim = value_dim(), .chunk_size = config_.chunk_size}),
            config_.num_heads, config_.num_threads) {
    const StreamShape shape = stream_shape(config_);
    auto w = load_tensors<Scalar>(file, prefix, tensor_specs(config_));
    q_.emplace(take_stream(w, "q", shape, kName));
    k_.emplace(take_stream(w, "k", shape, kName));
    v_.emplace(take_stream(w, "v", shape, kName));
    output_.emplace(take_output(w, value_dim(), config_.use_gate, config_.norm_eps, kName));
    if (config_.use_beta) b_proj_.emplace(std::move(w.at("b_proj.weight")), std::nullopt, kName);
  }

  /// The checkpoint tensors `config` reads (names under the layer's prefix, shapes); throws
  /// when `config` is invalid.
  /// Valid: hidden_size, num_heads and conv_size > 0, int(hidden_size·expand_k) and
  /// int(hidden_size·expand_v) positive multiples of num_heads, qk_activation and qk_norm one of
  /// the listed names, norm_eps > 0.
  static std::vector<TensorSpec> tensor_specs(const DeltaNetConfig& config) {
    const DeltaNetConfig c = checked(config);
    const Index D = c.hidden_size, H = c.num_heads;
    const StreamShape shape = stream_shape(c);
    std::vector<TensorSpec> specs;
    add_stream_specs(specs, "q", H * width(c, c.expand_k), shape);
    add_stream_specs(specs, "k", H * width(c, c.expand_k), shape);
    add_stream_specs(specs, "v", H * width(c, c.expand_v), shape);
    add_output_specs(specs, H, width(c, c.expand_v), D, c.use_gate);
    if (c.use_beta) specs.push_back({"b_proj.weight", {H, D}});
    return specs;
  }

  /// The configuration.
  const DeltaNetConfig& config() const { return config_; }
  /// Width of a q/k head: int(hidden_size·expand_k) / num_heads.
  Index key_dim() const { return width(config_, config_.expand_k); }
  /// Width of a value head: int(hidden_size·expand_v) / num_heads.
  Index value_dim() const { return width(config_, config_.expand_v); }

  /// The state at the start of a sequence: num_heads empty memories (S = 0) and zero
  /// convolution caches (empty without short convolutions).
  State initial_state() const {
    return {heads_.initial_state(), q_->initial_cache(), k_->initial_cache(), v_->initial_cache()};
  }

  /// y (`T×hidden_size`) for x (`T×hidden_size`), continuing from `state`.
  Matrix<Scalar> forward(Form form, const MatrixCRef<Scalar>& x, State& state) const {
    Matrix<Scalar> y(x.rows(), config_.hidden_size);
    forward(form, x, state, y);
    return y;
  }

  /// As above, writing y into `out`. A call that throws leaves `state` as it was.
  void forward(Form form, const MatrixCRef<Scalar>& x, State& state, MatrixRef<Scalar> out) const {
    const Index T = x.rows(), H = config_.num_heads;
    detail::require_shape(kName, "x", x, T, config_.hidden_size);
    detail::require_shape(kName, "out", out, T, config_.hidden_size);
    if (!detail::all_finite(x)) detail::fail(kName, "x must be finite");
    if (T == 0) return;
    // A block of rows at a time, into scratch of one block (models/parts.hpp, row_block).
    const Index B = row_block(form, T, config_.block_size, config_.chunk_size);
    Scratch s(B, H * key_dim(), H * value_dim(), H, config_.use_gate);
    in_row_blocks(x, state, out, B,
                  [&](const MatrixCRef<Scalar>& rows, HeadStates& heads, ConvCaches<Scalar> caches,
                      MatrixRef<Scalar> out_rows,
                      Index n) { forward_block(form, rows, heads, caches, out_rows, s, n); });
  }

 private:
  using HeadStates = typename MultiHead<Memory>::States;

  /// The per-call buffers of one row block.
  struct Scratch {
    Matrix<Scalar> z, q, k, v, beta, o, gate;
    Scratch(Index rows, Index qk, Index values, Index heads, bool gated)
        : z(rows, std::max(qk, values)),
          q(rows, qk),
          k(rows, qk),
          v(rows, values),
          beta(rows, heads),
          o(rows, values),
          gate(gated ? rows : 0, gated ? values : 0) {}
  };

  /// Rows x (`n` of them) into `out`, continuing from `heads` and `caches`. Every head's
  /// inputs are checked before the first head state changes.
  void forward_block(Form form, const MatrixCRef<Scalar>& x, HeadStates& heads,
                     ConvCaches<Scalar> caches, MatrixRef<Scalar> out, Scratch& s, Index n) const {
    const Index H = config_.num_heads, dk = key_dim();
    auto q = s.q.topRows(n), k = s.k.topRows(n), v = s.v.topRows(n);
    auto beta = s.beta.topRows(n), o = s.o.topRows(n);
    // 1–2. Projections, short convolutions, activations (v: always SiLU).
    q_->apply(x, caches.q, s.z.topLeftCorner(n, q.cols()), q);
    k_->apply(x, caches.k, s.z.topLeftCorner(n, k.cols()), k);
    v_->apply(x, caches.v, s.z.topLeftCorner(n, v.cols()), v);
    activate(q);
    activate(k);
    v = pieces::silu(v.array()).matrix();
    // 3. q/k normalization per head.
    if (config_.qk_norm == "sum") {
      for (Index h = 0; h < H; ++h) {
        q.middleCols(h * dk, dk).array().colwise() /=
            q.middleCols(h * dk, dk).rowwise().sum().array();
        k.middleCols(h * dk, dk).array().colwise() /=
            k.middleCols(h * dk, dk).rowwise().sum().array();
      }
    } else {
      pieces::l2_normalize<Scalar>(q, Scalar(1e-6), dk);
      pieces::l2_normalize<Scalar>(k, Scalar(1e-6), dk);
    }
    // 4. β per token and head.
    if (b_proj_) {
      b_proj_->apply(x, beta);
      beta = pieces::sigmoid(beta.array()).matrix();
    } else {
      beta.setOnes();
    }
    if (config_.allow_neg_eigval) beta *= Scalar(2);
    // 5. DeltaNet over the heads (q scaled by dk^−½ inside the memory).
    heads_.forward(form, {.q = q, .k = k, .v = v, .beta = beta}, heads, o);  // checks all first
    // 6–7. Output RMSNorm per head (gated by silu(x g_projᵀ) when use_gate), o_proj.
    (*output_)(o, x, s.gate.topRows(s.gate.rows() ? n : 0), out);
  }

  static DeltaNetConfig checked(DeltaNetConfig c) {
    detail::require_positive(kName, "hidden_size", c.hidden_size);
    detail::require_positive(kName, "num_heads", c.num_heads);
    detail::require_positive(kName, "conv_size", c.conv_size);
    for (const auto& [name, expand] : {std::pair<const char*, double>{"expand_k", c.expand_k},
                                       std::pair<const char*, double>{"expand_v", c.expand_v}}) {
      const double width = std::floor(expand * double(c.hidden_size));
      if (!(width >= double(c.num_heads)) || std::fmod(width, double(c.num_heads)) != 0) {
        detail::fail(kName, "int(hidden_size·", name,
                     ") must be a positive multiple of num_heads, got ", width);
      }
    }
    if (c.qk_activation != "silu" && c.qk_activation != "relu" && c.qk_activation != "elu" &&
        c.qk_activation != "identity") {
      detail::fail(kName, "qk_activation must be silu, relu, elu or identity, got ",
                   c.qk_activation);
    }
    if (c.qk_norm != "l2" && c.qk_norm != "sum") {
      detail::fail(kName, "qk_norm must be l2 or sum, got ", c.qk_norm);
    }
    if (!(c.norm_eps > 0)) detail::fail(kName, "norm_eps must be > 0, got ", c.norm_eps);
    return c;
  }

  /// int(hidden_size·expand) / num_heads.
  static Index width(const DeltaNetConfig& c, double expand) {
    return static_cast<Index>(std::floor(expand * double(c.hidden_size))) / c.num_heads;
  }
  static StreamShape stream_shape(const DeltaNetConfig& c) {
    return {c.hidden_size, c.use_short_conv, c.conv_size, c.conv_bias};
  }

  /// The q/k activation: SiLU, ReLU, elu + 1 or none.
  void activate(MatrixRef<Scalar> z) const {
    const std::string& a = config_.qk_activation;
    if (a == "silu") {
      z = pieces::silu(z.array()).matrix();
    } else if (a == "relu") {
      z = z.cwiseMax(Scalar(0));
    } else if (a == "elu") {
      z = (z.array() > Scalar(0)).select(z.array() + Scalar(1), z.array().exp()).matrix();
    }
  }

  DeltaNetConfig config_;
  MultiHead<Memory> heads_;
  std::optional<ConvProjection<Scalar>> q_, k_, v_;
  std::optional<pieces::Linear<Scalar>> b_proj_;
  std::optional<GatedOutput<Scalar>> output_;
};

}  // namespace seqmem::models
