// TTT-Linear and TTT-MLP (docs/math.md §4): the conformance suite, calls that stop inside a
// mini-batch, the definition written out token by token, the engine's gradients against
// finite differences, and the identities with linear attention (TTT paper, Theorem 1) and
// with DeltaNet (mini_batch 1).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "conformance.hpp"

namespace seqmem::test {
namespace {

struct TTTVariant {
  std::string name;
  Index dim = 4;
  Index mini_batch = 16;
  bool layer_norm = true;
  bool bias = true;
  bool token_index_scaling = true;
  bool offset = false;     // λ_i ≠ 0 (see offsets()): c_i clamps at 0 for some positions
  bool zero_eta = false;   // eta = 0 on about a third of the tokens
  Index expansion = 2;     // TTT-MLP hidden width = expansion·key_dim
  std::uint64_t seed = 1;  // of the random Parameters
};

/// λ_i = −0.3 at odd positions (c_1 = 0.2, c_i = 0 for odd i ≥ 3), 0.05·i at even ones.
template <class Scalar>
std::vector<Scalar> offsets(Index b) {
  std::vector<Scalar> lambda;
  for (Index i = 0; i < b; ++i) {
    lambda.push_back(i % 2 == 1 ? Scalar(-0.3) : Scalar(0.05 * static_cast<double>(i)));
  }
  return lambda;
}

/// c_i as docs/math.md §4 defines it, written independently of the layer.
double token_scale_of(const TTTVariant& v, Index i) {
  if (!v.token_index_scaling) return 1.0;
  const double lambda = v.offset ? (i % 2 == 1 ? -0.3 : 0.05 * static_cast<double>(i)) : 0.0;
  return std::max(0.0, 1.0 / static_cast<double>(i + 1) + lambda);
}

/// Random weights with the shapes of `like`: W uniform(−s, s)/√rows, b uniform(−s/5, s/5).
template <class Scalar>
Weights<Scalar> random_weights(const Weights<Scalar>& like, Rng& rng, double s) {
  Weights<Scalar> w = like;
  for (auto& W : w.W) {
    W = uniform<Scalar>(rng, W.rows(), W.cols(), -s, s) / std::sqrt(Scalar(W.rows()));
  }
  for (auto& b : w.b)
    b = uniform<Scalar>(rng, 1, b.cols(), -0.2 * s, 0.2 * s);
  return w;
}

template <class Layer>
typename Layer::Options options_of(const TTTVariant& v) {
  typename Layer::Options o;
  o.key_dim = v.dim;
  o.mini_batch = v.mini_batch;
  o.token_index_scaling = v.token_index_scaling;
  if (v.offset) o.token_scale_offset = offsets<typename Layer::Scalar>(v.mini_batch);
  o.layer_norm = v.layer_norm;
  o.bias = v.bias;
  o.expansion = v.expansion;
  return o;
}

/// Scale of random inner weights. With LN the curvature of the inner loss grows like 1/σ²
/// of the pre-LN rows; weights of this size keep σ away from 0 at d = 4..6, so that the
/// inner gradient descent (rates up to 1/d) stays tame over 300 tokens and float rounding
/// is not amplified past the float tolerance (with scale 1 it was, by up to ~3000×).
constexpr double kWeightScale = 2.0;

/// Random outer-loop parameters: weights as random_weights, LN weight 1 + 0.1·noise,
/// LN bias 0.1·noise.
template <class Layer>
typename Layer::Parameters random_parameters(const typename Layer::Options& o, Rng& rng) {
  using Scalar = typename Layer::Scalar;
  const Layer proto(o);
  typename Layer::Parameters p;
  p.initial = random_weights(proto.initial_state().reference, rng, kWeightScale);
  p.ln_weight =
      Matrix<Scalar>::Ones(1, o.key_dim) + Scalar(0.1) * uniform<Scalar>(rng, 1, o.key_dim);
  p.ln_bias = Scalar(0.1) * uniform<Scalar>(rng, 1, o.key_dim);
  return p;
}

template <class Scalar>
std::vector<Matrix<Scalar>> flat(const Weights<Scalar>& w) {
  std::vector<Matrix<Scalar>> out = w.W;
  out.insert(out.end(), w.b.begin(), w.b.end());
  return out;
}

template <class Scalar>
::testing::AssertionResult same_weights(const Weights<Scalar>& got, const Weights<Scalar>& want,
                                        double tol) {
  const auto a = flat(got), b = flat(want);
  if (a.size() != b.size()) {
    return ::testing::AssertionFailure() << "weight count " << a.size() << " != " << b.size();
  }
  for (std::size_t i = 0; i < a.size(); ++i) {
    auto r = near(a[i], b[i], tol);
    if (!r) return r << " (weight tensor " << i << ")";
  }
  return ::testing::AssertionSuccess();
}

/// a += c·b
template <class Scalar>
void add_to(Weights<Scalar>& a, Scalar c, const Weights<Scalar>& b) {
  for (std::size_t l = 0; l < a.W.size(); ++l)
    a.W[l] += c * b.W[l];
  for (std::size_t l = 0; l < a.b.size(); ++l)
    a.b[l] += c * b.b[l];
}

/// The engine's model as the layer configures it (docs/math.md §4): dims d→d or d→e·d→d,
/// GELU-tanh, the ½ loss.
template <class Scalar, TTTModel Model>
detail::InnerModel<Scalar> model_of(const TTT<Scalar, Model>& layer) {
  const auto& o = layer.options();
  detail::InnerModel<Scalar> m;
  m.dims = Model == TTTModel::linear
               ? std::vector<Index>{o.key_dim, o.key_dim}
               : std::vector<Index>{o.key_dim, o.expansion * o.key_dim, o.key_dim};
  m.activation = Activation::gelu_tanh;
  m.bias = o.bias;
  m.layer_norm = o.layer_norm;
  m.ln_eps = o.ln_eps;
  m.loss_factor = Scalar(1);
  m.parameters.ln_weight = layer.parameters().ln_weight;
  m.parameters.ln_bias = layer.parameters().ln_bias;
  return m;
}

/// ∇ℓ(P; k, v) of one token (k, v: 1×d) as weights: ∇W_l = x_lᵀ δ_l, ∇b_l = δ_l.
template <class Scalar>
Weights<Scalar> token_gradient(const detail::InnerModel<Scalar>& m, const Weights<Scalar>& P,
                               const Matrix<Scalar>& k, const Matrix<Scalar>& v) {
  const auto tr = m.trace(P, k, v);
  Weights<Scalar> g;
  for (std::size_t l = 0; l < m.layers(); ++l) {
    g.W.push_back(tr.X[l].transpose() * tr.Delta[l]);
    if (m.bias) g.b.push_back(tr.Delta[l]);
  }
  return g;
}

}  // namespace

template <class Scalar, TTTModel Model>
struct LayerCase<TTT<Scalar, Model>> {
  using Layer = TTT<Scalar, Model>;
  using State = typename Layer::State;
  using Inputs = typename Layer::Inputs;
  using Variant = TTTVariant;

