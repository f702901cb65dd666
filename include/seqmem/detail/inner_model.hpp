#pragma once

/// @file
/// The engine shared by TTT (docs/math.md §4) and Titans (docs/math.md §5): an inner model (a stack
/// of dense layers, optional residual + LayerNorm) trained at test time, its closed-form per-token
/// gradients, and the dual form that evaluates queries at weights
///
///     P_t = Σ_r coef_r(t) · Base_r − Σ_{i≤t} E_{t,i} u_i            (u_i = ∇ℓ(P_ref; k_i, v_i))
///
/// without materializing any per-token weights. TTT's mini-batch gradient descent and
/// Titans' momentum with forgetting are both of this shape; they differ only in the bases,
/// the coefficients and the lower-triangular E (see layers/ttt.hpp, layers/titans.hpp).

#include <array>
#include <cmath>
#include <numbers>
#include <optional>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "seqmem/core/types.hpp"
#include "seqmem/core/weights.hpp"
#include "seqmem/detail/checks.hpp"
#include "seqmem/detail/matmul.hpp"

namespace seqmem {

namespace detail {

/// √(2/π), the GELU-tanh constant.
template <class Scalar>
constexpr Scalar kGeluScale = Scalar(std::numbers::sqrt2* std::numbers::inv_sqrtpi);

/// out = act(z) elementwise, vectorized (Eigen's packet tanh/exp):
/// gelu_tanh(x) = ½x(1 + th), th = tanh(√(2/π)(x + 0.044715x³)); silu(x) = x·s, s = 1/(1 + e^−x).
/// `inner` keeps th or s for the derivative.
template <class Scalar, class Out>
void activate(Activation a, const Matrix<Scalar>& z, Matrix<Scalar>& inner, Out&& out) {
  const auto x = z.array();
  if (a == Activation::silu) {
    inner = (Scalar(1) / (Scalar(1) + (-x).exp())).matrix();
    out = (x * inner.array()).matrix();
  } else {
    inner = (kGeluScale<Scalar> * (x + Scalar(0.044715) * x.cube())).tanh().matrix();
    out = (Scalar(0.5) * x * (Scalar(1) + inner.array())).matrix();
  }
}

/// out = act(z) when the derivative is not needed (one pass, nothing kept).
template <class Scalar, class Out>
void activate(Activation a, const Matrix<Scalar>& z, Out&& out) {
  const auto x = z.array();
  if (a == Activation::silu) {
    out = (x / (Scalar(1) + (-x).exp())).matrix();
  } else {
    out = (Scalar(0.5) * x *
           (Scalar(1) + (kGeluScale<Scalar> * (x + Scalar(0.044715) * x.cube())).tanh()))
              .matrix();
  }
}

/// g ⊙= act'(z) with the exact derivatives, from `inner` of activate(a, z, inner, …):
/// gelu_tanh'(x) = ½(1 + th) + ½x(1 − th²)·√(2/π)(1 + 3·0.044715x²); silu'(x) = s(1 + x(1 − s)).
/// With `ttt_lm_gelu_bwd`, gelu_tanh' is ttt-lm-pytorch's `gelu_bwd` instead: the same formula
/// with its rounded constants, th = tanh(0.79788456·x(1 + 0.044715x²)) and
/// √(2/π)(1 + 3·0.044715x²) written 0.79788456 + 0.1070322243x² (golden-layers README, TTT).
template <class Scalar>
void multiply_by_activation_derivative(Activation a, const Matrix<Scalar>& z,
                                       const Matrix<Scalar>& inner, Matrix<Scalar>& g,
                                       bool ttt_lm_gelu_bwd = false) {
  const auto x = z.array();
  if (a == Activation::silu) {
    const auto s = inner.array();
    g.array() *= s * (Scalar(1) + x * (Scalar(1) - s));
    return;
  }
  if (ttt_lm_gelu_bwd) {
    const Eigen::Array<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> th =
        (Scalar(0.79788456) * x * (Scalar(1) + Scalar(0.044715) * x.square())).tanh();
    g.array() *= Scalar(0.5) * x * (Scalar(1) - th.square()) *
                     (Scalar(0.79788456) + Scalar(0.1070322243) * x.square()) +
                 Scalar(0.5) * (Scalar(1) + th);
    return;
  }
  const Scalar k = kGeluScale<Scalar>;
  const auto th = inner.array();
  g.array() *= Scalar(0.5) * (Scalar(1) + th) + Scalar(0.5) * x * (Scalar(1) - th.square()) * k *
                                                    (Scalar(1) + Scalar(3 * 0.044715) * x.square());
}

/// z.row(t) += coef_t · b for a row b (coef null: all 1), row by row: each a vectorized pass
/// (Eigen's rowwise() broadcast runs scalar on row-major matrices).
template <class Scalar>
void add_to_rows(Matrix<Scalar>& z, const Matrix<Scalar>& b, const Vector<Scalar>* coef = nullptr) {
  for (Index t = 0; t < z.rows(); ++t) {
    if (coef == nullptr) {
      z.row(t) += b.row(0);
    } else {
      z.row(t) += (*coef)(t)*b.row(0);
    }
  }
}

/// The rank-1 weight updates of the primal (token-by-token) forms, written with Eigen's packets
/// (explicit SIMD): one pass over the rows of the d_l×d_{l+1} row-major matrices, every matrix
/// read and written once per token, and nothing left to the compiler's auto-vectorizer or
/// inliner. A `lazyProduct` outer product is vectorized by GCC only at -O3 (at -O2 TTT-Linear's
/// recurrent form took 2.9× its -O3 time), and one Eigen row expression per row is a function
/// call per row at -O2 (a third of the time at d = 64). Same arithmetic as the expressions
/// written in the comments, up to the compiler's contraction of a·b + c into an FMA.
template <class Scalar>
struct RowPackets {
  using Packet = typename Eigen::internal::packet_traits<Scalar>::type;
  static constexpr Index size = Eigen::internal::packet_traits<Scalar>::size;
  static Packet load(const Scalar* p) { return Eigen::internal::ploadu<Packet>(p); }
  static Packet broadcast(Scalar s) { return Eigen::internal::pset1<Packet>(s); }
};

/// TTT: G += a·xᵀδ and w = R − c·G (the token's weights), in one pass. x is `1×rows`, δ
/// `1×cols` (rows of row-major matrices); w is resized.
template <class Scalar>
void add_outer_product_and_materialize(Matrix<Scalar>& G, Scalar a, const Matrix<Scalar>& x,
                                       const Matrix<Scalar>& delta, const Matrix<Scalar>& R,
                                       Scalar c, Matrix<Scalar>& w) {
  using P = RowPackets<Scalar>;
  using Eigen::internal::padd, Eigen::internal::pmul, Eigen::internal::psub,
      Eigen::internal::pstoreu;
  const Index n = G.cols();
  w.resize(G.rows(), n);
  const Scalar* d = delta.data();
  const auto pc = P::broadcast(c);
  for (Index i = 0; i < G.rows(); ++i) {
    Scalar* g = G.data() + i * n;
    const Scalar* r = R.data() + i * n;
    Scalar* o = w.data() + i * n;
    const Scalar s = a * x(0, i);
    const auto ps = P::broadcast(s);
    Index j = 0;
    for (; j + P::size <= n; j += P::size) {
      const auto gj = padd(P::load(g + j), pmul(ps, P::load(d + j)));
      pstoreu(g + j, gj);
      pstoreu(o + j, psub(P::load(r + j), pmul(pc, gj)));
    }
    for (; j < n; ++j) {
      g[j] += s * d[j];
      o[j] = r[j] - c * g[j];
    }
  }
}

/// Titans: S ← η·S − θ·xᵀδ and M ← keep·M + S, in one pass (x `1×rows`, δ `1×cols`).
template <class Scalar>
void momentum_outer_product(Matrix<Scalar>& S, Matrix<Scalar>& M, Scalar eta, Scalar theta,
                            Scalar keep, const Matrix<Scalar>& x, const Matrix<Scalar>& delta) {
  using P = RowPackets<Scalar>;
  using Eigen::internal::padd, Eigen::internal::pmul, Eigen::internal::psub,
      Eigen::internal::pstoreu;
  const Index n = S.cols();
  const Scalar* d = delta.data();
  const auto peta = P::broadcast(eta), pkeep = P::broadcast(keep);
  for (Index i = 0; i < S.rows(); ++i) {
    Scalar* sr = S.data() + i * n;
    Scalar* m = M.data() + i * n;
    const Scalar t = theta * x(0, i);
    const auto pt = P::broadcast(t);
    Index j = 0;
    for (; j + P::size <= n; j += P::size) {
      const auto sj = psub(pmul(peta, P::load(sr + j)), pmul(pt, P::load(d + j)));
      pstoreu(sr + j, sj);
      pstoreu(m + j, padd(pmul(pkeep, P::load(m + j)), sj));
    }
    for (; j < n; ++j) {
      sr[j] = eta * sr[j] - t * d[j];
      m[j] = keep * m[j] + sr[j];
    }
  }
}

/// Row-wise LayerNorm with biased variance, LN(z) = γ ⊙ x̂ + β, x̂ = (z − μ)/σ, σ = √(var + ε),
/// in the two fused forms the engine needs (docs/math.md §4): the residual output x + LN(z) and the
/// gradient of the loss (factor/2)·‖x + LN(z) − v‖² w.r.t. z. Each row is one pass whose
/// temporaries stay in registers for the common head widths 64 and 128 (fixed-size Eigen
/// arrays, about 30 % faster there than dynamic rows); other widths use scratch rows.
template <class Scalar>
class LayerNorm {
 public:
  /// out = x + γ ⊙ x̂ + β.
  void residual_output(MatrixCRef<Scalar> z, MatrixCRef<Scalar> x, const Matrix<Scalar>& weight,
                       const Matrix<Scalar>& bias, Scalar eps, MatrixRef<Scalar> out) {
    by_width(z.cols(), [&]<int D>() {
      using CMap = Eigen::Map<const Eigen::Array<Scalar, 1, D>>;
      using Map = Eigen::Map<Eigen::Array<Scalar, 1, D>>;
      const Index d = z.cols();
      const CMap w(weight.data(), d), b(bias.data(), d);
      auto xhat = row<D>(xhat_, d);
      for (Index i = 0; i < z.rows(); ++i) {
        const Scalar inv_sigma = normalize(CMap(z.row(i).data(), d), eps, xhat);
        Map(out.row(i).data(), d) = CMap(x.row(i).data(), d) + xhat * (inv_sigma * w) + b;
      }
    });
  }

