#pragma once

/// @file
/// flash-linear-attention's `Mamba2` layer from x (docs/layers.md; the step-by-step definition
/// is tests/data/golden-layers/README.md, "fla.Mamba2"): one input projection split into the
/// gate z, the convolved stream xBC and the step dt; one depthwise short convolution with SiLU
/// over all of xBC; the selective state space per head as gated linear attention
/// (docs/math.md §2: q = C, k = B, v = dt·x, log decay dt·A, scale 1); the D skip; the gated
/// RMSNorm over groups; the output projection. The memory is `seqmem::LinearAttention`; every
/// piece is from include/seqmem/pieces/.

#include <algorithm>
#include <cmath>
#include <limits>
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
#include "seqmem/layers/linear_attention.hpp"
#include "seqmem/models/parts.hpp"
#include "seqmem/pieces/activation.hpp"
#include "seqmem/pieces/linear.hpp"
#include "seqmem/pieces/norm.hpp"
#include "seqmem/pieces/short_conv.hpp"

namespace seqmem::models {

/// Configuration under the peer's constructor argument names and defaults. (The peer's
/// initialization-only arguments — conv_init, A_init_range, dt_min, dt_max, dt_init_floor —
/// do not change what a checkpoint computes and are not taken.)
struct Mamba2Config {
  Index num_heads = 0;  ///< 0 (None): expand·hidden_size / head_dim, which it must equal otherwise
  /// Width P of a head (the memory's value_dim).
  Index head_dim = 64;
  /// Width D of x and y.
  Index hidden_size = 2048;
  /// N: the SSM state size (the memory's key_dim); B and C are N wide per group.
  Index state_size = 128;
  /// The layer works on I = expand·hidden_size channels.
  Index expand = 2;
  /// G: B and C come in G groups, each shared by num_heads/G consecutive heads.
  Index n_groups = 1;
  /// Kernel size K of the short convolution over xBC.
  Index conv_kernel = 4;
  /// Whether the convolution has a bias (`conv1d.bias`).
  bool use_conv_bias = true;
  std::string hidden_act = "silu";  ///< silu (or its other name, swish): the only one supported
  /// D holds one value per channel (`[I]`) instead of one per head (`[num_heads]`).
  bool D_has_hdim = false;
  /// Apply the RMSNorm over G groups of I/G channels (reads `norm.weight`, `[I]`).
  bool rmsnorm = true;
  /// RMSNorm, then the silu(z) gate; off: the gate, then the RMSNorm.
  bool norm_before_gate = false;
  /// (lo, hi): dt is clamped to [lo, hi] after the softplus; needs 0 ≤ lo ≤ hi.
  std::pair<double, double> dt_limit = {0.0, std::numeric_limits<double>::infinity()};
  /// Biases on in_proj and out_proj.
  bool use_bias = false;
  /// ε of the RMSNorm; must be > 0.
  double norm_eps = 1e-5;
  Index chunk_size = 256;  ///< the memory's chunkwise block (the peer's: blocking only)
  /// Rows of x per block of the forward pass, rounded to a multiple of chunk_size (bounds its
  /// scratch memory, models/parts.hpp; not a peer argument; 0: the whole call at once).
  Index block_size = 256;
};

/// fla's `Mamba2` layer from x (see the file comment): x `T×hidden_size` in, y `T×hidden_size`
/// out, over num_heads `LinearAttention` memories. Built from a checkpoint and immutable;
/// everything a sequence carries is in `State`.
template <class Scalar_>
class Mamba2 {
 public:
  /// The scalar type: float or double.
  using Scalar = Scalar_;
  /// The memory of every head: `LinearAttention` with key_dim = state_size, value_dim = head_dim,
  /// scale 1 and the per-token log-decay dt·A.
  using Memory = LinearAttention<Scalar>;
  /// The layer's name in error messages.
  static constexpr const char* kName = "Mamba2";

  /// Every head's SSM state and the convolution cache.
  struct State {
    /// One per head: S (`state_size × head_dim`), the transpose of the peer's ssm_state.
    std::vector<typename Memory::State> heads;
    /// The last conv_kernel − 1 rows of xBC before the convolution (`(K−1) × conv_dim`).
    Matrix<Scalar> conv_cache;
  };