  static constexpr Index kDim = 4;  // of the first variant (bad-input messages)
  static constexpr Index kHidden = Model == TTTModel::linear ? kDim : 2 * kDim;  // bad_options

  static std::vector<Variant> variants() {
    return {
        {.name = "default", .dim = kDim, .seed = 11},
        {.name = "b = 1", .dim = 5, .mini_batch = 1, .seed = 12},
        {.name = "b = 5", .dim = 5, .mini_batch = 5, .expansion = 4, .seed = 13},
        {.name = "b = 512", .mini_batch = 512, .seed = 14},
        {.name = "no layer_norm", .mini_batch = 8, .layer_norm = false, .seed = 15},
        {.name = "no bias", .dim = 6, .bias = false, .seed = 16},
        {.name = "no token scaling", .mini_batch = 7, .token_index_scaling = false, .seed = 17},
        {.name = "token_scale_offset", .dim = 5, .mini_batch = 8, .offset = true, .seed = 18},
        {.name = "eta 0 mixed in", .mini_batch = 6, .zero_eta = true, .seed = 19},
        {.name = "no LN, no bias, no scaling",
         .dim = 5,
         .mini_batch = 9,
         .layer_norm = false,
         .bias = false,
         .token_index_scaling = false,
         .seed = 20},
    };
  }

  /// TTT has no chunk size (the mini-batch is part of the model; chunkwise = the dual form
  /// per mini-batch), so `chunk` is ignored. The parameters depend only on the variant.
  static Layer make(const Variant& v, Index /*chunk*/) {
    const auto o = options_of<Layer>(v);
    Rng rng(v.seed);
    return Layer(o, random_parameters<Layer>(o, rng));
  }

  struct Data {
    Matrix<Scalar> q, k, v;
    Vector<Scalar> eta;
    Inputs slice(Index b, Index n) const {
      return {.q = q.middleRows(b, n),
              .k = k.middleRows(b, n),
              .v = v.middleRows(b, n),
              .learning_rate = eta.segment(b, n)};
    }
    Inputs whole() const { return {.q = q, .k = k, .v = v, .learning_rate = eta}; }
  };

  /// q, k, v uniform(−1, 1); eta uniform(0, 1/d) (with some zeros for `zero_eta`).
  static Data data(const Variant& var, const Layer& layer, Index T, Rng& rng) {
    const Index d = layer.options().key_dim;
    Data x{uniform<Scalar>(rng, T, d), uniform<Scalar>(rng, T, d), uniform<Scalar>(rng, T, d),
           Vector<Scalar>(uniform<Scalar>(rng, T, 1, 0.0, 1.0 / static_cast<double>(d)).col(0))};
    if (var.zero_eta) {
      for (Index t = 0; t < T; ++t) {
        if (uniform_index(rng, 0, 2) == 0) x.eta(t) = Scalar(0);
      }
    }
    return x;
  }

  /// Random reference weights, a random position and, inside a mini-batch, a small random
  /// accumulated gradient. (At position 0 the gradient of the new mini-batch is empty: a
  /// state with p = 0 and G ≠ 0 cannot arise; see StartOfMiniBatchWithNonzeroGradient.)
  static void randomize(const Layer& layer, State& state, Rng& rng) {
    state.reference = random_weights(state.reference, rng, kWeightScale);
    state.gradient = random_weights(state.gradient, rng, 0.1);
    state.position = uniform_index(rng, 0, layer.options().mini_batch - 1);
    if (state.position == 0) {
      for (auto& G : state.gradient.W)
        G.setZero();
      for (auto& G : state.gradient.b)
        G.setZero();
    }
  }

  static std::vector<Matrix<Scalar>> tensors(const State& s) {
    auto out = flat(s.reference);
    const auto g = flat(s.gradient);
    out.insert(out.end(), g.begin(), g.end());
    out.push_back(Matrix<Scalar>::Constant(1, 1, Scalar(s.position)));
    return out;
  }

  static bool defined(const Layer& layer, Form form, const State& state, Index T) {
    return form != Form::parallel || state.position + T <= layer.options().mini_batch;
  }

  static std::vector<BadInput<Data>> bad_inputs() {
    const Scalar nan = std::numeric_limits<Scalar>::quiet_NaN();
    const Scalar inf = std::numeric_limits<Scalar>::infinity();
    const std::string d = std::to_string(kDim);
    return {
        {"k with fewer rows",
         [](Data& x) { x.k.conservativeResize(x.k.rows() - 1, Eigen::NoChange); },
         "k must be 6x" + d + ", got 5x" + d},
        {"q with a wrong dim", [](Data& x) { x.q = Matrix<Scalar>::Ones(x.q.rows(), 3); },
         "q must be 6x" + d + ", got 6x3"},
        {"v with a wrong dim", [](Data& x) { x.v = Matrix<Scalar>::Ones(x.v.rows(), 2); },
         "v must be 6x" + d + ", got 6x2"},
        {"eta too short", [](Data& x) { x.eta = Vector<Scalar>::Ones(5); },
         "learning_rate must be 6x1, got 5x1"},
        {"negative eta", [](Data& x) { x.eta(2) = Scalar(-0.5); },
         "learning_rate[2] must be finite and >= 0, got -0.5"},
        {"NaN eta", [nan](Data& x) { x.eta(1) = nan; }, "learning_rate[1] must be finite"},
        {"infinite eta", [inf](Data& x) { x.eta(4) = inf; }, "learning_rate[4] must be finite"},
        {"NaN in q", [nan](Data& x) { x.q(1, 2) = nan; }, "q(1, 2) must be finite"},
        {"Inf in v", [inf](Data& x) { x.v(5, 0) = -inf; }, "v(5, 0) must be finite"},
    };
  }

