#pragma once

/// @file
/// The Titans layer from x (docs/layers.md §3, which defines it: Titans has no runnable
/// reference): projections, short convolutions with SiLU, l2-normalized q and k, the gates
/// θ (learning rate), α (forgetting) and η (momentum decay) computed from x, the Titans
/// memory (docs/math.md §5) over the heads through `MultiHead` with one set of initial memory
/// weights shared by the heads, and the output stage of the delta-rule layers (per-head
/// RMSNorm, gated by silu(x g_projᵀ) when `use_gate`, then o_proj; models/parts.hpp).

#include <algorithm>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "seqmem/checkpoint.hpp"
#include "seqmem/core/state_layout.hpp"
#include "seqmem/core/types.hpp"
#include "seqmem/detail/checks.hpp"
#include "seqmem/layers/titans.hpp"
#include "seqmem/models/parts.hpp"
#include "seqmem/multi_head.hpp"
#include "seqmem/pieces/activation.hpp"
#include "seqmem/pieces/linear.hpp"
#include "seqmem/pieces/norm.hpp"

namespace seqmem::models {

/// Configuration of the Titans layer (docs/layers.md §3 names; seqmem's own defaults).
struct TitansConfig {
  /// Width D of x and y.
  Index hidden_size = 1024;
  /// Number of heads H.
  Index num_heads = 8;
  /// Width d of a head: of q, k and v, and the memory's key_dim = value_dim.
  Index head_dim = 128;
  Index depth = 2;         ///< L: memory depth, 1 (linear) or 2 (MLP)
  Index expansion = 4;     ///< hidden width of the memory MLP = expansion·head_dim (L = 2)
  Index mini_batch = 16;   ///< b: tokens whose gradients are taken at the same weights
  Index conv_size = 4;     ///< K of the short convolutions
  double theta_max = 0.1;  ///< θ = theta_max·sigmoid(·)
  /// ε of the output RMSNorm; must be > 0.
  double norm_eps = 1e-5;
  /// Gate the output RMSNorm by silu(x g_projᵀ) (reads `g_proj.weight`).
  bool use_gate = true;
  Index num_threads = 1;  ///< threads over the heads (0: all cores)
  /// Rows of x per block of the forward pass, rounded to a multiple of mini_batch (bounds its
  /// scratch memory, models/parts.hpp; 0: the whole call at once).
  Index block_size = 256;
};

/// The Titans layer from x (see the file comment): x `T×hidden_size` in, y `T×hidden_size` out,
/// over num_heads `TitansMemory` heads run by `MultiHead`, all starting from the checkpoint's
/// memory weights. Built from a checkpoint and immutable; everything a sequence carries is in
/// `State`.
template <class Scalar_>
class Titans {
 public:
  /// The scalar type: float or double.
  using Scalar = Scalar_;
  /// The memory of every head: `TitansMemory` with key_dim = value_dim = head_dim, the configured
  /// depth, expansion and mini_batch, GELU-tanh, no bias and no LayerNorm.
  using Memory = TitansMemory<Scalar>;
  /// The layer's name in error messages.
  static constexpr const char* kName = "Titans";

  /// Every head's memory state and the three convolution caches (docs/layers.md §3, State).
  struct State {
    /// One memory state per head, all at the same mini-batch position.
    typename MultiHead<Memory>::States heads;
    /// The q stream's convolution cache, `(conv_size−1)×(num_heads·head_dim)`.
    Matrix<Scalar> q_cache, k_cache, v_cache;
    /// @var k_cache
    /// The k stream's convolution cache, `(conv_size−1)×(num_heads·head_dim)`.
    ///
    /// @var v_cache
    /// The v stream's convolution cache, `(conv_size−1)×(num_heads·head_dim)`.
  };

