#pragma once

/// @file
/// The engine shared by TTT (MATH.md §4) and Titans (MATH.md §5): an inner model (a stack of
/// dense layers, optional residual + LayerNorm) trained at test time, its closed-form
/// per-token gradients, and the dual form that evaluates queries at weights
///
///     P_t = Σ_r coef_r(t) · Base_r − Σ_{i≤t} E_{t,i} u_i            (u_i = ∇ℓ(P_ref; k_i, v_i))
///
/// without materializing any per-token weights. TTT's mini-batch gradient descent and
/// Titans' momentum with forgetting are both of this shape; they differ only in the bases,
/// the coefficients and the lower-triangular E (see layers/ttt.hpp, layers/titans.hpp).

#include <cmath>
#include <numbers>
#include <sstream>
#include <string_view>
#include <utility>
#include <vector>

#include "seqmem/core/errors.hpp"
#include "seqmem/core/types.hpp"

namespace seqmem {

/// Activation between the inner model's layers.
enum class Activation { gelu_tanh, silu };

/// The inner model's trainable weights: `W[l]` is `d_l × d_{l+1}`, `b[l]` is `1 × d_{l+1}`
/// (no entries when the model has no bias).
template <class Scalar>
struct Weights {
  std::vector<Matrix<Scalar>> W;
  std::vector<Matrix<Scalar>> b;
};

namespace detail {

/// GELU, tanh approximation: ½x(1 + tanh(√(2/π)(x + 0.044715x³))).
template <class Scalar>
Scalar gelu_tanh(Scalar x) {
  const Scalar k = Scalar(std::numbers::sqrt2 * std::numbers::inv_sqrtpi);  // √(2/π)
  return Scalar(0.5) * x * (Scalar(1) + std::tanh(k * (x + Scalar(0.044715) * x * x * x)));
}

/// Exact derivative of gelu_tanh.
template <class Scalar>
Scalar gelu_tanh_derivative(Scalar x) {
  const Scalar k = Scalar(std::numbers::sqrt2 * std::numbers::inv_sqrtpi);
  const Scalar th = std::tanh(k * (x + Scalar(0.044715) * x * x * x));
  return Scalar(0.5) * (Scalar(1) + th) +
         Scalar(0.5) * x * (Scalar(1) - th * th) * k * (Scalar(1) + Scalar(3 * 0.044715) * x * x);
}

template <class Scalar>
Scalar silu(Scalar x) {
  return x / (Scalar(1) + std::exp(-x));
}

template <class Scalar>
Scalar silu_derivative(Scalar x) {
  const Scalar s = Scalar(1) / (Scalar(1) + std::exp(-x));
  return s * (Scalar(1) + x * (Scalar(1) - s));
}

/// The activation applied to a matrix, vectorized (Eigen's packet tanh/exp): the same
/// formulas as the scalar functions above.
template <class Scalar>
Matrix<Scalar> activate(Activation a, const Matrix<Scalar>& z) {
  const auto x = z.array();
  if (a == Activation::silu) return (x / (Scalar(1) + (-x).exp())).matrix();
  const Scalar k = Scalar(std::numbers::sqrt2 * std::numbers::inv_sqrtpi);
  return (Scalar(0.5) * x * (Scalar(1) + (k * (x + Scalar(0.044715) * x.cube())).tanh())).matrix();
}

template <class Scalar>
Matrix<Scalar> activate_derivative(Activation a, const Matrix<Scalar>& z) {
  const auto x = z.array();
  if (a == Activation::silu) {
    const auto s = (Scalar(1) / (Scalar(1) + (-x).exp())).eval();
    return (s * (Scalar(1) + x * (Scalar(1) - s))).matrix();
  }
  const Scalar k = Scalar(std::numbers::sqrt2 * std::numbers::inv_sqrtpi);
  const auto th = (k * (x + Scalar(0.044715) * x.cube())).tanh().eval();
  return (Scalar(0.5) * (Scalar(1) + th) + Scalar(0.5) * x * (Scalar(1) - th.square()) * k *
                                               (Scalar(1) + Scalar(3 * 0.044715) * x.square()))
      .matrix();
}

/// Row-wise LayerNorm with biased variance: y = γ ⊙ x̂ + β, x̂ = (z − μ)/σ, σ = √(var + ε).
template <class Scalar>
struct LayerNorm {
  Matrix<Scalar> xhat;   ///< normalized rows
  Vector<Scalar> sigma;  ///< per-row σ