  static std::vector<BadOption<Layer>> bad_options() {
    using Options = typename Layer::Options;
    constexpr Index d = kDim, h = kHidden;
    auto options = [] {
      Options o;
      o.key_dim = kDim;
      o.mini_batch = 4;
      o.expansion = 2;
      return o;
    };
    // The default parameters of options(), changed by `change`.
    auto with = [options](std::function<void(typename Layer::Parameters&)> change) {
      return [options, change] {
        auto p = Layer(options()).parameters();
        change(p);
        return Layer(options(), p);
      };
    };
    const std::string L = std::to_string(Model == TTTModel::linear ? 1 : 2);
    std::vector<BadOption<Layer>> bad = {
        {"key_dim 0",
         [options] {
           auto o = options();
           o.key_dim = 0;
           return Layer(o);
         },
         "key_dim must be > 0, got 0"},
        {"value_dim other than key_dim",
         [options] {
           auto o = options();
           o.value_dim = o.key_dim + 1;
           return Layer(o);
         },
         "value_dim must equal key_dim (" + std::to_string(d) + "), got " + std::to_string(d + 1)},
        {"mini_batch 0",
         [options] {
           auto o = options();
           o.mini_batch = 0;
           return Layer(o);
         },
         "mini_batch must be > 0, got 0"},
        {"mini_batch -2",
         [options] {
           auto o = options();
           o.mini_batch = -2;
           return Layer(o);
         },
         "mini_batch must be > 0, got -2"},
        {"ln_eps 0",
         [options] {
           auto o = options();
           o.ln_eps = Scalar(0);
           return Layer(o);
         },
         "ln_eps must be > 0, got 0"},
        {"token_scale_offset too short",
         [options] {
           auto o = options();
           o.token_scale_offset = {Scalar(0.1), Scalar(0.2), Scalar(0.3)};
           return Layer(o);
         },
         "token_scale_offset must hold mini_batch (4) values or none, got 3"},
        {"W[0] with a row too many",
         with([](auto& p) { p.initial.W[0] = Matrix<Scalar>::Zero(kDim + 1, kHidden); }),
         "parameters.initial.W[0] must be " + std::to_string(d) + "x" + std::to_string(h) +
             ", got " + std::to_string(d + 1) + "x" + std::to_string(h)},
        {"b[0] of the wrong length",
         with([](auto& p) { p.initial.b[0] = Matrix<Scalar>::Zero(1, kHidden + 2); }),
         "parameters.initial.b[0] must be 1x" + std::to_string(h) + ", got 1x" +
             std::to_string(h + 2)},
        {"a W matrix too many",
         with([](auto& p) { p.initial.W.push_back(Matrix<Scalar>::Zero(kDim, kDim)); }),
         "parameters.initial.W must hold " + L + " matrices"},
        {"a bias row missing", with([](auto& p) { p.initial.b.pop_back(); }),
         "parameters.initial.b must hold " + L + " rows"},
        {"NaN in W[0]",
         with([](auto& p) { p.initial.W[0](0, 1) = std::numeric_limits<Scalar>::quiet_NaN(); }),
         "parameters.initial.W[0] must be finite"},
        {"ln_weight of the wrong length",
         with([](auto& p) { p.ln_weight = Matrix<Scalar>::Ones(1, kDim - 1); }),
         "parameters.ln_weight must be 1x" + std::to_string(d) + ", got 1x" +
             std::to_string(d - 1)},
        {"ln_bias as a column", with([](auto& p) { p.ln_bias = Matrix<Scalar>::Zero(kDim, 1); }),
         "parameters.ln_bias must be 1x" + std::to_string(d) + ", got " + std::to_string(d) + "x1"},
        {"biases given to a layer without bias",
         [options] {
           auto p = Layer(options()).parameters();
           auto o = options();
           o.bias = false;
           return Layer(o, p);
         },
         "parameters.initial.b must hold 0 rows"},
    };
    if constexpr (Model == TTTModel::mlp) {
      bad.push_back({"expansion 0",
                     [options] {
                       auto o = options();
                       o.expansion = 0;
                       return Layer(o);
                     },
                     "expansion must be > 0, got 0"});
      // 2^62·4 wraps to 0 in Index arithmetic: a layer with no hidden width.
      bad.push_back({"expansion·dim overflowing Index",
                     [options] {
                       auto o = options();
                       o.expansion = Index{1} << 62;
                       return Layer(o);
                     },
                     "expansion·key_dim (the hidden width) overflows Index"});
    }
    return bad;
  }
};

using TTTTypes =
    ::testing::Types<TTTLinear<float>, TTTLinear<double>, TTTMLP<float>, TTTMLP<double>>;
INSTANTIATE_TYPED_TEST_SUITE_P(TTT, Conformance, TTTTypes);

// ---------------------------------------------------------------------------------------
// Layer-specific tests (double), typed over the two inner models.

template <class Layer>
class TTTDouble : public ::testing::Test {};
using TTTDoubleTypes = ::testing::Types<TTTLinear<double>, TTTMLP<double>>;
TYPED_TEST_SUITE(TTTDouble, TTTDoubleTypes);

namespace {

template <class Layer>
using CaseOf = LayerCase<Layer>;

/// Same shapes and the same values (NaN equal to NaN).
template <class Scalar>
bool identical(const Weights<Scalar>& a, const Weights<Scalar>& b) {
  const auto x = flat(a), y = flat(b);
  if (x.size() != y.size()) return false;
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (x[i].rows() != y[i].rows() || x[i].cols() != y[i].cols()) return false;
    for (Index r = 0; r < x[i].rows(); ++r)
      for (Index c = 0; c < x[i].cols(); ++c)
        if (!(x[i](r, c) == y[i](r, c) || (std::isnan(x[i](r, c)) && std::isnan(y[i](r, c)))))
          return false;
  }
  return true;
}

template <class Layer>
::testing::AssertionResult same_state(const typename Layer::State& got,
                                      const typename Layer::State& want, double tol) {
  const auto a = CaseOf<Layer>::tensors(got), b = CaseOf<Layer>::tensors(want);
  if (a.size() != b.size()) return ::testing::AssertionFailure() << "state tensor count";
  for (std::size_t i = 0; i < a.size(); ++i) {
    auto r = near(a[i], b[i], tol);
    if (!r) return r << " (state tensor " << i << ")";
  }
  return ::testing::AssertionSuccess();
}

}  // namespace