  /// The state in state files (docs/state_format.md): kind `seqmem.Titans`, every head's memory
  /// state as `heads[h].<field>`, then the convolution caches.
  struct StateLayout {
    /// The layer kind written in state files.
    static constexpr std::string_view kind = "seqmem.Titans";
    /// The options that shape the state: num_heads, head_dim, depth, expansion (0 when depth = 1),
    /// mini_batch and conv_size.
    static std::vector<StateParam> params(const Titans& layer) {
      const auto& c = layer.config_;
      return {{"num_heads", c.num_heads},   {"head_dim", c.head_dim},
              {"depth", c.depth},           {"expansion", c.depth > 1 ? c.expansion : 0},
              {"mini_batch", c.mini_batch}, {"conv_size", c.conv_size}};
    }
    /// Visits the parts of the state in file order: every head's memory state as
    /// `heads[h].<field>` (the `TitansMemory` fields), then `q_cache`, `k_cache` and `v_cache`.
    template <class S, class V>
    static void visit(const Titans& layer, S& state, V& v) {
      detail::visit_heads([&layer](std::size_t) -> const Memory& { return layer.heads_->layer(); },
                          state.heads, v);
      v.tensor("q_cache", state.q_cache);
      v.tensor("k_cache", state.k_cache);
      v.tensor("v_cache", state.v_cache);
    }
  };

  /// The checkpoint tensors `config` reads (names under the layer's prefix, PyTorch shapes).
  /// Throws `seqmem::invalid_argument` unless hidden_size, num_heads, head_dim, mini_batch and
  /// conv_size are > 0, depth is 1 or 2, expansion > 0 (depth 2), theta_max > 0 and norm_eps > 0.
  static std::vector<TensorSpec> tensor_specs(const TitansConfig& config) {
    const TitansConfig c = checked(config);
    const Index D = c.hidden_size, H = c.num_heads, d = c.head_dim;
    const StreamShape shape{D, true, c.conv_size, false};
    std::vector<TensorSpec> specs;
    for (const char* s : {"q", "k", "v"})
      add_stream_specs(specs, s, H * d, shape);
    for (const char* g : {"theta", "alpha", "eta"}) {
      specs.push_back({std::string(g) + "_proj.weight", {H, D}});
      specs.push_back({std::string(g) + "_proj.bias", {H}});
    }
    if (c.depth == 1) {
      specs.push_back({"memory.w1", {d, d}});
    } else {
      specs.push_back({"memory.w1", {d, c.expansion * d}});
      specs.push_back({"memory.w2", {c.expansion * d, d}});
    }
    add_output_specs(specs, H, d, D, c.use_gate);
    return specs;
  }

  /// The layer `config` describes, with the weights under `prefix` in `file`.
  /// @throws seqmem::invalid_argument when `config` is invalid (see `tensor_specs`; also
  /// num_threads < 0) or a tensor under `prefix` is missing, unexpected, mis-shaped or not
  /// finite.
  Titans(const TitansConfig& config, const SafetensorsFile& file, const std::string& prefix)
      : config_(checked(config)) {
    auto w = load_tensors<Scalar>(file, prefix, tensor_specs(config_));
    const StreamShape shape{config_.hidden_size, true, config_.conv_size, false};
    q_.emplace(take_stream(w, "q", shape, kName));
    k_.emplace(take_stream(w, "k", shape, kName));
    v_.emplace(take_stream(w, "v", shape, kName));
    const auto gate = [&](const std::string& g) {
      return pieces::Linear<Scalar>(std::move(w.at(g + "_proj.weight")),
                                    std::move(w.at(g + "_proj.bias")), kName);
    };
    theta_proj_.emplace(gate("theta"));
    alpha_proj_.emplace(gate("alpha"));
    eta_proj_.emplace(gate("eta"));
    // docs/layers.md §3 step 5: GELU-tanh, no bias, no LayerNorm, initial weights memory.w*.
    typename Memory::Parameters memory_parameters;
    memory_parameters.initial.W.push_back(std::move(w.at("memory.w1")));
    if (config_.depth == 2) memory_parameters.initial.W.push_back(std::move(w.at("memory.w2")));
    heads_.emplace(Memory({.key_dim = config_.head_dim,
                           .value_dim = config_.head_dim,
                           .depth = config_.depth,
                           .expansion = config_.expansion,
                           .activation = Activation::gelu_tanh,
                           .bias = false,
                           .layer_norm = false,
                           .mini_batch = config_.mini_batch},
                          std::move(memory_parameters)),
                   config_.num_heads, config_.num_threads);
    output_.emplace(take_output(w, config_.head_dim, config_.use_gate, config_.norm_eps, kName));
  }

