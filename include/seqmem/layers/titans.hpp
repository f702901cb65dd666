#pragma once

/// @file
/// Titans neural memory: a deep memory trained at test time with momentum and
/// data-dependent forgetting, in all three forms (docs/math.md §5).

#include <algorithm>
#include <array>
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
#include "seqmem/detail/inner_model.hpp"
#include "seqmem/detail/scratch.hpp"

namespace seqmem {

/// Titans neural memory (docs/math.md §5). Memory M of depth L (L = 1: x W; L ≥ 2: an MLP with
/// hidden width expansion·key_dim), loss ‖M(k) − v‖², gradients u_t at the weights M_ref of
/// the current mini-batch's start, and
///
///     S_t = η_t S_{t−1} − θ_t u_t          (momentum)
///     M_t = (1 − α_t) M_{t−1} + S_t        (forgetting)
///     o_t = M_t(q_t)                       (read after write)
///
/// The chunkwise form evaluates each mini-batch in closed form (the dual form of the shared
/// engine, detail/inner_model.hpp) with coefficients built by running products, so α = 1,
/// η = 0 and long products of small factors are exact (no quotients).
template <class Scalar_>
class TitansMemory : public LayerBase<TitansMemory<Scalar_>> {
 public:
  /// The scalar type: float or double.
  using Scalar = Scalar_;
  static_assert(std::is_floating_point_v<Scalar>, "seqmem layers take float or double");

  /// Construction options (an aggregate, for designated initializers).
  struct Options {
    /// Width of q and k (the memory's input); must be > 0.
    Index key_dim = 0;
    /// Width of v and of the output (the memory's output); must be > 0.
    Index value_dim = 0;
    Index depth = 1;      ///< L ∈ {1, 2, 3, 4}
    Index expansion = 4;  ///< hidden width = expansion·key_dim (L ≥ 2)
    /// Activation between the memory's layers (L ≥ 2).
    Activation activation = Activation::gelu_tanh;
    /// Give every memory layer a bias b_l.
    bool bias = false;
    bool layer_norm = false;  ///< residual + LayerNorm; needs key_dim = value_dim
    Index mini_batch = 16;    ///< b; 1 is the exact online rule
    /// ε of the LayerNorm (used with `layer_norm`); must be > 0.
    Scalar ln_eps = Scalar(1e-6);
    /// Reject q, k, v containing NaN or Inf (one pass over the inputs); off skips the check.
    bool check_finite = true;
  };

  /// Outer-loop parameters: the initial memory weights and the LayerNorm weight and bias
  /// (`1×value_dim`). Defaults: W_0 = 0 for L = 1; for L ≥ 2 the deterministic init of
  /// InnerModel::default_weights (W(i, j) = sin(1 + i·cols + j)/√rows); biases 0; LN weight 1,
  /// LN bias 0.
  using Parameters = InnerParameters<Scalar>;

  /// q, k `T×key_dim`, v `T×value_dim`, and three per-token gates, each `T×1`:
  /// `learning_rate` θ_t ≥ 0, `forgetting` α_t ∈ [0, 1] and `momentum_decay` η_t ∈ [0, 1]
  /// (docs/math.md §5).
  struct Inputs {
    /// Queries, `T×key_dim`: the memory is read at q after the token's write.
    InputRef<Scalar> q;
    /// Keys, `T×key_dim`: the memory's training inputs.
    InputRef<Scalar> k;
    /// Values, `T×value_dim`: its training targets.
    InputRef<Scalar> v;
    /// θ_t ≥ 0, `T×1`: the step size of the gradient in the momentum.
    GateRef<Scalar> learning_rate;
    /// α_t ∈ [0, 1], `T×1`: the share of the memory forgotten at each token.
    GateRef<Scalar> forgetting;
    /// η_t ∈ [0, 1], `T×1`: how much of the previous momentum is kept.
    GateRef<Scalar> momentum_decay;
  };

  /// M_ref (weights at the start of the current mini-batch), the current weights M, the
  /// momentum S (one per weight matrix) and the position inside the mini-batch.
  struct State {
    /// M_ref: the weights at the start of the current mini-batch (gradients are taken there).
    Weights<Scalar> reference;
    /// M: the current weights, those the last token read.
    Weights<Scalar> current;
    /// S: the momentum, one matrix per weight matrix.
    Weights<Scalar> momentum;
    /// Tokens of the current mini-batch seen so far, in [0, mini_batch).
    Index position = 0;
  };

  /// The state in state files (core/state_layout.hpp).
  struct StateLayout {
    /// The layer kind written in state files.
    static constexpr std::string_view kind = "TitansMemory";
    /// The options that shape the state: key_dim, value_dim, depth, expansion (L ≥ 2 only),
    /// bias and mini_batch.
    static std::vector<StateParam> params(const TitansMemory& layer) {
      const auto& o = layer.options();
      std::vector<StateParam> p{
          {"key_dim", o.key_dim}, {"value_dim", o.value_dim}, {"depth", o.depth}};
      if (o.depth > 1) p.push_back({"expansion", o.expansion});
      p.push_back({"bias", o.bias});
      p.push_back({"mini_batch", o.mini_batch});
      return p;
    }
    /// Visits the parts of the state in file order: every `W[l]`, then every `b[l]`, of
    /// `reference`, `current` and `momentum` in turn, then the integer `position`.
    template <class S, class V>
    static void visit(const TitansMemory& layer, S& state, V& v) {
      detail::visit_weights("reference", state.reference, v);
      detail::visit_weights("current", state.current, v);
      detail::visit_weights("momentum", state.momentum, v);
      v.integer("position", state.position, 0, layer.options().mini_batch - 1);
    }
  };