// The parallel form is one gradient block: with position + T > mini_batch it refuses with a
// message that names chunkwise and leaves the state; the other forms run that call.
TYPED_TEST(TTTDouble, ParallelBeyondMiniBatchNamesChunkwise) {
  using Layer = TypeParam;
  using Case = CaseOf<Layer>;
  Rng rng(21);
  const TTTVariant variant{.name = "b = 4", .mini_batch = 4, .seed = 22};
  const Layer layer = Case::make(variant, 0);
  const auto x = Case::data(variant, layer, 3, rng);
  auto init = layer.initial_state();
  Case::randomize(layer, init, rng);
  init.position = 2;  // 2 + 3 > 4
  auto state = init;
  try {
    (void)forward(layer, Form::parallel, x.whole(), state);
    ADD_FAILURE() << "no exception";
  } catch (const seqmem::invalid_argument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("use Form::chunkwise"), std::string::npos) << what;
    EXPECT_NE(what.find("position + T <= mini_batch (4), got 2 + 3"), std::string::npos) << what;
  }
  EXPECT_TRUE(same_state<Layer>(state, init, 0.0)) << "state changed";

  auto rec = init, chunk = init;
  const auto o_rec = forward(layer, Form::recurrent, x.whole(), rec);
  const auto o_chunk = forward(layer, Form::chunkwise, x.whole(), chunk);
  EXPECT_TRUE(near(o_chunk, o_rec, 1e-12));
  EXPECT_TRUE(same_state<Layer>(chunk, rec, 1e-12));
  EXPECT_EQ(rec.position, 1);

  // Exactly filling the mini-batch is allowed (and rolls over).
  auto par = init;
  const auto o_par = forward(layer, Form::parallel, x.slice(0, 2), par);
  auto rec2 = init;
  EXPECT_TRUE(near(o_par, forward(layer, Form::recurrent, x.slice(0, 2), rec2), 1e-12));
  EXPECT_EQ(par.position, 0);
  EXPECT_TRUE(same_state<Layer>(par, rec2, 1e-12));
}

// A state whose position is outside [0, mini_batch), or whose weights have the wrong
// shapes, is refused in every form and left as it was.
TYPED_TEST(TTTDouble, BadStateThrowsAndKeepsState) {
  using Layer = TypeParam;
  using Case = CaseOf<Layer>;
  Rng rng(23);
  const TTTVariant variant{.name = "b = 5", .mini_batch = 5, .seed = 24};
  const Layer layer = Case::make(variant, 0);
  const auto x = Case::data(variant, layer, 2, rng);
  struct Bad {
    std::string what;
    std::function<void(typename Layer::State&)> mutate;
    std::string expect;
  };
  const std::vector<Bad> bad = {
      {"position = mini_batch", [](auto& s) { s.position = 5; },
       "state.position must be in [0, 5), got 5"},
      {"position > mini_batch", [](auto& s) { s.position = 9; },
       "state.position must be in [0, 5), got 9"},
      {"negative position", [](auto& s) { s.position = -1; },
       "state.position must be in [0, 5), got -1"},
      {"reference W[0] too wide",
       [](auto& s) {
         s.reference.W[0] =
             Matrix<double>::Zero(s.reference.W[0].rows(), s.reference.W[0].cols() + 1);
       },
       "state.reference.W[0] must be"},
      {"gradient without bias rows", [](auto& s) { s.gradient.b.clear(); },
       "state.gradient.b must hold"},
      {"NaN in the gradient",
       [](auto& s) { s.gradient.W[0](0, 1) = std::numeric_limits<double>::quiet_NaN(); },
       "state.gradient.W[0] must be finite"},
  };
  for (const auto& b : bad) {
    for (Form form : all_forms) {
      SCOPED_TRACE(b.what + ", " + std::string(to_string(form)));
      auto state = layer.initial_state();
      Case::randomize(layer, state, rng);
      b.mutate(state);
      const auto before = state;
      try {
        (void)forward(layer, form, x.whole(), state);
        ADD_FAILURE() << "no exception";
      } catch (const seqmem::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find(b.expect), std::string::npos)
            << "message: " << e.what() << "\nexpected to contain: " << b.expect;
      }
      EXPECT_EQ(state.position, before.position);
      EXPECT_TRUE(identical(state.reference, before.reference)) << "reference changed";
      EXPECT_TRUE(identical(state.gradient, before.gradient)) << "gradient changed";
    }
  }
}

// A state at position 0 whose accumulated gradient G is not zero (built by hand or loaded,
// never left by a call) is still computed consistently: the dual form skips G's base term
// only when G is exactly zero. (A regression test: an earlier dual form skipped it at every
// p = 0 and disagreed with the recurrent form here.) This test also accepts a check() that
// refuses such a state in every form.
TYPED_TEST(TTTDouble, StartOfMiniBatchWithNonzeroGradient) {
  using Layer = TypeParam;
  using Case = CaseOf<Layer>;
  Rng rng(29);
  const TTTVariant variant{.name = "b = 4", .mini_batch = 4, .seed = 30};
  const Layer layer = Case::make(variant, 0);
  const auto x = Case::data(variant, layer, 3, rng);
  auto init = layer.initial_state();
  init.gradient = random_weights(init.gradient, rng, 0.5);
  init.position = 0;
  std::vector<Matrix<double>> outs;
  std::vector<typename Layer::State> states;
  int thrown = 0;
  for (Form form : all_forms) {
    auto state = init;
    try {
      outs.push_back(forward(layer, form, x.whole(), state));
      states.push_back(state);
    } catch (const seqmem::invalid_argument&) {
      ++thrown;
      EXPECT_TRUE(identical(state.gradient, init.gradient)) << to_string(form);
    }
  }
  if (thrown == 3) return;  // refused in every form: fine
  ASSERT_EQ(thrown, 0) << "refused by some forms only";
  for (std::size_t f = 1; f < outs.size(); ++f) {
    EXPECT_TRUE(near(outs[f], outs[0], 1e-12)) << to_string(all_forms[f]) << " vs recurrent";
    EXPECT_TRUE(same_state<Layer>(states[f], states[0], 1e-12))
        << to_string(all_forms[f]) << " vs recurrent";
  }
}