  /// The configuration.
  const TitansConfig& config() const { return config_; }

  /// The state at the start of a sequence: every head at the checkpoint's memory weights
  /// (`memory.w1`, `memory.w2`) with zero momentum, at position 0, and zero convolution caches.
  State initial_state() const {
    return {heads_->initial_state(), q_->initial_cache(), k_->initial_cache(), v_->initial_cache()};
  }

  /// y (`T×hidden_size`) for x (`T×hidden_size`), continuing from `state`.
  Matrix<Scalar> forward(Form form, const MatrixCRef<Scalar>& x, State& state) const {
    Matrix<Scalar> y(x.rows(), config_.hidden_size);
    forward(form, x, state, y);
    return y;
  }

  /// As above, writing y into `out`. A call that throws leaves `state` as it was.
  void forward(Form form, const MatrixCRef<Scalar>& x, State& state, MatrixRef<Scalar> out) const {
    const Index T = x.rows(), d = config_.head_dim;
    detail::require_shape(kName, "x", x, T, config_.hidden_size);
    detail::require_shape(kName, "out", out, T, config_.hidden_size);
    if (!detail::all_finite(x)) detail::fail(kName, "x must be finite");
    const Index position =
        shared_position(kName, state.heads, config_.num_heads, config_.mini_batch);
    if (T == 0) return;
    // A block of rows at a time, into scratch of one block (models/parts.hpp, row_block); a
    // block after the first starts at a mini-batch start.
    const Index B = row_block(form, T, config_.block_size, config_.mini_batch);
    Scratch s(B, config_.num_heads, d, config_.use_gate);
    if (T <= B && form != Form::parallel) {
      // One block and one memory call (a decode step, a short prompt): MultiHead checks every
      // head's inputs before any head state changes, so the heads are updated in place,
      // without a copy of the state; the convolution caches are updated in copies, swapped in
      // at the end.
      Matrix<Scalar> q_cache = state.q_cache, k_cache = state.k_cache, v_cache = state.v_cache;
      forward_block(form, x, state.heads, {q_cache, k_cache, v_cache}, out, s, position);
      state.q_cache.swap(q_cache);
      state.k_cache.swap(k_cache);
      state.v_cache.swap(v_cache);
      return;
    }
    State next = state;  // strong guarantee: the caller's state changes only at the end
    for (Index begin = 0, p = position; begin < T;) {
      // B is a multiple of mini_batch here (T > B), unless parallel: then one block of T.
      const Index n = form == Form::parallel ? T : std::min(T - begin, B - p);
      forward_block(form, x.middleRows(begin, n), next.heads,
                    {next.q_cache, next.k_cache, next.v_cache}, out.middleRows(begin, n), s, p);
      begin += n;
      p = (p + n) % config_.mini_batch;
    }
    state = std::move(next);
  }

 private:
  using HeadStates = typename MultiHead<Memory>::States;

  /// The per-call buffers of one row block.
  struct Scratch {
    Matrix<Scalar> z, q, k, v, theta, alpha, eta, o, gate;
    Scratch(Index rows, Index heads, Index d, bool gated)
        : z(rows, heads * d),
          q(rows, heads * d),
          k(rows, heads * d),
          v(rows, heads * d),
          theta(rows, heads),
          alpha(rows, heads),
          eta(rows, heads),
          o(rows, heads * d),
          gate(gated ? rows : 0, gated ? heads * d : 0) {}
  };

