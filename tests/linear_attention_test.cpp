// LinearAttention: the conformance suite over its variants, plus layer-specific checks.

#include <gtest/gtest.h>

#include <limits>
#include <optional>

#include "conformance.hpp"

namespace seqmem::test {
namespace {

enum class Gate { none, mild, strong };

struct LinearVariant {
  std::string name;
  FeatureMap feature_map = FeatureMap::identity;
  bool normalize = false;
  Gate gate = Gate::none;
  bool positive = false;  // q, k in (0.05, 1): keeps a normalized denominator away from 0
  Index key_dim = 6, value_dim = 5;
};

}  // namespace

template <class Scalar>
struct LayerCase<LinearAttention<Scalar>> {
  using Layer = LinearAttention<Scalar>;
  using State = typename Layer::State;
  using Inputs = typename Layer::Inputs;
  using Variant = LinearVariant;

  static std::vector<Variant> variants() {
    return {
        {.name = "plain"},
        {.name = "decay", .gate = Gate::mild, .key_dim = 4, .value_dim = 7},
        {.name = "strong decay", .gate = Gate::strong},
        {.name = "elu+1", .feature_map = FeatureMap::elu_plus_one, .gate = Gate::mild},
        {.name = "relu", .feature_map = FeatureMap::relu},
        {.name = "normalized", .normalize = true, .positive = true},
        {.name = "normalized decay", .normalize = true, .gate = Gate::mild, .positive = true},
        {.name = "normalized elu+1 strong decay",
         .feature_map = FeatureMap::elu_plus_one,
         .normalize = true,
         .gate = Gate::strong},
    };
  }

  static Layer make(const Variant& v, Index chunk) {
    return Layer({.key_dim = v.key_dim,
                  .value_dim = v.value_dim,
                  .feature_map = v.feature_map,
                  .normalize = v.normalize,
                  .chunk_size = chunk});
  }

  struct Data {
    Matrix<Scalar> q, k, v;
    std::optional<Vector<Scalar>> g;
    Inputs slice(Index b, Index n) const {
      return {.q = q.middleRows(b, n),
              .k = k.middleRows(b, n),
              .v = v.middleRows(b, n),
              .log_decay = g ? std::optional<GateRef<Scalar>>(g->segment(b, n)) : std::nullopt};
    }
    Inputs whole() const {
      return {.q = q,
              .k = k,
              .v = v,
              .log_decay = g ? std::optional<GateRef<Scalar>>(*g) : std::nullopt};
    }
  };

  static Data data(const Variant& var, const Layer& layer, Index T, Rng& rng) {
    const Index dk = layer.options().key_dim, dv = layer.options().value_dim;
    const double lo = var.positive ? 0.05 : -1.0;
    Data d{uniform<Scalar>(rng, T, dk, lo, 1.0), uniform<Scalar>(rng, T, dk, lo, 1.0),
           uniform<Scalar>(rng, T, dv), std::nullopt};
    if (var.gate == Gate::mild) d.g = uniform<Scalar>(rng, T, 1, -0.5, 0.0).col(0);
    if (var.gate == Gate::strong) {  // g = −30 on every third token, mild elsewhere
      Vector<Scalar> g = uniform<Scalar>(rng, T, 1, -0.2, 0.0).col(0);
      for (Index t = 0; t < T; t += 3)
        g(t) = Scalar(-30);
      d.g = g;
    }
    return d;
  }

  static void randomize(const Layer& layer, State& state, Rng& rng) {
    state.S = uniform<Scalar>(rng, state.S.rows(), state.S.cols());
    if (layer.options().normalize) state.z = uniform<Scalar>(rng, 1, state.S.rows(), 0.5, 2.0);
  }

  static std::vector<Matrix<Scalar>> tensors(const State& s) { return {s.S, s.z}; }
  static bool defined(const Layer&, Form, const State&, Index) { return true; }