// Calls may end anywhere inside a mini-batch: a sequence split at every position of the
// first mini-batch (and inside the second), in every mix of forms the splits allow, gives
// the outputs and states of one recurrent call; after each call current_weights() are the
// weights the call's last token was read with.
TYPED_TEST(TTTDouble, CallsMayEndInsideAMiniBatch) {
  using Layer = TypeParam;
  using Case = CaseOf<Layer>;
  Rng rng(25);
  const Index T = 10;
  const TTTVariant variant{.name = "b = 4", .dim = 5, .mini_batch = 4, .seed = 26};
  const Layer layer = Case::make(variant, 0);
  const auto model = model_of(layer);
  const auto x = Case::data(variant, layer, T, rng);
  for (bool random_state : {false, true}) {
    SCOPED_TRACE(random_state ? "random state" : "initial state");
    auto init = layer.initial_state();
    if (random_state) {
      // random weights at the start of a mini-batch (so that the splits below fall where
      // the test says; G = 0 there)
      init.reference = random_weights(init.reference, rng, kWeightScale);
    }
    // One recurrent call over each prefix [0, n).
    std::vector<typename Layer::State> prefix;
    Matrix<double> ref;
    for (Index n = 0; n <= T; ++n) {
      auto s = init;
      const auto o = forward(layer, Form::recurrent, x.slice(0, n), s);
      if (n == T) ref = o;
      prefix.push_back(s);
    }
    EXPECT_EQ(prefix[T].position, T % 4);

    const std::vector<std::vector<Index>> split_sets = {
        {1}, {2}, {3}, {5}, {6}, {1, 2, 3}, {3, 6}, {1, 2, 3, 5, 6}, {2, 5, 7, 9}};
    for (const auto& splits : split_sets) {
      std::vector<Index> cuts{0};
      cuts.insert(cuts.end(), splits.begin(), splits.end());
      cuts.push_back(T);
      const std::size_t calls = cuts.size() - 1;
      std::size_t combos = 1;
      for (std::size_t c = 0; c < calls; ++c)
        combos *= 3;
      for (std::size_t combo = 0; combo < combos; ++combo) {
        auto state = init;
        Matrix<double> out(T, variant.dim);
        std::string forms;
        bool ok = true;
        std::size_t code = combo;
        for (std::size_t c = 0; c < calls && ok; ++c) {
          const Form form = all_forms[code % 3];
          code /= 3;
          const Index begin = cuts[c], n = cuts[c + 1] - begin;
          if (!Case::defined(layer, form, state, n)) {
            ok = false;
            break;
          }
          forms += std::string(to_string(form)) + "(" + std::to_string(n) + ") ";
          out.middleRows(begin, n) = forward(layer, form, x.slice(begin, n), state);
          const auto& want = prefix[std::size_t(cuts[c + 1])];
          EXPECT_TRUE(same_state<Layer>(state, want, 1e-12)) << "after " << forms;
          EXPECT_TRUE(
              same_weights(layer.current_weights(state), layer.current_weights(want), 1e-12))
              << "current weights after " << forms;
          if (n > 0) {  // the last token was read with current_weights()
            const Index last = cuts[c + 1] - 1;
            EXPECT_TRUE(near(out.row(last),
                             model.evaluate(layer.current_weights(state), x.q.row(last)), 1e-12))
                << "last output vs current weights after " << forms;
          }
        }
        if (!ok) continue;
        SCOPED_TRACE("calls: " + forms);
        EXPECT_TRUE(near(out, ref, 1e-12)) << "outputs";
        EXPECT_TRUE(same_state<Layer>(state, prefix[T], 1e-12)) << "final state";
      }
    }
  }
}

// The layer computes the definition of docs/math.md §4, written out here token by token with
// the engine's per-token gradient (checked against finite differences below) and c_i
// computed here from 1/(i+1) + λ_i: mini-batches, token scaling with its clamp at 0, zero
// rates, T not a multiple of b, and the weights carried from one mini-batch to the next.
TYPED_TEST(TTTDouble, EveryFormComputesTheDefinition) {
  using Layer = TypeParam;
  using Case = CaseOf<Layer>;
  Rng rng(27);
  for (const auto& variant : Case::variants()) {
    SCOPED_TRACE("variant " + variant.name);
    const Layer layer = Case::make(variant, 0);
    const auto model = model_of(layer);
    const Index b = variant.mini_batch;
    for (Index i = 0; i < b; ++i) {
      EXPECT_DOUBLE_EQ(layer.token_scale(i), token_scale_of(variant, i)) << "c_" << i;
    }
    for (Index T : {Index{1}, Index{23}}) {
      const auto x = Case::data(variant, layer, T, rng);
      Matrix<double> want(T, variant.dim);
      Weights<double> ref = layer.parameters().initial, current = ref;
      Weights<double> sum;  // Σ_{j≤i} a_j ∇ℓ(W_ref; k_j, v_j) of the current mini-batch
      for (Index t = 0; t < T; ++t) {
        const Index i = t % b;
        if (i == 0) {
          ref = current;
          sum = token_gradient<double>(model, ref, x.k.row(t), x.v.row(t));
          for (auto& W : sum.W)
            W *= x.eta(t);
          for (auto& B : sum.b)
            B *= x.eta(t);
        } else {
          add_to(sum, x.eta(t), token_gradient<double>(model, ref, x.k.row(t), x.v.row(t)));
        }
        current = ref;
        add_to(current, -token_scale_of(variant, i), sum);
        want.row(t) = model.evaluate(current, x.q.row(t));
      }
      for (Form form : all_forms) {
        SCOPED_TRACE(::testing::Message() << "T " << T << ", " << to_string(form));
        auto state = layer.initial_state();
        if (!Case::defined(layer, form, state, T)) continue;
        const auto got = forward(layer, form, x.whole(), state);
        EXPECT_TRUE(near(got, want, 1e-12)) << "outputs";
        EXPECT_TRUE(same_weights(layer.current_weights(state), current, 1e-12))
            << "current weights";
        EXPECT_EQ(state.position, T % b);
      }
    }
  }
}

// Defaults: the documented deterministic initial weights, LN weight 1, bias 0.
TYPED_TEST(TTTDouble, DefaultParameters) {
  using Layer = TypeParam;
  const Layer layer({.key_dim = 3, .expansion = 2});
  const auto& p = layer.parameters();
  EXPECT_EQ(p.ln_weight, Matrix<double>::Ones(1, 3));
  EXPECT_EQ(p.ln_bias, Matrix<double>::Zero(1, 3));
  for (const auto& W : p.initial.W) {
    for (Index i = 0; i < W.rows(); ++i)
      for (Index j = 0; j < W.cols(); ++j)
        EXPECT_DOUBLE_EQ(W(i, j),
                         std::sin(double(1 + i * W.cols() + j)) / std::sqrt(double(W.rows())));
  }
  for (const auto& B : p.initial.b)
    EXPECT_TRUE(B.isZero(0.0));
  const auto s = layer.initial_state();
  EXPECT_EQ(s.position, 0);
  EXPECT_TRUE(same_weights(s.reference, p.initial, 0.0));
  for (const auto& G : flat(s.gradient))
    EXPECT_TRUE(G.isZero(0.0));
}

// ---------------------------------------------------------------------------------------
// The engine's derivatives against central finite differences (double).

