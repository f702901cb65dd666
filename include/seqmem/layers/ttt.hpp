#pragma once

/// @file
/// TTT-Linear and TTT-MLP: test-time training with mini-batch gradient descent, primal
/// (recurrent) and dual (chunkwise, parallel) forms (docs/math.md §4).

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <optional>
#include <span>
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

/// The inner model of a TTT layer.
enum class TTTModel {
  linear,  ///< f_res(x) = x W + b
  mlp,     ///< f_res(x) = gelu_tanh(x W1 + b1) W2 + b2, hidden width expansion·key_dim
};

/// TTT layer (docs/math.md §4). Inner model f(x) = x + LN(f_res(x)) (or f_res alone with
/// `layer_norm` off), loss ½‖f(k) − v‖², mini-batch gradient descent: token i of a
/// mini-batch that starts at weights W_ref sees
///
///     W_i = W_ref − c_i Σ_{j≤i} a_j ∇ℓ(W_ref; k_j, v_j),    o_i = f(q_i; W_i)
///
/// with c_i = max(0, 1/(i+1) + λ_i) (token-index scaling; 1 when off) and the next
/// mini-batch starting at the weights of its last token. Calls may stop and start anywhere
/// inside a mini-batch. Use the names TTTLinear and TTTMLP.
template <class Scalar_, TTTModel Model>
class TTT : public LayerBase<TTT<Scalar_, Model>> {
 public:
  /// The scalar type: float or double.
  using Scalar = Scalar_;
  static_assert(std::is_floating_point_v<Scalar>, "seqmem layers take float or double");

  /// Construction options (an aggregate, for designated initializers).
  struct Options {
    Index key_dim = 0;  ///< width d of q and k
    /// Width of v and of the output: the inner model's residual needs value_dim = key_dim
    /// (0: key_dim).
    Index value_dim = 0;
    Index mini_batch = 16;  ///< b: a model hyperparameter, not a tuning knob
    /// Scale the accumulated gradient of mini-batch position i by c_i = max(0, 1/(i+1) + λ_i);
    /// off: c_i = 1.
    bool token_index_scaling = true;
    /// λ_i, one per mini-batch position (empty: all 0); used with token_index_scaling.
    std::vector<Scalar> token_scale_offset = {};
    bool layer_norm = true;  ///< residual + LayerNorm around the inner model
    /// Give every inner layer a bias b_l.
    bool bias = true;
    /// ε of the inner LayerNorm; must be > 0.
    Scalar ln_eps = Scalar(1e-6);
    Index expansion = 4;  ///< TTT-MLP hidden width = expansion·key_dim
    /// TTT-MLP: take gelu_tanh' as ttt-lm-pytorch's `gelu_bwd` (its rounded constants, about
    /// 1e-9 relative from the exact derivative) to match that implementation.
    bool ttt_lm_gelu_bwd = false;
    /// Reject q, k, v containing NaN or Inf (one pass over the inputs); off skips the check.
    bool check_finite = true;
  };

  /// Outer-loop parameters, learned elsewhere: the initial inner weights and the fixed
  /// LayerNorm weight and bias (`1×key_dim`). Defaults: the documented deterministic init of
  /// InnerModel::default_weights (W(i, j) = sin(1 + i·cols + j)/√rows, b = 0), LN weight 1,
  /// LN bias 0.
  using Parameters = InnerParameters<Scalar>;

  /// q, k, v `T×key_dim`; `learning_rate` `T×1`: the per-token inner learning rates
  /// a_t ≥ 0 (η_t in docs/math.md §4).
  struct Inputs {
    /// Queries, `T×key_dim`: the inputs the updated inner model is evaluated at.
    InputRef<Scalar> q;
    /// Keys, `T×key_dim`: the inner model's training inputs.
    InputRef<Scalar> k;
    /// Values, `T×key_dim`: its training targets.
    InputRef<Scalar> v;
    /// Inner learning rates a_t ≥ 0, `T×1`.
    GateRef<Scalar> learning_rate;
  };

  /// The reference weights of the current mini-batch, the accumulated weighted gradient
  /// G = Σ_{j so far} a_j ∇_j (same shapes), and the position inside the mini-batch.
  struct State {
    /// W_ref: the inner weights at the start of the current mini-batch.
    Weights<Scalar> reference;
    /// G: the learning-rate-weighted gradient accumulated since then (shapes as `reference`).
    Weights<Scalar> gradient;
    /// Tokens of the current mini-batch seen so far, in [0, mini_batch).
    Index position = 0;
  };

