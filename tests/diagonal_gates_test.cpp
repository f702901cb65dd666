// The diagonal-gate layers (docs/math.md §7–§9): GatedLinearAttention, KimiDeltaAttention and
// GeneralizedDeltaRule. The conformance suite over their variants; the identities with
// LinearAttention, DeltaNet and with one another; a test that tells §9's transition
// D + bᵀa from D + aᵀb; strong decays in float against the double definition; and heads
// packed side by side under MultiHead.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "conformance.hpp"

namespace seqmem::test {
namespace {

/// True when `Layer` is `Family<Scalar>` for some Scalar.
template <template <class> class Family, class Layer>
inline constexpr bool is_a = false;
template <template <class> class Family, class Scalar>
inline constexpr bool is_a<Family, Family<Scalar>> = true;

enum class Beta { uniform, extremes };  // KDA: β in U(0, 2), or only 0 and 2
enum class LowRank { general, rwkv7 };  // GeneralizedDeltaRule's a, b

struct ChannelVariant {
  std::string name;
  bool qk_l2norm = false;  // KDA only
  Beta beta = Beta::uniform;
  LowRank low_rank = LowRank::general;
  Index key_dim = 6, value_dim = 5;
};

/// The layer's options: dims, chunk size and (KDA) qk_l2norm; everything else default.
template <class Layer>
typename Layer::Options options(Index dk, Index dv, Index chunk, bool qk_l2norm = false) {
  typename Layer::Options o;
  o.key_dim = dk;
  o.value_dim = dv;
  o.chunk_size = chunk;
  if constexpr (is_a<KimiDeltaAttention, Layer>) o.qk_l2norm = qk_l2norm;
  return o;
}

/// Every tensor one of the three layers takes: `g` is log_decay, `beta` only KDA's (`T×1`, or
/// `T×H` packed), `a` and `b` only GeneralizedDeltaRule's; the others stay empty.
template <class Layer>
struct ChannelData {
  using Scalar = typename Layer::Scalar;
  using Inputs = typename Layer::Inputs;
  Matrix<Scalar> q, k, v, g, a, b, beta;

  /// Rows [begin, begin + n).
  Inputs slice(Index begin, Index n) const { return bind(begin, n, false); }
  /// Every tensor as it is, even when a bad-input test gave it the wrong shape.
  Inputs whole() const { return bind(0, q.rows(), true); }

 private:
  Inputs bind(Index begin, Index n, bool whole) const {
    const auto rows = [&](const Matrix<Scalar>& x) {
      return whole ? InputRef<Scalar>(x) : InputRef<Scalar>(x.middleRows(begin, n));
    };
    if constexpr (is_a<GatedLinearAttention, Layer>) {
      return {.q = rows(q), .k = rows(k), .v = rows(v), .log_decay = rows(g)};
    } else if constexpr (is_a<KimiDeltaAttention, Layer>) {
      const GateRef<Scalar> gate =
          whole ? GateRef<Scalar>(beta) : GateRef<Scalar>(beta.middleRows(begin, n));
      return {.q = rows(q), .k = rows(k), .v = rows(v), .beta = gate, .log_decay = rows(g)};
    } else {
      static_assert(is_a<GeneralizedDeltaRule, Layer>);
      return {.q = rows(q),
              .k = rows(k),
              .v = rows(v),
              .a = rows(a),
              .b = rows(b),
              .log_decay = rows(g)};
    }
  }
};

template <class Scalar>
Matrix<Scalar> unit_rows(Matrix<Scalar> x) {
  x.rowwise().normalize();
  return x;
}

template <class Scalar>
Matrix<Scalar> gaussian(Rng& rng, Index rows, Index cols, double sd) {
  std::normal_distribution<double> dist(0.0, sd);
  Matrix<Scalar> m(rows, cols);
  for (Index i = 0; i < rows; ++i)
    for (Index j = 0; j < cols; ++j)
      m(i, j) = static_cast<Scalar>(dist(rng));
  return m;
}

/// A log_decay as docs/math.md §7 allows it: mostly small negative (U(−0.5, 0)), about 5 % of
/// the entries exactly 0 and 3 % at −30.
template <class Scalar>
Matrix<Scalar> channel_log_decay(Rng& rng, Index T, Index dk) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  Matrix<Scalar> g(T, dk);
  for (Index t = 0; t < T; ++t) {
    for (Index c = 0; c < dk; ++c) {
      const double r = u(rng);
      g(t, c) = static_cast<Scalar>(r < 0.05 ? 0.0 : r < 0.08 ? -30.0 : -0.5 * u(rng));
    }
  }
  return g;
}

/// GeneralizedDeltaRule's a, b: independent 0.6·N(0, 1)/sqrt(dk) entries, or RWKV-7's
/// a = −κ̂, b = κ̂ ⊙ α with unit rows κ̂ and α in (0, 1).
template <class Scalar>
void low_rank(LowRank kind, Rng& rng, Index T, Index dk, Matrix<Scalar>& a, Matrix<Scalar>& b) {
  if (kind == LowRank::general) {
    const double sd = 0.6 / std::sqrt(static_cast<double>(dk));
    a = gaussian<Scalar>(rng, T, dk, sd);
    b = gaussian<Scalar>(rng, T, dk, sd);
  } else {
    const Matrix<Scalar> kappa = unit_rows(uniform<Scalar>(rng, T, dk));
    a = -kappa;
    b = kappa.cwiseProduct(uniform<Scalar>(rng, T, dk, 0.01, 0.99));
  }
}

/// Random inputs of T tokens for `layer`. KDA's keys are unit rows (the delta rule's stable
/// regime) unless the layer normalizes them itself.
template <class Layer>
ChannelData<Layer> make_data(const ChannelVariant& var, const Layer& layer, Index T, Rng& rng) {
  using Scalar = typename Layer::Scalar;
  const Index dk = layer.key_dim(), dv = layer.value_dim();
  ChannelData<Layer> d;
  d.q = uniform<Scalar>(rng, T, dk);
  d.k = uniform<Scalar>(rng, T, dk);
  d.v = uniform<Scalar>(rng, T, dv);
  d.g = channel_log_decay<Scalar>(rng, T, dk);
  if constexpr (is_a<KimiDeltaAttention, Layer>) {
    if (!var.qk_l2norm) d.k = unit_rows(d.k);
    d.beta = uniform<Scalar>(rng, T, 1, 0.0, 2.0);
    if (var.beta == Beta::extremes) {
      for (Index t = 0; t < T; ++t)
        d.beta(t, 0) = Scalar(2 * uniform_index(rng, 0, 1));
    }
  }
  if constexpr (is_a<GeneralizedDeltaRule, Layer>) low_rank(var.low_rank, rng, T, dk, d.a, d.b);
  return d;
}

/// What the conformance suite needs, written once for the three layers.
template <class Layer>
struct ChannelCase {
  using Scalar = typename Layer::Scalar;
  using State = typename Layer::State;
  using Variant = ChannelVariant;
  using Data = ChannelData<Layer>;