  /// The layer's name in error messages.
  static constexpr const char* kName = "TitansMemory";

  /// Checks `options` and takes the outer-loop `parameters` (defaults when absent, see
  /// `Parameters`).
  /// @throws seqmem::invalid_argument unless key_dim, value_dim and mini_batch are > 0, depth is
  /// in [1, 4], expansion > 0 when depth ≥ 2, key_dim = value_dim when `layer_norm`, ln_eps > 0
  /// and the given parameters have the memory's shapes and are finite.
  explicit TitansMemory(const Options& options, std::optional<Parameters> parameters = std::nullopt)
      : options_(options) {
    detail::require_positive(kName, "key_dim", options_.key_dim);
    detail::require_positive(kName, "value_dim", options_.value_dim);
    detail::require_positive(kName, "mini_batch", options_.mini_batch);
    if (options_.depth < 1 || options_.depth > 4) {
      detail::fail(kName, "depth must be in [1, 4], got ", options_.depth);
    }
    if (options_.depth > 1) detail::require_positive(kName, "expansion", options_.expansion);
    if (options_.layer_norm && options_.key_dim != options_.value_dim) {
      detail::fail(kName, "layer_norm (with its residual) needs key_dim = value_dim, got ",
                   options_.key_dim, " and ", options_.value_dim);
    }
    const Index hidden =
        options_.depth > 1 ? detail::checked_product(kName, "expansion·key_dim", options_.expansion,
                                                     options_.key_dim)
                           : 0;  // no hidden layer: expansion is unused
    model_.dims.assign(std::size_t(options_.depth + 1), hidden);
    model_.dims.front() = options_.key_dim;
    model_.dims.back() = options_.value_dim;
    model_.activation = options_.activation;
    model_.bias = options_.bias;
    model_.layer_norm = options_.layer_norm;
    model_.ln_eps = options_.ln_eps;
    model_.loss_factor = Scalar(2);
    model_.adopt(kName, std::move(parameters),
                 options_.depth == 1 ? model_.zeros() : model_.default_weights());
  }

  /// The options.
  const Options& options() const { return options_; }
  /// The outer-loop parameters in use (the given ones, or the defaults).
  const Parameters& parameters() const { return model_.parameters; }

  /// The gates `LayerBase` checks and slices, all per token: `learning_rate` ≥ 0, `forgetting`
  /// and `momentum_decay` in [0, 1].
  static constexpr auto gates() {
    return std::tuple{detail::GateSpec{&Inputs::learning_rate, "learning_rate", 0.0, kInf},
                      detail::GateSpec{&Inputs::forgetting, "forgetting", 0.0, 1.0},
                      detail::GateSpec{&Inputs::momentum_decay, "momentum_decay", 0.0, 1.0}};
  }

  /// The state before any token: M_ref = M = the initial weights, S = 0, position 0.
  State initial_state() const {
    return {model_.parameters.initial, model_.parameters.initial, model_.zeros(), 0};
  }

  /// Throws `seqmem::invalid_argument` unless the state's weights have the memory's shapes and
  /// are finite, position is in [0, mini_batch), and, for `Form::parallel`, the call fits in
  /// the current mini-batch (position + T ≤ mini_batch).
  void check_state(Form form, Index T, const State& state) const {
    model_.check_weights(kName, "state.reference", state.reference);
    model_.check_weights(kName, "state.current", state.current);
    model_.check_weights(kName, "state.momentum", state.momentum);
    detail::require_mini_batch_position(kName, form, state.position, T, options_.mini_batch);
  }

  /// The math of one checked call with T > 0.
  void run(Form form, const Inputs& in, State& state, MatrixRef<Scalar> out) const {
    if (form == Form::recurrent) return recurrent(in, state, out);
    dual(form, in, state, out);
  }

 private:
  static constexpr double kInf = std::numeric_limits<double>::infinity();

  /// Ends the mini-batch when the position reached b: the next one takes gradients at M.
  void roll_over(State& state) const {
    if (state.position < options_.mini_batch) return;
    state.reference = state.current;
    state.position = 0;
  }

  /// The recurrent form's buffers, one per thread and layer type: a decode step allocates
  /// nothing once they have the layer's sizes.
  struct RecurrentWorkspace : detail::Workspace<Scalar> {};

