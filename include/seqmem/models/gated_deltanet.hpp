#pragma once

/// @file
/// flash-linear-attention's `GatedDeltaNet` layer from x (docs/layers.md; the step-by-step
/// definition is tests/data/golden-layers/README.md, "fla.GatedDeltaNet"): projections,
/// short convolutions with SiLU, l2-normalized q and k, the gates β and g computed from x,
/// gated DeltaNet (docs/math.md §3) per value head, the output RMSNorm (gated by
/// silu(x g_projᵀ) when `use_gate`) and the output projection. The memory is
/// `seqmem::DeltaNet`; every piece is from include/seqmem/pieces/.

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
#include "seqmem/layers/delta_net.hpp"
#include "seqmem/models/parts.hpp"
#include "seqmem/pieces/activation.hpp"
#include "seqmem/pieces/linear.hpp"
#include "seqmem/pieces/norm.hpp"
#include "seqmem/pieces/short_conv.hpp"

namespace seqmem::models {

/// Configuration under the peer's constructor argument names and defaults.
struct GatedDeltaNetConfig {
  /// Width D of x and y.
  Index hidden_size = 2048;
  /// Value head width = expand_v·head_dim (must be a positive integer).
  double expand_v = 2;
  /// Width of a q/k head (the memory's key_dim).
  Index head_dim = 256;
  /// Number of q/k heads H.
  Index num_heads = 6;
  Index num_v_heads = 0;  ///< 0: num_heads
  /// Gate the output RMSNorm by silu(x g_projᵀ) (reads `g_proj.weight`).
  bool use_gate = true;
  /// Short convolutions on the q, k and v streams (SiLU follows either way).
  bool use_short_conv = true;
  /// β = 2·sigmoid(x b_projᵀ) ∈ [0, 2] instead of sigmoid(x b_projᵀ) ∈ [0, 1].
  bool allow_neg_eigval = false;
  /// Kernel size K of the short convolutions.
  Index conv_size = 4;
  /// Whether the short convolutions have a bias.
  bool conv_bias = false;
  /// ε of the output RMSNorm; must be > 0.
  double norm_eps = 1e-5;
  Index chunk_size = 16;  ///< of the memory's chunkwise form (not a peer argument)
  /// Rows of x per block of the forward pass, rounded to a multiple of chunk_size (bounds its
  /// scratch memory, models/parts.hpp; not a peer argument; 0: the whole call at once).
  Index block_size = 256;
};

/// fla's `GatedDeltaNet` layer from x (see the file comment): x `T×hidden_size` in, y
/// `T×hidden_size` out, over num_v_heads gated DeltaNet memories; num_v_heads/num_heads
/// consecutive value heads share one q/k head. Built from a checkpoint and immutable; everything
/// a sequence carries is in `State`.
template <class Scalar_>
class GatedDeltaNet {
 public:
  /// The scalar type: float or double.
  using Scalar = Scalar_;
  /// The memory of every value head: `DeltaNet` with key_dim = head_dim, value_dim =
  /// `value_dim()` and `qk_l2norm`.
  using Memory = DeltaNet<Scalar>;
  /// The layer's name in error messages.
  static constexpr const char* kName = "GatedDeltaNet";

  /// Every head's memory state and the three convolution caches (empty without short conv).
  struct State {
    std::vector<typename Memory::State> heads;  ///< one per value head
    /// The q stream's convolution cache, `(conv_size−1)×(num_heads·head_dim)`.
    Matrix<Scalar> q_cache, k_cache, v_cache;
    /// @var k_cache
    /// The k stream's convolution cache, `(conv_size−1)×(num_heads·head_dim)`.
    ///
    /// @var v_cache
    /// The v stream's convolution cache, `(conv_size−1)×(num_v_heads·value_dim)`.
  };

  /// The state in state files (docs/state_format.md): kind `fla.GatedDeltaNet`, every head's memory
  /// state as `heads[h].<field>`, then the convolution caches.
  struct StateLayout {
    /// The layer kind written in state files.
    static constexpr std::string_view kind = "fla.GatedDeltaNet";
    /// The options that shape the state: num_heads, num_v_heads, head_dim, value_dim and
    /// conv_size (0 without short convolutions).
    static std::vector<StateParam> params(const GatedDeltaNet& layer) {
      const auto& c = layer.config_;
      return {{"num_heads", c.num_heads},
              {"num_v_heads", c.num_v_heads},
              {"head_dim", c.head_dim},
              {"value_dim", layer.value_dim()},
              {"conv_size", c.use_short_conv ? c.conv_size : 0}};
    }
    /// Visits the parts of the state in file order: every head's `heads[h].S`, then `q_cache`,
    /// `k_cache` and `v_cache`.
    template <class S, class V>
    static void visit(const GatedDeltaNet& layer, S& state, V& v) {
      detail::visit_heads([&layer](std::size_t) -> const Memory& { return layer.memory_; },
                          state.heads, v);
      v.tensor("q_cache", state.q_cache);
      v.tensor("k_cache", state.k_cache);
      v.tensor("v_cache", state.v_cache);
    }
  };