  /// The state in state files (docs/state_format.md): kind `fla.Mamba2`, every head's S as
  /// `heads[h].<field>` (the `LinearAttention` fields), then the convolution cache.
  struct StateLayout {
    /// The layer kind written in state files.
    static constexpr std::string_view kind = "fla.Mamba2";
    /// The options that shape the state: num_heads, head_dim, state_size, n_groups and
    /// conv_kernel.
    static std::vector<StateParam> params(const Mamba2& layer) {
      const auto& c = layer.config_;
      return {{"num_heads", c.num_heads},
              {"head_dim", c.head_dim},
              {"state_size", c.state_size},
              {"n_groups", c.n_groups},
              {"conv_kernel", c.conv_kernel}};
    }
    /// Visits the parts of the state in file order: every head's `heads[h].S` and `heads[h].z`
    /// (empty), then `conv_cache`.
    template <class S, class V>
    static void visit(const Mamba2& layer, S& state, V& v) {
      detail::visit_heads([&layer](std::size_t) -> const Memory& { return layer.memory_; },
                          state.heads, v);
      v.tensor("conv_cache", state.conv_cache);
    }
  };

  /// The checkpoint tensors `config` reads (names under the layer's prefix, peer shapes).
  /// Throws when the configuration is invalid.
  /// Valid: hidden_size, head_dim, state_size, expand, n_groups, conv_kernel and chunk_size > 0,
  /// expand·hidden_size divisible by head_dim, num_heads 0 or expand·hidden_size/head_dim and a
  /// multiple of n_groups, hidden_act silu or swish, 0 ≤ dt_limit.first ≤ dt_limit.second,
  /// norm_eps > 0.
  static std::vector<TensorSpec> tensor_specs(const Mamba2Config& config) {
    const Mamba2Config c = checked(config);
    const Index D = c.hidden_size, I = c.expand * D, H = c.num_heads;
    const Index conv_dim = I + 2 * c.n_groups * c.state_size;
    std::vector<TensorSpec> specs = {{"in_proj.weight", {I + conv_dim + H, D}},
                                     {"conv1d.weight", {conv_dim, 1, c.conv_kernel}},
                                     {"dt_bias", {H}},
                                     {"A_log", {H}},
                                     {"D", {c.D_has_hdim ? I : H}},
                                     {"out_proj.weight", {D, I}}};
    if (c.use_bias) {
      specs.push_back({"in_proj.bias", {I + conv_dim + H}});
      specs.push_back({"out_proj.bias", {D}});
    }
    if (c.use_conv_bias) specs.push_back({"conv1d.bias", {conv_dim}});
    if (c.rmsnorm) specs.push_back({"norm.weight", {I}});
    return specs;
  }

  /// The layer `config` describes, with the weights under `prefix` in `file`.
  /// @throws seqmem::invalid_argument when `config` is invalid (see `tensor_specs`) or a tensor
  /// under `prefix` is missing, unexpected, mis-shaped or not finite.
  Mamba2(const Mamba2Config& config, const SafetensorsFile& file, const std::string& prefix)
      : config_(checked(config)),
        memory_({.key_dim = config_.state_size,
                 .value_dim = config_.head_dim,
                 .scale = Scalar(1),
                 .chunk_size = config_.chunk_size}) {
    auto w = load_tensors<Scalar>(file, prefix, tensor_specs(config_));
    const auto take = [&w](const std::string& name) { return std::move(w.at(name)); };
    const auto bias = [&](const std::string& name) -> std::optional<Matrix<Scalar>> {
      if (!config_.use_bias) return std::nullopt;
      return take(name);
    };
    in_proj_.emplace(take("in_proj.weight"), bias("in_proj.bias"), kName);
    out_proj_.emplace(take("out_proj.weight"), bias("out_proj.bias"), kName);
    conv_.emplace(take("conv1d.weight"),
                  config_.use_conv_bias ? take("conv1d.bias") : Matrix<Scalar>(), kName);
    dt_bias_ = take("dt_bias");
    A_ = -w.at("A_log").array().exp().matrix();  // A = −exp(A_log)
    D_ = take("D");
    if (config_.rmsnorm) norm_weight_ = take("norm.weight");
  }

  /// The configuration, with num_heads resolved.
  const Mamba2Config& config() const { return config_; }
  /// I = expand·hidden_size.
  Index intermediate_size() const { return config_.expand * config_.hidden_size; }
  /// The convolved channels: I + 2·n_groups·state_size (x, B, C).
  Index conv_dim() const { return intermediate_size() + 2 * config_.n_groups * config_.state_size; }

  /// The state at the start of a sequence: num_heads empty memories (S = 0) and a zero
  /// convolution cache, `(conv_kernel−1)×conv_dim()`.
  State initial_state() const {
    return {std::vector<typename Memory::State>(static_cast<std::size_t>(config_.num_heads),
                                                memory_.initial_state()),
            conv_->initial_cache()};
  }