  /// The definition, token by token.
  void recurrent(const Inputs& in, State& state, MatrixRef<Scalar>& out) const {
    detail::Workspace<Scalar>& ws = detail::thread_workspace<RecurrentWorkspace>();
    for (Index t = 0; t < in.q.rows(); ++t) {
      model_.trace(state.reference, in.k.row(t), in.v.row(t), ws);
      const Scalar theta = in.learning_rate(t, 0), keep = Scalar(1) - in.forgetting(t, 0),
                   eta = in.momentum_decay(t, 0);
      for (std::size_t l = 0; l < model_.layers(); ++l) {
        // S ← η S − θ xᵀδ, then M ← (1 − α) M + S, row by row in one pass.
        detail::momentum_outer_product(state.momentum.W[l], state.current.W[l], eta, theta, keep,
                                       ws.X[l], ws.Delta[l]);
        if (options_.bias) {
          Matrix<Scalar>& Sb = state.momentum.b[l];
          Sb = eta * Sb - theta * ws.Delta[l];
          state.current.b[l] = keep * state.current.b[l] + Sb;
        }
      }
      model_.evaluate(state.current, in.q.row(t), ws, out.row(t));
      ++state.position;
      roll_over(state);
    }
  }

  /// Closed form per mini-batch segment (docs/math.md §5), from M_0 = current, S_0 = momentum:
  ///     M_t = β_t M_0 + f_t S_0 − Σ_{i≤t} G_{t,i} u_i,    S_t = m_t S_0 − Σ_{i≤t} N_{t,i} u_i
  /// with the coefficients built by the recurrences they satisfy:
  ///     m_t = η_t m_{t−1},  β_t = (1−α_t) β_{t−1},  f_t = (1−α_t) f_{t−1} + m_t,
  ///     N_{t,i} = η_t N_{t−1,i},  G_{t,i} = (1−α_t) G_{t−1,i} + N_{t,i},  N_{i,i} = G_{i,i} = θ_i.
  /// Inside the call the momentum is kept as S = σ·state.momentum: its decay by m is a
  /// product of scalars, and the weights are rescaled only when σ gets small (and at the end).
  void dual(Form form, const Inputs& in, State& state, MatrixRef<Scalar>& out) const {
    const Index T = in.q.rows();
    detail::Workspace<Scalar> ws;  // ws.E holds G
    Vector<Scalar> m, beta, f, sigma_f, last_row, n_row;
    Scalar sigma = 1;
    // After a roll-over of its own, M_ref = M: the trace reads M, and the copy into
    // state.reference is made once, when the call ends.
    bool reference_is_current = false;
    for (Index begin = 0; begin < T;) {
      const Index n =
          form == Form::parallel ? T : std::min(options_.mini_batch - state.position, T - begin);
      if (reference_is_current && n < options_.mini_batch) {  // the call ends inside this one
        state.reference = state.current;
        reference_is_current = false;
      }
      model_.trace(reference_is_current ? state.current : state.reference,
                   in.k.middleRows(begin, n), in.v.middleRows(begin, n), ws);
      m.resize(n);
      beta.resize(n);
      f.resize(n);
      n_row.resize(n);  // N_{t,·}, row t as t advances
      Matrix<Scalar>& G = ws.E;
      G.setZero(n, n);
      for (Index t = 0; t < n; ++t) {
        const Scalar theta = in.learning_rate(begin + t, 0),
                     keep = Scalar(1) - in.forgetting(begin + t, 0),
                     eta = in.momentum_decay(begin + t, 0);
        m(t) = eta * (t ? m(t - 1) : Scalar(1));
        beta(t) = keep * (t ? beta(t - 1) : Scalar(1));
        f(t) = keep * (t ? f(t - 1) : Scalar(0)) + m(t);
        n_row.head(t) *= eta;
        n_row(t) = theta;
        if (t > 0) G.row(t).head(t) = keep * G.row(t - 1).head(t) + n_row.head(t).transpose();
        G(t, t) = theta;
      }
      sigma_f = sigma * f;
      const std::array<detail::WeightedBase<Scalar>, 2> bases{
          {{&beta, &state.current}, {&sigma_f, &state.momentum}}};
      model_.dual_outputs(in.q.middleRows(begin, n), bases, ws, out.middleRows(begin, n));
      // The segment's last token: M first (it reads S_0), then S.
      const Index last = n - 1;
      detail::scale_add(state.current, beta(last), sigma_f(last), state.momentum);
      last_row = -G.row(last).transpose();
      model_.add_gradients(state.current, last_row, ws);
      sigma *= m(last);
      if (sigma < kRescaleBelow) {  // (m = 0, η = 0 somewhere, makes S_0's part exactly 0)
        detail::scale(state.momentum, sigma);
        sigma = 1;
      }
      last_row = n_row * (Scalar(-1) / sigma);
      model_.add_gradients(state.momentum, last_row, ws);
      state.position += n;
      reference_is_current = state.position == options_.mini_batch;
      if (reference_is_current) state.position = 0;
      begin += n;
    }
    if (sigma != Scalar(1)) detail::scale(state.momentum, sigma);
    if (reference_is_current) state.reference = state.current;
  }

  /// σ below which dual() folds σ into the momentum weights: they then hold S/σ ≤ 2^40·|S|.
  static constexpr Scalar kRescaleBelow = Scalar(0x1p-40);

  Options options_;
  detail::InnerModel<Scalar> model_;
};

}  // namespace seqmem