  /// The layer `config` describes, with the weights under `prefix` in `file`.
  /// @throws seqmem::invalid_argument when `config` is invalid (see `tensor_specs`; also
  /// chunk_size ≤ 0) or a tensor under `prefix` is missing, unexpected, mis-shaped or not
  /// finite.
  GatedDeltaNet(const GatedDeltaNetConfig& config, const SafetensorsFile& file,
                const std::string& prefix)
      : config_(checked(config)),
        memory_({.key_dim = config_.head_dim,
                 .value_dim = value_dim(),
                 .chunk_size = config_.chunk_size,
                 .qk_l2norm = true}) {
    const StreamShape shape = stream_shape(config_);
    const Index dv = value_dim();
    auto w = load_tensors<Scalar>(file, prefix, tensor_specs(config_));
    q_.emplace(take_stream(w, "q", shape, kName));
    k_.emplace(take_stream(w, "k", shape, kName));
    v_.emplace(take_stream(w, "v", shape, kName));
    output_.emplace(take_output(w, dv, config_.use_gate, config_.norm_eps, kName));
    a_proj_.emplace(std::move(w.at("a_proj.weight")), std::nullopt, kName);
    b_proj_.emplace(std::move(w.at("b_proj.weight")), std::nullopt, kName);
    decay_scale_ = -w.at("A_log").array().exp().matrix();  // −exp(A_log)
    dt_bias_ = std::move(w.at("dt_bias"));
  }

  /// The checkpoint tensors `config` reads (names under the layer's prefix, shapes); throws
  /// when `config` is invalid.
  /// Valid: hidden_size, head_dim, num_heads, num_v_heads and conv_size > 0, num_v_heads a
  /// multiple of num_heads, expand_v·head_dim a positive integer, norm_eps > 0 (chunk_size > 0
  /// is checked at construction, by the memory).
  static std::vector<TensorSpec> tensor_specs(const GatedDeltaNetConfig& config) {
    const GatedDeltaNetConfig c = checked(config);
    const Index D = c.hidden_size, H = c.num_heads, HV = c.num_v_heads, dk = c.head_dim;
    const Index dv = value_dim(c);
    const StreamShape shape = stream_shape(c);
    std::vector<TensorSpec> specs = {
        {"a_proj.weight", {HV, D}}, {"b_proj.weight", {HV, D}}, {"A_log", {HV}}, {"dt_bias", {HV}}};
    add_stream_specs(specs, "q", H * dk, shape);
    add_stream_specs(specs, "k", H * dk, shape);
    add_stream_specs(specs, "v", HV * dv, shape);
    add_output_specs(specs, HV, dv, D, c.use_gate);
    return specs;
  }

  /// The configuration, with num_v_heads filled in.
  const GatedDeltaNetConfig& config() const { return config_; }
  /// Width of a value head: expand_v·head_dim.
  Index value_dim() const { return value_dim(config_); }

  /// The state at the start of a sequence: num_v_heads empty memories (S = 0) and zero
  /// convolution caches (empty without short convolutions).
  State initial_state() const {
    State s;
    s.heads.assign(static_cast<std::size_t>(config_.num_v_heads), memory_.initial_state());
    s.q_cache = q_->initial_cache();
    s.k_cache = k_->initial_cache();
    s.v_cache = v_->initial_cache();
    return s;
  }

  /// y (`T×hidden_size`) for x (`T×hidden_size`), continuing from `state`.
  Matrix<Scalar> forward(Form form, const MatrixCRef<Scalar>& x, State& state) const {
    Matrix<Scalar> y(x.rows(), config_.hidden_size);
    forward(form, x, state, y);
    return y;
  }

  /// As above, writing y into `out`. A call that throws leaves `state` as it was.
  void forward(Form form, const MatrixCRef<Scalar>& x, State& state, MatrixRef<Scalar> out) const {
    const Index T = x.rows(), HV = config_.num_v_heads;
    detail::require_shape(kName, "x", x, T, config_.hidden_size);
    detail::require_shape(kName, "out", out, T, config_.hidden_size);
    if (!detail::all_finite(x)) detail::fail(kName, "x must be finite");
    if (static_cast<Index>(state.heads.size()) != HV) {
      detail::fail(kName, "state must hold ", HV, " head states, got ", state.heads.size());
    }
    if (T == 0) return;
    // A block of rows at a time, into scratch of one block (models/parts.hpp, row_block).
    const Index B = row_block(form, T, config_.block_size, config_.chunk_size);
    Scratch s(B, config_.num_heads * config_.head_dim, HV, value_dim(), config_.use_gate);
    in_row_blocks(x, state, out, B,
                  [&](const MatrixCRef<Scalar>& rows, HeadStates& heads, ConvCaches<Scalar> caches,
                      MatrixRef<Scalar> out_rows,
                      Index n) { forward_block(form, rows, heads, caches, out_rows, s, n); });
  }

 private:
  using HeadStates = std::vector<typename Memory::State>;