  /// delta = ∂ℓ/∂z for ℓ = (factor/2)·‖x + LN(z) − v‖²: with ĝ = factor·(x + LN(z) − v) ⊙ γ,
  /// ∇z = (d·ĝ − Σĝ − x̂·Σ(ĝ ⊙ x̂)) / (d·σ). `delta` is resized.
  void loss_gradient(MatrixCRef<Scalar> z, MatrixCRef<Scalar> x, MatrixCRef<Scalar> v,
                     const Matrix<Scalar>& weight, const Matrix<Scalar>& bias, Scalar eps,
                     Scalar factor, Matrix<Scalar>& delta) {
    delta.resize(z.rows(), z.cols());
    by_width(z.cols(), [&]<int D>() {
      using CMap = Eigen::Map<const Eigen::Array<Scalar, 1, D>>;
      using Map = Eigen::Map<Eigen::Array<Scalar, 1, D>>;
      const Index d = z.cols();
      const CMap w(weight.data(), d), b(bias.data(), d);
      auto xhat = row<D>(xhat_, d);
      auto g = row<D>(g_, d);
      for (Index i = 0; i < z.rows(); ++i) {
        const Scalar inv_sigma = normalize(CMap(z.row(i).data(), d), eps, xhat);
        xhat *= inv_sigma;
        g = (xhat * w + b + CMap(x.row(i).data(), d) - CMap(v.row(i).data(), d)) * (factor * w);
        const Scalar sum_g = g.sum(), sum_gx = (g * xhat).sum();
        Map(delta.row(i).data(), d) =
            (Scalar(d) * g - sum_g - xhat * sum_gx) * (inv_sigma / Scalar(d));
      }
    });
  }

