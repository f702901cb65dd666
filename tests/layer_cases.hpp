#pragma once

// What the tests that treat every layer alike need of each layer family (concurrency_test,
// state_io_test), in one place: random packed inputs in the layer's stable regime, every part
// of a state, and the longest parallel call a state allows. (The conformance and property
// suites describe their layers in more detail: conformance.hpp, property_test.cpp.)
//
//   Case<Layer>::Data                 packed inputs of H heads (q, k: T×(H·key_dim),
//                                     v: T×(H·value_dim), gates: T×H, per-key-channel
//                                     gates T×(H·key_dim)) with all() and
//                                     slice(begin, n) (rows [begin, begin + n))
//   Case<Layer>::data(layer, T, H, rng)
//   Case<Layer>::parts(state)         every part of a state (integers as 1×1 matrices)
//   Case<Layer>::parallel_limit(layer, state)

#include <vector>

#include "test_util.hpp"

namespace seqmem::test {

template <class Layer>
struct Case;

namespace cases {

/// Rows [b, b + n) of a packed gate matrix.
template <class Scalar>
GateRef<Scalar> rows(const Matrix<Scalar>& g, Index b, Index n) {
  return GateRef<Scalar>(g.middleRows(b, n));
}

/// T×(H·d) with unit rows in every head (the delta rule's stable regime).
template <class Scalar>
Matrix<Scalar> unit_keys(Rng& rng, Index T, Index H, Index d) {
  Matrix<Scalar> k = uniform<Scalar>(rng, T, H * d);
  for (Index h = 0; h < H; ++h)
    k.middleCols(h * d, d).rowwise().normalize();
  return k;
}

template <class Scalar>
void append(std::vector<Matrix<Scalar>>& out, const Weights<Scalar>& w) {
  out.insert(out.end(), w.W.begin(), w.W.end());
  out.insert(out.end(), w.b.begin(), w.b.end());
}

template <class Scalar>
Matrix<Scalar> integer(Index value) {
  return Matrix<Scalar>::Constant(1, 1, static_cast<Scalar>(value));
}

}  // namespace cases

template <class Scalar>
struct Case<LinearAttention<Scalar>> {
  using Layer = LinearAttention<Scalar>;
  struct Data {
    Matrix<Scalar> q, k, v, g;
    typename Layer::Inputs all() const {
      return {.q = q, .k = k, .v = v, .log_decay = GateRef<Scalar>(g)};
    }
    typename Layer::Inputs slice(Index b, Index n) const {
      return {.q = q.middleRows(b, n),
              .k = k.middleRows(b, n),
              .v = v.middleRows(b, n),
              .log_decay = cases::rows(g, b, n)};
    }
  };
  /// Normalized layers get positive q and k (as after a positive feature map).
  static Data data(const Layer& layer, Index T, Index H, Rng& rng) {
    const double lo = layer.options().normalize ? 0.05 : -1.0;
    const Index dk = H * layer.key_dim(), dv = H * layer.value_dim();
    return {uniform<Scalar>(rng, T, dk, lo, 1.0), uniform<Scalar>(rng, T, dk, lo, 1.0),
            uniform<Scalar>(rng, T, dv), uniform<Scalar>(rng, T, H, -0.5, 0.0)};
  }
  static std::vector<Matrix<Scalar>> parts(const typename Layer::State& s) { return {s.S, s.z}; }
  static Index parallel_limit(const Layer&, const typename Layer::State&) {
    return std::numeric_limits<Index>::max();
  }
};

template <class Scalar>
struct Case<SoftmaxAttention<Scalar>> {
  using Layer = SoftmaxAttention<Scalar>;
  struct Data {
    Matrix<Scalar> q, k, v;
    typename Layer::Inputs all() const { return {.q = q, .k = k, .v = v}; }
    typename Layer::Inputs slice(Index b, Index n) const {
      return {.q = q.middleRows(b, n), .k = k.middleRows(b, n), .v = v.middleRows(b, n)};
    }
  };
  static Data data(const Layer& layer, Index T, Index H, Rng& rng) {
    const Index dk = H * layer.key_dim(), dv = H * layer.value_dim();
    return {uniform<Scalar>(rng, T, dk, -2, 2), uniform<Scalar>(rng, T, dk, -2, 2),
            uniform<Scalar>(rng, T, dv)};
  }
  static std::vector<Matrix<Scalar>> parts(const typename Layer::State& s) {
    return {s.keys(), s.values(), cases::integer<Scalar>(s.tokens())};
  }
  static Index parallel_limit(const Layer&, const typename Layer::State&) {
    return std::numeric_limits<Index>::max();
  }
};

template <class Scalar>
struct Case<DeltaNet<Scalar>> {
  using Layer = DeltaNet<Scalar>;
  struct Data {
    Matrix<Scalar> q, k, v, beta, g;
    typename Layer::Inputs all() const {
      return {.q = q, .k = k, .v = v, .beta = beta, .log_decay = GateRef<Scalar>(g)};
    }
    typename Layer::Inputs slice(Index b, Index n) const {
      return {.q = q.middleRows(b, n),
              .k = k.middleRows(b, n),
              .v = v.middleRows(b, n),
              .beta = cases::rows(beta, b, n),
              .log_decay = cases::rows(g, b, n)};
    }
  };
  static Data data(const Layer& layer, Index T, Index H, Rng& rng) {
    const Index dk = layer.key_dim(), dv = H * layer.value_dim();
    return {uniform<Scalar>(rng, T, H * dk), cases::unit_keys<Scalar>(rng, T, H, dk),
            uniform<Scalar>(rng, T, dv), uniform<Scalar>(rng, T, H, 0.0, 2.0),
            uniform<Scalar>(rng, T, H, -0.2, 0.0)};
  }
  static std::vector<Matrix<Scalar>> parts(const typename Layer::State& s) { return {s.S}; }
  static Index parallel_limit(const Layer&, const typename Layer::State&) {
    return std::numeric_limits<Index>::max();
  }
};

/// Per-key-channel log-decays `T×(H·dk)` for the diagonal-gate layers (docs/math.md §7–§9).
template <class Scalar>
struct Case<GatedLinearAttention<Scalar>> {
  using Layer = GatedLinearAttention<Scalar>;
  struct Data {
    Matrix<Scalar> q, k, v, g;
    typename Layer::Inputs all() const { return {.q = q, .k = k, .v = v, .log_decay = g}; }
    typename Layer::Inputs slice(Index b, Index n) const {
      return {.q = q.middleRows(b, n),
              .k = k.middleRows(b, n),
              .v = v.middleRows(b, n),
              .log_decay = g.middleRows(b, n)};
    }
  };
  static Data data(const Layer& layer, Index T, Index H, Rng& rng) {
    const Index dk = H * layer.key_dim(), dv = H * layer.value_dim();
    return {uniform<Scalar>(rng, T, dk), uniform<Scalar>(rng, T, dk), uniform<Scalar>(rng, T, dv),
            uniform<Scalar>(rng, T, dk, -0.5, 0.0)};
  }
  static std::vector<Matrix<Scalar>> parts(const typename Layer::State& s) { return {s.S}; }
  static Index parallel_limit(const Layer&, const typename Layer::State&) {
    return std::numeric_limits<Index>::max();
  }
};

template <class Scalar>
struct Case<KimiDeltaAttention<Scalar>> {
  using Layer = KimiDeltaAttention<Scalar>;
  struct Data {
    Matrix<Scalar> q, k, v, beta, g;
    typename Layer::Inputs all() const {
      return {.q = q, .k = k, .v = v, .beta = beta, .log_decay = g};
    }
    typename Layer::Inputs slice(Index b, Index n) const {
      return {.q = q.middleRows(b, n),
              .k = k.middleRows(b, n),
              .v = v.middleRows(b, n),
              .beta = cases::rows(beta, b, n),
              .log_decay = g.middleRows(b, n)};
    }
  };
  static Data data(const Layer& layer, Index T, Index H, Rng& rng) {
    const Index dk = layer.key_dim(), dv = H * layer.value_dim();
    return {uniform<Scalar>(rng, T, H * dk), cases::unit_keys<Scalar>(rng, T, H, dk),
            uniform<Scalar>(rng, T, dv), uniform<Scalar>(rng, T, H, 0.0, 2.0),
            uniform<Scalar>(rng, T, H * dk, -0.5, 0.0)};
  }
  static std::vector<Matrix<Scalar>> parts(const typename Layer::State& s) { return {s.S}; }
  static Index parallel_limit(const Layer&, const typename Layer::State&) {
    return std::numeric_limits<Index>::max();
  }
};

/// RWKV-7's a = −κ̂, b = κ̂ ⊙ α (κ̂ unit rows per head, α in (0, 1)).
template <class Scalar>
struct Case<GeneralizedDeltaRule<Scalar>> {
  using Layer = GeneralizedDeltaRule<Scalar>;
  struct Data {
    Matrix<Scalar> q, k, v, a, b, g;
    typename Layer::Inputs all() const {
      return {.q = q, .k = k, .v = v, .a = a, .b = b, .log_decay = g};
    }
    typename Layer::Inputs slice(Index r, Index n) const {
      return {.q = q.middleRows(r, n),
              .k = k.middleRows(r, n),
              .v = v.middleRows(r, n),
              .a = a.middleRows(r, n),
              .b = b.middleRows(r, n),
              .log_decay = g.middleRows(r, n)};
    }
  };
  static Data data(const Layer& layer, Index T, Index H, Rng& rng) {
    const Index dk = layer.key_dim(), dv = H * layer.value_dim();
    const Matrix<Scalar> kappa = cases::unit_keys<Scalar>(rng, T, H, dk);
    const Matrix<Scalar> alpha = uniform<Scalar>(rng, T, H * dk, 0.01, 0.99);
    return {uniform<Scalar>(rng, T, H * dk), uniform<Scalar>(rng, T, H * dk),
            uniform<Scalar>(rng, T, dv),     -kappa,
            kappa.cwiseProduct(alpha),       uniform<Scalar>(rng, T, H * dk, -0.5, 0.0)};
  }
  static std::vector<Matrix<Scalar>> parts(const typename Layer::State& s) { return {s.S}; }
  static Index parallel_limit(const Layer&, const typename Layer::State&) {
    return std::numeric_limits<Index>::max();
  }
};

template <class Scalar, TTTModel Model>
struct Case<TTT<Scalar, Model>> {
  using Layer = TTT<Scalar, Model>;
  struct Data {
    Matrix<Scalar> q, k, v, eta;
    typename Layer::Inputs all() const {
      return {.q = q, .k = k, .v = v, .learning_rate = GateRef<Scalar>(eta)};
    }
    typename Layer::Inputs slice(Index b, Index n) const {
      return {.q = q.middleRows(b, n),
              .k = k.middleRows(b, n),
              .v = v.middleRows(b, n),
              .learning_rate = cases::rows(eta, b, n)};
    }
  };
  static Data data(const Layer& layer, Index T, Index H, Rng& rng) {
    const Index d = layer.key_dim();
    return {uniform<Scalar>(rng, T, H * d), uniform<Scalar>(rng, T, H * d),
            uniform<Scalar>(rng, T, H * d), uniform<Scalar>(rng, T, H, 0.0, 1.0 / double(d))};
  }
  static std::vector<Matrix<Scalar>> parts(const typename Layer::State& s) {
    std::vector<Matrix<Scalar>> out;
    cases::append(out, s.reference);
    cases::append(out, s.gradient);
    out.push_back(cases::integer<Scalar>(s.position));
    return out;
  }
  static Index parallel_limit(const Layer& layer, const typename Layer::State& s) {
    return layer.options().mini_batch - s.position;
  }
};

template <class Scalar>
struct Case<TitansMemory<Scalar>> {
  using Layer = TitansMemory<Scalar>;
  struct Data {
    Matrix<Scalar> q, k, v, theta, alpha, eta;
    typename Layer::Inputs all() const {
      return {.q = q,
              .k = k,
              .v = v,
              .learning_rate = GateRef<Scalar>(theta),
              .forgetting = GateRef<Scalar>(alpha),
              .momentum_decay = GateRef<Scalar>(eta)};
    }
    typename Layer::Inputs slice(Index b, Index n) const {
      return {.q = q.middleRows(b, n),
              .k = k.middleRows(b, n),
              .v = v.middleRows(b, n),
              .learning_rate = cases::rows(theta, b, n),
              .forgetting = cases::rows(alpha, b, n),
              .momentum_decay = cases::rows(eta, b, n)};
    }
  };
  static Data data(const Layer& layer, Index T, Index H, Rng& rng) {
    const Index dk = layer.key_dim(), dv = H * layer.value_dim();
    return {uniform<Scalar>(rng, T, H * dk),      cases::unit_keys<Scalar>(rng, T, H, dk),
            uniform<Scalar>(rng, T, dv),          uniform<Scalar>(rng, T, H, 0.005, 0.05),
            uniform<Scalar>(rng, T, H, 0.0, 0.2), uniform<Scalar>(rng, T, H, 0.5, 0.95)};
  }
  static std::vector<Matrix<Scalar>> parts(const typename Layer::State& s) {
    std::vector<Matrix<Scalar>> out;
    cases::append(out, s.reference);
    cases::append(out, s.current);
    cases::append(out, s.momentum);
    out.push_back(cases::integer<Scalar>(s.position));
    return out;
  }
  static Index parallel_limit(const Layer& layer, const typename Layer::State& s) {
    return layer.options().mini_batch - s.position;
  }
};

}  // namespace seqmem::test
