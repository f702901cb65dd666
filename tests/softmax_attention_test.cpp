// SoftmaxAttention: the conformance suite over its variants, plus the KV-cache and memory
// bounds.

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>
#include <utility>

#include "conformance.hpp"

namespace seqmem::test {
namespace {

struct SoftmaxVariant {
  std::string name;
  Index window = 0;
  Index key_dim = 6, value_dim = 5;
  double spread = 1.0;  // q, k in (−spread, spread): large values make peaked softmaxes
  Index query_heads = 1;
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
        {.name = "3 query heads", .window = 0, .query_heads = 3},
        {.name = "2 query heads, window 5", .window = 5, .key_dim = 4, .query_heads = 2},
    };
  }

  static Layer make(const Variant& v, Index chunk) {
    return Layer({.key_dim = v.key_dim,
                  .value_dim = v.value_dim,
                  .window = v.window,
                  .query_heads = v.query_heads,
                  .chunk_size = chunk});
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
    return {uniform<Scalar>(rng, T, layer.query_heads() * dk, -var.spread, var.spread),
            uniform<Scalar>(rng, T, dk, -var.spread, var.spread), uniform<Scalar>(rng, T, dv)};
  }

  /// A nonzero state: the cache after a random prefix of 1..30 tokens.
  static void randomize(const Layer& layer, State& state, Rng& rng) {
    const Index n = uniform_index(rng, 1, 30);
    const Matrix<Scalar> q = uniform<Scalar>(rng, n, layer.query_heads() * layer.key_dim());
    const Matrix<Scalar> k = uniform<Scalar>(rng, n, layer.options().key_dim);
    const Matrix<Scalar> v = uniform<Scalar>(rng, n, layer.options().value_dim);
    (void)forward(layer, Form::recurrent, {.q = q, .k = k, .v = v}, state);
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
        {"query_heads 0", [] { return Layer({.key_dim = 4, .value_dim = 4, .query_heads = 0}); },
         "query_heads must be > 0, got 0"},
        {"query_heads·value_dim overflowing",
         [] {
           return Layer({.key_dim = 1,
                         .value_dim = 4,
                         .query_heads = std::numeric_limits<Index>::max() / 2});
         },
         "query_heads·value_dim (the hidden width) overflows Index"},
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

// The windowed cache stays at w − 1 rows however long the stream, and its buffer small after
// a long call (a state and its copies stay O(window)).
TEST(SoftmaxAttention, WindowedCacheIsBounded) {
  SoftmaxAttention<float> layer({.key_dim = 4, .value_dim = 4, .window = 8});
  Rng rng(2);
  auto state = layer.initial_state();
  for (int call = 0; call < 200; ++call) {
    const Index n = call == 100 ? 5000 : uniform_index(rng, 1, 20);
    const Matrix<float> x = uniform<float>(rng, n, 4);
    (void)forward(layer, all_forms[call % 3], {.q = x, .k = x, .v = x}, state);
    ASSERT_LE(state.cached(), 7);
    ASSERT_LE(state.capacity(), 64) << "call " << call << " of " << n << " tokens";
  }
  EXPECT_EQ(state.cached(), 7);
}

// Grouped-query attention: G query heads over one k/v give, head by head, what G separate
// single-head layers give on the same k/v (each with its own copy of the cache), in every form
// and across calls; the shared cache holds each key once; the packed q must be G heads wide.
TEST(SoftmaxAttention, QueryHeadsShareOneCache) {
  const Index G = 3, dk = 4, dv = 5, T = 23;
  for (const Index window : {Index{0}, Index{6}}) {
    const SoftmaxAttention<double> grouped(
        {.key_dim = dk, .value_dim = dv, .window = window, .query_heads = G, .chunk_size = 4});
    const SoftmaxAttention<double> single(
        {.key_dim = dk, .value_dim = dv, .window = window, .chunk_size = 4});
    Rng rng(static_cast<std::uint64_t>(7 + window));
    const Matrix<double> q = uniform<double>(rng, T, G * dk, -2, 2),
                         k = uniform<double>(rng, T, dk, -2, 2), v = uniform<double>(rng, T, dv);
    Matrix<double> want(T, G * dv);
    for (Index g = 0; g < G; ++g) {
      auto state = single.initial_state();
      want.middleCols(g * dv, dv) =
          forward(single, Form::recurrent, {.q = q.middleCols(g * dk, dk), .k = k, .v = v}, state);
    }
    for (const Form form : all_forms) {
      SCOPED_TRACE(::testing::Message() << "window " << window << ", " << to_string(form));
      auto state = grouped.initial_state();
      Matrix<double> got(T, G * dv);
      for (const auto& [begin, n] : {std::pair<Index, Index>{0, 9}, {9, 1}, {10, 13}}) {
        got.middleRows(begin, n) = forward(
            grouped, form,
            {.q = q.middleRows(begin, n), .k = k.middleRows(begin, n), .v = v.middleRows(begin, n)},
            state);
      }
      EXPECT_TRUE(near(got, want, 1e-13));
      EXPECT_EQ(state.keys().cols(), dk);
      EXPECT_EQ(state.cached(), window > 0 ? window - 1 : T);
    }
  }
  // Under MultiHead a head is one KV head with its G query heads (q of KV head h: columns
  // h·G·dk …, as fla packs query head h·G + g).
  const SoftmaxAttention<double> grouped({.key_dim = dk, .value_dim = dv, .query_heads = G});
  {
    const Index HK = 2;
    Rng rng(9);
    const Matrix<double> q = uniform<double>(rng, T, HK * G * dk),
                         k = uniform<double>(rng, T, HK * dk), v = uniform<double>(rng, T, HK * dv);
    const MultiHead<SoftmaxAttention<double>> heads(grouped, HK, 1);
    auto states = heads.initial_state();
    const Matrix<double> got = forward(heads, Form::chunkwise, {.q = q, .k = k, .v = v}, states);
    for (Index h = 0; h < HK; ++h) {
      auto state = grouped.initial_state();
      EXPECT_TRUE(near(got.middleCols(h * G * dv, G * dv),
                       forward(grouped, Form::recurrent,
                               {.q = q.middleCols(h * G * dk, G * dk),
                                .k = k.middleCols(h * dk, dk),
                                .v = v.middleCols(h * dv, dv)},
                               state),
                       1e-13))
          << "KV head " << h;
    }
  }
  auto state = grouped.initial_state();
  const Matrix<double> k = Matrix<double>::Ones(2, dk), v = Matrix<double>::Ones(2, dv);
  const Matrix<double> q = Matrix<double>::Ones(2, dk);
  try {
    (void)forward(grouped, Form::recurrent, {.q = q, .k = k, .v = v}, state);
    ADD_FAILURE() << "a q one head wide was accepted";
  } catch (const invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("q must be 2x12, got 2x4"), std::string::npos) << e.what();
  }
  EXPECT_EQ(state.tokens(), 0);
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