  /// y (`T×hidden_size`) for x (`T×hidden_size`), continuing from `state`.
  Matrix<Scalar> forward(Form form, const MatrixCRef<Scalar>& x, State& state) const {
    Matrix<Scalar> y(x.rows(), config_.hidden_size);
    forward(form, x, state, y);
    return y;
  }

  /// As above, writing y into `out`. A call that throws leaves `state` as it was.
  void forward(Form form, const MatrixCRef<Scalar>& x, State& state, MatrixRef<Scalar> out) const {
    const Index T = x.rows(), H = config_.num_heads, I = intermediate_size();
    detail::require_shape(kName, "x", x, T, config_.hidden_size);
    detail::require_shape(kName, "out", out, T, config_.hidden_size);
    if (!detail::all_finite(x)) detail::fail(kName, "x must be finite");
    if (static_cast<Index>(state.heads.size()) != H) {
      detail::fail(kName, "state must hold ", H, " head states, got ", state.heads.size());
    }
    detail::require_shape(kName, "state.conv_cache", state.conv_cache, config_.conv_kernel - 1,
                          conv_dim());
    if (T == 0) return;
    // A block of rows at a time, into scratch of one block (models/parts.hpp, row_block).
    const Index B = row_block(form, T, config_.block_size, config_.chunk_size);
    Scratch s(B, in_proj_->out_features(), conv_dim(), H, I);
    if (T <= B) {
      // One block (a decode step, a short prompt): every head's inputs are checked before any
      // head state changes, so the heads are updated in place, without a copy of the state;
      // the convolution cache is updated in a copy, swapped in at the end.
      Matrix<Scalar> conv_cache = state.conv_cache;
      forward_block(form, x, state.heads, conv_cache, out, s);
      state.conv_cache.swap(conv_cache);
      return;
    }
    State next = state;  // strong guarantee: the caller's state changes only at the end
    for (Index begin = 0; begin < T; begin += B) {
      const Index n = std::min(B, T - begin);
      forward_block(form, x.middleRows(begin, n), next.heads, next.conv_cache,
                    out.middleRows(begin, n), s);
    }
    state = std::move(next);
  }

 private:
  using HeadStates = std::vector<typename Memory::State>;

  /// The per-call buffers of one row block.
  struct Scratch {
    Matrix<Scalar> zxbcdt, xbc, dt, log_decay, v, y;
    Scratch(Index rows, Index projected, Index conv, Index heads, Index inner)
        : zxbcdt(rows, projected),
          xbc(rows, conv),
          dt(rows, heads),
          log_decay(rows, heads),
          v(rows, inner),
          y(rows, inner) {}
  };