  static Layer make(const Variant& v, Index chunk) {
    return Layer(options<Layer>(v.key_dim, v.value_dim, chunk, v.qk_l2norm));
  }

  static Data data(const Variant& var, const Layer& layer, Index T, Rng& rng) {
    return make_data(var, layer, T, rng);
  }

  static void randomize(const Layer&, State& state, Rng& rng) {
    state.S = uniform<Scalar>(rng, state.S.rows(), state.S.cols());
  }

  static std::vector<Matrix<Scalar>> tensors(const State& s) { return {s.S}; }
  static bool defined(const Layer&, Form, const State&, Index) { return true; }

  /// For the first variant (key_dim 6, value_dim 5) and T = 6.
  static std::vector<BadInput<Data>> bad_inputs() {
    constexpr Scalar nan = std::numeric_limits<Scalar>::quiet_NaN();
    constexpr Scalar inf = std::numeric_limits<Scalar>::infinity();
    std::vector<BadInput<Data>> bad = {
        {"k with fewer rows",
         [](Data& d) { d.k.conservativeResize(d.k.rows() - 1, Eigen::NoChange); },
         "k must be 6x6, got 5x6"},
        {"v with a wrong dim", [](Data& d) { d.v = Matrix<Scalar>::Ones(d.v.rows(), 2); },
         "v must be 6x5, got 6x2"},
        {"NaN in q", [](Data& d) { d.q(2, 3) = nan; }, "q(2, 3) must be finite"},
        {"per-token log_decay (T x 1)", [](Data& d) { d.g = Matrix<Scalar>::Zero(6, 1); },
         "log_decay must be 6x6, got 6x1"},
        {"log_decay with fewer rows", [](Data& d) { d.g = Matrix<Scalar>::Zero(5, 6); },
         "log_decay must be 6x6, got 5x6"},
        {"positive log_decay", [](Data& d) { d.g(3, 2) = Scalar(0.5); },
         "log_decay[3, 2] must be finite and <= 0, got 0.5"},
        {"tiny positive log_decay", [](Data& d) { d.g(0, 5) = Scalar(1e-30); },
         "log_decay[0, 5] must be finite and <= 0, got 1e-30"},
        {"NaN log_decay", [](Data& d) { d.g(1, 4) = nan; }, "log_decay[1, 4] must be finite"},
        {"-Inf log_decay", [](Data& d) { d.g(5, 0) = -inf; }, "log_decay[5, 0] must be finite"},
        {"+Inf log_decay", [](Data& d) { d.g(4, 1) = inf; }, "log_decay[4, 1] must be finite"},
    };
    if constexpr (is_a<KimiDeltaAttention, Layer>) {
      bad.insert(bad.end(),
                 {
                     {"beta above 2", [](Data& d) { d.beta(4, 0) = Scalar(2.5); },
                      "beta[4] must be finite and in [0, 2], got 2.5"},
                     {"beta just above 2",
                      [](Data& d) { d.beta(2, 0) = std::nextafter(Scalar(2), Scalar(3)); },
                      "beta[2] must be finite and in [0, 2]"},
                     {"negative beta", [](Data& d) { d.beta(0, 0) = Scalar(-0.25); },
                      "beta[0] must be finite and in [0, 2], got -0.25"},
                     {"NaN beta", [](Data& d) { d.beta(1, 0) = nan; }, "beta[1] must be finite"},
                     {"beta too short", [](Data& d) { d.beta = Matrix<Scalar>::Ones(5, 1); },
                      "beta must be 6x1, got 5x1"},
                     {"beta per key channel", [](Data& d) { d.beta = Matrix<Scalar>::Ones(6, 6); },
                      "beta must be 6x1, got 6x6"},
                 });
    }
    if constexpr (is_a<GeneralizedDeltaRule, Layer>) {
      bad.insert(bad.end(),
                 {
                     {"NaN in a", [](Data& d) { d.a(2, 1) = nan; }, "a[2, 1] must be finite"},
                     {"Inf in a", [](Data& d) { d.a(0, 0) = inf; }, "a[0, 0] must be finite"},
                     {"NaN in b", [](Data& d) { d.b(5, 3) = nan; }, "b[5, 3] must be finite"},
                     {"-Inf in b", [](Data& d) { d.b(3, 5) = -inf; }, "b[3, 5] must be finite"},
                     {"a with a wrong dim", [](Data& d) { d.a = Matrix<Scalar>::Zero(6, 5); },
                      "a must be 6x6, got 6x5"},
                     {"a per token (T x 1)", [](Data& d) { d.a = Matrix<Scalar>::Zero(6, 1); },
                      "a must be 6x6, got 6x1"},
                     {"b with fewer rows", [](Data& d) { d.b = Matrix<Scalar>::Zero(5, 6); },
                      "b must be 6x6, got 5x6"},
                 });
    }
    return bad;
  }

