// DeltaNet and gated DeltaNet: the conformance suite, the delta rule's exact cases and the
// identity with linear attention.

#include <gtest/gtest.h>

#include <Eigen/QR>
#include <limits>
#include <optional>

#include "conformance.hpp"

namespace seqmem::test {
namespace {

enum class Beta { uniform, extremes };  // uniform in (0, 2), or only 0 and 2
enum class Decay { none, mild, strong };

struct DeltaVariant {
  std::string name;
  Decay decay = Decay::none;
  Beta beta = Beta::uniform;
  bool qk_l2norm = false;
  Index key_dim = 6, value_dim = 5;
};

template <class Scalar>
Matrix<Scalar> unit_rows(Matrix<Scalar> x) {
  x.rowwise().normalize();
  return x;
}

}  // namespace

template <class Scalar>
struct LayerCase<DeltaNet<Scalar>> {
  using Layer = DeltaNet<Scalar>;
  using State = typename Layer::State;
  using Inputs = typename Layer::Inputs;
  using Variant = DeltaVariant;

  static std::vector<Variant> variants() {
    return {
        {.name = "plain"},
        {.name = "gated", .decay = Decay::mild, .key_dim = 4, .value_dim = 7},
        {.name = "strong decay", .decay = Decay::strong},
        {.name = "beta 0 and 2", .beta = Beta::extremes},
        {.name = "gated beta 0 and 2", .decay = Decay::mild, .beta = Beta::extremes},
        {.name = "qk_l2norm", .decay = Decay::mild, .qk_l2norm = true, .key_dim = 8},
    };
  }

  static Layer make(const Variant& v, Index chunk) {
    return Layer({.key_dim = v.key_dim,
                  .value_dim = v.value_dim,
                  .chunk_size = chunk,
                  .qk_l2norm = v.qk_l2norm});
  }

  struct Data {
    Matrix<Scalar> q, k, v;
    Vector<Scalar> beta;
    std::optional<Vector<Scalar>> g;
    Inputs slice(Index b, Index n) const {
      return {.q = q.middleRows(b, n),
              .k = k.middleRows(b, n),
              .v = v.middleRows(b, n),
              .beta = GateRef<Scalar>(beta.segment(b, n)),
              .log_decay = g ? std::optional<GateRef<Scalar>>(g->segment(b, n)) : std::nullopt};
    }
    Inputs whole() const {
      return {.q = q,
              .k = k,
              .v = v,
              .beta = GateRef<Scalar>(beta),
              .log_decay = g ? std::optional<GateRef<Scalar>>(*g) : std::nullopt};
    }
  };

  /// Keys are unit rows (the delta rule's stable regime: I − β kᵀk has eigenvalues in
  /// [−1, 1] for β ∈ [0, 2]); with qk_l2norm the layer normalizes them itself.
  static Data data(const Variant& var, const Layer& layer, Index T, Rng& rng) {
    const Index dk = layer.options().key_dim, dv = layer.options().value_dim;
    Matrix<Scalar> k = uniform<Scalar>(rng, T, dk, -1.0, 1.0);
    if (!var.qk_l2norm) k = unit_rows(k);
    Data d{uniform<Scalar>(rng, T, dk), k, uniform<Scalar>(rng, T, dv),
           uniform<Scalar>(rng, T, 1, 0.0, 2.0).col(0), std::nullopt};
    if (var.beta == Beta::extremes) {
      for (Index t = 0; t < T; ++t)
        d.beta(t) = Scalar(2 * uniform_index(rng, 0, 1));
    }
    if (var.decay == Decay::mild) d.g = uniform<Scalar>(rng, T, 1, -0.5, 0.0).col(0);
    if (var.decay == Decay::strong) {
      Vector<Scalar> g = uniform<Scalar>(rng, T, 1, -0.2, 0.0).col(0);
      for (Index t = 0; t < T; t += 3)
        g(t) = Scalar(-30);
      d.g = g;
    }
    return d;
  }

  static void randomize(const Layer&, State& state, Rng& rng) {
    state.S = uniform<Scalar>(rng, state.S.rows(), state.S.cols());
  }

  static std::vector<Matrix<Scalar>> tensors(const State& s) { return {s.S}; }
  static bool defined(const Layer&, Form, const State&, Index) { return true; }

