// TitansMemory (docs/math.md §5): the conformance suite over depths, activations, biases,
// LayerNorm, mini-batch sizes and extreme gates; the shared engine's gradients against
// finite differences; the identities with DeltaNet and TTT-Linear; erasing (α = 1) and long
// products of small factors.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "conformance.hpp"

namespace seqmem::test {
namespace {

/// How the per-token gates are drawn. Otherwise θ ∈ (0.005, 0.1), α ∈ (0, 0.2), η ∈ (0.5, 0.95).
enum class Gates {
  normal,
  extremes,            ///< α = 1, η = 0, θ = 0 (and α = 1 with η = 0) on random tokens
  eta_one_alpha_zero,  ///< η = 1 and α = 0 on every token (θ ∈ (0.0005, 0.005))
  long_small,  ///< runs of 40 tokens with α ∈ [0.95, 1), η ∈ [0, 0.05): products of many
               ///< small factors inside one mini-batch (they underflow in float)
  gentle,      ///< θ ∈ (0.005, 0.02), α ∈ (0, 0.05): LayerNorm at depth 1 (see variants())
};

struct TitansVariant {
  std::string name;
  Index key_dim = 5, value_dim = 4;
  Index depth = 1;
  Index mini_batch = 16;
  Activation activation = Activation::gelu_tanh;
  bool bias = false;
  bool layer_norm = false;
  Gates gates = Gates::normal;
  bool random_parameters = false;  ///< random initial weights, LN weight and LN bias
};

template <class Scalar>
Matrix<Scalar> unit_rows(Matrix<Scalar> x) {
  x.rowwise().normalize();
  return x;
}

/// Weights of `shape`'s shapes, uniform in ±amplitude/√rows (biases ±amplitude/4).
template <class Scalar>
Weights<Scalar> random_weights(const Weights<Scalar>& shape, Rng& rng, double amplitude) {
  Weights<Scalar> w = shape;
  for (auto& m : w.W) {
    const double a = amplitude / std::sqrt(static_cast<double>(m.rows()));
    m = uniform<Scalar>(rng, m.rows(), m.cols(), -a, a);
  }
  for (auto& b : w.b)
    b = uniform<Scalar>(rng, b.rows(), b.cols(), -amplitude / 4, amplitude / 4);
  return w;
}

template <class Scalar>
std::vector<Matrix<Scalar>> flatten(const Weights<Scalar>& w) {
  std::vector<Matrix<Scalar>> out = w.W;
  out.insert(out.end(), w.b.begin(), w.b.end());
  return out;
}

/// Inputs of one sequence.
template <class Scalar>
struct TitansData {
  using Inputs = typename TitansMemory<Scalar>::Inputs;
  Matrix<Scalar> q, k, v;
  Vector<Scalar> theta, alpha, momentum;