namespace {

/// Central difference of f at x in direction of entry (i, j) of `m` (changed in place).
template <class F>
double central(Matrix<double>& m, Index i, Index j, double h, const F& f) {
  const double saved = m(i, j);
  m(i, j) = saved + h;
  const double up = f();
  m(i, j) = saved - h;
  const double down = f();
  m(i, j) = saved;
  return (up - down) / (2 * h);
}

double rel_err(const Matrix<double>& got, const Matrix<double>& want) {
  return (got - want).cwiseAbs().maxCoeff() / std::max(1e-300, want.cwiseAbs().maxCoeff());
}

}  // namespace

TEST(TTTGradients, LayerNormLossGradientMatchesFiniteDifferences) {
  Rng rng(31);
  // d = 64 and 128 take the fixed-size row path, the others the dynamic one.
  // (d = 2: LN is ±1, gradient ~0.)
  for (Index d : {Index{3}, Index{5}, Index{8}, Index{64}, Index{128}}) {
    for (double eps : {1e-6, 1e-2}) {
      SCOPED_TRACE(::testing::Message() << "d " << d << ", eps " << eps);
      Matrix<double> z = uniform<double>(rng, 3, d, -2.0, 2.0);
      const Matrix<double> x = uniform<double>(rng, 3, d), v = uniform<double>(rng, 3, d);
      const Matrix<double> weight = Matrix<double>::Ones(1, d) + 0.3 * uniform<double>(rng, 1, d);
      const Matrix<double> bias = 0.3 * uniform<double>(rng, 1, d);
      const double factor = 2.0;
      detail::LayerNorm<double> ln;
      auto loss = [&] {  // (factor/2)·‖x + LN(z) − v‖²
        Matrix<double> out(3, d);
        ln.residual_output(z, x, weight, bias, eps, out);
        return factor / 2 * (out - v).squaredNorm();
      };
      Matrix<double> got;
      ln.loss_gradient(z, x, v, weight, bias, eps, factor, got);
      Matrix<double> fd(3, d);
      for (Index i = 0; i < 3; ++i)
        for (Index j = 0; j < d; ++j)
          fd(i, j) = central(z, i, j, 1e-5, loss);
      EXPECT_LT(rel_err(got, fd), 1e-7) << "got\n" << got << "\nfd\n" << fd;
      // The output itself (x = 0, γ = 1, β = 0): rows have mean 0 and variance var/(var + ε).
      Matrix<double> y(3, d);
      ln.residual_output(z, Matrix<double>::Zero(3, d), Matrix<double>::Ones(1, d),
                         Matrix<double>::Zero(1, d), eps, y);
      for (Index i = 0; i < 3; ++i) {
        const double mean = z.row(i).mean();
        const double var = (z.row(i).array() - mean).square().mean();
        EXPECT_LT(std::abs(y.row(i).mean()), 1e-12);
        EXPECT_NEAR(y.row(i).array().square().mean(), var / (var + eps), 1e-12);
      }
    }
  }
}

namespace {
/// The engine's vectorized activation and its derivative at one point.
double act(Activation a, double x) {
  Matrix<double> out, inner;
  detail::activate(a, Matrix<double>(Matrix<double>::Constant(1, 1, x)), inner, out);
  return out(0, 0);
}
double act_derivative(Activation a, double x) {
  const Matrix<double> z = Matrix<double>::Constant(1, 1, x);
  Matrix<double> g = Matrix<double>::Ones(1, 1), inner, out;
  detail::activate(a, z, inner, out);
  detail::multiply_by_activation_derivative(a, z, inner, g);
  return g(0, 0);
}
}  // namespace

TEST(TTTGradients, ActivationDerivativesMatchFiniteDifferences) {
  const double h = 1e-5;
  for (Activation a : {Activation::gelu_tanh, Activation::silu}) {
    double worst = 0;
    for (int n = -600; n <= 600; ++n) {
      const double x = n / 100.0 + 0.00123;
      const double fd = (act(a, x + h) - act(a, x - h)) / (2 * h);
      worst = std::max(worst, std::abs(act_derivative(a, x) - fd));
    }
    EXPECT_LT(worst, 1e-8) << (a == Activation::silu ? "silu" : "gelu_tanh");
    // Anchors: act(0) = 0, act'(0) = ½.
    EXPECT_EQ(act(a, 0.0), 0.0);
    EXPECT_DOUBLE_EQ(act_derivative(a, 0.0), 0.5);
  }
  // Values of the formulas, on a whole row at once (the vectorized path).
  const double k = std::sqrt(2.0 / 3.14159265358979323846);
  Matrix<double> x(1, 4), gelu, silu, inner;
  x << -3.0, -0.7, 0.4, 2.5;
  detail::activate(Activation::gelu_tanh, x, inner, gelu);
  detail::activate(Activation::silu, x, inner, silu);
  for (Index j = 0; j < 4; ++j) {
    const double xj = x(0, j);
    EXPECT_NEAR(gelu(0, j), 0.5 * xj * (1 + std::tanh(k * (xj + 0.044715 * xj * xj * xj))), 1e-15);
    EXPECT_NEAR(silu(0, j), xj / (1 + std::exp(-xj)), 1e-15);
  }
}

// ttt-lm-pytorch's gelu_bwd (option ttt_lm_gelu_bwd): its formula with its rounded
// constants, within ~1e-9 of the exact derivative but not equal to it.
TEST(TTTGradients, TttLmGeluBwdIsThePeersFormula) {
  Matrix<double> x(1, 5), gelu, inner;
  x << -3.0, -0.7, 0.0, 0.4, 2.5;
  detail::activate(Activation::gelu_tanh, x, inner, gelu);
  Matrix<double> peer = Matrix<double>::Ones(1, 5), exact = peer;
  detail::multiply_by_activation_derivative(Activation::gelu_tanh, x, inner, peer, true);
  detail::multiply_by_activation_derivative(Activation::gelu_tanh, x, inner, exact);
  for (Index j = 0; j < 5; ++j) {
    const double z = x(0, j), th = std::tanh(0.79788456 * z * (1 + 0.044715 * z * z));
    EXPECT_NEAR(peer(0, j),
                0.5 * z * ((1 - th * th) * (0.79788456 + 0.1070322243 * z * z)) + 0.5 * (1 + th),
                1e-15);
    EXPECT_NEAR(peer(0, j), exact(0, j), 1e-8);
  }
  EXPECT_GT((peer - exact).cwiseAbs().maxCoeff(), 1e-11);
}