  static std::vector<BadInput<Data>> bad_inputs() {
    const Scalar nan = std::numeric_limits<Scalar>::quiet_NaN();
    return {
        {"k with fewer rows",
         [](Data& d) { d.k.conservativeResize(d.k.rows() - 1, Eigen::NoChange); },
         "k must be 6x6, got 5x6"},
        {"v with a wrong dim", [](Data& d) { d.v = Matrix<Scalar>::Ones(d.v.rows(), 2); },
         "v must be 6x5, got 6x2"},
        {"beta too short", [](Data& d) { d.beta = Vector<Scalar>::Ones(5); },
         "beta must be 6x1, got 5x1"},
        {"beta above 2", [](Data& d) { d.beta(4) = Scalar(2.5); },
         "beta[4] must be finite and in [0, 2], got 2.5"},
        {"negative beta", [](Data& d) { d.beta(0) = Scalar(-0.25); },
         "beta[0] must be finite and in [0, 2], got -0.25"},
        {"NaN beta", [nan](Data& d) { d.beta(1) = nan; }, "beta[1] must be finite"},
        {"positive log_decay",
         [](Data& d) {
           d.g = Vector<Scalar>::Zero(6);
           (*d.g)(3) = Scalar(0.5);
         },
         "log_decay[3] must be finite and <= 0, got 0.5"},
        {"NaN log_decay",
         [nan](Data& d) {
           d.g = Vector<Scalar>::Zero(6);
           (*d.g)(5) = nan;
         },
         "log_decay[5] must be finite"},
    };
  }