  static std::vector<BadOption<Layer>> bad_options() {
    return {
        {"key_dim 0", [] { return Layer({.key_dim = 0, .value_dim = 4}); },
         "key_dim must be > 0, got 0"},
        {"value_dim 0", [] { return Layer({.key_dim = 4, .value_dim = 0}); },
         "value_dim must be > 0, got 0"},
        {"chunk_size 0", [] { return Layer({.key_dim = 4, .value_dim = 4, .chunk_size = 0}); },
         "chunk_size must be > 0, got 0"},
        {"NaN scale",
         [] {
           return Layer(
               {.key_dim = 4, .value_dim = 4, .scale = std::numeric_limits<Scalar>::quiet_NaN()});
         },
         "scale must be finite"},
    };
  }
};

}  // namespace

template <class Scalar>
struct LayerCase<GatedLinearAttention<Scalar>> : ChannelCase<GatedLinearAttention<Scalar>> {
  static std::vector<ChannelVariant> variants() {
    return {{.name = "plain"}, {.name = "plain, dk 12, dv 3", .key_dim = 12, .value_dim = 3}};
  }
};

template <class Scalar>
struct LayerCase<KimiDeltaAttention<Scalar>> : ChannelCase<KimiDeltaAttention<Scalar>> {
  static std::vector<ChannelVariant> variants() {
    return {
        {.name = "plain"},
        {.name = "qk_l2norm", .qk_l2norm = true, .key_dim = 8, .value_dim = 4},
        {.name = "beta 0 and 2", .beta = Beta::extremes},
    };
  }
};

template <class Scalar>
struct LayerCase<GeneralizedDeltaRule<Scalar>> : ChannelCase<GeneralizedDeltaRule<Scalar>> {
  static std::vector<ChannelVariant> variants() {
    return {
        {.name = "general a, b"},
        {.name = "RWKV-7 a = -k, b = k * alpha",
         .low_rank = LowRank::rwkv7,
         .key_dim = 8,
         .value_dim = 4},
    };
  }
};

using GlaTypes = ::testing::Types<GatedLinearAttention<float>, GatedLinearAttention<double>>;
INSTANTIATE_TYPED_TEST_SUITE_P(GatedLinearAttention, Conformance, GlaTypes);
using KdaTypes = ::testing::Types<KimiDeltaAttention<float>, KimiDeltaAttention<double>>;
INSTANTIATE_TYPED_TEST_SUITE_P(KimiDeltaAttention, Conformance, KdaTypes);
using GdrTypes = ::testing::Types<GeneralizedDeltaRule<float>, GeneralizedDeltaRule<double>>;
INSTANTIATE_TYPED_TEST_SUITE_P(GeneralizedDeltaRule, Conformance, GdrTypes);