  /// Rows x into `out`, continuing from `heads` and `conv_cache`. Every head's inputs are
  /// checked before the first head state changes.
  void forward_block(Form form, const MatrixCRef<Scalar>& x, HeadStates& heads,
                     Matrix<Scalar>& conv_cache, MatrixRef<Scalar> out, Scratch& s) const {
    const Index T = x.rows(), H = config_.num_heads, P = config_.head_dim;
    const Index N = config_.state_size, G = config_.n_groups, I = intermediate_size();
    auto zxbcdt = s.zxbcdt.topRows(T), xbc = s.xbc.topRows(T), dt = s.dt.topRows(T);
    auto log_decay = s.log_decay.topRows(T), v = s.v.topRows(T), y = s.y.topRows(T);
    // 1. zxbcdt = x in_projᵀ, columns z (I) | xBC (conv_dim) | dt (H).
    in_proj_->apply(x, zxbcdt);
    const auto z = zxbcdt.leftCols(I);
    // 2. xBC = silu(conv(xBC)), columns xs (I) | B (G·N) | C (G·N).
    conv_->apply(zxbcdt.middleCols(I, conv_dim()), conv_cache, xbc);
    xbc = pieces::silu(xbc.array()).matrix();
    const auto xs = xbc.leftCols(I);
    // 3. dt = clamp(softplus(dt + dt_bias), dt_limit) ≥ 0; log decay dt·A ≤ 0; v_h = dt_h·xs_h.
    dt = zxbcdt.rightCols(H);
    dt.rowwise() += dt_bias_.row(0);
    dt = pieces::softplus(dt.array())
             .max(static_cast<Scalar>(config_.dt_limit.first))
             .min(static_cast<Scalar>(config_.dt_limit.second))
             .matrix();
    log_decay = (dt.array().rowwise() * A_.row(0).array()).matrix();
    for (Index h = 0; h < H; ++h) {
      v.middleCols(h * P, P) = xs.middleCols(h * P, P).array().colwise() * dt.col(h).array();
    }
    // 4. Per head h, group g = h / (H/G) (the kernels' mapping, README group-mapping note):
    //    S ← exp(dt·A) S + Bᵀ(dt·xs), y = C S (decay, write, then read), B and C as views.
    const Index heads_per_group = H / G;
    const auto head = [&](Index h) -> typename Memory::Inputs {
      const Index g = h / heads_per_group;
      return {.q = xbc.middleCols(I + G * N + g * N, N),
              .k = xbc.middleCols(I + g * N, N),
              .v = v.middleCols(h * P, P),
              .log_decay = GateRef<Scalar>(log_decay.col(h))};
    };
    for (Index h = 0; h < H; ++h)
      memory_.check(form, head(h), heads[static_cast<std::size_t>(h)]);
    for (Index h = 0; h < H; ++h) {
      memory_.forward_unchecked(form, head(h), heads[static_cast<std::size_t>(h)],
                                y.middleCols(h * P, P));
    }
    // D skip, per head (or per channel with D_has_hdim), before the gated norm.
    if (config_.D_has_hdim) {
      y.array() += xs.array().rowwise() * D_.row(0).array();
    } else {
      for (Index h = 0; h < H; ++h)
        y.middleCols(h * P, P) += D_(0, h) * xs.middleCols(h * P, P);
    }
    // 5. Gate silu(z) and RMSNorm over G groups of I/G channels (norm.weight over all I).
    const auto eps = static_cast<Scalar>(config_.norm_eps);
    if (config_.rmsnorm && config_.norm_before_gate) {
      pieces::gated_rms_norm<Scalar>(y, z, norm_weight_, eps, I / G);
    } else {
      y.array() *= pieces::silu(z.array());
      if (config_.rmsnorm) pieces::rms_norm<Scalar>(y, norm_weight_, eps, I / G);
    }
    // 6. y = · out_projᵀ.
    out_proj_->apply(y, out);
  }

  static Mamba2Config checked(Mamba2Config c) {
    detail::require_positive(kName, "hidden_size", c.hidden_size);
    detail::require_positive(kName, "head_dim", c.head_dim);
    detail::require_positive(kName, "state_size", c.state_size);
    detail::require_positive(kName, "expand", c.expand);
    detail::require_positive(kName, "n_groups", c.n_groups);
    detail::require_positive(kName, "conv_kernel", c.conv_kernel);
    detail::require_positive(kName, "chunk_size", c.chunk_size);
    const Index I = detail::checked_product(kName, "expand·hidden_size", c.expand, c.hidden_size);
    if (I % c.head_dim != 0) {
      detail::fail(kName, "expand·hidden_size (", I, ") must be divisible by head_dim (",
                   c.head_dim, ")");
    }
    if (c.num_heads < 0) detail::fail(kName, "num_heads must be >= 0, got ", c.num_heads);
    if (c.num_heads == 0) c.num_heads = I / c.head_dim;
    if (c.num_heads * c.head_dim != I) {
      detail::fail(kName, "num_heads·head_dim (", c.num_heads, "·", c.head_dim,
                   ") must equal expand·hidden_size (", I, ")");
    }
    if (c.num_heads % c.n_groups != 0) {
      detail::fail(kName, "num_heads (", c.num_heads, ") must be a multiple of n_groups (",
                   c.n_groups, ")");
    }
    if (c.hidden_act != "silu" && c.hidden_act != "swish") {
      detail::fail(kName, "hidden_act must be silu (swish), got ", c.hidden_act);
    }
    const auto [lo, hi] = c.dt_limit;
    if (!(lo >= 0 && lo <= hi)) {
      detail::fail(kName, "dt_limit must be (lo, hi) with 0 <= lo <= hi, got (", lo, ", ", hi, ")");
    }
    if (!(c.norm_eps > 0)) detail::fail(kName, "norm_eps must be > 0, got ", c.norm_eps);
    return c;
  }

  Mamba2Config config_;
  Memory memory_;
  std::optional<pieces::Linear<Scalar>> in_proj_, out_proj_;
  std::optional<pieces::ShortConv<Scalar>> conv_;
  Matrix<Scalar> dt_bias_, A_, D_, norm_weight_;  ///< 1×H, 1×H, 1×H or 1×I, 1×I (rmsnorm)
};

}  // namespace seqmem::models