  static std::vector<BadOption<Layer>> bad_options() {
    return {
        {"key_dim 0", [] { return Layer({.key_dim = 0, .value_dim = 4}); },
         "key_dim must be > 0, got 0"},
        {"value_dim 0", [] { return Layer({.key_dim = 4, .value_dim = 0}); },
         "value_dim must be > 0, got 0"},
        {"chunk_size 0", [] { return Layer({.key_dim = 4, .value_dim = 4, .chunk_size = 0}); },
         "chunk_size must be > 0, got 0"},
    };
  }
};

using DeltaNetTypes = ::testing::Types<DeltaNet<float>, DeltaNet<double>>;
INSTANTIATE_TYPED_TEST_SUITE_P(DeltaNet, Conformance, DeltaNetTypes);

namespace {

using Layer = DeltaNet<double>;

Matrix<double> run(const Layer& layer, Form form, const Matrix<double>& q, const Matrix<double>& k,
                   const Matrix<double>& v, const Vector<double>& beta, Layer::State& state) {
  return forward(layer, form, {.q = q, .k = k, .v = v, .beta = GateRef<double>(beta)}, state);
}

// β = 0 writes nothing: S stays, and o_t = scale·q_t S.
TEST(DeltaNet, BetaZeroWritesNothing) {
  Rng rng(1);
  const Layer layer({.key_dim = 5, .value_dim = 3, .chunk_size = 4});
  const Matrix<double> q = uniform<double>(rng, 11, 5), k = unit_rows(uniform<double>(rng, 11, 5)),
                       v = uniform<double>(rng, 11, 3);
  const Vector<double> beta = Vector<double>::Zero(11);
  const Matrix<double> S0 = uniform<double>(rng, 5, 3);
  for (Form form : all_forms) {
    Layer::State state{S0};
    const auto o = run(layer, form, q, k, v, beta, state);
    EXPECT_EQ(state.S, S0) << to_string(form);
    EXPECT_TRUE(near(o, layer.scale() * q * S0, 1e-14)) << to_string(form);
  }
}

// β = 2 with v = 0 reflects S in the hyperplane orthogonal to a unit k: the Frobenius norm
// is kept, and writing the same key twice gives S back.
TEST(DeltaNet, BetaTwoReflects) {
  Rng rng(2);
  const Layer layer({.key_dim = 6, .value_dim = 4, .chunk_size = 2});
  const Matrix<double> k1 = unit_rows(uniform<double>(rng, 1, 6));
  Matrix<double> k(2, 6);
  k << k1, k1;
  const Matrix<double> q = uniform<double>(rng, 2, 6), v = Matrix<double>::Zero(2, 4);
  const Vector<double> beta = Vector<double>::Constant(2, 2.0);
  const Matrix<double> S0 = uniform<double>(rng, 6, 4);
  for (Form form : all_forms) {
    Layer::State state{S0};
    (void)run(layer, form, q.topRows(1), k.topRows(1), v.topRows(1), beta.head(1), state);
    EXPECT_NEAR(state.S.norm(), S0.norm(), 1e-13) << to_string(form);
    EXPECT_GT((state.S - S0).norm(), 1e-3) << to_string(form);
    (void)run(layer, form, q.bottomRows(1), k.bottomRows(1), v.bottomRows(1), beta.tail(1), state);
    EXPECT_TRUE(near(state.S, S0, 1e-13)) << to_string(form);
  }
}

// β = 1 with a unit key overwrites: after writing (k, v), reading k gives v exactly.
TEST(DeltaNet, BetaOneOverwrites) {
  Rng rng(3);
  const Layer layer({.key_dim = 7, .value_dim = 3, .chunk_size = 5});
  const Index T = 23;
  const Matrix<double> q = uniform<double>(rng, T, 7), k = unit_rows(uniform<double>(rng, T, 7)),
                       v = uniform<double>(rng, T, 3);
  const Vector<double> beta = Vector<double>::Ones(T);
  for (Form form : all_forms) {
    Layer::State state{uniform<double>(rng, 7, 3)};
    (void)run(layer, form, q, k, v, beta, state);
    EXPECT_TRUE(near(k.bottomRows(1) * state.S, v.bottomRows(1), 1e-13)) << to_string(form);
  }
}

// On a zero state with orthonormal keys, β = 1 and no decay, each write finds nothing to
// correct, so DeltaNet equals (unnormalized, identity-map) linear attention.
TEST(DeltaNet, OrthonormalKeysEqualLinearAttention) {
  Rng rng(4);
  const Index dk = 8, dv = 5, T = 8;
  const Eigen::HouseholderQR<Eigen::MatrixXd> qr(Eigen::MatrixXd(uniform<double>(rng, dk, dk)));
  const Matrix<double> k = Eigen::MatrixXd(qr.householderQ()).transpose().topRows(T);
  const Matrix<double> q = uniform<double>(rng, T, dk), v = uniform<double>(rng, T, dv);
  const Vector<double> beta = Vector<double>::Ones(T);
  const Layer delta({.key_dim = dk, .value_dim = dv, .chunk_size = 3});
  const LinearAttention<double> linear({.key_dim = dk, .value_dim = dv, .chunk_size = 3});
  for (Form form : all_forms) {
    auto ds = delta.initial_state();
    auto ls = linear.initial_state();
    const auto od = run(delta, form, q, k, v, beta, ds);
    const auto ol = forward(linear, form, {.q = q, .k = k, .v = v}, ls);
    EXPECT_TRUE(near(od, ol, 1e-13)) << to_string(form);
    EXPECT_TRUE(near(ds.S, ls.S, 1e-13)) << to_string(form);
  }
}

// qk_l2norm divides q and k rows by sqrt(Σx² + 1e-6): equal to normalizing outside.
TEST(DeltaNet, QkL2NormEqualsNormalizingOutside) {
  Rng rng(5);
  const Index T = 9;
  const Matrix<double> q = uniform<double>(rng, T, 4), k = uniform<double>(rng, T, 4),
                       v = uniform<double>(rng, T, 2);
  const Vector<double> beta = uniform<double>(rng, T, 1, 0.0, 1.0).col(0);
  auto normalized = [](Matrix<double> x) {
    const Vector<double> n = (x.rowwise().squaredNorm().array() + 1e-6).sqrt();
    x.array().colwise() /= n.array();
    return x;
  };
  const Layer inside({.key_dim = 4, .value_dim = 2, .qk_l2norm = true});
  const Layer outside({.key_dim = 4, .value_dim = 2});
  for (Form form : all_forms) {
    auto s1 = inside.initial_state(), s2 = outside.initial_state();
    EXPECT_TRUE(near(run(inside, form, q, k, v, beta, s1),
                     run(outside, form, normalized(q), normalized(k), v, beta, s2), 1e-14));
  }
}

}  // namespace
}  // namespace seqmem::test