  void forward(const Matrix<Scalar>& z, Scalar eps) {
    const Index d = z.cols();
    const Vector<Scalar> mean = z.rowwise().mean();
    xhat = z.colwise() - mean;
    sigma = (xhat.rowwise().squaredNorm() / Scalar(d)).array() + eps;
    sigma = sigma.array().sqrt();
    xhat.array().colwise() /= sigma.array();
  }

  Matrix<Scalar> output(const Matrix<Scalar>& weight, const Matrix<Scalar>& bias) const {
    return (xhat.array().rowwise() * weight.row(0).array()).rowwise() + bias.row(0).array();
  }

  /// Gradient w.r.t. z given the gradient w.r.t. y (MATH.md §4):
  /// ĝ = g_y ⊙ γ,  ∇z = (d·ĝ − Σĝ − x̂·Σ(ĝ ⊙ x̂)) / (d·σ).
  Matrix<Scalar> backward(const Matrix<Scalar>& grad_y, const Matrix<Scalar>& weight) const {
    const Index d = xhat.cols();
    const Matrix<Scalar> g = grad_y.array().rowwise() * weight.row(0).array();
    const Vector<Scalar> sum_g = g.rowwise().sum();
    const Vector<Scalar> sum_gx = g.cwiseProduct(xhat).rowwise().sum();
    Matrix<Scalar> out = (Scalar(d) * g).colwise() - sum_g;
    out.array() -= xhat.array().colwise() * sum_gx.array();
    out.array().colwise() /= (Scalar(d) * sigma).array();
    return out;
  }
};

/// What the dual form needs from the keys of one segment: each layer's input X_l and the
/// gradient of the loss w.r.t. its output Δ_l, both at the reference weights; the gradient
/// of token i is then ∇W_l = x_{l,i}ᵀ δ_{l,i}, ∇b_l = δ_{l,i}.
template <class Scalar>
struct KeyTrace {
  std::vector<Matrix<Scalar>> X, Z, Delta;
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
  const Vector<Scalar>* coef;  ///< one coefficient per token of the segment
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
  Matrix<Scalar> ln_weight, ln_bias;  ///< 1 × d_L, fixed (outer-loop) parameters

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

  /// Throws unless `w` has the model's shapes (and every value is finite).
  void check_weights(std::string_view where, std::string_view name,
                     const Weights<Scalar>& w) const {
    if (w.W.size() != layers()) {
      fail(where, name, ".W must hold ", layers(), " matrices, got ", w.W.size());
    }
    if (w.b.size() != (bias ? layers() : 0)) {
      fail(where, name, ".b must hold ", bias ? layers() : 0, " rows, got ", w.b.size());
    }
    for (std::size_t l = 0; l < layers(); ++l) {
      std::ostringstream W_name, b_name;
      W_name << name << ".W[" << l << "]";
      b_name << name << ".b[" << l << "]";
      require_shape(where, W_name.str(), w.W[l], dims[l], dims[l + 1]);
      if (!w.W[l].allFinite()) fail(where, W_name.str(), " must be finite");
      if (bias) {
        require_shape(where, b_name.str(), w.b[l], 1, dims[l + 1]);
        if (!w.b[l].allFinite()) fail(where, b_name.str(), " must be finite");
      }
    }
  }

  /// The model's output f(x; P) for rows x (the primal forward).
  Matrix<Scalar> evaluate(const Weights<Scalar>& P, const Matrix<Scalar>& x) const {
    Matrix<Scalar> h = x;
    for (std::size_t l = 0; l < layers(); ++l) {
      Matrix<Scalar> z = h * P.W[l];
      if (bias) z.rowwise() += P.b[l].row(0);
      h = l + 1 < layers() ? activate(activation, z) : std::move(z);
    }
    return finish(x, h);
  }