 private:
  /// Runs fn.template operator()<D>() with D = d for the widths with a fixed-size path.
  template <class Fn>
  static void by_width(Index d, Fn&& fn) {
    if (d == 64) return fn.template operator()<64>();
    if (d == 128) return fn.template operator()<128>();
    fn.template operator()<Eigen::Dynamic>();
  }

  /// A row temporary: a fixed-size array (in registers) or, for dynamic widths, `scratch`.
  template <int D>
  static auto row(Eigen::Array<Scalar, 1, Eigen::Dynamic>& scratch, Index d) {
    if constexpr (D == Eigen::Dynamic) {
      scratch.resize(d);
      return Eigen::Map<Eigen::Array<Scalar, 1, D>>(scratch.data(), d);
    } else {
      return Eigen::Array<Scalar, 1, D>();
    }
  }

  /// out = z − μ; returns 1/σ.
  template <class Row, class Out>
  static Scalar normalize(const Row& z, Scalar eps, Out& out) {
    out = z - z.mean();
    return Scalar(1) / std::sqrt(out.square().sum() / Scalar(z.size()) + eps);
  }

  Eigen::Array<Scalar, 1, Eigen::Dynamic> xhat_, g_;  // rows of the dynamic-width path
};

/// The trace of a segment's keys at the reference weights — each layer's input X_l,
/// pre-activation Z_l and the gradient Δ_l of the loss w.r.t. its output; token i's gradient
/// is then ∇W_l = x_{l,i}ᵀ δ_{l,i}, ∇b_l = δ_{l,i} — and the scratch of the forms. One per
/// call, reused across its segments and tokens, so the forms allocate nothing after the
/// first mini-batch.
template <class Scalar>
struct Workspace {
  std::vector<Matrix<Scalar>> X, Z, Delta;
  std::vector<Matrix<Scalar>> inner;  ///< per hidden layer: `inner` of activate(Z_l)
  LayerNorm<Scalar> ln;
  Matrix<Scalar> E;  ///< the dual form's lower-triangular token weights
  /// per layer l: the queries' input H_l (l ≥ 1; H_0 is the queries) and pre-activation Z̄_l,
  /// kept apart so that a decode step's buffers keep their sizes
  std::vector<Matrix<Scalar>> H, Zq;
  Matrix<Scalar> attn, hw, scaled;
  std::array<Matrix<Scalar>, 2> transposed;  ///< scratch of multiply_by_transpose
  Weights<Scalar> weights;                   ///< materialized per-token weights (primal forms)
};

/// Throws unless a TTT/Titans state's position is inside its mini-batch and, for the
/// parallel form, the call fits in what is left of it.
inline void require_mini_batch_position(std::string_view where, Form form, Index position,
                                        Index tokens, Index mini_batch) {
  if (position < 0 || position >= mini_batch) {
    fail(where, "state.position must be in [0, ", mini_batch, "), got ", position);
  }
  if (form == Form::parallel && position + tokens > mini_batch) {
    fail(where, "the parallel form needs position + T <= mini_batch (", mini_batch, "), got ",
         position, " + ", tokens, "; use Form::chunkwise");
  }
}

/// One weighted set of weights in P_t = Σ_r coef_r(t) · Base_r − Σ_i E_{t,i} u_i.
template <class Scalar>
struct WeightedBase {
  const Vector<Scalar>* coef;  ///< one coefficient per token of the segment; null: all 1
  const Weights<Scalar>* base;
};

/// The inner model: dense layers d_0 → d_1 → … → d_L with an activation between them,
/// optional biases, optional residual + LayerNorm f(x) = x + LN(f_res(x)), and the loss
/// (loss_factor/2)·‖f(k) − v‖² (TTT: factor 1, the ½ loss; Titans: factor 2, the full sum).
template <class Scalar>
struct InnerModel {
  std::vector<Index> dims;
  Activation activation = Activation::gelu_tanh;
  bool bias = true;
  bool layer_norm = true;
  Scalar ln_eps = Scalar(1e-6);
  Scalar loss_factor = Scalar(1);
  /// ttt-lm-pytorch's gelu_bwd for gelu_tanh' (see multiply_by_activation_derivative).
  bool ttt_lm_gelu_bwd = false;
  /// Fixed (outer-loop) parameters: the initial weights and LayerNorm's weight and bias.
  InnerParameters<Scalar> parameters;

