// SoftmaxAttention: the conformance suite over its variants, plus the KV-cache and memory
// bounds.

#include <gtest/gtest.h>

#include "conformance.hpp"

namespace seqmem::test {
namespace {

struct SoftmaxVariant {
  std::string name;
  Index window = 0;
  Index key_dim = 6, value_dim = 5;
  double spread = 1.0;  // q, k in (−spread, spread): large values make peaked softmaxes
};

}  // namespace

template <class Scalar>
struct LayerCase<SoftmaxAttention<Scalar>> {
  using Layer = SoftmaxAttention<Scalar>;
  using State = typename Layer::State;
  using Inputs = typename Layer::Inputs;
  using Variant = SoftmaxVariant;

  static std::vector<Variant> variants() {
    return {
        {.name = "full"},
        {.name = "window 1", .window = 1},
        {.name = "window 5", .window = 5, .key_dim = 3, .value_dim = 7},
        {.name = "window 40", .window = 40},
        {.name = "peaked", .window = 0, .spread = 6.0},
    };
  }

  static Layer make(const Variant& v, Index chunk) {
    return Layer(
        {.key_dim = v.key_dim, .value_dim = v.value_dim, .window = v.window, .chunk_size = chunk});
  }

  struct Data {
    Matrix<Scalar> q, k, v;
    Inputs slice(Index b, Index n) const {
      return {.q = q.middleRows(b, n), .k = k.middleRows(b, n), .v = v.middleRows(b, n)};
    }
    Inputs whole() const { return {.q = q, .k = k, .v = v}; }
  };

  static Data data(const Variant& var, const Layer& layer, Index T, Rng& rng) {
    const Index dk = layer.options().key_dim, dv = layer.options().value_dim;
    return {uniform<Scalar>(rng, T, dk, -var.spread, var.spread),
            uniform<Scalar>(rng, T, dk, -var.spread, var.spread), uniform<Scalar>(rng, T, dv)};
  }

  /// A nonzero state: the cache after a random prefix of 1..30 tokens.
  static void randomize(const Layer& layer, State& state, Rng& rng) {
    const Index n = uniform_index(rng, 1, 30);
    const Matrix<Scalar> k = uniform<Scalar>(rng, n, layer.options().key_dim);
    const Matrix<Scalar> v = uniform<Scalar>(rng, n, layer.options().value_dim);
    (void)forward(layer, Form::recurrent, {.q = k, .k = k, .v = v}, state);
  }

  static std::vector<Matrix<Scalar>> tensors(const State& s) {
    return {s.keys(), s.values(), Matrix<Scalar>::Constant(1, 1, Scalar(s.tokens()))};
  }
  static bool defined(const Layer&, Form, const State&, Index) { return true; }

  static std::vector<BadInput<Data>> bad_inputs() {
    return {
        {"k with fewer rows",
         [](Data& d) { d.k.conservativeResize(d.k.rows() - 1, Eigen::NoChange); },
         "k must be 6x6, got 5x6"},
        {"q with a wrong dim", [](Data& d) { d.q = Matrix<Scalar>::Ones(d.q.rows(), 7); },
         "q must be 6x6, got 6x7"},
        {"v with more rows", [](Data& d) { d.v = Matrix<Scalar>::Ones(9, 5); },
         "v must be 6x5, got 9x5"},
    };
  }

  static std::vector<BadOption<Layer>> bad_options() {
    return {
        {"key_dim 0", [] { return Layer({.key_dim = 0, .value_dim = 4}); },
         "key_dim must be > 0, got 0"},
        {"chunk_size 0", [] { return Layer({.key_dim = 4, .value_dim = 4, .chunk_size = 0}); },
         "chunk_size must be > 0, got 0"},
        {"negative window", [] { return Layer({.key_dim = 4, .value_dim = 4, .window = -1}); },
         "window must be >= 0, got -1"},
    };
  }
};

using SoftmaxAttentionTypes = ::testing::Types<SoftmaxAttention<float>, SoftmaxAttention<double>>;
INSTANTIATE_TYPED_TEST_SUITE_P(SoftmaxAttention, Conformance, SoftmaxAttentionTypes);

// window 1: every query sees only its own key, so o_t = v_t.
TEST(SoftmaxAttention, WindowOneReturnsValues) {
  SoftmaxAttention<double> layer({.key_dim = 4, .value_dim = 3, .window = 1, .chunk_size = 3});
  Rng rng(1);
  const Matrix<double> q = uniform<double>(rng, 10, 4), v = uniform<double>(rng, 10, 3);
  for (Form form : all_forms) {
    auto state = layer.initial_state();
    EXPECT_TRUE(near(forward(layer, form, {.q = q, .k = q, .v = v}, state), v, 1e-15))
        << to_string(form);
    EXPECT_EQ(state.cached(), 0);
    EXPECT_EQ(state.tokens(), 10);
  }
}

// The windowed cache stays at w − 1 rows however long the stream.
TEST(SoftmaxAttention, WindowedCacheIsBounded) {
  SoftmaxAttention<float> layer({.key_dim = 4, .value_dim = 4, .window = 8});
  Rng rng(2);
  auto state = layer.initial_state();
  for (int call = 0; call < 200; ++call) {
    const Index n = uniform_index(rng, 1, 20);
    const Matrix<float> x = uniform<float>(rng, n, 4);
    (void)forward(layer, all_forms[call % 3], {.q = x, .k = x, .v = x}, state);
    ASSERT_LE(state.cached(), 7);
  }
  EXPECT_EQ(state.cached(), 7);
}

// Chunkwise holds one C×C tile, never T×T: T = 20000 would need 3.2 GB of double scores.
// Compared against the recurrent form on the last queries of the same call.
TEST(SoftmaxAttention, ChunkwiseMemoryIsLinearInT) {
  const Index T = 20000, d = 16;
  SoftmaxAttention<double> layer({.key_dim = d, .value_dim = d, .chunk_size = 64});
  Rng rng(3);
  const Matrix<double> q = uniform<double>(rng, T, d), k = uniform<double>(rng, T, d),
                       v = uniform<double>(rng, T, d);
  auto chunk_state = layer.initial_state();
  const auto out = forward(layer, Form::chunkwise, {.q = q, .k = k, .v = v}, chunk_state);
  // Recurrent reference for the last 50 queries: feed the prefix, then decode.
  auto state = layer.initial_state();
  const Index prefix = T - 50;
  (void)forward(layer, Form::chunkwise,
                {.q = q.topRows(prefix), .k = k.topRows(prefix), .v = v.topRows(prefix)}, state);
  const auto tail =
      forward(layer, Form::recurrent,
              {.q = q.bottomRows(50), .k = k.bottomRows(50), .v = v.bottomRows(50)}, state);
  EXPECT_TRUE(near(out.bottomRows(50), tail, 1e-10));
  EXPECT_EQ(chunk_state.cached(), T);
}

}  // namespace seqmem::test