  static std::vector<BadInput<Data>> bad_inputs() {
    const Scalar nan = std::numeric_limits<Scalar>::quiet_NaN();
    return {
        {"k with fewer rows",
         [](Data& d) { d.k.conservativeResize(d.k.rows() - 1, Eigen::NoChange); },
         "k must be 6x6, got 5x6"},
        {"q with a wrong dim", [](Data& d) { d.q = Matrix<Scalar>::Ones(d.q.rows(), 7); },
         "q must be 6x6, got 6x7"},
        {"v with a wrong dim", [](Data& d) { d.v = Matrix<Scalar>::Ones(d.v.rows(), 2); },
         "v must be 6x5, got 6x2"},
        {"gate of the wrong length", [](Data& d) { d.g = Vector<Scalar>::Zero(4); },
         "log_decay must be 6x1, got 4x1"},
        {"positive log_decay",
         [](Data& d) {
           d.g = Vector<Scalar>::Zero(6);
           (*d.g)(3) = Scalar(0.5);
         },
         "log_decay[3] must be finite and <= 0, got 0.5"},
        {"NaN log_decay",
         [nan](Data& d) {
           d.g = Vector<Scalar>::Zero(6);
           (*d.g)(2) = nan;
         },
         "log_decay[2] must be finite"},
        {"infinite log_decay",
         [](Data& d) {
           d.g = Vector<Scalar>::Zero(6);
           (*d.g)(1) = -std::numeric_limits<Scalar>::infinity();
         },
         "log_decay[1] must be finite"},
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
        {"negative chunk_size",
         [] { return Layer({.key_dim = 4, .value_dim = 4, .chunk_size = -3}); },
         "chunk_size must be > 0, got -3"},
    };
  }
};

using LinearAttentionTypes = ::testing::Types<LinearAttention<float>, LinearAttention<double>>;
INSTANTIATE_TYPED_TEST_SUITE_P(LinearAttention, Conformance, LinearAttentionTypes);

// A hand-computed case: two tokens, identity map, scale 1, decay ln(1/2) on the second.
TEST(LinearAttention, SmallCaseByHand) {
  LinearAttention<double> layer({.key_dim = 2, .value_dim = 1, .scale = 1.0});
  Matrix<double> q(2, 2), k(2, 2), v(2, 1);
  q << 1, 0, 0, 1;
  k << 1, 0, 0, 1;
  v << 2, 3;
  Vector<double> g(2);
  g << 0, std::log(0.5);
  for (Form form : all_forms) {
    auto state = layer.initial_state();
    const auto o = forward(layer, form, {.q = q, .k = k, .v = v, .log_decay = g}, state);
    // S_1 = [2; 0], S_2 = [1; 3]; o_1 = q_1 S_1 = 2, o_2 = q_2 S_2 = 3.
    EXPECT_NEAR(o(0, 0), 2.0, 1e-15) << to_string(form);
    EXPECT_NEAR(o(1, 0), 3.0, 1e-15) << to_string(form);
    EXPECT_NEAR(state.S(0, 0), 1.0, 1e-15) << to_string(form);
    EXPECT_NEAR(state.S(1, 0), 3.0, 1e-15) << to_string(form);
  }
}

// docs/math.md §2 written out: the query is scale·φ(q), the feature map applied before the scale
// (as fla: its kernels scale the feature-mapped q). For elu+1 the order matters: φ(scale·q) is
// another function. Random inputs, a scale ≠ 1, plain and normalized, every form.
TEST(LinearAttention, FeatureMapBeforeScaleAsSpecified) {
  const auto phi = [](const Matrix<double>& x) {
    return Matrix<double>(x.unaryExpr([](double v) { return v > 0.0 ? v + 1.0 : std::exp(v); }));
  };
  Rng rng(5);
  const Index T = 7, dk = 3, dv = 2;
  const double scale = 0.4;
  const Matrix<double> q = uniform<double>(rng, T, dk, -2.0, 2.0),
                       k = uniform<double>(rng, T, dk, -2.0, 2.0), v = uniform<double>(rng, T, dv);
  const Vector<double> g = uniform<double>(rng, T, 1, -0.5, 0.0);
  for (const bool normalize : {false, true}) {
    const LinearAttention<double> layer({.key_dim = dk,
                                         .value_dim = dv,
                                         .scale = scale,
                                         .feature_map = FeatureMap::elu_plus_one,
                                         .normalize = normalize,
                                         .chunk_size = 3});
    const double eps = layer.options().norm_eps;
    Matrix<double> S = Matrix<double>::Zero(dk, dv), z = Matrix<double>::Zero(1, dk), want(T, dv);
    for (Index t = 0; t < T; ++t) {
      const Matrix<double> qt = scale * phi(q.row(t)), kt = phi(k.row(t));
      S = std::exp(g(t)) * S + kt.transpose() * v.row(t);
      z = std::exp(g(t)) * z + kt;
      want.row(t) = qt * S;
      if (normalize) want.row(t) /= (qt * z.transpose())(0, 0) + eps;
    }
    for (Form form : all_forms) {
      auto state = layer.initial_state();
      const auto o = forward(layer, form, {.q = q, .k = k, .v = v, .log_decay = g}, state);
      EXPECT_LT((o - want).cwiseAbs().maxCoeff(), 1e-12)
          << to_string(form) << (normalize ? ", normalized" : "");
      EXPECT_LT((state.S - S).cwiseAbs().maxCoeff(), 1e-12) << to_string(form);
    }
  }
}

// Strong decay over long spans underflows to zero, never to NaN.
TEST(LinearAttention, StrongDecayStaysFinite) {
  LinearAttention<float> layer({.key_dim = 3, .value_dim = 3, .normalize = true, .chunk_size = 64});
  Rng rng(3);
  const Index T = 500;
  const Matrix<float> q = uniform<float>(rng, T, 3, 0.1, 1.0), k = q, v = uniform<float>(rng, T, 3);
  const Vector<float> g = Vector<float>::Constant(T, -30.0f);
  for (Form form : all_forms) {
    auto state = layer.initial_state();
    const auto o = forward(layer, form, {.q = q, .k = k, .v = v, .log_decay = g}, state);
    EXPECT_TRUE(o.allFinite()) << to_string(form);
    EXPECT_TRUE(state.S.allFinite() && state.z.allFinite()) << to_string(form);
  }
}

// Inputs bind to heads sliced out of wider matrices and to user buffers without copies.
TEST(LinearAttention, AcceptsSlicesAndMaps) {
  LinearAttention<double> layer({.key_dim = 2, .value_dim = 2});
  Rng rng(4);
  const Matrix<double> wide = uniform<double>(rng, 5, 6);
  std::vector<double> buffer(10, 0.25);
  const Eigen::Map<const Matrix<double>> mapped(buffer.data(), 5, 2);
  auto s1 = layer.initial_state(), s2 = layer.initial_state();
  const Matrix<double> q = wide.middleCols(2, 2), v = mapped;
  const auto a = forward(layer, Form::chunkwise,
                         {.q = wide.middleCols(2, 2), .k = wide.middleCols(2, 2), .v = mapped}, s1);
  const auto b = forward(layer, Form::chunkwise, {.q = q, .k = q, .v = v}, s2);
  EXPECT_EQ(a, b);
}

}  // namespace seqmem::test