  /// The one parameter path of TTT and Titans: checks ln_eps, takes `given` (or, when absent,
  /// `default_initial`; LN weight 1 and bias 0 when absent or empty), checks every shape and value
  /// and keeps them. `dims`, `bias` and `layer_norm` must be set before.
  void adopt(std::string_view where, std::optional<InnerParameters<Scalar>> given,
             Weights<Scalar> default_initial) {
    if (!(ln_eps > Scalar(0))) fail(where, "ln_eps must be > 0, got ", ln_eps);
    const Index d = dims.back();
    if (!given) {
      given = InnerParameters<Scalar>{std::move(default_initial), Matrix<Scalar>::Ones(1, d),
                                      Matrix<Scalar>::Zero(1, d)};
    }
    // Empty LayerNorm parameters mean the defaults (weight 1, bias 0).
    if (given->ln_weight.size() == 0) given->ln_weight = Matrix<Scalar>::Ones(1, d);
    if (given->ln_bias.size() == 0) given->ln_bias = Matrix<Scalar>::Zero(1, d);
    check_weights(where, "parameters.initial", given->initial);
    require_shape(where, "parameters.ln_weight", given->ln_weight, 1, d);
    require_shape(where, "parameters.ln_bias", given->ln_bias, 1, d);
    parameters = std::move(*given);
  }