  /// The state in state files (core/state_layout.hpp). The width is recorded as "dim" (the
  /// file format's name for it since version 1).
  struct StateLayout {
    /// The layer kind written in state files: "TTTLinear" or "TTTMLP".
    static constexpr std::string_view kind = Model == TTTModel::linear ? "TTTLinear" : "TTTMLP";
    /// The options that shape the state: dim (key_dim), mini_batch, bias and, for TTT-MLP,
    /// expansion.
    static std::vector<StateParam> params(const TTT& layer) {
      const auto& o = layer.options();
      std::vector<StateParam> p{{"dim", o.key_dim}, {"mini_batch", o.mini_batch}, {"bias", o.bias}};
      if (Model == TTTModel::mlp) p.push_back({"expansion", o.expansion});
      return p;
    }
    /// Visits the parts of the state in file order: every `reference.W[l]`, then every
    /// `reference.b[l]`, the same for `gradient`, then the integer `position`.
    template <class S, class V>
    static void visit(const TTT& layer, S& state, V& v) {
      detail::visit_weights("reference", state.reference, v);
      detail::visit_weights("gradient", state.gradient, v);
      v.integer("position", state.position, 0, layer.options().mini_batch - 1);
    }
  };

  /// The layer's name in error messages: "TTTLinear" or "TTTMLP".
  static constexpr const char* kName = Model == TTTModel::linear ? "TTTLinear" : "TTTMLP";

  /// Checks `options` and takes the outer-loop `parameters` (defaults when absent, see
  /// `Parameters`).
  /// @throws seqmem::invalid_argument unless key_dim, mini_batch and (TTT-MLP) expansion are
  /// positive, value_dim is 0 or key_dim, token_scale_offset holds 0 or mini_batch values,
  /// ln_eps > 0 and the given parameters have the inner model's shapes and are finite.
  explicit TTT(const Options& options, std::optional<Parameters> parameters = std::nullopt)
      : options_(options) {
    detail::require_positive(kName, "key_dim", options_.key_dim);
    if (options_.value_dim == 0) options_.value_dim = options_.key_dim;
    if (options_.value_dim != options_.key_dim) {
      detail::fail(kName, "value_dim must equal key_dim (", options_.key_dim, "), got ",
                   options_.value_dim);
    }
    detail::require_positive(kName, "mini_batch", options_.mini_batch);
    if (Model == TTTModel::mlp) detail::require_positive(kName, "expansion", options_.expansion);
    const auto lambda_count = static_cast<Index>(options_.token_scale_offset.size());
    if (lambda_count != 0 && lambda_count != options_.mini_batch) {
      detail::fail(kName, "token_scale_offset must hold mini_batch (", options_.mini_batch,
                   ") values or none, got ", lambda_count);
    }
    const Index d = options_.key_dim;
    const Index hidden =
        Model == TTTModel::linear
            ? d
            : detail::checked_product(kName, "expansion·key_dim", options_.expansion, d);
    model_.dims =
        Model == TTTModel::linear ? std::vector<Index>{d, d} : std::vector<Index>{d, hidden, d};
    model_.activation = Activation::gelu_tanh;
    model_.bias = options_.bias;
    model_.layer_norm = options_.layer_norm;
    model_.ln_eps = options_.ln_eps;
    model_.loss_factor = Scalar(1);
    model_.ttt_lm_gelu_bwd = options_.ttt_lm_gelu_bwd;
    model_.adopt(kName, std::move(parameters), model_.default_weights());
    for (Index i = 0; i < options_.mini_batch; ++i) {
      Scalar c = Scalar(1);
      if (options_.token_index_scaling) {
        const Scalar lambda =
            lambda_count ? options_.token_scale_offset[std::size_t(i)] : Scalar(0);
        c = std::max(Scalar(0), Scalar(1) / Scalar(i + 1) + lambda);
      }
      token_scale_.push_back(c);
    }
  }

  /// The options, with value_dim filled in.
  const Options& options() const { return options_; }
  /// The outer-loop parameters in use (the given ones, or the defaults).
  const Parameters& parameters() const { return model_.parameters; }

  /// The gates `LayerBase` checks and slices: `learning_rate` ≥ 0, per token.
  static constexpr auto gates() {
    return std::tuple{detail::GateSpec{&Inputs::learning_rate, "learning_rate", 0.0, kInf}};
  }

  /// c_i of mini-batch position i.
  Scalar token_scale(Index i) const { return token_scale_[std::size_t(i)]; }

  /// The state before any token: W_ref = the initial weights, G = 0, position 0.
  State initial_state() const { return {model_.parameters.initial, model_.zeros(), 0}; }

  /// The weights the last token of the state used: W_ref − c_{p−1} G (W_ref at p = 0).
  Weights<Scalar> current_weights(const State& state) const {
    if (state.position == 0) return state.reference;
    Weights<Scalar> w;
    materialize(state, token_scale(state.position - 1), w);
    return w;
  }

  /// Throws `seqmem::invalid_argument` unless the state's weights have the inner model's shapes
  /// and are finite, position is in [0, mini_batch), and, for `Form::parallel`, the call fits in
  /// the current mini-batch (position + T ≤ mini_batch).
  void check_state(Form form, Index T, const State& state) const {
    model_.check_weights(kName, "state.reference", state.reference);
    model_.check_weights(kName, "state.gradient", state.gradient);
    detail::require_mini_batch_position(kName, form, state.position, T, options_.mini_batch);
  }

  /// The math of one checked call with T > 0.
  void run(Form form, const Inputs& in, State& state, MatrixRef<Scalar> out) const {
    if (form == Form::recurrent) return primal(in, state, out);
    dual(form, in, state, out);
  }