namespace {

// ---------------------------------------------------------------------------------------------
// Identities (double, every form, nonzero initial states, several calls)
// ---------------------------------------------------------------------------------------------

constexpr double kIdentityTol = 1e-10;

/// The forms of a sequence of calls: call c runs in schedule[c % size].
using Schedule = std::vector<Form>;
const std::vector<Schedule> kSchedules = {{Form::recurrent},
                                          {Form::parallel},
                                          {Form::chunkwise},
                                          {Form::chunkwise, Form::recurrent, Form::parallel}};

std::string describe(const Schedule& schedule) {
  std::string s;
  for (Form form : schedule)
    s += std::string(s.empty() ? "" : ", ") + std::string(to_string(form));
  return s;
}

/// Runs `layer` over the rows between consecutive `cuts` (one call each, in the schedule's
/// forms), from `state`; `inputs(begin, n)` gives a call's inputs. Returns all outputs.
template <class Layer, class MakeInputs>
Matrix<typename Layer::Scalar> run_calls(const Layer& layer, const Schedule& schedule,
                                         const std::vector<Index>& cuts,
                                         typename Layer::State& state, MakeInputs&& inputs) {
  Matrix<typename Layer::Scalar> out(cuts.back(), layer.output_dim());
  for (std::size_t c = 0; c + 1 < cuts.size(); ++c) {
    const Index begin = cuts[c], n = cuts[c + 1] - begin;
    out.middleRows(begin, n) =
        forward(layer, schedule[c % schedule.size()], inputs(begin, n), state);
  }
  return out;
}

const std::vector<Index> kCuts = {0, 37, 38, 101, 150};  // four calls, one of a single token
constexpr Index kT = 150;

/// One per-token log_decay (T×1) of the kind channel_log_decay draws.
Vector<double> token_log_decay(Rng& rng, Index T) {
  return channel_log_decay<double>(rng, T, 1).col(0);
}

// GLA with all channels of a token equal is LinearAttention with that scalar log_decay (§7).
TEST(DiagonalGateIdentities, GlaWithEqualChannelsIsLinearAttention) {
  using Gla = GatedLinearAttention<double>;
  using Linear = LinearAttention<double>;
  Rng rng(101);
  const Index dk = 8, dv = 5;
  const Matrix<double> q = uniform<double>(rng, kT, dk), k = uniform<double>(rng, kT, dk),
                       v = uniform<double>(rng, kT, dv), S0 = uniform<double>(rng, dk, dv);
  const Vector<double> g = token_log_decay(rng, kT);
  const Matrix<double> G = g.replicate(1, dk);
  const Gla gla({.key_dim = dk, .value_dim = dv, .chunk_size = 16});
  const Linear linear({.key_dim = dk, .value_dim = dv, .chunk_size = 7});
  for (const auto& schedule : kSchedules) {
    SCOPED_TRACE(describe(schedule));
    auto gs = gla.initial_state();
    auto ls = linear.initial_state();
    gs.S = ls.S = S0;
    const auto og = run_calls(gla, schedule, kCuts, gs, [&](Index b, Index n) {
      return Gla::Inputs{.q = q.middleRows(b, n),
                         .k = k.middleRows(b, n),
                         .v = v.middleRows(b, n),
                         .log_decay = G.middleRows(b, n)};
    });
    const auto ol = run_calls(linear, schedule, kCuts, ls, [&](Index b, Index n) {
      return Linear::Inputs{.q = q.middleRows(b, n),
                            .k = k.middleRows(b, n),
                            .v = v.middleRows(b, n),
                            .log_decay = GateRef<double>(g.segment(b, n))};
    });
    EXPECT_TRUE(near(og, ol, kIdentityTol)) << "outputs";
    EXPECT_TRUE(near(gs.S, ls.S, kIdentityTol)) << "state";
  }
}

/// KDA and DeltaNet on the same q, k, v, β; KDA's log_decay `G` (`T×dk`), DeltaNet's `g`
/// (`T×1`, or none when empty).
void expect_kda_is_delta_net(const Matrix<double>& q, const Matrix<double>& k,
                             const Matrix<double>& v, const Vector<double>& beta,
                             const Matrix<double>& G, const Vector<double>& g, bool qk_l2norm,
                             const Matrix<double>& S0) {
  using Kda = KimiDeltaAttention<double>;
  using Delta = DeltaNet<double>;
  const Index dk = q.cols(), dv = v.cols();
  const Kda kda({.key_dim = dk, .value_dim = dv, .chunk_size = 16, .qk_l2norm = qk_l2norm});
  const Delta delta({.key_dim = dk, .value_dim = dv, .chunk_size = 7, .qk_l2norm = qk_l2norm});
  for (const auto& schedule : kSchedules) {
    SCOPED_TRACE(describe(schedule));
    auto ks = kda.initial_state();
    auto ds = delta.initial_state();
    ks.S = ds.S = S0;
    const auto ok = run_calls(kda, schedule, kCuts, ks, [&](Index b, Index n) {
      return Kda::Inputs{.q = q.middleRows(b, n),
                         .k = k.middleRows(b, n),
                         .v = v.middleRows(b, n),
                         .beta = GateRef<double>(beta.segment(b, n)),
                         .log_decay = G.middleRows(b, n)};
    });
    const auto od = run_calls(delta, schedule, kCuts, ds, [&](Index b, Index n) {
      Delta::Inputs in{.q = q.middleRows(b, n),
                       .k = k.middleRows(b, n),
                       .v = v.middleRows(b, n),
                       .beta = GateRef<double>(beta.segment(b, n))};
      if (g.size() > 0) in.log_decay.emplace(g.segment(b, n));
      return in;
    });
    EXPECT_TRUE(near(ok, od, kIdentityTol)) << "outputs";
    EXPECT_TRUE(near(ks.S, ds.S, kIdentityTol)) << "state";
  }
}

// KDA with all channels of a token equal is gated DeltaNet with that scalar log_decay (§8).
TEST(DiagonalGateIdentities, KdaWithEqualChannelsIsGatedDeltaNet) {
  for (bool qk_l2norm : {false, true}) {
    SCOPED_TRACE(qk_l2norm ? "qk_l2norm" : "unit keys");
    Rng rng(qk_l2norm ? 202 : 201);
    const Index dk = 8, dv = 6;
    const Matrix<double> q = uniform<double>(rng, kT, dk), v = uniform<double>(rng, kT, dv);
    Matrix<double> k = uniform<double>(rng, kT, dk);
    if (!qk_l2norm) k = unit_rows(k);
    const Vector<double> beta = uniform<double>(rng, kT, 1, 0.0, 2.0).col(0);
    const Vector<double> g = token_log_decay(rng, kT);
    expect_kda_is_delta_net(q, k, v, beta, g.replicate(1, dk), g, qk_l2norm,
                            uniform<double>(rng, dk, dv));
  }
}

// KDA with g = 0 is plain DeltaNet (§8).
TEST(DiagonalGateIdentities, KdaWithoutDecayIsDeltaNet) {
  for (bool qk_l2norm : {false, true}) {
    SCOPED_TRACE(qk_l2norm ? "qk_l2norm" : "unit keys");
    Rng rng(qk_l2norm ? 302 : 301);
    const Index dk = 7, dv = 4;
    const Matrix<double> q = uniform<double>(rng, kT, dk), v = uniform<double>(rng, kT, dv);
    Matrix<double> k = uniform<double>(rng, kT, dk);
    if (!qk_l2norm) k = unit_rows(k);
    const Vector<double> beta = uniform<double>(rng, kT, 1, 0.0, 2.0).col(0);
    expect_kda_is_delta_net(q, k, v, beta, Matrix<double>::Zero(kT, dk), Vector<double>(),
                            qk_l2norm, uniform<double>(rng, dk, dv));
  }
}

using Gdr = GeneralizedDeltaRule<double>;

/// GeneralizedDeltaRule's outputs and state over kCuts in `schedule` (chunk 16).
Matrix<double> run_gdr(const Schedule& schedule, const Matrix<double>& q, const Matrix<double>& k,
                       const Matrix<double>& v, const Matrix<double>& a, const Matrix<double>& b,
                       const Matrix<double>& G, Gdr::State& state) {
  const Gdr gdr({.key_dim = q.cols(), .value_dim = v.cols(), .chunk_size = 16});
  return run_calls(gdr, schedule, kCuts, state, [&](Index r, Index n) {
    return Gdr::Inputs{.q = q.middleRows(r, n),
                       .k = k.middleRows(r, n),
                       .v = v.middleRows(r, n),
                       .a = a.middleRows(r, n),
                       .b = b.middleRows(r, n),
                       .log_decay = G.middleRows(r, n)};
  });
}

// GeneralizedDeltaRule with g = 0, a = −k, b = β k and the written key β k is DeltaNet on unit
// keys k (§9).
TEST(DiagonalGateIdentities, GeneralizedDeltaRuleIsDeltaNet) {
  using Delta = DeltaNet<double>;
  Rng rng(401);
  const Index dk = 8, dv = 5;
  const Matrix<double> q = uniform<double>(rng, kT, dk), v = uniform<double>(rng, kT, dv);
  const Matrix<double> k = unit_rows(uniform<double>(rng, kT, dk));
  const Vector<double> beta = uniform<double>(rng, kT, 1, 0.0, 2.0).col(0);
  const Matrix<double> S0 = uniform<double>(rng, dk, dv);
  const Matrix<double> beta_k = beta.asDiagonal() * k;
  const Delta delta({.key_dim = dk, .value_dim = dv, .chunk_size = 5});
  for (const auto& schedule : kSchedules) {
    SCOPED_TRACE(describe(schedule));
    Gdr::State gs{S0};
    const auto og = run_gdr(schedule, q, beta_k, v, -k, beta_k, Matrix<double>::Zero(kT, dk), gs);
    auto ds = delta.initial_state();
    ds.S = S0;
    const auto od = run_calls(delta, schedule, kCuts, ds, [&](Index b, Index n) {
      return Delta::Inputs{.q = q.middleRows(b, n),
                           .k = k.middleRows(b, n),
                           .v = v.middleRows(b, n),
                           .beta = GateRef<double>(beta.segment(b, n))};
    });
    EXPECT_TRUE(near(og, od, kIdentityTol)) << "outputs";
    EXPECT_TRUE(near(gs.S, ds.S, kIdentityTol)) << "state";
  }
}

// GeneralizedDeltaRule with a = −k ⊙ exp(g), b = β k and the written key β k is KDA (§9): the
// factor exp(g) because this rule reads the undecayed state.
TEST(DiagonalGateIdentities, GeneralizedDeltaRuleIsKda) {
  using Kda = KimiDeltaAttention<double>;
  Rng rng(501);
  const Index dk = 8, dv = 6;
  const Matrix<double> q = uniform<double>(rng, kT, dk), v = uniform<double>(rng, kT, dv);
  const Matrix<double> k = unit_rows(uniform<double>(rng, kT, dk));
  const Vector<double> beta = uniform<double>(rng, kT, 1, 0.0, 2.0).col(0);
  const Matrix<double> G = channel_log_decay<double>(rng, kT, dk);
  const Matrix<double> S0 = uniform<double>(rng, dk, dv);
  const Matrix<double> beta_k = beta.asDiagonal() * k;
  const Matrix<double> a = -k.cwiseProduct(G.array().exp().matrix());
  const Kda kda({.key_dim = dk, .value_dim = dv, .chunk_size = 7});
  for (const auto& schedule : kSchedules) {
    SCOPED_TRACE(describe(schedule));
    Gdr::State gs{S0};
    const auto og = run_gdr(schedule, q, beta_k, v, a, beta_k, G, gs);
    Kda::State ks{S0};
    const auto ok = run_calls(kda, schedule, kCuts, ks, [&](Index b, Index n) {
      return Kda::Inputs{.q = q.middleRows(b, n),
                         .k = k.middleRows(b, n),
                         .v = v.middleRows(b, n),
                         .beta = GateRef<double>(beta.segment(b, n)),
                         .log_decay = G.middleRows(b, n)};
    });
    EXPECT_TRUE(near(og, ok, kIdentityTol)) << "outputs";
    EXPECT_TRUE(near(gs.S, ks.S, kIdentityTol)) << "state";
  }
}

// GeneralizedDeltaRule with a = b = 0 is GLA (§9).
TEST(DiagonalGateIdentities, GeneralizedDeltaRuleWithoutLowRankIsGla) {
  using Gla = GatedLinearAttention<double>;
  Rng rng(601);
  const Index dk = 6, dv = 7;
  const Matrix<double> q = uniform<double>(rng, kT, dk), k = uniform<double>(rng, kT, dk),
                       v = uniform<double>(rng, kT, dv), S0 = uniform<double>(rng, dk, dv);
  const Matrix<double> G = channel_log_decay<double>(rng, kT, dk),
                       zero = Matrix<double>::Zero(kT, dk);
  const Gla gla({.key_dim = dk, .value_dim = dv, .chunk_size = 7});
  for (const auto& schedule : kSchedules) {
    SCOPED_TRACE(describe(schedule));
    Gdr::State gs{S0};
    const auto og = run_gdr(schedule, q, k, v, zero, zero, G, gs);
    Gla::State ls{S0};
    const auto ol = run_calls(gla, schedule, kCuts, ls, [&](Index b, Index n) {
      return Gla::Inputs{.q = q.middleRows(b, n),
                         .k = k.middleRows(b, n),
                         .v = v.middleRows(b, n),
                         .log_decay = G.middleRows(b, n)};
    });
    EXPECT_TRUE(near(og, ol, kIdentityTol)) << "outputs";
    EXPECT_TRUE(near(gs.S, ls.S, kIdentityTol)) << "state";
  }
}

// ---------------------------------------------------------------------------------------------
// D + bᵀa, not D + aᵀb (§9)
// ---------------------------------------------------------------------------------------------

/// §9's recurrence written out token by token from state S (updated):
///     S_t = (diag(exp g_t) + b_tᵀ a_t) S_{t−1} + k_tᵀ v_t,   o_t = scale·q_t S_t
/// or, `swapped`, with the transition diag(exp g_t) + a_tᵀ b_t.
Matrix<double> dplr_loop(const Matrix<double>& q, const Matrix<double>& k, const Matrix<double>& v,
                         const Matrix<double>& a, const Matrix<double>& b, const Matrix<double>& g,
                         double scale, bool swapped, Matrix<double>& S) {
  const Index T = q.rows(), dk = q.cols();
  Matrix<double> out(T, v.cols());
  Matrix<double> transition(dk, dk);
  for (Index t = 0; t < T; ++t) {
    transition.setZero();
    transition.diagonal() = g.row(t).array().exp().matrix().transpose();
    if (swapped) {
      transition += a.row(t).transpose() * b.row(t);
    } else {
      transition += b.row(t).transpose() * a.row(t);
    }
    S = (transition * S + k.row(t).transpose() * v.row(t)).eval();
    out.row(t) = scale * q.row(t) * S;
  }
  return out;
}

TEST(GeneralizedDeltaRule, TransitionIsDPlusBTransposeA) {
  for (LowRank kind : {LowRank::general, LowRank::rwkv7}) {
    SCOPED_TRACE(kind == LowRank::general ? "general a, b" : "RWKV-7 a, b");
    Rng rng(kind == LowRank::general ? 701 : 702);
    const Index dk = 8, dv = 6;
    const Matrix<double> q = uniform<double>(rng, kT, dk), k = uniform<double>(rng, kT, dk),
                         v = uniform<double>(rng, kT, dv), S0 = uniform<double>(rng, dk, dv);
    const Matrix<double> G = channel_log_decay<double>(rng, kT, dk);
    Matrix<double> a, b;
    low_rank(kind, rng, kT, dk, a, b);
    const double scale = 1.0 / std::sqrt(static_cast<double>(dk));
    Matrix<double> right_S = S0, swapped_S = S0;
    const auto right = dplr_loop(q, k, v, a, b, G, scale, false, right_S);
    const auto swapped = dplr_loop(q, k, v, a, b, G, scale, true, swapped_S);
    for (const auto& schedule : kSchedules) {
      SCOPED_TRACE(describe(schedule));
      Gdr::State state{S0};
      const auto out = run_gdr(schedule, q, k, v, a, b, G, state);
      EXPECT_TRUE(near(out, right, kIdentityTol)) << "outputs";
      EXPECT_TRUE(near(state.S, right_S, kIdentityTol)) << "state";
      EXPECT_GT((out - swapped).cwiseAbs().maxCoeff(), 1e-3) << "outputs as with D + aᵀb";
      EXPECT_GT((state.S - swapped_S).cwiseAbs().maxCoeff(), 1e-3) << "state as with D + aᵀb";
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Strong decays in float (§7 item 2, §9's property list)
// ---------------------------------------------------------------------------------------------

/// `x` rounded to float and back: inputs that the float and the double runs both hold exactly.
Matrix<double> float_values(const Matrix<double>& x) {
  return x.cast<float>().cast<double>();
}

Matrix<float> to_float(const Matrix<double>& x) {
  return x.cast<float>();
}

/// Every float form (recurrent, parallel, chunkwise with chunk 64, 16 and 7) agrees with the
/// double recurrent form within 2e-4·(1 + max|value|) and holds no NaN or Inf, outputs and
/// final state, from a random initial state; so do the double forms, within 1e-10.
template <template <class> class Family>
void expect_every_form_agrees(ChannelData<Family<double>> d, bool qk_l2norm, Rng& rng) {
  using LD = Family<double>;
  using LF = Family<float>;
  for (Matrix<double>* x : {&d.q, &d.k, &d.v, &d.g, &d.a, &d.b, &d.beta})
    *x = float_values(*x);
  ChannelData<LF> f;
  f.q = to_float(d.q);
  f.k = to_float(d.k);
  f.v = to_float(d.v);
  f.g = to_float(d.g);
  f.a = to_float(d.a);
  f.b = to_float(d.b);
  f.beta = to_float(d.beta);
  const Index dk = d.q.cols(), dv = d.v.cols();
  const Matrix<double> S0 = float_values(uniform<double>(rng, dk, dv));

  const LD reference(options<LD>(dk, dv, 64, qk_l2norm));
  typename LD::State want_state{S0};
  const Matrix<double> want = forward(reference, Form::recurrent, d.whole(), want_state);
  ASSERT_TRUE(want.allFinite() && want_state.S.allFinite()) << "double recurrent";

  struct Run {
    Form form;
    Index chunk;
  };
  for (const Run run : {Run{Form::recurrent, 64}, Run{Form::parallel, 64}, Run{Form::chunkwise, 64},
                        Run{Form::chunkwise, 16}, Run{Form::chunkwise, 7}}) {
    SCOPED_TRACE(::testing::Message()
                 << "float " << to_string(run.form) << ", chunk " << run.chunk);
    const LF layer(options<LF>(dk, dv, run.chunk, qk_l2norm));
    typename LF::State state{S0.cast<float>()};
    const Matrix<float> out = forward(layer, run.form, f.whole(), state);
    EXPECT_TRUE(out.allFinite()) << "outputs hold NaN or Inf";
    EXPECT_TRUE(state.S.allFinite()) << "state holds NaN or Inf";
    EXPECT_TRUE(near(out, want, 2e-4)) << "outputs";
    EXPECT_TRUE(near(state.S, want_state.S, 2e-4)) << "state";
    if (run.form == Form::recurrent) continue;
    SCOPED_TRACE("double");
    const LD same_in_double(options<LD>(dk, dv, run.chunk, qk_l2norm));
    typename LD::State double_state{S0};
    const Matrix<double> double_out = forward(same_in_double, run.form, d.whole(), double_state);
    EXPECT_TRUE(near(double_out, want, 1e-10)) << "outputs";
    EXPECT_TRUE(near(double_state.S, want_state.S, 1e-10)) << "state";
  }
}

/// Mild log-decays U(−0.5, 0): the background the strong ones are put into.
Matrix<double> mild_log_decay(Rng& rng, Index T, Index dk) {
  return uniform<double>(rng, T, dk, -0.5, 0.0);
}

/// Runs expect_every_form_agrees for GLA, KDA (unit keys, and qk_l2norm) and GeneralizedDeltaRule
/// (general a, b and RWKV-7's) with dk = dv = 16 and 32, on T tokens whose log_decay
/// `gate(rng, T, dk)` makes. `beta(rng, T)` gives KDA's β (default U(0, 2)).
template <class Gate>
void strong_decay_everywhere(Index T, Gate&& gate,
                             const std::function<Matrix<double>(Rng&, Index)>& beta = {}) {
  for (Index dk : {16, 32}) {
    SCOPED_TRACE(::testing::Message() << "dk = dv = " << dk << ", T " << T);
    Rng rng(static_cast<std::uint64_t>(1000 + dk));
    {
      SCOPED_TRACE("GatedLinearAttention");
      using L = GatedLinearAttention<double>;
      auto d = make_data({.name = ""}, L(options<L>(dk, dk, 64)), T, rng);
      d.g = gate(rng, T, dk);
      expect_every_form_agrees<GatedLinearAttention>(d, false, rng);
    }
    for (bool qk_l2norm : {false, true}) {
      SCOPED_TRACE(qk_l2norm ? "KimiDeltaAttention, qk_l2norm" : "KimiDeltaAttention");
      using L = KimiDeltaAttention<double>;
      auto d = make_data({.name = "", .qk_l2norm = qk_l2norm}, L(options<L>(dk, dk, 64, qk_l2norm)),
                         T, rng);
      d.g = gate(rng, T, dk);
      if (beta) d.beta = beta(rng, T);
      expect_every_form_agrees<KimiDeltaAttention>(d, qk_l2norm, rng);
    }
    for (LowRank kind : {LowRank::general, LowRank::rwkv7}) {
      SCOPED_TRACE(kind == LowRank::general ? "GeneralizedDeltaRule, general a, b"
                                            : "GeneralizedDeltaRule, RWKV-7 a, b");
      using L = GeneralizedDeltaRule<double>;
      auto d = make_data({.name = "", .low_rank = kind}, L(options<L>(dk, dk, 64)), T, rng);
      d.g = gate(rng, T, dk);
      expect_every_form_agrees<GeneralizedDeltaRule>(d, false, rng);
    }
  }
}

TEST(DiagonalGatesStrongDecay, SingleEntriesAtMinus30) {
  strong_decay_everywhere(257, [](Rng& rng, Index T, Index dk) {
    Matrix<double> g = mild_log_decay(rng, T, dk);
    std::bernoulli_distribution pick(0.04);
    for (Index t = 0; t < T; ++t)
      for (Index c = 0; c < dk; ++c)
        if (pick(rng)) g(t, c) = -30.0;
    return g;
  });
}

TEST(DiagonalGatesStrongDecay, WholeTokensAtMinus30) {
  strong_decay_everywhere(257, [](Rng& rng, Index T, Index dk) {
    Matrix<double> g = mild_log_decay(rng, T, dk);
    for (Index t : {0, 5, 6, 63, 64, 100, 101, 102, 200, 256})
      g.row(t).setConstant(-30.0);
    return g;
  });
}

TEST(DiagonalGatesStrongDecay, OneChannelAtMinus30OnEveryToken) {
  strong_decay_everywhere(257, [](Rng& rng, Index T, Index dk) {
    Matrix<double> g = mild_log_decay(rng, T, dk);
    g.col(3).setConstant(-30.0);
    return g;
  });
}

// A channel at g in U(−6, −3) on every token: within a chunk its cumulative decay leaves
// float's exp range (e^{−88}) after 15 to 30 tokens.
TEST(DiagonalGatesStrongDecay, OneChannelBetweenMinus6AndMinus3OnEveryToken) {
  strong_decay_everywhere(200, [](Rng& rng, Index T, Index dk) {
    Matrix<double> g = mild_log_decay(rng, T, dk);
    g.col(dk - 1) = uniform<double>(rng, T, 1, -6.0, -3.0);
    return g;
  });
}

TEST(DiagonalGatesStrongDecay, OneChannelWithoutDecay) {
  strong_decay_everywhere(257, [](Rng& rng, Index T, Index dk) {
    Matrix<double> g = mild_log_decay(rng, T, dk);
    g.col(0).setZero();
    g.col(5).setConstant(-30.0);  // next to a channel that forgets everything
    return g;
  });
}

// g = −1e30 (finite in float and double): on single entries, a whole token and a whole
// channel.
TEST(DiagonalGatesStrongDecay, MinusOneE30) {
  strong_decay_everywhere(257, [](Rng& rng, Index T, Index dk) {
    Matrix<double> g = mild_log_decay(rng, T, dk);
    std::bernoulli_distribution pick(0.03);
    for (Index t = 0; t < T; ++t)
      for (Index c = 0; c < dk; ++c)
        if (pick(rng)) g(t, c) = -1e30;
    g.row(70).setConstant(-1e30);
    g.col(2).setConstant(-1e30);
    return g;
  });
}

// KDA's β at the ends of [0, 2] (β = 2: the write reflects), with strong decays.
TEST(DiagonalGatesStrongDecay, KdaBetaZeroAndTwo) {
  const auto gate = [](Rng& rng, Index T, Index dk) {
    Matrix<double> g = mild_log_decay(rng, T, dk);
    std::bernoulli_distribution pick(0.04);
    for (Index t = 0; t < T; ++t)
      for (Index c = 0; c < dk; ++c)
        if (pick(rng)) g(t, c) = -30.0;
    g.col(1).setZero();
    return g;
  };
  for (const double fixed : {0.0, 2.0, -1.0}) {  // −1: 0 or 2 at random
    SCOPED_TRACE(fixed < 0 ? "beta 0 or 2" : fixed == 0 ? "beta 0" : "beta 2");
    strong_decay_everywhere(211, gate, [fixed](Rng& rng, Index T) {
      Matrix<double> beta(T, 1);
      for (Index t = 0; t < T; ++t)
        beta(t, 0) = fixed >= 0 ? fixed : 2.0 * static_cast<double>(uniform_index(rng, 0, 1));
      return beta;
    });
  }
}

// ---------------------------------------------------------------------------------------------
// MultiHead: heads packed side by side
// ---------------------------------------------------------------------------------------------

/// H = 3 heads packed side by side (q, k, log_decay, a, b `T×(3·dk)`, v `T×(3·dv)`, beta
/// `T×3`): each head's outputs and state equal the head run alone, over several calls in every
/// schedule; a log_decay one column short throws naming log_decay and changes no state.
template <template <class> class Family>
void expect_heads_run_alone(bool qk_l2norm) {
  using Layer = Family<double>;
  const Index H = 3, dk = 8, dv = 5;
  Rng rng(801);
  const Layer layer(options<Layer>(dk, dv, 16, qk_l2norm));
  ChannelData<Layer> packed;
  packed.q = uniform<double>(rng, kT, H * dk);
  packed.k = uniform<double>(rng, kT, H * dk);
  if (!qk_l2norm) {
    for (Index h = 0; h < H; ++h)
      packed.k.middleCols(h * dk, dk).rowwise().normalize();
  }
  packed.v = uniform<double>(rng, kT, H * dv);
  packed.g = channel_log_decay<double>(rng, kT, H * dk);
  if constexpr (is_a<KimiDeltaAttention, Layer>) {
    packed.beta = uniform<double>(rng, kT, H, 0.0, 2.0);
  }
  if constexpr (is_a<GeneralizedDeltaRule, Layer>) {
    low_rank(LowRank::general, rng, kT, H * dk, packed.a, packed.b);
  }
  std::vector<ChannelData<Layer>> alone(static_cast<std::size_t>(H));
  std::vector<Matrix<double>> S0;
  for (Index h = 0; h < H; ++h) {
    ChannelData<Layer>& d = alone[std::size_t(h)];
    d.q = packed.q.middleCols(h * dk, dk);
    d.k = packed.k.middleCols(h * dk, dk);
    d.v = packed.v.middleCols(h * dv, dv);
    d.g = packed.g.middleCols(h * dk, dk);
    if (packed.beta.size() > 0) d.beta = packed.beta.col(h);
    if (packed.a.size() > 0) {
      d.a = packed.a.middleCols(h * dk, dk);
      d.b = packed.b.middleCols(h * dk, dk);
    }
    S0.push_back(uniform<double>(rng, dk, dv));
  }

  const MultiHead<Layer> heads(layer, H);
  for (const auto& schedule : kSchedules) {
    SCOPED_TRACE(describe(schedule));
    auto states = heads.initial_state();
    for (Index h = 0; h < H; ++h)
      states[std::size_t(h)].S = S0[std::size_t(h)];
    Matrix<double> out(kT, H * dv);
    for (std::size_t c = 0; c + 1 < kCuts.size(); ++c) {
      const Index begin = kCuts[c], n = kCuts[c + 1] - begin;
      out.middleRows(begin, n) =
          forward(heads, schedule[c % schedule.size()], packed.slice(begin, n), states);
    }
    for (Index h = 0; h < H; ++h) {
      SCOPED_TRACE(::testing::Message() << "head " << h);
      const ChannelData<Layer>& d = alone[std::size_t(h)];
      typename Layer::State state{S0[std::size_t(h)]};
      const auto want =
          run_calls(layer, schedule, kCuts, state, [&](Index b, Index n) { return d.slice(b, n); });
      EXPECT_TRUE(near(out.middleCols(h * dv, dv), want, 1e-12)) << "outputs";
      EXPECT_TRUE(near(states[std::size_t(h)].S, state.S, 1e-12)) << "state";
    }
  }

  ChannelData<Layer> narrow = packed;
  narrow.g = packed.g.leftCols(H * dk - 1);
  for (Form form : all_forms) {
    SCOPED_TRACE(to_string(form));
    auto states = heads.initial_state();
    for (Index h = 0; h < H; ++h)
      states[std::size_t(h)].S = S0[std::size_t(h)];
    const auto before = states;
    try {
      (void)forward(heads, form, narrow.whole(), states);
      ADD_FAILURE() << "no exception";
    } catch (const invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("log_decay (3 heads packed side by side) must be"),
                std::string::npos)
          << e.what();
    }
    for (Index h = 0; h < H; ++h)
      EXPECT_EQ(states[std::size_t(h)].S, before[std::size_t(h)].S) << "head " << h;
  }
}

TEST(DiagonalGatesMultiHead, GlaHeadsRunAlone) {
  expect_heads_run_alone<GatedLinearAttention>(false);
}

TEST(DiagonalGatesMultiHead, KdaHeadsRunAlone) {
  expect_heads_run_alone<KimiDeltaAttention>(false);
  expect_heads_run_alone<KimiDeltaAttention>(true);
}

TEST(DiagonalGatesMultiHead, GeneralizedDeltaRuleHeadsRunAlone) {
  expect_heads_run_alone<GeneralizedDeltaRule>(false);
}

}  // namespace
}  // namespace seqmem::test