  Index depth() const { return static_cast<Index>(dims.size()) - 1; }
  std::size_t layers() const { return dims.size() - 1; }

  /// Zero weights of the model's shapes.
  Weights<Scalar> zeros() const {
    Weights<Scalar> w;
    for (std::size_t l = 0; l < layers(); ++l) {
      w.W.push_back(Matrix<Scalar>::Zero(dims[l], dims[l + 1]));
      if (bias) w.b.push_back(Matrix<Scalar>::Zero(1, dims[l + 1]));
    }
    return w;
  }

  /// Small deterministic weights: W_l(i, j) = sin(1 + i·d_{l+1} + j) / √d_l, b = 0.
  Weights<Scalar> default_weights() const {
    Weights<Scalar> w = zeros();
    for (std::size_t l = 0; l < layers(); ++l) {
      const Scalar scale = Scalar(1) / std::sqrt(Scalar(dims[l]));
      for (Index i = 0; i < w.W[l].rows(); ++i)
        for (Index j = 0; j < w.W[l].cols(); ++j)
          w.W[l](i, j) = scale * std::sin(Scalar(1 + i * w.W[l].cols() + j));
    }
    return w;
  }

  /// Throws unless `w` has the model's shapes (and every value is finite). Allocates nothing
  /// unless it throws: a decode step checks its state this way.
  void check_weights(std::string_view where, std::string_view name,
                     const Weights<Scalar>& w) const {
    if (w.W.size() != layers()) {
      fail(where, name, ".W must hold ", layers(), " matrices, got ", w.W.size());
    }
    if (w.b.size() != (bias ? layers() : 0)) {
      fail(where, name, ".b must hold ", bias ? layers() : 0, " rows, got ", w.b.size());
    }
    for (std::size_t l = 0; l < layers(); ++l) {
      check_matrix(where, name, ".W[", l, w.W[l], dims[l], dims[l + 1]);
      if (bias) check_matrix(where, name, ".b[", l, w.b[l], 1, dims[l + 1]);
    }
  }