  /// Rows x into `out`, continuing from `heads` (at mini-batch position `position`) and
  /// `caches`.
  void forward_block(Form form, const MatrixCRef<Scalar>& x, HeadStates& heads,
                     ConvCaches<Scalar> caches, MatrixRef<Scalar> out, Scratch& s,
                     Index position) const {
    const Index n = x.rows(), d = config_.head_dim;
    auto q = s.q.topRows(n), k = s.k.topRows(n), v = s.v.topRows(n);
    auto theta = s.theta.topRows(n), alpha = s.alpha.topRows(n), eta = s.eta.topRows(n);
    auto o = s.o.topRows(n);
    // 1–3. Projections, short convolutions, SiLU; l2-normalized q and k rows per head.
    q_->apply(x, caches.q, s.z.topRows(n), q);
    k_->apply(x, caches.k, s.z.topRows(n), k);
    v_->apply(x, caches.v, s.z.topRows(n), v);
    q = pieces::silu(q.array()).matrix();
    k = pieces::silu(k.array()).matrix();
    v = pieces::silu(v.array()).matrix();
    pieces::l2_normalize<Scalar>(q, Scalar(1e-6), d);
    pieces::l2_normalize<Scalar>(k, Scalar(1e-6), d);
    // 4. Gates per token and head: θ = theta_max·σ(·), α = σ(·), η = σ(·).
    theta_proj_->apply(x, theta);
    theta = (pieces::sigmoid(theta.array()) * static_cast<Scalar>(config_.theta_max)).matrix();
    alpha_proj_->apply(x, alpha);
    alpha = pieces::sigmoid(alpha.array()).matrix();
    eta_proj_->apply(x, eta);
    eta = pieces::sigmoid(eta.array()).matrix();
    // 5. The Titans memory per head (read after the token's own write); a parallel call in
    //    pieces that stay inside a mini-batch.
    mini_batch_pieces(form, n, position, config_.mini_batch, [&](Index begin, Index m) {
      heads_->forward(form,
                      {.q = q.middleRows(begin, m),
                       .k = k.middleRows(begin, m),
                       .v = v.middleRows(begin, m),
                       .learning_rate = GateRef<Scalar>(theta.middleRows(begin, m)),
                       .forgetting = GateRef<Scalar>(alpha.middleRows(begin, m)),
                       .momentum_decay = GateRef<Scalar>(eta.middleRows(begin, m))},
                      heads, o.middleRows(begin, m));
    });
    // 6–7. Output RMSNorm per head (gated by silu(x g_projᵀ) when use_gate), o_proj.
    (*output_)(o, x, s.gate.topRows(s.gate.rows() ? n : 0), out);
  }

  static TitansConfig checked(TitansConfig c) {
    detail::require_positive(kName, "hidden_size", c.hidden_size);
    detail::require_positive(kName, "num_heads", c.num_heads);
    detail::require_positive(kName, "head_dim", c.head_dim);
    detail::require_positive(kName, "mini_batch", c.mini_batch);
    detail::require_positive(kName, "conv_size", c.conv_size);
    if (c.depth != 1 && c.depth != 2) detail::fail(kName, "depth must be 1 or 2, got ", c.depth);
    if (c.depth == 2) detail::require_positive(kName, "expansion", c.expansion);
    if (!(c.theta_max > 0)) detail::fail(kName, "theta_max must be > 0, got ", c.theta_max);
    if (!(c.norm_eps > 0)) detail::fail(kName, "norm_eps must be > 0, got ", c.norm_eps);
    return c;
  }

  TitansConfig config_;
  std::optional<MultiHead<Memory>> heads_;
  std::optional<ConvProjection<Scalar>> q_, k_, v_;
  std::optional<pieces::Linear<Scalar>> theta_proj_, alpha_proj_, eta_proj_;
  std::optional<GatedOutput<Scalar>> output_;
};

}  // namespace seqmem::models