// The engine's products (detail/matmul.hpp) against plain Eigen products, in float and double
// alternately (the libxsmm backend caches kernels per thread; a kernel of one type must
// never serve the other), on shapes with and without kernels, with strided operands and
// with accumulation.
template <class Scalar>
void check_engine_products(Rng& rng, Index m, Index k, Index n) {
  SCOPED_TRACE(::testing::Message()
               << (sizeof(Scalar) == 4 ? "float " : "double ") << m << "x" << k << "x" << n);
  const double tol = sizeof(Scalar) == 4 ? 1e-4 : 1e-12;
  auto close = [&](const Matrix<Scalar>& got, const Matrix<Scalar>& want) {
    ASSERT_EQ(got.rows(), want.rows());
    ASSERT_EQ(got.cols(), want.cols());
    const double scale = std::max(1.0, double(want.cwiseAbs().maxCoeff()));
    EXPECT_LE(double((got - want).cwiseAbs().maxCoeff()), tol * scale);
  };
  // Operands are blocks of wider matrices: outer stride ≠ columns.
  const Matrix<Scalar> A_wide = uniform<Scalar>(rng, m, k + 3),
                       B_wide = uniform<Scalar>(rng, k, n + 2);
  const MatrixCRef<Scalar> A = A_wide.leftCols(k), B = B_wide.leftCols(n);
  const Matrix<Scalar> X = uniform<Scalar>(rng, m, k), Y = uniform<Scalar>(rng, m, n),
                       W = uniform<Scalar>(rng, n, k), C0 = uniform<Scalar>(rng, m, n);
  Matrix<Scalar> C;
  detail::multiply(C, A, B);
  close(C, A * B);
  C = C0;
  detail::multiply(C, A, B, true);
  close(C, C0 + A * B);
  detail::multiply_transposed(C, X, Y);  // Xᵀ·Y: k × n
  close(C, X.transpose() * Y);
  const Matrix<Scalar> D0 = uniform<Scalar>(rng, k, n);
  C = D0;
  detail::multiply_transposed(C, X, Y, true);
  close(C, D0 + X.transpose() * Y);
  std::array<Matrix<Scalar>, 2> scratch;
  detail::multiply_by_transpose(C, A, W, scratch);  // A·Wᵀ: m × n
  close(C, A * W.transpose());
  detail::transpose(C, A);
  close(C, A.transpose());
}

TEST(TTTEngine, ProductsMatchEigen) {
  Rng rng(33);
  for (int round = 0; round < 2; ++round) {  // the second round reuses cached kernels
    for (const auto& [m, k, n] : {std::array<Index, 3>{16, 64, 64},
                                  {16, 64, 256},
                                  {16, 16, 64},
                                  {1, 8, 8},
                                  {3, 5, 7},
                                  {40, 300, 90}}) {
      check_engine_products<float>(rng, m, k, n);
      check_engine_products<double>(rng, m, k, n);
    }
  }
}