  /// out = f(x; P) for rows x (the primal forward).
  void evaluate(const Weights<Scalar>& P, MatrixCRef<Scalar> x, Workspace<Scalar>& ws,
                MatrixRef<Scalar> out) const {
    ws.H.resize(layers());
    ws.Zq.resize(layers());
    for (std::size_t l = 0; l < layers(); ++l) {
      const MatrixCRef<Scalar> h = l == 0 ? x : MatrixCRef<Scalar>(ws.H[l]);
      Matrix<Scalar>& z = ws.Zq[l];
      multiply(z, h, P.W[l]);
      if (bias) add_to_rows(z, P.b[l]);
      if (l + 1 < layers()) activate(activation, z, ws.H[l + 1]);
    }
    finish(x, ws, out);
  }

  Matrix<Scalar> evaluate(const Weights<Scalar>& P, MatrixCRef<Scalar> x) const {
    Workspace<Scalar> ws;
    Matrix<Scalar> out(x.rows(), dims.back());
    evaluate(P, x, ws, out);
    return out;
  }

  /// Forward at P on the keys, loss gradient, backward: fills ws.X, ws.Z, ws.Delta.
  void trace(const Weights<Scalar>& P, MatrixCRef<Scalar> k, MatrixCRef<Scalar> v,
             Workspace<Scalar>& ws) const {
    const std::size_t L = layers();
    ws.X.resize(L);
    ws.Z.resize(L);
    ws.Delta.resize(L);
    ws.inner.resize(L);
    ws.X[0] = k;
    for (std::size_t l = 0; l < L; ++l) {
      multiply(ws.Z[l], ws.X[l], P.W[l]);
      if (bias) add_to_rows(ws.Z[l], P.b[l]);
      if (l + 1 < L) activate(activation, ws.Z[l], ws.inner[l], ws.X[l + 1]);
    }
    if (layer_norm) {  // f(k) = k + LN(z)
      ws.ln.loss_gradient(ws.Z[L - 1], k, v, parameters.ln_weight, parameters.ln_bias, ln_eps,
                          loss_factor, ws.Delta[L - 1]);
    } else {
      ws.Delta[L - 1] = loss_factor * (ws.Z[L - 1] - v);
    }
    for (std::size_t l = L - 1; l-- > 0;) {
      multiply_by_transpose(ws.Delta[l], ws.Delta[l + 1], P.W[l + 1], ws.transposed);
      multiply_by_activation_derivative(activation, ws.Z[l], ws.inner[l], ws.Delta[l],
                                        ttt_lm_gelu_bwd);
    }
  }

  Workspace<Scalar> trace(const Weights<Scalar>& P, MatrixCRef<Scalar> k,
                          MatrixCRef<Scalar> v) const {
    Workspace<Scalar> ws;
    trace(P, k, v, ws);
    return ws;
  }

  /// target += Σ_i e_i u_i over the traced tokens: W_l += X_lᵀ diag(e) Δ_l, b_l += eᵀ Δ_l.
  void add_gradients(Weights<Scalar>& target, const Vector<Scalar>& e,
                     Workspace<Scalar>& ws) const {
    for (std::size_t l = 0; l < layers(); ++l) {
      if (ws.X[l].cols() < ws.Delta[l].cols()) {  // scale the narrower factor
        ws.scaled = e.asDiagonal() * ws.X[l];
        multiply_transposed(target.W[l], ws.scaled, ws.Delta[l], true);
      } else {
        ws.scaled = e.asDiagonal() * ws.Delta[l];
        multiply_transposed(target.W[l], ws.X[l], ws.scaled, true);
      }
      if (bias) target.b[l].noalias() += e.transpose() * ws.Delta[l];
    }
  }