 private:
  static constexpr double kInf = std::numeric_limits<double>::infinity();

  /// w = W_ref − c·G.
  static void materialize(const State& state, Scalar c, Weights<Scalar>& w) {
    w = state.reference;
    detail::scale_add(w, Scalar(1), -c, state.gradient);
  }

  /// Ends the mini-batch when the state's position reached b: W_ref ← W_ref − c_{b−1} G.
  void roll_over(State& state) const {
    if (state.position < options_.mini_batch) return;
    detail::scale_add(state.reference, Scalar(1), -token_scale(options_.mini_batch - 1),
                      state.gradient);
    detail::scale(state.gradient, Scalar(0));
    state.position = 0;
  }

  /// The primal form's buffers, one per thread and layer type: a decode step allocates nothing
  /// once they have the layer's sizes (a thread alternating layers of one type but different
  /// sizes resizes them).
  struct RecurrentWorkspace : detail::Workspace<Scalar> {};

  /// The primal form, token by token: the definition.
  void primal(const Inputs& in, State& state, MatrixRef<Scalar>& out) const {
    detail::Workspace<Scalar>& ws = detail::thread_workspace<RecurrentWorkspace>();
    for (Index t = 0; t < in.q.rows(); ++t) {
      model_.trace(state.reference, in.k.row(t), in.v.row(t), ws);
      const Scalar a = in.learning_rate(t, 0), c = token_scale(state.position);
      Weights<Scalar>& w = ws.weights;  // W_ref − c·G, the token's weights
      w.W.resize(model_.layers());
      w.b.resize(options_.bias ? model_.layers() : 0);
      for (std::size_t l = 0; l < model_.layers(); ++l) {
        // G += a xᵀδ, then w = W_ref − c G, row by row in one pass.
        detail::add_outer_product_and_materialize(state.gradient.W[l], a, ws.X[l], ws.Delta[l],
                                                  state.reference.W[l], c, w.W[l]);
        if (options_.bias) {
          state.gradient.b[l] += a * ws.Delta[l];
          w.b[l] = state.reference.b[l] - c * state.gradient.b[l];
        }
      }
      model_.evaluate(ws.weights, in.q.row(t), ws, out.row(t));
      ++state.position;
      roll_over(state);
    }
  }

  /// The dual form, one segment (part of a mini-batch) at a time; parallel = one segment.
  void dual(Form form, const Inputs& in, State& state, MatrixRef<Scalar>& out) const {
    const Index T = in.q.rows(), b = options_.mini_batch;
    detail::Workspace<Scalar> ws;
    Vector<Scalar> a, minus_c;
    // G is zero at every mini-batch start the layer makes itself; while it is exactly zero its
    // base term (a product per layer) is skipped and a finished mini-batch updates W_ref
    // directly.
    bool gradient_is_zero = detail::is_zero(state.gradient);
    for (Index begin = 0; begin < T;) {
      const Index p = state.position;
      const Index n = form == Form::parallel ? T : std::min(b - p, T - begin);
      model_.trace(state.reference, in.k.middleRows(begin, n), in.v.middleRows(begin, n), ws);
      // P_t = 1·W_ref − c_t·G − Σ_{i≤t} E_{t,i} u_i with E_{t,i} = c_t a_i (docs/math.md §4)
      a.resize(n);
      minus_c.resize(n);
      ws.E.setZero(n, n);
      for (Index t = 0; t < n; ++t) {
        minus_c(t) = -token_scale(p + t);
        a(t) = in.learning_rate(begin + t, 0);
        for (Index i = 0; i <= t; ++i)
          ws.E(t, i) = -minus_c(t) * a(i);
      }
      const std::array<detail::WeightedBase<Scalar>, 2> bases{
          {{nullptr, &state.reference}, {&minus_c, &state.gradient}}};
      model_.dual_outputs(in.q.middleRows(begin, n),
                          std::span(bases.data(), gradient_is_zero ? 1 : 2), ws,
                          out.middleRows(begin, n));
      state.position += n;
      if (state.position == b && gradient_is_zero) {  // W_ref −= c_{b−1} Σ a_i u_i
        a *= -token_scale(b - 1);
        model_.add_gradients(state.reference, a, ws);
        state.position = 0;
      } else {  // G += Σ a_i u_i
        model_.add_gradients(state.gradient, a, ws);
        gradient_is_zero = false;
        if (state.position == b) {
          roll_over(state);
          gradient_is_zero = true;
        }
      }
      begin += n;
    }
  }

  Options options_;
  detail::InnerModel<Scalar> model_;
  std::vector<Scalar> token_scale_;
};

/// TTT-Linear: f_res(x) = x W + b (docs/math.md §4).
template <class Scalar>
using TTTLinear = TTT<Scalar, TTTModel::linear>;

/// TTT-MLP: f_res(x) = gelu_tanh(x W1 + b1) W2 + b2 (docs/math.md §4).
template <class Scalar>
using TTTMLP = TTT<Scalar, TTTModel::mlp>;

}  // namespace seqmem