  Inputs slice(Index b, Index n) const {
    return {.q = q.middleRows(b, n),
            .k = k.middleRows(b, n),
            .v = v.middleRows(b, n),
            .learning_rate = theta.segment(b, n),
            .forgetting = alpha.segment(b, n),
            .momentum_decay = momentum.segment(b, n)};
  }
  Inputs whole() const {
    return {.q = q,
            .k = k,
            .v = v,
            .learning_rate = theta,
            .forgetting = alpha,
            .momentum_decay = momentum};
  }
  Index tokens() const { return q.rows(); }
};

template <class Scalar>
TitansData<Scalar> random_data(Gates gates, Index T, Index dk, Index dv, Rng& rng) {
  TitansData<Scalar> d{uniform<Scalar>(rng, T, dk),
                       unit_rows(uniform<Scalar>(rng, T, dk)),
                       uniform<Scalar>(rng, T, dv),
                       {},
                       {},
                       {}};
  Vector<Scalar> theta = uniform<Scalar>(rng, T, 1, 0.005, 0.1).col(0);
  Vector<Scalar> alpha = uniform<Scalar>(rng, T, 1, 0.0, 0.2).col(0);
  Vector<Scalar> eta = uniform<Scalar>(rng, T, 1, 0.5, 0.95).col(0);
  switch (gates) {
    case Gates::normal: break;
    case Gates::gentle:
      theta = uniform<Scalar>(rng, T, 1, 0.005, 0.02).col(0);
      alpha = uniform<Scalar>(rng, T, 1, 0.0, 0.05).col(0);
      break;
    case Gates::extremes:
      for (Index t = 0; t < T; ++t) {
        switch (uniform_index(rng, 0, 5)) {
          case 0: alpha(t) = Scalar(1); break;
          case 1: eta(t) = Scalar(0); break;
          case 2: theta(t) = Scalar(0); break;
          case 3:
            alpha(t) = Scalar(1);
            eta(t) = Scalar(0);
            break;
          default: break;
        }
      }
      break;
    case Gates::eta_one_alpha_zero:  // no friction: smaller steps keep the memory bounded
      theta = uniform<Scalar>(rng, T, 1, 0.0005, 0.005).col(0);
      alpha.setZero();
      eta.setOnes();
      break;
    case Gates::long_small:
      for (Index t = 0; t < T; ++t) {
        if ((t / 40) % 2 == 1) continue;  // runs of 40 small-factor tokens, then 40 normal ones
        alpha(t) = static_cast<Scalar>(uniform<double>(rng, 1, 1, 0.95, 1.0)(0, 0));
        eta(t) = static_cast<Scalar>(uniform<double>(rng, 1, 1, 0.0, 0.05)(0, 0));
      }
      break;
  }
  d.theta = theta;
  d.alpha = alpha;
  d.momentum = eta;
  return d;
}

/// Runs `form` over all tokens of `data`: one call, except that the parallel form (defined
/// only inside one mini-batch) is split into calls that end at mini-batch boundaries.
template <class Layer, class Slice>
Matrix<typename Layer::Scalar> run_all(const Layer& layer, Form form, Index T, const Slice& slice,
                                       typename Layer::State& state) {
  if (form != Form::parallel) return forward(layer, form, slice(0, T), state);
  Matrix<typename Layer::Scalar> out(T, layer.output_dim());
  for (Index begin = 0; begin < T;) {
    Index n = T - begin;
    if constexpr (requires { layer.options().mini_batch; }) {
      n = std::min(n, layer.options().mini_batch - state.position);
    }
    out.middleRows(begin, n) = forward(layer, form, slice(begin, n), state);
    begin += n;
  }
  return out;
}

template <class Scalar>
Matrix<Scalar> run_all(const TitansMemory<Scalar>& layer, Form form, const TitansData<Scalar>& d,
                       typename TitansMemory<Scalar>::State& state) {
  return run_all(
      layer, form, d.tokens(), [&d](Index b, Index n) { return d.slice(b, n); }, state);
}

template <class Scalar>
std::vector<Matrix<Scalar>> titans_tensors(const typename TitansMemory<Scalar>::State& s) {
  std::vector<Matrix<Scalar>> out;
  for (const Weights<Scalar>* w : {&s.reference, &s.current, &s.momentum}) {
    const auto f = flatten(*w);
    out.insert(out.end(), f.begin(), f.end());
  }
  out.push_back(Matrix<Scalar>::Constant(1, 1, static_cast<Scalar>(s.position)));
  return out;
}

template <class Scalar>
::testing::AssertionResult same_weights(const Weights<Scalar>& got, const Weights<Scalar>& want,
                                        double tol) {
  const auto a = flatten(got), b = flatten(want);
  if (a.size() != b.size()) return ::testing::AssertionFailure() << "weight count";
  for (std::size_t i = 0; i < a.size(); ++i) {
    auto r = near(a[i], b[i], tol);
    if (!r) return r << " (weight tensor " << i << ")";
  }
  return ::testing::AssertionSuccess();
}

template <class Scalar>
::testing::AssertionResult same_titans_state(const typename TitansMemory<Scalar>::State& got,
                                             const typename TitansMemory<Scalar>::State& want,
                                             double tol) {
  const auto a = titans_tensors<Scalar>(got), b = titans_tensors<Scalar>(want);
  if (a.size() != b.size()) return ::testing::AssertionFailure() << "state tensor count";
  for (std::size_t i = 0; i < a.size(); ++i) {
    auto r = near(a[i], b[i], tol);
    if (!r) return r << " (state tensor " << i << ")";
  }
  return ::testing::AssertionSuccess();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// 1. Conformance
// ---------------------------------------------------------------------------------------------

template <class Scalar>
struct LayerCase<TitansMemory<Scalar>> {
  using Layer = TitansMemory<Scalar>;
  using State = typename Layer::State;
  using Inputs = typename Layer::Inputs;
  using Variant = TitansVariant;
  using Data = TitansData<Scalar>;

  static std::vector<Variant> variants() {
    const Activation silu = Activation::silu;
    return {
        {.name = "depth 1, b 16"},
        {.name = "depth 1, b 1",
         .key_dim = 4,
         .value_dim = 6,
         .mini_batch = 1,
         .random_parameters = true},
        {.name = "depth 2 gelu, b 4", .key_dim = 5, .value_dim = 3, .depth = 2, .mini_batch = 4},
        {.name = "depth 2 silu bias, b 5",
         .key_dim = 4,
         .value_dim = 5,
         .depth = 2,
         .mini_batch = 5,
         .activation = silu,
         .bias = true,
         .random_parameters = true},
        {.name = "depth 3 gelu bias, b 7",
         .key_dim = 4,
         .value_dim = 4,
         .depth = 3,
         .mini_batch = 7,
         .bias = true},
        {.name = "depth 4 silu, b 8",
         .key_dim = 4,
         .value_dim = 3,
         .depth = 4,
         .mini_batch = 8,
         .activation = silu,
         .random_parameters = true},
        // Depth 1 with LayerNorm and the usual gates is chaotic (LN makes the step grow as
        // forgetting shrinks W): float rounding grows past the float tolerance within 300
        // tokens in every form alike (and for key_dim 3 even double forms differ by 1e-3).
        // Gentler steps keep it a test of the forms, not of the dynamics' conditioning.
        {.name = "layer_norm depth 1, b 6",
         .key_dim = 5,
         .value_dim = 5,
         .mini_batch = 6,
         .layer_norm = true,
         .gates = Gates::gentle,
         .random_parameters = true},
        {.name = "layer_norm depth 2 bias, b 3",
         .key_dim = 4,
         .value_dim = 4,
         .depth = 2,
         .mini_batch = 3,
         .bias = true,
         .layer_norm = true,
         .random_parameters = true},
        {.name = "depth 2, b 512", .key_dim = 4, .value_dim = 4, .depth = 2, .mini_batch = 512},
        {.name = "extreme gates depth 1, b 4",
         .mini_batch = 4,
         .gates = Gates::extremes,
         .random_parameters = true},
        {.name = "extreme gates depth 2 bias, b 16",
         .key_dim = 4,
         .value_dim = 3,
         .depth = 2,
         .bias = true,
         .gates = Gates::extremes},
        {.name = "extreme gates depth 1, b 1",
         .key_dim = 4,
         .value_dim = 3,
         .mini_batch = 1,
         .gates = Gates::extremes},
        {.name = "eta 1 alpha 0, b 3", .mini_batch = 3, .gates = Gates::eta_one_alpha_zero},
        // η = 1, α = 0: momentum without friction; with stale (mini-batch) gradients a deep
        // memory grows without bound unless steps and mini-batches are small.
        {.name = "eta 1 alpha 0 depth 2 silu, b 2",
         .key_dim = 4,
         .value_dim = 3,
         .depth = 2,
         .mini_batch = 2,
         .activation = silu,
         .gates = Gates::eta_one_alpha_zero},
        {.name = "long small products depth 2, b 64",
         .key_dim = 4,
         .value_dim = 3,
         .depth = 2,
         .mini_batch = 64,
         .gates = Gates::long_small},
        {.name = "long small products depth 1, b 128",
         .mini_batch = 128,
         .gates = Gates::long_small,
         .random_parameters = true},
    };
  }

  /// `chunk` is irrelevant: the mini-batch is part of the model, and chunkwise is the closed
  /// form per mini-batch.
  static Layer make(const Variant& v, Index /*chunk*/) {
    const typename Layer::Options options{.key_dim = v.key_dim,
                                          .value_dim = v.value_dim,
                                          .depth = v.depth,
                                          .expansion = 2,
                                          .activation = v.activation,
                                          .bias = v.bias,
                                          .layer_norm = v.layer_norm,
                                          .mini_batch = v.mini_batch};
    if (!v.random_parameters) return Layer(options);
    Rng rng(77);
    const Layer plain(options);
    return Layer(options,
                 typename Layer::Parameters{random_weights(plain.parameters().initial, rng, 2.0),
                                            uniform<Scalar>(rng, 1, v.value_dim, 0.5, 1.5),
                                            uniform<Scalar>(rng, 1, v.value_dim, -0.3, 0.3)});
  }

  static Data data(const Variant& var, const Layer& layer, Index T, Rng& rng) {
    return random_data<Scalar>(var.gates, T, layer.options().key_dim, layer.options().value_dim,
                               rng);
  }

  static void randomize(const Layer& layer, State& state, Rng& rng) {
    state.reference = random_weights(state.reference, rng, 1.5);
    state.current = random_weights(state.current, rng, 1.5);
    state.momentum = random_weights(state.momentum, rng, 0.01);
    state.position = uniform_index(rng, 0, layer.options().mini_batch - 1);
  }

  static std::vector<Matrix<Scalar>> tensors(const State& s) { return titans_tensors<Scalar>(s); }

  static bool defined(const Layer& layer, Form form, const State& state, Index T) {
    return form != Form::parallel || state.position + T <= layer.options().mini_batch;
  }

  // The first variant: key_dim 5, value_dim 4, T = 6.
  static std::vector<BadInput<Data>> bad_inputs() {
    const Scalar nan = std::numeric_limits<Scalar>::quiet_NaN();
    const Scalar inf = std::numeric_limits<Scalar>::infinity();
    return {
        {"alpha above 1", [](Data& d) { d.alpha(2) = Scalar(1.5); },
         "forgetting[2] must be finite and in [0, 1], got 1.5"},
        {"negative alpha", [](Data& d) { d.alpha(0) = Scalar(-0.25); },
         "forgetting[0] must be finite and in [0, 1], got -0.25"},
        {"momentum above 1", [](Data& d) { d.momentum(5) = Scalar(1.25); },
         "momentum_decay[5] must be finite and in [0, 1], got 1.25"},
        {"negative momentum", [](Data& d) { d.momentum(3) = Scalar(-0.5); },
         "momentum_decay[3] must be finite and in [0, 1], got -0.5"},
        {"negative theta", [](Data& d) { d.theta(4) = Scalar(-0.125); },
         "learning_rate[4] must be finite and >= 0, got -0.125"},
        {"NaN theta", [nan](Data& d) { d.theta(1) = nan; }, "learning_rate[1] must be finite"},
        {"infinite theta", [inf](Data& d) { d.theta(2) = inf; }, "learning_rate[2] must be finite"},
        {"NaN alpha", [nan](Data& d) { d.alpha(3) = nan; }, "forgetting[3] must be finite"},
        {"NaN momentum", [nan](Data& d) { d.momentum(0) = nan; },
         "momentum_decay[0] must be finite"},
        {"k with fewer rows",
         [](Data& d) { d.k.conservativeResize(d.k.rows() - 1, Eigen::NoChange); },
         "k must be 6x5, got 5x5"},
        {"v with more rows", [](Data& d) { d.v = Matrix<Scalar>::Ones(7, 4); },
         "v must be 6x4, got 7x4"},
        {"theta too short", [](Data& d) { d.theta = Vector<Scalar>::Ones(5); },
         "learning_rate must be 6x1, got 5x1"},
        {"alpha too long", [](Data& d) { d.alpha = Vector<Scalar>::Zero(7); },
         "forgetting must be 6x1, got 7x1"},
        {"momentum too short", [](Data& d) { d.momentum = Vector<Scalar>::Zero(2); },
         "momentum_decay must be 6x1, got 2x1"},
        {"v with a wrong dim", [](Data& d) { d.v = Matrix<Scalar>::Ones(d.v.rows(), 2); },
         "v must be 6x4, got 6x2"},
        {"q with a wrong dim", [](Data& d) { d.q = Matrix<Scalar>::Ones(d.q.rows(), 4); },
         "q must be 6x5, got 6x4"},
        {"NaN in q", [nan](Data& d) { d.q(1, 2) = nan; }, "q(1, 2) must be finite"},
        {"infinite k", [inf](Data& d) { d.k(4, 0) = -inf; }, "k(4, 0) must be finite"},
        {"NaN in v", [nan](Data& d) { d.v(5, 3) = nan; }, "v(5, 3) must be finite"},
    };
  }

  static std::vector<BadOption<Layer>> bad_options() {
    using Params = typename Layer::Parameters;
    const auto ones = Matrix<Scalar>::Ones(1, 3).eval(), zeros = Matrix<Scalar>::Zero(1, 3).eval();
    return {
        {"depth 0", [] { return Layer({.key_dim = 4, .value_dim = 3, .depth = 0}); },
         "depth must be in [1, 4], got 0"},
        {"depth 5", [] { return Layer({.key_dim = 4, .value_dim = 3, .depth = 5}); },
         "depth must be in [1, 4], got 5"},
        {"layer_norm with key_dim != value_dim",
         [] { return Layer({.key_dim = 4, .value_dim = 3, .layer_norm = true}); },
         "layer_norm (with its residual) needs key_dim = value_dim, got 4 and 3"},
        {"mini_batch 0", [] { return Layer({.key_dim = 4, .value_dim = 3, .mini_batch = 0}); },
         "mini_batch must be > 0, got 0"},
        {"key_dim 0", [] { return Layer({.key_dim = 0, .value_dim = 3}); },
         "key_dim must be > 0, got 0"},
        {"value_dim 0", [] { return Layer({.key_dim = 4, .value_dim = 0}); },
         "value_dim must be > 0, got 0"},
        {"expansion 0 at depth 2",
         [] { return Layer({.key_dim = 4, .value_dim = 3, .depth = 2, .expansion = 0}); },
         "expansion must be > 0, got 0"},
        {"expansion·key_dim overflowing Index at depth 2",  // 2^62·4 wraps to 0
         [] {
           return Layer({.key_dim = 4, .value_dim = 3, .depth = 2, .expansion = Index{1} << 62});
         },
         "expansion·key_dim (the hidden width) overflows Index"},
        {"ln_eps 0",
         [] { return Layer({.key_dim = 3, .value_dim = 3, .layer_norm = true, .ln_eps = 0}); },
         "ln_eps must be > 0"},
        {"initial W transposed",
         [=] {
           return Layer({.key_dim = 4, .value_dim = 3},
                        Params{{{Matrix<Scalar>::Zero(3, 4)}, {}}, ones, zeros});
         },
         "parameters.initial.W[0] must be 4x3, got 3x4"},
        {"initial W count",
         [=] {
           return Layer({.key_dim = 4, .value_dim = 3, .depth = 2},
                        Params{{{Matrix<Scalar>::Zero(4, 3)}, {}}, ones, zeros});
         },
         "parameters.initial.W must hold 2 matrices, got 1"},
        {"initial hidden layer of the wrong width",
         [=] {
           return Layer(
               {.key_dim = 4, .value_dim = 3, .depth = 2, .expansion = 2},
               Params{{{Matrix<Scalar>::Zero(4, 4), Matrix<Scalar>::Zero(4, 3)}, {}}, ones, zeros});
         },
         "parameters.initial.W[0] must be 4x8, got 4x4"},
        {"biases missing",
         [=] {
           return Layer({.key_dim = 4, .value_dim = 3, .bias = true},
                        Params{{{Matrix<Scalar>::Zero(4, 3)}, {}}, ones, zeros});
         },
         "parameters.initial.b must hold 1 rows, got 0"},
        {"bias of the wrong shape",
         [=] {
           return Layer(
               {.key_dim = 4, .value_dim = 3, .bias = true},
               Params{{{Matrix<Scalar>::Zero(4, 3)}, {Matrix<Scalar>::Zero(3, 1)}}, ones, zeros});
         },
         "parameters.initial.b[0] must be 1x3, got 3x1"},
        {"non-finite initial weight",
         [=] {
           Matrix<Scalar> w = Matrix<Scalar>::Zero(4, 3);
           w(1, 2) = std::numeric_limits<Scalar>::quiet_NaN();
           return Layer({.key_dim = 4, .value_dim = 3}, Params{{{w}, {}}, ones, zeros});
         },
         "parameters.initial.W[0] must be finite"},
        {"ln_weight of the wrong shape",
         [=] {
           return Layer(
               {.key_dim = 4, .value_dim = 3},
               Params{{{Matrix<Scalar>::Zero(4, 3)}, {}}, Matrix<Scalar>::Ones(1, 4), zeros});
         },
         "parameters.ln_weight must be 1x3, got 1x4"},
        {"ln_bias of the wrong shape",
         [=] {
           return Layer(
               {.key_dim = 4, .value_dim = 3},
               Params{{{Matrix<Scalar>::Zero(4, 3)}, {}}, ones, Matrix<Scalar>::Zero(3, 1)});
         },
         "parameters.ln_bias must be 1x3, got 3x1"},
    };
  }
};

using TitansTypes = ::testing::Types<TitansMemory<float>, TitansMemory<double>>;
INSTANTIATE_TYPED_TEST_SUITE_P(Titans, Conformance, TitansTypes);

namespace {

using Titans = TitansMemory<double>;
constexpr double kTol = cross_form_tolerance<double>();

// The parallel form is one gradient block: it refuses a call that does not fit in the current
// mini-batch, names chunkwise, and leaves the state as it was. A call that ends exactly at the
// mini-batch boundary is fine and rolls the state over.
TEST(Titans, ParallelTooLongNamesChunkwiseAndKeepsState) {
  Rng rng(11);
  const Titans layer({.key_dim = 4, .value_dim = 3, .depth = 2, .expansion = 2, .mini_batch = 4});
  const auto data = random_data<double>(Gates::normal, 5, 4, 3, rng);
  auto state = layer.initial_state();
  LayerCase<Titans>::randomize(layer, state, rng);
  state.position = 2;
  const auto before = state;
  for (Index T : {3, 5}) {
    try {
      (void)forward(layer, Form::parallel, data.slice(0, T), state);
      ADD_FAILURE() << "no exception for T " << T;
    } catch (const seqmem::invalid_argument& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("use Form::chunkwise"), std::string::npos) << message;
      EXPECT_NE(message.find("position + T <= mini_batch (4), got 2 + " + std::to_string(T)),
                std::string::npos)
          << message;
    }
    EXPECT_TRUE(same_titans_state<double>(state, before, 0.0)) << "state changed, T " << T;
  }
  // Position 2 + T 2 = b: allowed, equal to the recurrent form, and the state rolls over.
  auto recurrent = before;
  const auto want = forward(layer, Form::recurrent, data.slice(0, 2), recurrent);
  const auto got = forward(layer, Form::parallel, data.slice(0, 2), state);
  EXPECT_TRUE(near(got, want, kTol));
  EXPECT_EQ(state.position, 0);
  EXPECT_TRUE(same_weights(state.reference, state.current, 0.0));
  EXPECT_TRUE(same_titans_state<double>(state, recurrent, kTol));
  // Chunkwise accepts the long call.
  auto chunk_state = before;
  EXPECT_NO_THROW((void)forward(layer, Form::chunkwise, data.slice(0, 5), chunk_state));
}

TEST(Titans, BadStateIsRejected) {
  const Titans layer({.key_dim = 4, .value_dim = 3, .depth = 2, .expansion = 2, .mini_batch = 4});
  Rng rng(12);
  const auto data = random_data<double>(Gates::normal, 2, 4, 3, rng);
  auto expect_error = [&](Titans::State state, const std::string& expect) {
    SCOPED_TRACE(expect);
    for (Form form : all_forms) {
      const auto before = state;
      try {
        (void)forward(layer, form, data.whole(), state);
        ADD_FAILURE() << "no exception, " << to_string(form);
      } catch (const seqmem::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find(expect), std::string::npos) << e.what();
      }
      const auto got = titans_tensors<double>(state), want = titans_tensors<double>(before);
      ASSERT_EQ(got.size(), want.size());
      for (std::size_t i = 0; i < got.size(); ++i)
        EXPECT_EQ(got[i], want[i]) << "state changed";
    }
  };
  auto state = layer.initial_state();
  state.position = 4;
  expect_error(state, "state.position must be in [0, 4), got 4");
  state.position = -1;
  expect_error(state, "state.position must be in [0, 4), got -1");
  state = layer.initial_state();
  state.momentum.W.pop_back();
  expect_error(state, "state.momentum.W must hold 2 matrices, got 1");
  state = layer.initial_state();
  state.reference.W[1] = Matrix<double>::Zero(3, 8);
  expect_error(state, "state.reference.W[1] must be 8x3, got 3x8");
  state = layer.initial_state();
  state.current.W[0](0, 0) = std::numeric_limits<double>::infinity();
  expect_error(state, "state.current.W[0] must be finite");
}

// Defaults: depth 1 starts at W_0 = 0; depth ≥ 2 at sin(1 + i·cols + j)/√rows; momentum 0.
TEST(Titans, InitialState) {
  const Titans linear({.key_dim = 3, .value_dim = 2});
  const auto s1 = linear.initial_state();
  ASSERT_EQ(s1.current.W.size(), 1u);
  EXPECT_EQ(s1.current.W[0], Matrix<double>::Zero(3, 2));
  EXPECT_EQ(s1.position, 0);
  const Titans deep({.key_dim = 3, .value_dim = 2, .depth = 3, .expansion = 2, .bias = true});
  const auto s3 = deep.initial_state();
  ASSERT_EQ(s3.current.W.size(), 3u);
  ASSERT_EQ(s3.current.b.size(), 3u);
  EXPECT_EQ(s3.current.W[1].rows(), 6);
  EXPECT_EQ(s3.current.W[1].cols(), 6);
  EXPECT_DOUBLE_EQ(s3.current.W[1](1, 2), std::sin(1.0 + 6 + 2) / std::sqrt(6.0));
  EXPECT_DOUBLE_EQ(s3.current.W[2](5, 1), std::sin(1.0 + 10 + 1) / std::sqrt(6.0));
  EXPECT_TRUE(same_weights(s3.reference, s3.current, 0.0));
  for (const auto& m : flatten(s3.momentum))
    EXPECT_EQ(m.norm(), 0.0);
  for (const auto& b : s3.current.b)
    EXPECT_EQ(b.norm(), 0.0);
}

// One token by hand, depth 1, b = 1: u = 2kᵀ(kW_ref − v), S = ηS_0 − θu, M = (1−α)M_0 + S,
// o = qM, with M_0 ≠ M_ref to see which weights each term uses.
TEST(Titans, OneTokenByHand) {
  Rng rng(13);
  const Titans layer({.key_dim = 3, .value_dim = 2, .mini_batch = 2});
  auto state = layer.initial_state();
  LayerCase<Titans>::randomize(layer, state, rng);
  state.position = 0;
  const auto data = random_data<double>(Gates::normal, 1, 3, 2, rng);
  const double theta = data.theta(0), alpha = data.alpha(0), eta = data.momentum(0);
  const Matrix<double> k = data.k, v = data.v, q = data.q;
  const Matrix<double> u = 2.0 * k.transpose() * (k * state.reference.W[0] - v);
  const Matrix<double> S = eta * state.momentum.W[0] - theta * u;
  const Matrix<double> M = (1 - alpha) * state.current.W[0] + S;
  for (Form form : all_forms) {
    auto s = state;
    const auto o = forward(layer, form, data.whole(), s);
    EXPECT_TRUE(near(s.momentum.W[0], S, 1e-14)) << to_string(form);
    EXPECT_TRUE(near(s.current.W[0], M, 1e-14)) << to_string(form);
    EXPECT_TRUE(near(s.reference.W[0], state.reference.W[0], 0.0)) << to_string(form);
    EXPECT_EQ(s.position, 1);
    EXPECT_TRUE(near(o, q * M, 1e-14)) << to_string(form);
  }
}

// ---------------------------------------------------------------------------------------------
// An independent reference: the model's forward written out from docs/math.md §4–5, and the
// recurrence of §5 on top of the engine's per-token gradients (which are checked against
// finite differences below).
// ---------------------------------------------------------------------------------------------

double activation_reference(Activation a, double x) {
  if (a == Activation::silu) return x / (1.0 + std::exp(-x));
  const double k = std::sqrt(2.0 / std::acos(-1.0));
  return 0.5 * x * (1.0 + std::tanh(k * (x + 0.044715 * x * x * x)));
}

/// f(x) for the layer's memory at weights P: dense layers with the activation between them,
/// then x + LN(·) with residual + LayerNorm (biased variance).
Matrix<double> forward_reference(const Titans::Options& o, const Titans::Parameters& p,
                                 const Weights<double>& P, const Matrix<double>& x) {
  Matrix<double> h = x;
  for (std::size_t l = 0; l < P.W.size(); ++l) {
    Matrix<double> z = h * P.W[l];
    if (o.bias) z.rowwise() += P.b[l].row(0);
    if (l + 1 < P.W.size()) {
      for (Index i = 0; i < z.rows(); ++i)
        for (Index j = 0; j < z.cols(); ++j)
          z(i, j) = activation_reference(o.activation, z(i, j));
    }
    h = z;
  }
  if (!o.layer_norm) return h;
  Matrix<double> y = x;
  for (Index i = 0; i < h.rows(); ++i) {
    const double mean = h.row(i).mean();
    const double var = (h.row(i).array() - mean).square().mean();
    for (Index j = 0; j < h.cols(); ++j) {
      y(i, j) += p.ln_weight(0, j) * (h(i, j) - mean) / std::sqrt(var + o.ln_eps) + p.ln_bias(0, j);
    }
  }
  return y;
}

detail::InnerModel<double> engine_of(const Titans& layer) {
  const auto& o = layer.options();
  detail::InnerModel<double> model;
  model.dims.assign(std::size_t(o.depth + 1), o.expansion * o.key_dim);
  model.dims.front() = o.key_dim;
  model.dims.back() = o.value_dim;
  model.activation = o.activation;
  model.bias = o.bias;
  model.layer_norm = o.layer_norm;
  model.ln_eps = o.ln_eps;
  model.loss_factor = 2.0;
  model.parameters.ln_weight = layer.parameters().ln_weight;
  model.parameters.ln_bias = layer.parameters().ln_bias;
  return model;
}

/// docs/math.md §5 token by token: u_t = ∇‖M_ref(k_t) − v_t‖², S_t = η_t S_{t−1} − θ_t u_t,
/// M_t = (1 − α_t) M_{t−1} + S_t, o_t = M_t(q_t); M_ref ← M at the end of each mini-batch.
Matrix<double> reference_run(const Titans& layer, const TitansData<double>& d, Titans::State& s) {
  const auto model = engine_of(layer);
  Matrix<double> out(d.tokens(), layer.options().value_dim);
  for (Index t = 0; t < d.tokens(); ++t) {
    const double theta = d.theta(t), keep = 1.0 - d.alpha(t), eta = d.momentum(t);
    const auto tr = model.trace(s.reference, d.k.row(t), d.v.row(t));
    for (std::size_t l = 0; l < s.current.W.size(); ++l) {
      s.momentum.W[l] = eta * s.momentum.W[l] - theta * tr.X[l].transpose() * tr.Delta[l];
      s.current.W[l] = keep * s.current.W[l] + s.momentum.W[l];
    }
    for (std::size_t l = 0; l < s.current.b.size(); ++l) {
      s.momentum.b[l] = eta * s.momentum.b[l] - theta * tr.Delta[l];
      s.current.b[l] = keep * s.current.b[l] + s.momentum.b[l];
    }
    out.row(t) = forward_reference(layer.options(), layer.parameters(), s.current, d.q.row(t));
    if (++s.position == layer.options().mini_batch) {
      s.reference = s.current;
      s.position = 0;
    }
  }
  return out;
}

// The engine's forward is the model of docs/math.md §4–5 (every depth, activation, bias, LN).
TEST(InnerModel, EvaluateMatchesReferenceForward) {
  Rng rng(20);
  for (Index depth = 1; depth <= 4; ++depth) {
    for (Activation act : {Activation::gelu_tanh, Activation::silu}) {
      for (bool bias : {false, true}) {
        for (bool ln : {false, true}) {
          SCOPED_TRACE(::testing::Message() << "depth " << depth << " activation " << int(act)
                                            << " bias " << bias << " ln " << ln);
          const Titans::Options o{.key_dim = 4,
                                  .value_dim = ln ? 4 : 3,
                                  .depth = depth,
                                  .expansion = 2,
                                  .activation = act,
                                  .bias = bias,
                                  .layer_norm = ln,
                                  .ln_eps = 1e-5};
          const Titans plain(o);
          const Titans layer(
              o, Titans::Parameters{random_weights(plain.parameters().initial, rng, 2.0),
                                    uniform<double>(rng, 1, o.value_dim, 0.5, 1.5),
                                    uniform<double>(rng, 1, o.value_dim, -0.5, 0.5)});
          const auto P = random_weights(layer.parameters().initial, rng, 2.0);
          const Matrix<double> x = uniform<double>(rng, 5, 4, -2.0, 2.0);
          EXPECT_TRUE(near(engine_of(layer).evaluate(P, x),
                           forward_reference(o, layer.parameters(), P, x), 1e-14));
        }
      }
    }
  }
}

// Every form equals the reference recurrence, from a random state (M_ref ≠ M, S ≠ 0, a random
// position inside the mini-batch), across several mini-batches. The conformance suite
// compares the forms with each other; this pins them to the definition (mini-batch roll-over,
// which weights the gradients are taken at, read after write, bias momentum).
TEST(Titans, FormsMatchReferenceRecurrence) {
  Rng rng(35);
  const Activation gelu = Activation::gelu_tanh, silu = Activation::silu;
  const std::vector<Titans::Options> configs = {
      {.key_dim = 5, .value_dim = 3, .mini_batch = 3},
      {.key_dim = 4,
       .value_dim = 3,
       .depth = 2,
       .expansion = 2,
       .activation = gelu,
       .bias = true,
       .mini_batch = 4},
      {.key_dim = 4,
       .value_dim = 4,
       .depth = 3,
       .expansion = 2,
       .activation = silu,
       .layer_norm = true,
       .mini_batch = 5},
      {.key_dim = 4,
       .value_dim = 3,
       .depth = 4,
       .expansion = 2,
       .activation = silu,
       .bias = true,
       .mini_batch = 16},
      {.key_dim = 4,
       .value_dim = 4,
       .depth = 2,
       .expansion = 2,
       .activation = silu,
       .bias = true,
       .layer_norm = true,
       .mini_batch = 1},
  };
  for (const auto& o : configs) {
    SCOPED_TRACE(::testing::Message() << "depth " << o.depth << ", b " << o.mini_batch
                                      << (o.bias ? ", bias" : "") << (o.layer_norm ? ", LN" : ""));
    const Titans plain(o);
    const Titans layer(o, Titans::Parameters{random_weights(plain.parameters().initial, rng, 2.0),
                                             uniform<double>(rng, 1, o.value_dim, 0.5, 1.5),
                                             uniform<double>(rng, 1, o.value_dim, -0.3, 0.3)});
    const Index T = 23;
    for (Gates gates : {Gates::normal, Gates::extremes}) {
      const auto data = random_data<double>(gates, T, o.key_dim, o.value_dim, rng);
      auto init = layer.initial_state();
      LayerCase<Titans>::randomize(layer, init, rng);
      init.momentum = random_weights(init.momentum, rng, 0.3);
      auto want_state = init;
      const auto want = reference_run(layer, data, want_state);
      ASSERT_TRUE(want.allFinite());
      for (Form form : all_forms) {
        SCOPED_TRACE(to_string(form));
        auto state = init;
        const auto got = run_all(layer, form, data, state);
        EXPECT_TRUE(near(got, want, 1e-12));
        EXPECT_TRUE(same_titans_state<double>(state, want_state, 1e-12));
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 2. The engine's gradients against central finite differences
// ---------------------------------------------------------------------------------------------

// ∇W_l = X_lᵀ Δ_l and ∇b_l = Σ_rows Δ_l (Δ_l itself for one token) of the loss
// (loss_factor/2)·Σ_rows ‖f(k) − v‖², f = model.evaluate(): every depth, both activations,
// with and without bias and residual + LayerNorm.
TEST(InnerModel, GradientsMatchFiniteDifferences) {
  Rng rng(21);
  for (Index depth = 1; depth <= 4; ++depth) {
    for (Activation act : {Activation::gelu_tanh, Activation::silu}) {
      for (bool bias : {false, true}) {
        for (bool ln : {false, true}) {
          for (Index T : {1, 3}) {
            SCOPED_TRACE(::testing::Message()
                         << "depth " << depth << (act == Activation::silu ? " silu" : " gelu")
                         << (bias ? " bias" : "") << (ln ? " layer_norm" : "") << ", T " << T);
            const Index d0 = 4, dL = ln ? 4 : 3, hidden = 6;
            detail::InnerModel<double> model;
            model.dims.assign(std::size_t(depth + 1), hidden);
            model.dims.front() = d0;
            model.dims.back() = dL;
            model.activation = act;
            model.bias = bias;
            model.layer_norm = ln;
            model.ln_eps = 1e-5;
            model.loss_factor = 2.0;
            model.parameters.ln_weight = uniform<double>(rng, 1, dL, 0.5, 1.5);
            model.parameters.ln_bias = uniform<double>(rng, 1, dL, -0.5, 0.5);
            const Weights<double> P = random_weights(model.zeros(), rng, 1.5);
            const Matrix<double> k = uniform<double>(rng, T, d0), v = uniform<double>(rng, T, dL);
            auto loss = [&](const Weights<double>& w) {
              return (model.evaluate(w, k) - v).squaredNorm();
            };
            const auto tr = model.trace(P, k, v);
            ASSERT_EQ(tr.X.size(), std::size_t(depth));
            ASSERT_EQ(tr.Delta.size(), std::size_t(depth));
            const double h = 1e-5;
            for (std::size_t l = 0; l < model.layers(); ++l) {
              const Matrix<double> gW = tr.X[l].transpose() * tr.Delta[l];
              Matrix<double> fdW(gW.rows(), gW.cols());
              for (Index i = 0; i < gW.rows(); ++i) {
                for (Index j = 0; j < gW.cols(); ++j) {
                  Weights<double> plus = P, minus = P;
                  plus.W[l](i, j) += h;
                  minus.W[l](i, j) -= h;
                  fdW(i, j) = (loss(plus) - loss(minus)) / (2 * h);
                }
              }
              ASSERT_GT(gW.cwiseAbs().maxCoeff(), 1e-3) << "layer " << l;
              EXPECT_LT((fdW - gW).cwiseAbs().maxCoeff() / gW.cwiseAbs().maxCoeff(), 1e-6)
                  << "W[" << l << "]\nanalytic\n"
                  << gW << "\nfinite differences\n"
                  << fdW;
              if (!bias) continue;
              const Matrix<double> gb = tr.Delta[l].colwise().sum();
              if (T == 1) {
                EXPECT_EQ(gb, tr.Delta[l]);
              }
              Matrix<double> fdb(1, gb.cols());
              for (Index j = 0; j < gb.cols(); ++j) {
                Weights<double> plus = P, minus = P;
                plus.b[l](0, j) += h;
                minus.b[l](0, j) -= h;
                fdb(0, j) = (loss(plus) - loss(minus)) / (2 * h);
              }
              EXPECT_LT((fdb - gb).cwiseAbs().maxCoeff() / gb.cwiseAbs().maxCoeff(), 1e-6)
                  << "b[" << l << "]\nanalytic\n"
                  << gb << "\nfinite differences\n"
                  << fdb;
            }
          }
        }
      }
    }
  }
}

// loss_factor scales the loss: factor 1 is the ½ loss of TTT, half of Titans' factor 2.
TEST(InnerModel, LossFactorScalesGradients) {
  Rng rng(22);
  detail::InnerModel<double> model;
  model.dims = {4, 6, 4};
  model.bias = true;
  model.layer_norm = true;
  model.parameters.ln_weight = uniform<double>(rng, 1, 4, 0.5, 1.5);
  model.parameters.ln_bias = uniform<double>(rng, 1, 4, -0.5, 0.5);
  const Weights<double> P = random_weights(model.zeros(), rng, 1.0);
  const Matrix<double> k = uniform<double>(rng, 3, 4), v = uniform<double>(rng, 3, 4);
  model.loss_factor = 1.0;
  const auto half = model.trace(P, k, v);
  model.loss_factor = 2.0;
  const auto full = model.trace(P, k, v);
  for (std::size_t l = 0; l < 2; ++l) {
    EXPECT_TRUE(near(full.Delta[l], 2.0 * half.Delta[l], 1e-15));
    EXPECT_TRUE(near(full.X[l], half.X[l], 0.0));
  }
}

// ---------------------------------------------------------------------------------------------
// 3. Identities
// ---------------------------------------------------------------------------------------------

Titans::Parameters linear_parameters(const Matrix<double>& W0) {
  return {{{W0}, {}}, Matrix<double>::Ones(1, W0.cols()), Matrix<double>::Zero(1, W0.cols())};
}

// (a) Depth 1, no LN, α = 0, η = 0, b = 1, θ_t = β_t/2 is DeltaNet with scale 1:
//     u = 2kᵀ(kW − v) at W_ref = W_{t−1} (b = 1), S_t = −θu, M_t = M_{t−1} + S_t
//     ⇒ W_t = W_{t−1} + 2θ kᵀ(v − kW_{t−1}) = W_{t−1} + β kᵀ(v − kW_{t−1}).
// Every Titans form (parallel: one token per call, the only calls it accepts at b = 1) against
// every DeltaNet form, from a nonzero initial W = S_0, with β ∈ [0, 2] (including 0 and 2). A
// nonzero initial momentum is erased by η = 0 and must not matter.
TEST(Titans, DepthOneNoMomentumNoForgettingOnlineEqualsDeltaNet) {
  Rng rng(31);
  const Index dk = 6, dv = 4, T = 37;
  const Matrix<double> W0 = uniform<double>(rng, dk, dv);
  const Titans titans({.key_dim = dk, .value_dim = dv, .mini_batch = 1}, linear_parameters(W0));
  const DeltaNet<double> delta({.key_dim = dk, .value_dim = dv, .scale = 1.0, .chunk_size = 5});
  auto data = random_data<double>(Gates::normal, T, dk, dv, rng);
  Vector<double> beta = uniform<double>(rng, T, 1, 0.0, 2.0).col(0);
  beta(3) = 0.0;
  beta(8) = 2.0;
  beta(9) = 2.0;
  data.theta = (beta / 2.0).eval();
  data.alpha = Vector<double>::Zero(T);
  data.momentum = Vector<double>::Zero(T);
  for (Form delta_form : all_forms) {
    DeltaNet<double>::State ds{W0};
    const auto want =
        forward(delta, delta_form,
                {.q = data.q, .k = data.k, .v = data.v, .beta = GateRef<double>(beta)}, ds);
    for (Form form : all_forms) {
      SCOPED_TRACE(::testing::Message()
                   << "DeltaNet " << to_string(delta_form) << ", Titans " << to_string(form));
      auto ts = titans.initial_state();
      ts.momentum.W[0] = uniform<double>(rng, dk, dv);
      const auto got = run_all(titans, form, data, ts);
      EXPECT_TRUE(near(got, want, 1e-12));
      EXPECT_TRUE(near(ts.current.W[0], ds.S, 1e-12));
      EXPECT_TRUE(near(ts.reference.W[0], ds.S, 1e-12));
    }
  }
}

// (b) Momentum 0 (η = 0), no forgetting (α = 0), depth 1, no LN, no bias is TTT-Linear with
// layer_norm = false, bias = false, token_index_scaling = false, a_t = 2θ_t and the same
// initial weights and mini-batch size:
//     S_t = −θ_t u_t, M_t = M_{t−1} + S_t = M_ref − Σ_{i≤t in the mini-batch} θ_i u_i,
//     u_i = 2kᵀ(kM_ref − v) = 2·(TTT's ½-loss gradient)  ⇒  a_i = 2θ_i;
// both start the next mini-batch at the last token's weights. The spec states it for b ≥ T
// (one mini-batch); it holds for any T at equal b, and both are checked (b = 32 ≥ T = 20 and
// b = 5 < T = 23), in every form pair, outputs and final weights (Titans state.current vs
// TTT current_weights, and both reference weights). Titans' initial momentum is random: η = 0
// erases it at the first token.
TEST(Titans, NoMomentumNoForgettingEqualsTTTLinear) {
  Rng rng(32);
  const Index d = 5;
  for (auto [b, T] : {std::pair<Index, Index>{32, 20}, {5, 23}, {1, 4}}) {
    SCOPED_TRACE(::testing::Message() << "b " << b << ", T " << T);
    const Matrix<double> W0 = uniform<double>(rng, d, d);
    const Titans titans({.key_dim = d, .value_dim = d, .mini_batch = b}, linear_parameters(W0));
    const TTTLinear<double> ttt(
        {.key_dim = d,
         .mini_batch = b,
         .token_index_scaling = false,
         .layer_norm = false,
         .bias = false},
        TTTLinear<double>::Parameters{
            {{W0}, {}}, Matrix<double>::Ones(1, d), Matrix<double>::Zero(1, d)});
    auto data = random_data<double>(Gates::normal, T, d, d, rng);
    data.alpha = Vector<double>::Zero(T);
    data.momentum = Vector<double>::Zero(T);
    const Vector<double> a = 2.0 * data.theta;
    auto ttt_slice = [&](Index begin, Index n) {
      return TTTLinear<double>::Inputs{.q = data.q.middleRows(begin, n),
                                       .k = data.k.middleRows(begin, n),
                                       .v = data.v.middleRows(begin, n),
                                       .learning_rate = GateRef<double>(a.segment(begin, n))};
    };
    for (Form ttt_form : all_forms) {
      auto tts = ttt.initial_state();
      const auto want = run_all(ttt, ttt_form, T, ttt_slice, tts);
      const auto ttt_current = ttt.current_weights(tts);
      for (Form form : all_forms) {
        SCOPED_TRACE(::testing::Message()
                     << "TTT " << to_string(ttt_form) << ", Titans " << to_string(form));
        auto ts = titans.initial_state();
        ts.momentum.W[0] = uniform<double>(rng, d, d);
        const auto got = run_all(titans, form, data, ts);
        EXPECT_TRUE(near(got, want, 1e-12));
        EXPECT_TRUE(near(ts.current.W[0], ttt_current.W[0], 1e-12));
        EXPECT_TRUE(near(ts.reference.W[0], tts.reference.W[0], 1e-12));
        EXPECT_EQ(ts.position, tts.position);
      }
    }
  }
}

// (c) α_t = 1 erases: M_t = S_t exactly (all layers, weights and biases), in every form, and
// from token t on the outputs no longer depend on the current weights before t (two states
// that differ only in `current` give the same outputs from t on; token t is inside the first
// mini-batch, so the reference weights are shared).
TEST(Titans, AlphaOneErases) {
  Rng rng(33);
  const Index dk = 4, dv = 3, T = 13, erase = 5;
  const Titans layer({.key_dim = dk,
                      .value_dim = dv,
                      .depth = 2,
                      .expansion = 2,
                      .activation = Activation::silu,
                      .bias = true,
                      .mini_batch = 8});
  auto data = random_data<double>(Gates::normal, T, dk, dv, rng);
  data.alpha(erase) = 1.0;
  auto a = layer.initial_state();
  LayerCase<Titans>::randomize(layer, a, rng);
  a.position = 0;
  auto b = a;
  b.current = random_weights(b.current, rng, 1.0);
  for (Form form : all_forms) {
    SCOPED_TRACE(to_string(form));
    auto s = a;
    (void)run_all(
        layer, form, erase + 1, [&](Index begin, Index n) { return data.slice(begin, n); }, s);
    EXPECT_TRUE(same_weights(s.current, s.momentum, 1e-15)) << "M_t = S_t";
    auto sa = a, sb = b;
    const auto oa = run_all(layer, form, data, sa), ob = run_all(layer, form, data, sb);
    EXPECT_FALSE(near(oa.topRows(erase), ob.topRows(erase), 1e-3)) << "before the erase";
    EXPECT_TRUE(near(oa.bottomRows(T - erase), ob.bottomRows(T - erase), 1e-14));
    EXPECT_TRUE(same_titans_state<double>(sa, sb, 1e-14));
  }
}

// Neither forgetting nor momentum decay (α = 0, η = 1) with θ = 0 keeps M moving by S_0 each
// token: M_t = M_0 + t·S_0 (and S constant).
TEST(Titans, NoDecayNoLearningDriftsByMomentum) {
  Rng rng(34);
  const Titans layer(
      {.key_dim = 4, .value_dim = 3, .depth = 2, .expansion = 2, .bias = true, .mini_batch = 4});
  const Index T = 7;
  auto data = random_data<double>(Gates::eta_one_alpha_zero, T, 4, 3, rng);
  data.theta = Vector<double>::Zero(T);
  auto init = layer.initial_state();
  LayerCase<Titans>::randomize(layer, init, rng);
  for (Form form : all_forms) {
    auto s = init;
    (void)run_all(layer, form, data, s);
    const auto M = flatten(s.current), M0 = flatten(init.current), S = flatten(s.momentum),
               S0 = flatten(init.momentum);
    for (std::size_t i = 0; i < M.size(); ++i) {
      EXPECT_TRUE(near(S[i], S0[i], 1e-15)) << to_string(form);
      EXPECT_TRUE(near(M[i], (M0[i] + double(T) * S0[i]).eval(), 1e-14)) << to_string(form);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 4. Stability: α = 1, η = 0 and long products of small factors
// ---------------------------------------------------------------------------------------------

/// Recurrent, parallel (in calls that fit a mini-batch) and chunkwise agree and stay finite.
/// With `tail_scaled`, the second half of the outputs (which decay towards 0 there) is also
/// compared relative to its own magnitude.
template <class Scalar>
void check_forms_agree(const TitansMemory<Scalar>& layer, const TitansData<Scalar>& data,
                       const typename TitansMemory<Scalar>::State& init, bool tail_scaled) {
  const double tol = cross_form_tolerance<Scalar>();
  auto ref_state = init;
  const auto ref = run_all(layer, Form::recurrent, data, ref_state);
  ASSERT_TRUE(ref.allFinite());
  for (const auto& m : titans_tensors<Scalar>(ref_state))
    ASSERT_TRUE(m.allFinite());
  const Index T = ref.rows(), half = T / 2;
  const Matrix<double> ref_tail = ref.bottomRows(T - half).template cast<double>();
  const double s = std::max(ref_tail.cwiseAbs().maxCoeff(), 1e-300);
  for (Form form : {Form::parallel, Form::chunkwise}) {
    SCOPED_TRACE(to_string(form));
    auto state = init;
    const auto out = run_all(layer, form, data, state);
    ASSERT_TRUE(out.allFinite());
    for (const auto& m : titans_tensors<Scalar>(state))
      ASSERT_TRUE(m.allFinite());
    EXPECT_TRUE(near(out, ref, tol));
    EXPECT_TRUE(same_titans_state<Scalar>(state, ref_state, tol));
    if (tail_scaled) {
      const Matrix<double> out_tail = out.bottomRows(T - half).template cast<double>();
      EXPECT_TRUE(near((out_tail / s).eval(), (ref_tail / s).eval(), tol))
          << "second half, relative to its magnitude " << s;
    }
  }
}

template <class Scalar>
void alpha_one_momentum_zero_case() {
  Rng rng(41);
  for (Index depth : {1, 2}) {
    SCOPED_TRACE(::testing::Message() << "depth " << depth);
    const TitansMemory<Scalar> layer({.key_dim = 4,
                                      .value_dim = 4,
                                      .depth = depth,
                                      .expansion = 2,
                                      .activation = Activation::silu,
                                      .bias = depth == 2,
                                      .mini_batch = 6});
    const Index T = 40;
    auto data = random_data<Scalar>(Gates::normal, T, 4, 4, rng);
    for (Index t = 0; t < T; ++t) {
      if (t % 3 == 1) data.alpha(t) = Scalar(1);
      if (t % 4 == 2) data.momentum(t) = Scalar(0);
      if (t % 7 == 0) {
        data.alpha(t) = Scalar(1);
        data.momentum(t) = Scalar(0);
      }
    }
    auto init = layer.initial_state();
    LayerCase<TitansMemory<Scalar>>::randomize(layer, init, rng);
    check_forms_agree(layer, data, init, false);
  }
}

TEST(Titans, AlphaOneAndMomentumZeroAgreeAcrossFormsDouble) {
  alpha_one_momentum_zero_case<double>();
}
TEST(Titans, AlphaOneAndMomentumZeroAgreeAcrossFormsFloat) {
  alpha_one_momentum_zero_case<float>();
}

// T = 2000, b = 16 (and a b = 256 run, where the products of up to 256 factors below 0.1
// underflow), α ∈ (0.9, 1] (some exactly 1), η ∈ [0, 0.1) (some exactly 0), θ ∈ (1e-6, 1e-4):
// finite in every form, and the forms agree relative to the outputs' own magnitude.
template <class Scalar>
void long_small_factors_case() {
  Rng rng(42);
  const Index T = 2000;
  for (auto [depth, b] : {std::pair<Index, Index>{1, 16}, {2, 16}, {2, 256}}) {
    SCOPED_TRACE(::testing::Message() << "depth " << depth << ", b " << b);
    const TitansMemory<Scalar> layer({.key_dim = 4,
                                      .value_dim = 3,
                                      .depth = depth,
                                      .expansion = 2,
                                      .bias = true,
                                      .mini_batch = b});
    auto data = random_data<Scalar>(Gates::normal, T, 4, 3, rng);
    data.theta = uniform<Scalar>(rng, T, 1, 1e-6, 1e-4).col(0).eval();
    data.alpha = uniform<Scalar>(rng, T, 1, 0.9, 1.0).col(0).eval();
    data.momentum = uniform<Scalar>(rng, T, 1, 0.0, 0.1).col(0).eval();
    for (Index t = 0; t < T; t += 11)
      data.alpha(t) = Scalar(1);
    for (Index t = 0; t < T; t += 13)
      data.momentum(t) = Scalar(0);
    auto init = layer.initial_state();
    LayerCase<TitansMemory<Scalar>>::randomize(layer, init, rng);
    check_forms_agree(layer, data, init, true);
  }
}

TEST(Titans, LongRunOfSmallFactorsIsFiniteAndFormsAgreeDouble) {
  long_small_factors_case<double>();
}
TEST(Titans, LongRunOfSmallFactorsIsFiniteAndFormsAgreeFloat) {
  long_small_factors_case<float>();
}

}  // namespace
}  // namespace seqmem::test