  /// The dual form: out = outputs of queries q_t at
  /// P_t = Σ_r coef_r(t) Base_r − Σ_{i≤t} E_{t,i} u_i, layer by layer with the query's own
  /// activations (docs/math.md §4, §5):
  ///     Z̄_l = Σ_r diag(coef_r)(H_l W_r,l + b_r,l) − (E ⊙ (H_l X_lᵀ + 1)) Δ_l
  /// (the `+ 1` and the b terms only with biases). Needs the trace of the same segment in ws.
  void dual_outputs(MatrixCRef<Scalar> q, std::span<const WeightedBase<Scalar>> bases,
                    Workspace<Scalar>& ws, MatrixRef<Scalar> out) const {
    ws.H.resize(layers());
    ws.Zq.resize(layers());
    for (std::size_t l = 0; l < layers(); ++l) {
      const MatrixCRef<Scalar> h = l == 0 ? q : MatrixCRef<Scalar>(ws.H[l]);
      Matrix<Scalar>& z = ws.Zq[l];
      multiply_by_transpose(ws.attn, h, ws.X[l], ws.transposed);
      if (bias) ws.attn.array() += Scalar(1);
      ws.attn.array() *= -ws.E.array();
      multiply(z, ws.attn, ws.Delta[l]);
      for (const auto& [coef, base] : bases) {
        if (coef == nullptr) {
          multiply(z, h, base->W[l], true);
        } else if (h.cols() <= base->W[l].cols()) {  // scale the narrower side: H here
          ws.scaled = coef->asDiagonal() * h;
          multiply(z, ws.scaled, base->W[l], true);
        } else {  // … or H·W
          multiply(ws.hw, h, base->W[l]);
          z.noalias() += coef->asDiagonal() * ws.hw;  // not .colwise(): scalar below -O3
        }
        if (bias) add_to_rows(z, base->b[l], coef);
      }
      if (l + 1 < layers()) activate(activation, z, ws.H[l + 1]);
    }
    finish(q, ws, out);
  }

 private:
  /// Throws unless m, named `name` `part` l "]", is rows×cols and finite.
  static void check_matrix(std::string_view where, std::string_view name, std::string_view part,
                           std::size_t l, const Matrix<Scalar>& m, Index rows, Index cols) {
    if (m.rows() != rows || m.cols() != cols) {
      fail(where, name, part, l, "] must be ", rows, "x", cols, ", got ", m.rows(), "x", m.cols());
    }
    if (!all_finite(m)) fail(where, name, part, l, "] must be finite");
  }

  /// out = x + LN(z) with residual + LayerNorm, z itself otherwise (z: the last layer's Z̄).
  void finish(MatrixCRef<Scalar> x, Workspace<Scalar>& ws, MatrixRef<Scalar> out) const {
    const Matrix<Scalar>& z = ws.Zq.back();
    if (!layer_norm) {
      out = z;
      return;
    }
    ws.ln.residual_output(z, x, parameters.ln_weight, parameters.ln_bias, ln_eps, out);
  }
};

/// a = α·a + β·b, matrix by matrix (same shapes).
template <class Scalar>
void scale_add(Weights<Scalar>& a, Scalar alpha, Scalar beta, const Weights<Scalar>& b) {
  for (std::size_t l = 0; l < a.W.size(); ++l)
    a.W[l] = alpha * a.W[l] + beta * b.W[l];
  for (std::size_t l = 0; l < a.b.size(); ++l)
    a.b[l] = alpha * a.b[l] + beta * b.b[l];
}

template <class Scalar>
void scale(Weights<Scalar>& a, Scalar alpha) {
  for (auto& m : a.W)
    m *= alpha;
  for (auto& m : a.b)
    m *= alpha;
}

template <class Scalar>
bool is_zero(const Weights<Scalar>& w) {
  for (const auto& m : w.W)
    if (!(m.array() == Scalar(0)).all()) return false;
  for (const auto& m : w.b)
    if (!(m.array() == Scalar(0)).all()) return false;
  return true;
}

}  // namespace detail
}  // namespace seqmem