  /// Forward at P on keys, loss gradient, backward: the trace of the segment.
  KeyTrace<Scalar> trace(const Weights<Scalar>& P, const Matrix<Scalar>& k,
                         const Matrix<Scalar>& v) const {
    const std::size_t L = layers();
    KeyTrace<Scalar> tr;
    tr.X.resize(L);
    tr.Z.resize(L);
    tr.Delta.resize(L);
    tr.X[0] = k;
    for (std::size_t l = 0; l < L; ++l) {
      tr.Z[l].noalias() = tr.X[l] * P.W[l];
      if (bias) tr.Z[l].rowwise() += P.b[l].row(0);
      if (l + 1 < L) tr.X[l + 1] = activate(activation, tr.Z[l]);
    }
    if (layer_norm) {  // f(k) = k + LN(z): ∂ℓ/∂y = factor·(LN(z) + k − v)
      LayerNorm<Scalar> ln;
      ln.forward(tr.Z[L - 1], ln_eps);
      const Matrix<Scalar> grad_y = loss_factor * (ln.output(ln_weight, ln_bias) + k - v);
      tr.Delta[L - 1] = ln.backward(grad_y, ln_weight);
    } else {
      tr.Delta[L - 1] = loss_factor * (tr.Z[L - 1] - v);
    }
    for (std::size_t l = L - 1; l-- > 0;) {
      tr.Delta[l] = (tr.Delta[l + 1] * P.W[l + 1].transpose())
                        .cwiseProduct(activate_derivative(activation, tr.Z[l]));
    }
    return tr;
  }

  /// Σ_r c_r · Base_r − Σ_i e_i u_i (one coefficient per base, one per token).
  Weights<Scalar> combine(const std::vector<std::pair<Scalar, const Weights<Scalar>*>>& bases,
                          const Vector<Scalar>& e, const KeyTrace<Scalar>& tr) const {
    Weights<Scalar> out;
    for (std::size_t l = 0; l < layers(); ++l) {
      Matrix<Scalar> w(dims[l], dims[l + 1]);
      w.noalias() = -(tr.X[l].transpose() * e.asDiagonal()) * tr.Delta[l];
      for (const auto& [c, base] : bases)
        w += c * base->W[l];
      out.W.push_back(std::move(w));
      if (bias) {
        Matrix<Scalar> b = -(e.transpose() * tr.Delta[l]);
        for (const auto& [c, base] : bases)
          b += c * base->b[l];
        out.b.push_back(std::move(b));
      }
    }
    return out;
  }

  /// The dual form: outputs of queries q_t at P_t = Σ_r coef_r(t) Base_r − Σ_{i≤t} E_{t,i} u_i,
  /// layer by layer with the query's own activations (MATH.md §4, §5):
  ///     Z̄_l = Σ_r diag(coef_r)(H_l W_r,l + b_r,l) − (E ⊙ (H_l X_lᵀ + 1)) Δ_l
  /// (the `+ 1` and the b terms only with biases).
  Matrix<Scalar> dual_outputs(const Matrix<Scalar>& q,
                              const std::vector<WeightedBase<Scalar>>& bases,
                              const Matrix<Scalar>& E, const KeyTrace<Scalar>& tr) const {
    Matrix<Scalar> h = q, z, attn;
    for (std::size_t l = 0; l < layers(); ++l) {
      attn.noalias() = h * tr.X[l].transpose();
      if (bias) attn.array() += Scalar(1);
      attn = attn.cwiseProduct(E);
      z.noalias() = -attn * tr.Delta[l];
      for (const auto& [coef, base] : bases) {
        Matrix<Scalar> hw = h * base->W[l];
        if (bias) hw.rowwise() += base->b[l].row(0);
        z.noalias() += coef->asDiagonal() * hw;
      }
      h = l + 1 < layers() ? activate(activation, z) : std::move(z);
    }
    return finish(q, h);
  }

 private:
  /// x + LN(z) with residual + LayerNorm, z itself otherwise.
  Matrix<Scalar> finish(const Matrix<Scalar>& x, Matrix<Scalar> z) const {
    if (!layer_norm) return z;
    LayerNorm<Scalar> ln;
    ln.forward(z, ln_eps);
    return x + ln.output(ln_weight, ln_bias);
  }
};

}  // namespace detail
}  // namespace seqmem