  /// The per-call buffers of one row block.
  struct Scratch {
    Matrix<Scalar> z, q, k, v, beta, g, o, gate;
    Scratch(Index rows, Index qk, Index heads, Index dv, bool gated)
        : z(rows, std::max(qk, heads * dv)),
          q(rows, qk),
          k(rows, qk),
          v(rows, heads * dv),
          beta(rows, heads),
          g(rows, heads),
          o(rows, heads * dv),
          gate(gated ? rows : 0, gated ? heads * dv : 0) {}
  };

  /// Rows x (`n` of them) into `out`, continuing from `heads` and `caches`. Every head's
  /// inputs are checked before the first head state changes.
  void forward_block(Form form, const MatrixCRef<Scalar>& x, HeadStates& heads,
                     ConvCaches<Scalar> caches, MatrixRef<Scalar> out, Scratch& s, Index n) const {
    const Index H = config_.num_heads, HV = config_.num_v_heads;
    const Index dk = config_.head_dim, dv = value_dim();
    auto q = s.q.topRows(n), k = s.k.topRows(n), v = s.v.topRows(n);
    auto beta = s.beta.topRows(n), g = s.g.topRows(n), o = s.o.topRows(n);
    // 1. Projections, short convolutions, SiLU.
    q_->apply(x, caches.q, s.z.topLeftCorner(n, q.cols()), q);
    k_->apply(x, caches.k, s.z.topLeftCorner(n, k.cols()), k);
    v_->apply(x, caches.v, s.z.topLeftCorner(n, v.cols()), v);
    q = pieces::silu(q.array()).matrix();
    k = pieces::silu(k.array()).matrix();
    v = pieces::silu(v.array()).matrix();
    // 4. Gates per token and value head: β = sigmoid(x b_projᵀ) (×2 with allow_neg_eigval),
    //    g = −exp(A_log) · softplus(x a_projᵀ + dt_bias).
    b_proj_->apply(x, beta);
    beta = pieces::sigmoid(beta.array()).matrix();
    if (config_.allow_neg_eigval) beta *= Scalar(2);
    a_proj_->apply(x, g);
    g.rowwise() += dt_bias_.row(0);
    g = pieces::softplus(g.array()).matrix();
    g.array().rowwise() *= decay_scale_.row(0).array();
    // 5. Gated DeltaNet per value head j on q/k head j / (HV/H) (views: no copies; the memory
    //    l2-normalizes q and k and scales q by dk^−½).
    const Index group = HV / H;
    const auto head = [&](Index j) -> typename Memory::Inputs {
      const Index h = j / group;
      return {.q = q.middleCols(h * dk, dk),
              .k = k.middleCols(h * dk, dk),
              .v = v.middleCols(j * dv, dv),
              .beta = beta.col(j),
              .log_decay = GateRef<Scalar>(g.col(j))};
    };
    for (Index j = 0; j < HV; ++j)
      memory_.check(form, head(j), heads[static_cast<std::size_t>(j)]);
    for (Index j = 0; j < HV; ++j) {
      memory_.forward_unchecked(form, head(j), heads[static_cast<std::size_t>(j)],
                                o.middleCols(j * dv, dv));
    }
    // 6–7. Output RMSNorm per value head (gated by silu(x g_projᵀ) when use_gate), o_proj.
    (*output_)(o, x, s.gate.topRows(s.gate.rows() ? n : 0), out);
  }

  static GatedDeltaNetConfig checked(GatedDeltaNetConfig c) {
    if (c.num_v_heads == 0) c.num_v_heads = c.num_heads;
    detail::require_positive(kName, "hidden_size", c.hidden_size);
    detail::require_positive(kName, "head_dim", c.head_dim);
    detail::require_positive(kName, "num_heads", c.num_heads);
    detail::require_positive(kName, "num_v_heads", c.num_v_heads);
    detail::require_positive(kName, "conv_size", c.conv_size);
    if (c.num_v_heads % c.num_heads != 0) {
      detail::fail(kName, "num_v_heads (", c.num_v_heads, ") must be a multiple of num_heads (",
                   c.num_heads, ")");
    }
    const double dv = c.expand_v * double(c.head_dim);
    if (!(dv >= 1) || dv != std::round(dv)) {
      detail::fail(kName, "head_dim·expand_v must be a positive integer, got ", dv);
    }
    if (!(c.norm_eps > 0)) detail::fail(kName, "norm_eps must be > 0, got ", c.norm_eps);
    return c;
  }

  static Index value_dim(const GatedDeltaNetConfig& c) {
    return static_cast<Index>(std::llround(c.expand_v * double(c.head_dim)));
  }
  static StreamShape stream_shape(const GatedDeltaNetConfig& c) {
    return {c.hidden_size, c.use_short_conv, c.conv_size, c.conv_bias};
  }

  GatedDeltaNetConfig config_;
  Memory memory_;
  std::optional<ConvProjection<Scalar>> q_, k_, v_;
  std::optional<pieces::Linear<Scalar>> a_proj_, b_proj_;
  std::optional<GatedOutput<Scalar>> output_;
  Matrix<Scalar> decay_scale_, dt_bias_;
};

}  // namespace seqmem::models