// trace() gives each token's gradient ∇W_l = X_lᵀ Δ_l, ∇b_l = Δ_l of the loss
// (loss_factor/2)·‖f(k) − v‖², f = x + LN(f_res) (or f_res), for linear and MLP models.
TEST(TTTGradients, InnerModelTraceMatchesFiniteDifferences) {
  Rng rng(32);
  struct Config {
    std::vector<Index> dims;
    Activation activation;
    bool bias, layer_norm;
    double loss_factor;
  };
  const std::vector<Config> configs = {
      {{4, 4}, Activation::gelu_tanh, true, true, 1.0},
      {{4, 4}, Activation::gelu_tanh, true, false, 1.0},
      {{5, 5}, Activation::gelu_tanh, false, true, 2.0},
      {{3, 3}, Activation::gelu_tanh, false, false, 2.0},
      {{4, 8, 4}, Activation::gelu_tanh, true, true, 1.0},
      {{4, 8, 4}, Activation::gelu_tanh, true, false, 1.0},
      {{3, 12, 3}, Activation::silu, false, true, 2.0},
      {{3, 6, 3}, Activation::silu, true, false, 1.0},
      {{4, 6, 5, 4}, Activation::gelu_tanh, true, true, 2.0},
  };
  for (const auto& c : configs) {
    SCOPED_TRACE(::testing::Message() << "depth " << c.dims.size() - 1 << ", bias " << c.bias
                                      << ", LN " << c.layer_norm << ", factor " << c.loss_factor
                                      << ", silu " << (c.activation == Activation::silu));
    detail::InnerModel<double> m;
    m.dims = c.dims;
    m.activation = c.activation;
    m.bias = c.bias;
    m.layer_norm = c.layer_norm;
    m.ln_eps = 1e-6;
    m.loss_factor = c.loss_factor;
    const Index d = c.dims.front();
    m.parameters.ln_weight = Matrix<double>::Ones(1, d) + 0.2 * uniform<double>(rng, 1, d);
    m.parameters.ln_bias = 0.2 * uniform<double>(rng, 1, d);
    Weights<double> P = random_weights(m.zeros(), rng, 1.5);
    const Index T = 3;
    const Matrix<double> k = uniform<double>(rng, T, d), v = uniform<double>(rng, T, d);
    const auto tr = m.trace(P, k, v);
    ASSERT_EQ(tr.X.size(), m.layers());
    ASSERT_EQ(tr.Delta.size(), m.layers());
    for (Index t = 0; t < T; ++t) {
      const Matrix<double> kt = k.row(t), vt = v.row(t);
      auto loss = [&] { return 0.5 * c.loss_factor * (m.evaluate(P, kt) - vt).squaredNorm(); };
      for (std::size_t l = 0; l < m.layers(); ++l) {
        SCOPED_TRACE(::testing::Message() << "token " << t << ", layer " << l);
        const Matrix<double> gW = tr.X[l].row(t).transpose() * tr.Delta[l].row(t);
        Matrix<double> fdW(gW.rows(), gW.cols());
        for (Index i = 0; i < gW.rows(); ++i)
          for (Index j = 0; j < gW.cols(); ++j)
            fdW(i, j) = central(P.W[l], i, j, 1e-5, loss);
        EXPECT_LT(rel_err(gW, fdW), 1e-7) << "W";
        if (c.bias) {
          const Matrix<double> gb = tr.Delta[l].row(t);
          Matrix<double> fdb(1, gb.cols());
          for (Index j = 0; j < gb.cols(); ++j)
            fdb(0, j) = central(P.b[l], 0, j, 1e-5, loss);
          EXPECT_LT(rel_err(gb, fdb), 1e-7) << "b";
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// Identities.

namespace {

TTTLinear<double> plain_ttt_linear(Index d, Index b, const Matrix<double>& W0) {
  return TTTLinear<double>(
      {.key_dim = d,
       .mini_batch = b,
       .token_index_scaling = false,
       .layer_norm = false,
       .bias = false},
      TTTLinear<double>::Parameters{Weights<double>{{W0}, {}}, Matrix<double>::Ones(1, d),
                                    Matrix<double>::Zero(1, d)});
}

/// Runs `form` over [0, T) in calls of at most `piece` tokens.
template <class Layer>
Matrix<double> run_pieces(const Layer& layer, Form form, const Matrix<double>& q,
                          const Matrix<double>& k, const Matrix<double>& v,
                          const Vector<double>& eta, typename Layer::State& state, Index piece) {
  const Index T = q.rows();
  Matrix<double> out(T, layer.output_dim());
  for (Index begin = 0; begin < T; begin += piece) {
    const Index n = std::min(piece, T - begin);
    out.middleRows(begin, n) = forward(layer, form,
                                       {.q = q.middleRows(begin, n),
                                        .k = k.middleRows(begin, n),
                                        .v = v.middleRows(begin, n),
                                        .learning_rate = GateRef<double>(eta.segment(begin, n))},
                                       state);
  }
  return out;
}

}  // namespace

// TTT paper, Theorem 1: TTT-Linear without LN/residual and bias, W_0 = 0, a_t = 1, no token
// scaling and b ≥ T is unnormalized linear attention with scale 1 (the ½ loss gives
// ∇W = kᵀ(k W − v), so W_i = Σ_{j≤i} k_jᵀ v_j).
TEST(TTTIdentities, TheoremOneLinearAttention) {
  Rng rng(41);
  const Index d = 6;
  for (Index T : {Index{1}, Index{7}, Index{40}}) {
    const Matrix<double> q = uniform<double>(rng, T, d), k = uniform<double>(rng, T, d),
                         v = uniform<double>(rng, T, d);
    const Vector<double> eta = Vector<double>::Ones(T);
    const LinearAttention<double> linear(
        {.key_dim = d, .value_dim = d, .scale = 1.0, .chunk_size = 5});
    for (Index b : {T, T + 3, Index{64}}) {
      const auto ttt = plain_ttt_linear(d, b, Matrix<double>::Zero(d, d));
      for (Form lform : all_forms) {
        auto ls = linear.initial_state();
        const auto want = forward(linear, lform, {.q = q, .k = k, .v = v}, ls);
        for (Form form : all_forms) {
          for (Index piece : {T, Index{3}}) {
            SCOPED_TRACE(::testing::Message()
                         << "T " << T << ", b " << b << ", linear " << to_string(lform) << ", TTT "
                         << to_string(form) << ", calls of " << piece);
            auto ts = ttt.initial_state();
            const auto got = run_pieces(ttt, form, q, k, v, eta, ts, piece);
            EXPECT_TRUE(near(got, want, 1e-12));
            EXPECT_TRUE(near(ttt.current_weights(ts).W[0], ls.S, 1e-12)) << "W_T = S_T";
          }
        }
      }
    }
  }
}

// With rates a_t the same model is linear attention on keys a_t·k_t.
TEST(TTTIdentities, TheoremOneWithRates) {
  Rng rng(42);
  const Index d = 4, T = 19;
  const Matrix<double> q = uniform<double>(rng, T, d), k = uniform<double>(rng, T, d),
                       v = uniform<double>(rng, T, d);
  const Vector<double> eta = uniform<double>(rng, T, 1, 0.0, 2.0).col(0);
  const Matrix<double> scaled_k = eta.asDiagonal() * k;
  const LinearAttention<double> linear({.key_dim = d, .value_dim = d, .scale = 1.0});
  auto ls = linear.initial_state();
  const auto want = forward(linear, Form::recurrent, {.q = q, .k = scaled_k, .v = v}, ls);
  const auto ttt = plain_ttt_linear(d, 32, Matrix<double>::Zero(d, d));
  for (Form form : all_forms) {
    auto ts = ttt.initial_state();
    EXPECT_TRUE(near(run_pieces(ttt, form, q, k, v, eta, ts, T), want, 1e-12)) << to_string(form);
  }
}

// With mini_batch 1 the same model (any W_0) is the delta rule with β_t = a_t:
// W_t = W_{t−1} − a_t k_tᵀ(k_t W_{t−1} − v_t) (c_0 = 1 with or without token scaling).
TEST(TTTIdentities, MiniBatchOneIsDeltaNet) {
  Rng rng(43);
  const Index d = 5, T = 37;
  Matrix<double> k = uniform<double>(rng, T, d);
  k.rowwise().normalize();
  const Matrix<double> q = uniform<double>(rng, T, d), v = uniform<double>(rng, T, d);
  const Vector<double> eta = uniform<double>(rng, T, 1, 0.0, 1.0).col(0);
  for (bool zero_start : {true, false}) {
    const Matrix<double> W0 = zero_start ? Matrix<double>::Zero(d, d) : uniform<double>(rng, d, d);
    const DeltaNet<double> delta({.key_dim = d, .value_dim = d, .scale = 1.0, .chunk_size = 4});
    for (bool scaling : {false, true}) {
      auto ttt = TTTLinear<double>(
          {.key_dim = d,
           .mini_batch = 1,
           .token_index_scaling = scaling,
           .layer_norm = false,
           .bias = false},
          TTTLinear<double>::Parameters{Weights<double>{{W0}, {}}, Matrix<double>::Ones(1, d),
                                        Matrix<double>::Zero(1, d)});
      for (Form dform : all_forms) {
        DeltaNet<double>::State ds{W0};
        const auto want =
            forward(delta, dform, {.q = q, .k = k, .v = v, .beta = GateRef<double>(eta)}, ds);
        for (Form form : all_forms) {
          SCOPED_TRACE(::testing::Message()
                       << (zero_start ? "W0 = 0" : "random W0") << ", scaling " << scaling
                       << ", DeltaNet " << to_string(dform) << ", TTT " << to_string(form));
          auto ts = ttt.initial_state();
          // parallel is defined for one token at a time only (b = 1)
          const auto got = run_pieces(ttt, form, q, k, v, eta, ts, form == Form::parallel ? 1 : T);
          EXPECT_TRUE(near(got, want, 1e-12));
          EXPECT_EQ(ts.position, 0);
          EXPECT_TRUE(near(ts.reference.W[0], ds.S, 1e-12)) << "W_T = S_T";
          EXPECT_TRUE(near(ttt.current_weights(ts).W[0], ds.S, 1e-12));
        }
      }
    }
  }
}

}  // namespace seqmem::test
