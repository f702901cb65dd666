// Randomized property suite: for every layer, in float and double, random configurations —
// dims 1–48, T 1–300, chunk sizes, options, gates including their extremes (β ∈ {0, 2},
// g = −30, α ∈ {0, 1}, η ∈ {0, 1}, θ = 0, eta = 0; per-channel log-decays with g = −30 (or
// −100, −1000, −1e30) on single entries, whole tokens and whole channels and g = 0 on whole
// channels; the generalized delta rule's a, b general and RWKV-7-like), random initial states —
// and a random split of the sequence into calls of random forms (TTT and Titans parallel calls
// kept inside the current mini-batch) must give the outputs and final state of one recurrent
// call, within the cross-form tolerance of docs/math.md §6 (double 1e-10·(1 + max|value|),
// float 2e-4·(1 + max|value|)).
//
// Environment:
//   SEQMEM_PROPERTY_CASES  configurations per layer and scalar type (default 200)
//   SEQMEM_PROPERTY_SEED   base seed (default 20240611); case i uses seed SEED + i
// A failure prints the case's seed and configuration; rerun that case alone with
//   SEQMEM_PROPERTY_SEED=<case seed> SEQMEM_PROPERTY_CASES=1 ./property_test
//   --gtest_filter='*<Layer>*'
//
// The generators draw every random number in double (test_util.hpp), so the float and double
// suites see the same configurations and values. Sizes are biased small (most cases have
// dims ≤ 8 and T ≤ 40) to keep the suite fast; every case still may reach the maxima.
// Ranges that keep a layer well-conditioned (so that a float result 2e-4 away from the
// float recurrence means a wrong form, not a chaotic recurrence) are explained where drawn.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <limits>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.hpp"

namespace seqmem::test {
namespace {

// ---------------------------------------------------------------------------------------------
// Settings and random draws
// ---------------------------------------------------------------------------------------------

std::uint64_t env_u64(const char* name, std::uint64_t fallback) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  char* end = nullptr;
  const unsigned long long value = std::strtoull(text, &end, 10);
  if (end == text || *end != '\0') {
    ADD_FAILURE() << name << "=" << text << " is not a non-negative integer";
    return fallback;
  }
  return value;
}

int property_cases() {
  return static_cast<int>(env_u64("SEQMEM_PROPERTY_CASES", 200));
}
std::uint64_t property_seed() {
  return env_u64("SEQMEM_PROPERTY_SEED", 20240611);
}

bool chance(Rng& rng, double p) {
  return std::uniform_real_distribution<double>(0, 1)(rng) < p;
}
double real(Rng& rng, double lo, double hi) {
  return std::uniform_real_distribution<double>(lo, hi)(rng);
}

/// A dimension in 1..48, mostly small: 60% in 1..8, 30% in 9..24, 10% in 25..48.
Index draw_dim(Rng& rng) {
  const double u = real(rng, 0, 1);
  if (u < 0.6) return uniform_index(rng, 1, 8);
  if (u < 0.9) return uniform_index(rng, 9, 24);
  return uniform_index(rng, 25, 48);
}

/// A sequence length in 1..300, mostly short: 50% in 1..40, 35% in 41..150, 15% in 151..300.
Index draw_length(Rng& rng) {
  const double u = real(rng, 0, 1);
  if (u < 0.5) return uniform_index(rng, 1, 40);
  if (u < 0.85) return uniform_index(rng, 41, 150);
  return uniform_index(rng, 151, 300);
}

/// A chunk size: 1, small, medium, or at least T (one chunk).
Index draw_chunk(Rng& rng, Index T) {
  const double u = real(rng, 0, 1);
  if (u < 0.1) return 1;
  if (u < 0.6) return uniform_index(rng, 2, 16);
  if (u < 0.9) return uniform_index(rng, 17, 80);
  return T + uniform_index(rng, 0, 20);
}

/// A TTT/Titans mini-batch: 1, small, medium, or large (up to 512, beyond T).
Index draw_mini_batch(Rng& rng) {
  const double u = real(rng, 0, 1);
  if (u < 0.1) return 1;
  if (u < 0.5) return uniform_index(rng, 2, 8);
  if (u < 0.85) return uniform_index(rng, 9, 32);
  return uniform_index(rng, 33, 512);
}

template <class Scalar>
Vector<Scalar> column(const Matrix<Scalar>& m) {
  return m.col(0);
}

template <class Scalar>
Matrix<Scalar> unit_rows(Matrix<Scalar> x) {
  for (Index i = 0; i < x.rows(); ++i) {
    if (x.row(i).norm() == Scalar(0)) x(i, 0) = Scalar(1);
    x.row(i).normalize();
  }
  return x;
}

/// log-decay gates g ≤ 0: 70% in [−1, 0], 10% exactly 0, 10% exactly −30, 10% in [−30, −1].
template <class Scalar>
Vector<Scalar> draw_log_decay(Rng& rng, Index T) {
  Vector<Scalar> g(T);
  for (Index t = 0; t < T; ++t) {
    const double u = real(rng, 0, 1);
    g(t) = static_cast<Scalar>(u < 0.7   ? real(rng, -1, 0)
                               : u < 0.8 ? 0.0
                               : u < 0.9 ? -30.0
                                         : real(rng, -30, -1));
  }
  return g;
}

/// Delta-rule write strengths β ∈ [0, 2]: only 0 and 2 (`extremes`), or 10% exactly 0, 10%
/// exactly 2, 50% in [0, 1], 30% in [1, 2].
template <class Scalar>
Vector<Scalar> draw_beta(Rng& rng, Index T, bool extremes) {
  Vector<Scalar> beta(T);
  for (Index t = 0; t < T; ++t) {
    const double u = real(rng, 0, 1);
    double b = 0;
    if (extremes) {
      b = u < 0.5 ? 0.0 : 2.0;
    } else {
      b = u < 0.1 ? 0.0 : u < 0.2 ? 2.0 : u < 0.7 ? real(rng, 0, 1) : real(rng, 1, 2);
    }
    beta(t) = static_cast<Scalar>(b);
  }
  return beta;
}

template <class Scalar>
std::optional<GateRef<Scalar>> gate(const std::optional<Vector<Scalar>>& g, Index b, Index n) {
  return g ? std::optional<GateRef<Scalar>>(g->segment(b, n)) : std::nullopt;
}

template <class Scalar>
Weights<Scalar> random_weights(const Weights<Scalar>& like, Rng& rng, double s) {
  Weights<Scalar> w = like;
  for (auto& W : w.W) {
    const double a = s / std::sqrt(static_cast<double>(W.rows()));
    W = uniform<Scalar>(rng, W.rows(), W.cols(), -a, a);
  }
  for (auto& b : w.b)
    b = uniform<Scalar>(rng, 1, b.cols(), -0.2 * s, 0.2 * s);
  return w;
}

template <class Scalar>
void append(std::vector<Matrix<Scalar>>& out, const Weights<Scalar>& w) {
  out.insert(out.end(), w.W.begin(), w.W.end());
  out.insert(out.end(), w.b.begin(), w.b.end());
}

const char* name_of(FeatureMap m) {
  switch (m) {
    case FeatureMap::identity: return "identity";
    case FeatureMap::elu_plus_one: return "elu_plus_one";
    case FeatureMap::relu: return "relu";
  }
  return "?";
}

const char* name_of(Activation a) {
  return a == Activation::silu ? "silu" : "gelu_tanh";
}

// ---------------------------------------------------------------------------------------------
// One generator per layer family. Each provides:
//   struct Config { Index T; ...; std::string describe() const; }
//   static Config draw(Rng&);                       the configuration (options, T, gate mode)
//   static Layer make(const Config&, Rng&);         the layer (random parameters drawn here)
//   struct Data { Inputs slice(Index b, Index n) const; }
//   static Data data(const Config&, const Layer&, Rng&);
//   static State init(const Config&, const Layer&, Rng&);     zero or random initial state
//   static std::vector<Matrix<Scalar>> tensors(const State&); everything the state holds
//   static Index parallel_limit(const Layer&, const State&);  longest parallel call from here
// ---------------------------------------------------------------------------------------------

template <class Layer>
struct Family;

constexpr Index kUnlimited = 1 << 30;

// Linear attention --------------------------------------------------------------------------

template <class Scalar>
struct Family<LinearAttention<Scalar>> {
  using Layer = LinearAttention<Scalar>;
  using State = typename Layer::State;
  using Inputs = typename Layer::Inputs;

  struct Config {
    Index T = 1, dk = 1, dv = 1, chunk = 1;
    FeatureMap map = FeatureMap::identity;
    bool normalize = false, gated = false, random_state = false, positive = false;
    std::optional<double> scale;
    std::string describe() const {
      std::ostringstream s;
      s << "T " << T << ", key_dim " << dk << ", value_dim " << dv << ", chunk " << chunk
        << ", feature_map " << name_of(map) << ", normalize " << normalize << ", gated " << gated
        << ", scale " << (scale ? std::to_string(*scale) : "default") << ", positive inputs "
        << positive << ", random state " << random_state;
      return s.str();
    }
  };

  static Config draw(Rng& rng) {
    Config c;
    c.T = draw_length(rng);
    c.dk = draw_dim(rng);
    c.dv = draw_dim(rng);
    c.chunk = draw_chunk(rng, c.T);
    c.map = static_cast<FeatureMap>(uniform_index(rng, 0, 2));
    c.normalize = chance(rng, 0.4);
    c.gated = chance(rng, 0.6);
    c.random_state = chance(rng, 0.6);
    if (chance(rng, 0.3)) c.scale = real(rng, 0.1, 2.0);
    // Normalized: the denominator φ(q)·z must stay away from 0 (else the output is a ratio of
    // two rounding errors). elu+1 features are positive; identity and relu get positive inputs.
    c.positive = c.normalize && c.map != FeatureMap::elu_plus_one;
    return c;
  }

  static Layer make(const Config& c, Rng&) {
    return Layer({.key_dim = c.dk,
                  .value_dim = c.dv,
                  .scale = c.scale ? std::optional<Scalar>(Scalar(*c.scale)) : std::nullopt,
                  .feature_map = c.map,
                  .normalize = c.normalize,
                  .chunk_size = c.chunk});
  }

  struct Data {
    Matrix<Scalar> q, k, v;
    std::optional<Vector<Scalar>> g;
    Inputs slice(Index b, Index n) const {
      return {.q = q.middleRows(b, n),
              .k = k.middleRows(b, n),
              .v = v.middleRows(b, n),
              .log_decay = gate(g, b, n)};
    }
  };

  static Data data(const Config& c, const Layer&, Rng& rng) {
    const double lo = c.positive ? 0.05 : -1.0;
    Data d{uniform<Scalar>(rng, c.T, c.dk, lo, 1.0), uniform<Scalar>(rng, c.T, c.dk, lo, 1.0),
           uniform<Scalar>(rng, c.T, c.dv), std::nullopt};
    if (c.gated) d.g = draw_log_decay<Scalar>(rng, c.T);
    return d;
  }

  static State init(const Config& c, const Layer& layer, Rng& rng) {
    State s = layer.initial_state();
    if (!c.random_state) return s;
    s.S = uniform<Scalar>(rng, c.dk, c.dv);
    if (c.normalize) s.z = uniform<Scalar>(rng, 1, c.dk, 0.0, 2.0);  // a sum of positive features
    return s;
  }

  static std::vector<Matrix<Scalar>> tensors(const State& s) { return {s.S, s.z}; }
  static Index parallel_limit(const Layer&, const State&) { return kUnlimited; }
};

// Softmax attention -------------------------------------------------------------------------

template <class Scalar>
struct Family<SoftmaxAttention<Scalar>> {
  using Layer = SoftmaxAttention<Scalar>;
  using State = typename Layer::State;
  using Inputs = typename Layer::Inputs;

  struct Config {
    Index T = 1, dk = 1, dv = 1, chunk = 1, window = 0, cached = 0, seen = 0;
    double spread = 1.0;
    std::optional<double> scale;
    std::string describe() const {
      std::ostringstream s;
      s << "T " << T << ", key_dim " << dk << ", value_dim " << dv << ", chunk " << chunk
        << ", window " << window << ", q/k spread " << spread << ", scale "
        << (scale ? std::to_string(*scale) : "default") << ", initial cache " << cached
        << " rows after " << seen << " tokens";
      return s.str();
    }
  };

  static Config draw(Rng& rng) {
    Config c;
    c.T = draw_length(rng);
    c.dk = draw_dim(rng);
    c.dv = draw_dim(rng);
    c.chunk = draw_chunk(rng, c.T);
    const double u = real(rng, 0, 1);
    c.window = u < 0.35 ? 0 : u < 0.55 ? uniform_index(rng, 1, 4) : uniform_index(rng, 5, c.T + 20);
    c.spread = real(rng, 0.2, 6.0);  // large: peaked softmaxes
    if (chance(rng, 0.2)) c.scale = real(rng, 0.05, 2.0);
    if (chance(rng, 0.6)) {
      const Index max_cache = c.window > 0 ? c.window - 1 : 80;
      c.cached = uniform_index(rng, 0, max_cache);
      c.seen = c.cached + uniform_index(rng, 0, 1000);
    }
    return c;
  }

  static Layer make(const Config& c, Rng&) {
    return Layer({.key_dim = c.dk,
                  .value_dim = c.dv,
                  .scale = c.scale ? std::optional<Scalar>(Scalar(*c.scale)) : std::nullopt,
                  .window = c.window,
                  .chunk_size = c.chunk});
  }

  struct Data {
    Matrix<Scalar> q, k, v;
    Inputs slice(Index b, Index n) const {
      return {.q = q.middleRows(b, n), .k = k.middleRows(b, n), .v = v.middleRows(b, n)};
    }
  };

  static Data data(const Config& c, const Layer&, Rng& rng) {
    return {uniform<Scalar>(rng, c.T, c.dk, -c.spread, c.spread),
            uniform<Scalar>(rng, c.T, c.dk, -c.spread, c.spread), uniform<Scalar>(rng, c.T, c.dv)};
  }

  static State init(const Config& c, const Layer& layer, Rng& rng) {
    if (c.seen == 0) return layer.initial_state();
    const Matrix<Scalar> k = uniform<Scalar>(rng, c.cached, c.dk, -c.spread, c.spread);
    const Matrix<Scalar> v = uniform<Scalar>(rng, c.cached, c.dv);
    return layer.make_state(k, v, c.seen);
  }

  static std::vector<Matrix<Scalar>> tensors(const State& s) {
    return {s.keys(), s.values(), Matrix<Scalar>::Constant(1, 1, Scalar(s.cached())),
            Matrix<Scalar>::Constant(1, 1, Scalar(s.tokens()))};
  }
  static Index parallel_limit(const Layer&, const State&) { return kUnlimited; }
};

// DeltaNet ----------------------------------------------------------------------------------

template <class Scalar>
struct Family<DeltaNet<Scalar>> {
  using Layer = DeltaNet<Scalar>;
  using State = typename Layer::State;
  using Inputs = typename Layer::Inputs;

  enum class Betas { mixed, extremes };

  struct Config {
    Index T = 1, dk = 1, dv = 1, chunk = 1;
    bool qk_l2norm = false, gated = false, random_state = false;
    Betas betas = Betas::mixed;
    std::optional<double> scale;
    std::string describe() const {
      std::ostringstream s;
      s << "T " << T << ", key_dim " << dk << ", value_dim " << dv << ", chunk " << chunk
        << ", qk_l2norm " << qk_l2norm << ", gated " << gated << ", beta "
        << (betas == Betas::extremes ? "only 0 and 2" : "mixed (incl. 0 and 2)") << ", scale "
        << (scale ? std::to_string(*scale) : "default") << ", random state " << random_state;
      return s.str();
    }
  };

  static Config draw(Rng& rng) {
    Config c;
    c.T = draw_length(rng);
    c.dk = draw_dim(rng);
    c.dv = draw_dim(rng);
    c.chunk = draw_chunk(rng, c.T);
    c.qk_l2norm = chance(rng, 0.4);
    c.gated = chance(rng, 0.5);
    c.random_state = chance(rng, 0.6);
    c.betas = chance(rng, 0.25) ? Betas::extremes : Betas::mixed;
    if (chance(rng, 0.2)) c.scale = real(rng, 0.1, 2.0);
    return c;
  }

  static Layer make(const Config& c, Rng&) {
    return Layer({.key_dim = c.dk,
                  .value_dim = c.dv,
                  .scale = c.scale ? std::optional<Scalar>(Scalar(*c.scale)) : std::nullopt,
                  .chunk_size = c.chunk,
                  .qk_l2norm = c.qk_l2norm});
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
              .log_decay = gate(g, b, n)};
    }
  };

  /// Keys are unit rows (or normalized by the layer, qk_l2norm): the delta rule's stable
  /// regime, I − β kᵀk has eigenvalues in [−1, 1] for β ∈ [0, 2].
  static Data data(const Config& c, const Layer&, Rng& rng) {
    Matrix<double> k = uniform<double>(rng, c.T, c.dk);
    if (!c.qk_l2norm) k = unit_rows(k);
    Data d{uniform<Scalar>(rng, c.T, c.dk), k.cast<Scalar>(), uniform<Scalar>(rng, c.T, c.dv),
           draw_beta<Scalar>(rng, c.T, c.betas == Betas::extremes), std::nullopt};
    if (c.gated) d.g = draw_log_decay<Scalar>(rng, c.T);
    return d;
  }

  static State init(const Config& c, const Layer& layer, Rng& rng) {
    State s = layer.initial_state();
    if (c.random_state) s.S = uniform<Scalar>(rng, c.dk, c.dv);
    return s;
  }

  static std::vector<Matrix<Scalar>> tensors(const State& s) { return {s.S}; }
  static Index parallel_limit(const Layer&, const State&) { return kUnlimited; }
};

// Diagonal gates (docs/math.md §7–§9): per-channel log-decays -------------------------------

/// How a case draws its per-key-channel log-decays G (T×dk, every entry ≤ 0): a base pattern,
/// then optional overlays (docs/math.md §9's property list). The strong value s is −30 in most
/// cases, sometimes −100 (exp(∓100) under- and overflows float), −1000 (double too) or −1e30
/// (the layers accept any finite g ≤ 0): a chunk form that splits exp(γ_i − γ_j) into factors
/// of which one exceeds 1 breaks only on such values.
///   base mixed:    per entry 82% in [−1, 0], 10% exactly 0, 3% exactly s (single (token,
///                  channel) entries), 5% in [−5, −1];
///   base rates:    channel c decays at its own rate, entries in [−r_c, 0] with
///                  r_c = 10^u, u ∈ [−3, 0.5] (slow and fast channels side by side);
///   base slow:     entries in [−0.05, 0], 10% exactly 0 (long memories);
///   base shared:   one mixed value per token for all channels (§2's scalar decay);
///   base zero:     g = 0 everywhere (no decay: plain linear attention / DeltaNet);
///   open channel:  one channel exactly 0 on every token;
///   dead channel:  one channel at s on every token;
///   strong tokens: each token with probability 0.1 at s on every channel (drawn last).
struct ChannelDecays {
  enum class Base { mixed, rates, slow, shared, zero };
  Base base = Base::mixed;
  double strong = -30.0;
  Index open_channel = -1, dead_channel = -1;
  bool strong_tokens = false;

  static ChannelDecays draw(Rng& rng, Index dk) {
    ChannelDecays d;
    const double u = real(rng, 0, 1);
    d.base = u < 0.45   ? Base::mixed
             : u < 0.65 ? Base::rates
             : u < 0.8  ? Base::slow
             : u < 0.9  ? Base::shared
                        : Base::zero;
    const double v = real(rng, 0, 1);
    d.strong = v < 0.6 ? -30.0 : v < 0.75 ? -100.0 : v < 0.85 ? -1000.0 : -1e30;
    if (chance(rng, 0.3)) d.open_channel = uniform_index(rng, 0, dk - 1);
    if (chance(rng, 0.25)) d.dead_channel = uniform_index(rng, 0, dk - 1);
    if (d.dead_channel == d.open_channel) d.open_channel = -1;
    d.strong_tokens = chance(rng, 0.25);
    return d;
  }

  std::string describe() const {
    static constexpr const char* kBase[] = {"mixed", "per-channel rates", "slow", "shared", "zero"};
    std::ostringstream s;
    s << "log_decay " << kBase[static_cast<int>(base)] << " (strong " << strong << ")";
    if (open_channel >= 0) s << ", channel " << open_channel << " at 0";
    if (dead_channel >= 0) s << ", channel " << dead_channel << " strong";
    if (strong_tokens) s << ", strong tokens";
    return s.str();
  }

  template <class Scalar>
  Matrix<Scalar> values(Rng& rng, Index T, Index dk) const {
    const auto mixed = [&] {
      const double u = real(rng, 0, 1);
      return u < 0.82 ? real(rng, -1, 0) : u < 0.92 ? 0.0 : u < 0.95 ? strong : real(rng, -5, -1);
    };
    Matrix<double> g = Matrix<double>::Zero(T, dk);
    std::vector<double> rates;
    if (base == Base::rates) {
      for (Index c = 0; c < dk; ++c)
        rates.push_back(std::pow(10.0, real(rng, -3, 0.5)));
    }
    for (Index t = 0; t < T; ++t) {
      if (base == Base::shared) {
        g.row(t).setConstant(mixed());
        continue;
      }
      for (Index c = 0; c < dk; ++c) {
        switch (base) {
          case Base::mixed: g(t, c) = mixed(); break;
          case Base::rates: g(t, c) = -real(rng, 0, rates[static_cast<std::size_t>(c)]); break;
          case Base::slow: g(t, c) = chance(rng, 0.1) ? 0.0 : real(rng, -0.05, 0); break;
          case Base::shared:
          case Base::zero: break;
        }
      }
    }
    if (open_channel >= 0) g.col(open_channel).setZero();
    if (dead_channel >= 0) g.col(dead_channel).setConstant(strong);
    if (strong_tokens) {
      for (Index t = 0; t < T; ++t)
        if (chance(rng, 0.1)) g.row(t).setConstant(strong);
    }
    return g.cast<Scalar>();
  }
};

std::string describe_scale(const std::optional<double>& scale) {
  return scale ? std::to_string(*scale) : "default";
}

// Gated linear attention (docs/math.md §7) ---------------------------------------------------

template <class Scalar>
struct Family<GatedLinearAttention<Scalar>> {
  using Layer = GatedLinearAttention<Scalar>;
  using State = typename Layer::State;
  using Inputs = typename Layer::Inputs;

  struct Config {
    Index T = 1, dk = 1, dv = 1, chunk = 1;
    bool random_state = false;
    ChannelDecays decays;
    std::optional<double> scale;
    std::string describe() const {
      std::ostringstream s;
      s << "T " << T << ", key_dim " << dk << ", value_dim " << dv << ", chunk " << chunk << ", "
        << decays.describe() << ", scale " << describe_scale(scale) << ", random state "
        << random_state;
      return s.str();
    }
  };

  static Config draw(Rng& rng) {
    Config c;
    c.T = draw_length(rng);
    c.dk = draw_dim(rng);
    c.dv = draw_dim(rng);
    c.chunk = draw_chunk(rng, c.T);
    c.decays = ChannelDecays::draw(rng, c.dk);
    c.random_state = chance(rng, 0.6);
    if (chance(rng, 0.2)) c.scale = real(rng, 0.1, 2.0);
    return c;
  }

  static Layer make(const Config& c, Rng&) {
    return Layer({.key_dim = c.dk,
                  .value_dim = c.dv,
                  .scale = c.scale ? std::optional<Scalar>(Scalar(*c.scale)) : std::nullopt,
                  .chunk_size = c.chunk});
  }

  struct Data {
    Matrix<Scalar> q, k, v, g;
    Inputs slice(Index b, Index n) const {
      return {.q = q.middleRows(b, n),
              .k = k.middleRows(b, n),
              .v = v.middleRows(b, n),
              .log_decay = g.middleRows(b, n)};
    }
  };

  static Data data(const Config& c, const Layer&, Rng& rng) {
    Data d{uniform<Scalar>(rng, c.T, c.dk), uniform<Scalar>(rng, c.T, c.dk),
           uniform<Scalar>(rng, c.T, c.dv), Matrix<Scalar>()};
    d.g = c.decays.template values<Scalar>(rng, c.T, c.dk);
    return d;
  }

  static State init(const Config& c, const Layer& layer, Rng& rng) {
    State s = layer.initial_state();
    if (c.random_state) s.S = uniform<Scalar>(rng, c.dk, c.dv);
    return s;
  }

  static std::vector<Matrix<Scalar>> tensors(const State& s) { return {s.S}; }
  static Index parallel_limit(const Layer&, const State&) { return kUnlimited; }
};

// Kimi delta attention (docs/math.md §8) -----------------------------------------------------

template <class Scalar>
struct Family<KimiDeltaAttention<Scalar>> {
  using Layer = KimiDeltaAttention<Scalar>;
  using State = typename Layer::State;
  using Inputs = typename Layer::Inputs;

  struct Config {
    Index T = 1, dk = 1, dv = 1, chunk = 1;
    bool qk_l2norm = false, extreme_betas = false, random_state = false;
    ChannelDecays decays;
    std::optional<double> scale;
    std::string describe() const {
      std::ostringstream s;
      s << "T " << T << ", key_dim " << dk << ", value_dim " << dv << ", chunk " << chunk
        << ", qk_l2norm " << qk_l2norm << ", beta "
        << (extreme_betas ? "only 0 and 2" : "mixed (incl. 0 and 2)") << ", " << decays.describe()
        << ", scale " << describe_scale(scale) << ", random state " << random_state;
      return s.str();
    }
  };

  static Config draw(Rng& rng) {
    Config c;
    c.T = draw_length(rng);
    c.dk = draw_dim(rng);
    c.dv = draw_dim(rng);
    c.chunk = draw_chunk(rng, c.T);
    c.qk_l2norm = chance(rng, 0.5);
    c.extreme_betas = chance(rng, 0.25);
    c.decays = ChannelDecays::draw(rng, c.dk);
    c.random_state = chance(rng, 0.6);
    if (chance(rng, 0.2)) c.scale = real(rng, 0.1, 2.0);
    return c;
  }

  static Layer make(const Config& c, Rng&) {
    return Layer({.key_dim = c.dk,
                  .value_dim = c.dv,
                  .scale = c.scale ? std::optional<Scalar>(Scalar(*c.scale)) : std::nullopt,
                  .chunk_size = c.chunk,
                  .qk_l2norm = c.qk_l2norm});
  }

  struct Data {
    Matrix<Scalar> q, k, v;
    Vector<Scalar> beta;
    Matrix<Scalar> g;
    Inputs slice(Index b, Index n) const {
      return {.q = q.middleRows(b, n),
              .k = k.middleRows(b, n),
              .v = v.middleRows(b, n),
              .beta = GateRef<Scalar>(beta.segment(b, n)),
              .log_decay = g.middleRows(b, n)};
    }
  };

  /// Unit keys (or normalized by the layer, qk_l2norm): with β ∈ [0, 2] the write
  /// (I − β kᵀk) diag(e^g) has norm ≤ 1, as for DeltaNet.
  static Data data(const Config& c, const Layer&, Rng& rng) {
    Matrix<double> k = uniform<double>(rng, c.T, c.dk);
    if (!c.qk_l2norm) k = unit_rows(k);
    Data d{uniform<Scalar>(rng, c.T, c.dk), k.cast<Scalar>(), uniform<Scalar>(rng, c.T, c.dv),
           draw_beta<Scalar>(rng, c.T, c.extreme_betas), Matrix<Scalar>()};
    d.g = c.decays.template values<Scalar>(rng, c.T, c.dk);
    return d;
  }

  static State init(const Config& c, const Layer& layer, Rng& rng) {
    State s = layer.initial_state();
    if (c.random_state) s.S = uniform<Scalar>(rng, c.dk, c.dv);
    return s;
  }

  static std::vector<Matrix<Scalar>> tensors(const State& s) { return {s.S}; }
  static Index parallel_limit(const Layer&, const State&) { return kUnlimited; }
};

// Generalized delta rule (docs/math.md §9) ---------------------------------------------------

template <class Scalar>
struct Family<GeneralizedDeltaRule<Scalar>> {
  using Layer = GeneralizedDeltaRule<Scalar>;
  using State = typename Layer::State;
  using Inputs = typename Layer::Inputs;

  /// The low-rank vectors a, b (T×dk), never parallel (a test that cannot tell D + bᵀa from
  /// D + aᵀb does not test §9):
  ///   general: a, b independent, entries 0.6·N(0, 1)/sqrt(dk) (‖a‖, ‖b‖ ≈ 0.6, so the
  ///            transition's extra eigenvalue 1 + a·b stays near 1);
  ///   rwkv7:   a = −κ̂, b = κ̂ ⊙ α with κ̂ unit rows, α ∈ (0, 1) per channel (RWKV-7);
  ///   zero:    a = b = 0 (gated linear attention).
  enum class LowRank { general, rwkv7, zero };

  struct Config {
    Index T = 1, dk = 1, dv = 1, chunk = 1;
    LowRank low_rank = LowRank::general;
    bool random_state = false;
    ChannelDecays decays;
    std::optional<double> scale;
    std::string describe() const {
      static constexpr const char* kLowRank[] = {"general", "rwkv7", "zero"};
      std::ostringstream s;
      s << "T " << T << ", key_dim " << dk << ", value_dim " << dv << ", chunk " << chunk
        << ", a/b " << kLowRank[static_cast<int>(low_rank)] << ", " << decays.describe()
        << ", scale " << describe_scale(scale) << ", random state " << random_state;
      return s.str();
    }
  };

  static Config draw(Rng& rng) {
    Config c;
    c.T = draw_length(rng);
    c.dk = draw_dim(rng);
    c.dv = draw_dim(rng);
    c.chunk = draw_chunk(rng, c.T);
    const double u = real(rng, 0, 1);
    c.low_rank = u < 0.45 ? LowRank::general : u < 0.9 ? LowRank::rwkv7 : LowRank::zero;
    c.decays = ChannelDecays::draw(rng, c.dk);
    c.random_state = chance(rng, 0.6);
    if (chance(rng, 0.2)) c.scale = real(rng, 0.1, 2.0);
    return c;
  }

  static Layer make(const Config& c, Rng&) {
    return Layer({.key_dim = c.dk,
                  .value_dim = c.dv,
                  .scale = c.scale ? std::optional<Scalar>(Scalar(*c.scale)) : std::nullopt,
                  .chunk_size = c.chunk});
  }

  struct Data {
    Matrix<Scalar> q, k, v, a, b, g;
    Inputs slice(Index b0, Index n) const {
      return {.q = q.middleRows(b0, n),
              .k = k.middleRows(b0, n),
              .v = v.middleRows(b0, n),
              .a = a.middleRows(b0, n),
              .b = b.middleRows(b0, n),
              .log_decay = g.middleRows(b0, n)};
    }
  };

  static Data data(const Config& c, const Layer&, Rng& rng) {
    Data d{uniform<Scalar>(rng, c.T, c.dk),
           uniform<Scalar>(rng, c.T, c.dk),
           uniform<Scalar>(rng, c.T, c.dv),
           Matrix<Scalar>(),
           Matrix<Scalar>(),
           Matrix<Scalar>()};
    Matrix<double> a = Matrix<double>::Zero(c.T, c.dk), b = a;
    switch (c.low_rank) {
      case LowRank::general: {
        std::normal_distribution<double> normal(0.0, 0.6 / std::sqrt(static_cast<double>(c.dk)));
        a = a.unaryExpr([&](double) { return normal(rng); });
        b = b.unaryExpr([&](double) { return normal(rng); });
        break;
      }
      case LowRank::rwkv7: {
        const Matrix<double> kappa = unit_rows(uniform<double>(rng, c.T, c.dk));
        a = -kappa;
        b = kappa.cwiseProduct(uniform<double>(rng, c.T, c.dk, 0.0, 1.0));
        break;
      }
      case LowRank::zero: break;
    }
    d.a = a.cast<Scalar>();
    d.b = b.cast<Scalar>();
    d.g = c.decays.template values<Scalar>(rng, c.T, c.dk);
    return d;
  }

  static State init(const Config& c, const Layer& layer, Rng& rng) {
    State s = layer.initial_state();
    if (c.random_state) s.S = uniform<Scalar>(rng, c.dk, c.dv);
    return s;
  }

  static std::vector<Matrix<Scalar>> tensors(const State& s) { return {s.S}; }
  static Index parallel_limit(const Layer&, const State&) { return kUnlimited; }
};

// TTT-Linear, TTT-MLP -----------------------------------------------------------------------

template <class Scalar, TTTModel Model>
struct Family<TTT<Scalar, Model>> {
  using Layer = TTT<Scalar, Model>;
  using State = typename Layer::State;
  using Inputs = typename Layer::Inputs;

  struct Config {
    Index T = 1, dim = 1, mini_batch = 1, expansion = 1;
    bool layer_norm = true, bias = true, scaling = true, offsets = false, random_state = false;
    double eta_max = 1.0;
    std::string describe() const {
      std::ostringstream s;
      s << "T " << T << ", dim " << dim << ", mini_batch " << mini_batch;
      if (Model == TTTModel::mlp) s << ", expansion " << expansion;
      s << ", layer_norm " << layer_norm << ", bias " << bias << ", token_index_scaling " << scaling
        << ", token_scale_offset " << offsets << ", eta in [0, " << eta_max
        << "] (incl. 0 and max), random state " << random_state;
      return s.str();
    }
  };

  static Config draw(Rng& rng) {
    Config c;
    c.T = draw_length(rng);
    c.dim = draw_dim(rng);
    c.mini_batch = draw_mini_batch(rng);
    c.expansion = c.dim > 24 ? uniform_index(rng, 1, 2) : uniform_index(rng, 1, 4);
    // LayerNorm over d ≤ 3 features: x̂ has (almost) no freedom and its backward divides by a
    // σ that comes near 0, so rounding is amplified ~10⁶× (seen at d = 2, in every form alike:
    // the recurrence itself is that far from a long-double run). LN only from d = 4 on.
    c.layer_norm = c.dim >= 4 && chance(rng, 0.7);
    c.bias = chance(rng, 0.7);
    c.scaling = chance(rng, 0.8);
    // λ_i make c_i·(i + 1) grow like λ·i²: only with small mini-batches.
    c.offsets = c.scaling && c.mini_batch <= 16 && chance(rng, 0.3);
    c.random_state = chance(rng, 0.7);
    // Inner rates a_t ≤ 1/d (as tests/ttt_test.cpp): ‖k‖² ≈ d/3, so one token's step is tame.
    // Without token-index scaling a mini-batch's steps add up (c_i = 1), so a_t ≤ 1/(d·b)
    // keeps the mini-batch step the same size (else the inner GD diverges over the mini-batches).
    c.eta_max = 1.0 / static_cast<double>(c.dim) /
                (c.scaling ? 1.0 : static_cast<double>(std::min<Index>(c.mini_batch, c.T)));
    return c;
  }

  static Layer make(const Config& c, Rng& rng) {
    typename Layer::Options o;
    o.key_dim = c.dim;
    o.mini_batch = c.mini_batch;
    o.token_index_scaling = c.scaling;
    if (c.offsets) {
      for (Index i = 0; i < c.mini_batch; ++i) {
        o.token_scale_offset.push_back(static_cast<Scalar>(real(rng, -0.3, 0.1)));
      }
    }
    o.layer_norm = c.layer_norm;
    o.bias = c.bias;
    o.expansion = c.expansion;
    const Layer proto(o);
    // Random outer-loop parameters as tests/ttt_test.cpp: weights of scale 2 keep the pre-LN
    // σ away from 0, so the inner loss's curvature (∝ 1/σ²) stays moderate.
    typename Layer::Parameters p;
    p.initial = random_weights(proto.initial_state().reference, rng, 2.0);
    p.ln_weight = uniform<Scalar>(rng, 1, c.dim, 0.9, 1.1);
    p.ln_bias = uniform<Scalar>(rng, 1, c.dim, -0.1, 0.1);
    return Layer(o, p);
  }

  struct Data {
    Matrix<Scalar> q, k, v;
    Vector<Scalar> eta;
    Inputs slice(Index b, Index n) const {
      return {.q = q.middleRows(b, n),
              .k = k.middleRows(b, n),
              .v = v.middleRows(b, n),
              .learning_rate = GateRef<Scalar>(eta.segment(b, n))};
    }
  };

  static Data data(const Config& c, const Layer&, Rng& rng) {
    Data d{uniform<Scalar>(rng, c.T, c.dim), uniform<Scalar>(rng, c.T, c.dim),
           uniform<Scalar>(rng, c.T, c.dim), Vector<Scalar>(c.T)};
    for (Index t = 0; t < c.T; ++t) {
      const double u = real(rng, 0, 1);
      d.eta(t) = static_cast<Scalar>(u < 0.15   ? 0.0
                                     : u < 0.25 ? c.eta_max
                                                : real(rng, 0, c.eta_max));
    }
    return d;
  }

  /// Random reference weights, a random position and, inside a mini-batch, a small random
  /// accumulated gradient (zero at position 0, the only state a layer makes there).
  static State init(const Config& c, const Layer& layer, Rng& rng) {
    State s = layer.initial_state();
    if (!c.random_state) return s;
    s.reference = random_weights(s.reference, rng, 2.0);
    s.position = uniform_index(rng, 0, c.mini_batch - 1);
    if (s.position > 0) s.gradient = random_weights(s.gradient, rng, 0.1);
    return s;
  }

  static std::vector<Matrix<Scalar>> tensors(const State& s) {
    std::vector<Matrix<Scalar>> out;
    append(out, s.reference);
    append(out, s.gradient);
    out.push_back(Matrix<Scalar>::Constant(1, 1, Scalar(s.position)));
    return out;
  }

  static Index parallel_limit(const Layer& layer, const State& s) {
    return layer.options().mini_batch - s.position;
  }
};

// Titans ------------------------------------------------------------------------------------

template <class Scalar>
struct Family<TitansMemory<Scalar>> {
  using Layer = TitansMemory<Scalar>;
  using State = typename Layer::State;
  using Inputs = typename Layer::Inputs;

  /// Gates: a base range, then a pattern on top of it.
  ///   base normal: θ ∈ (0.005, 0.1), α ∈ (0, 0.2), η ∈ (0.5, 0.95) (as tests/titans_test.cpp);
  ///   base gentle: θ ∈ (0.005, 0.02), α ∈ (0, 0.05).
  ///   extremes: α ∈ {0, 1}, η ∈ {0, 1}, θ = 0 on random tokens; frictionless: η = 1, α = 0 on
  ///   every token with θ ∈ (0.0005, 0.005); long small: runs of 40 tokens with α ∈ [0.95, 1],
  ///   η ∈ [0, 0.05] (long products of small factors inside a mini-batch).
  enum class Gates { plain, extremes, frictionless, long_small };
  static const char* name_of(Gates g) {
    switch (g) {
      case Gates::plain: return "plain";
      case Gates::extremes: return "extremes";
      case Gates::frictionless: return "eta 1 alpha 0";
      case Gates::long_small: return "long small products";
    }
    return "?";
  }

  struct Config {
    Index T = 1, dk = 1, dv = 1, depth = 1, expansion = 1, mini_batch = 1;
    Activation activation = Activation::gelu_tanh;
    bool bias = false, layer_norm = false, random_parameters = false, random_state = false;
    bool gentle = false;
    double theta_scale = 1.0;  // multiplies θ
    Gates gates = Gates::plain;
    std::string describe() const {
      std::ostringstream s;
      s << "T " << T << ", key_dim " << dk << ", value_dim " << dv << ", depth " << depth
        << ", expansion " << expansion << ", activation " << seqmem::test::name_of(activation)
        << ", bias " << bias << ", layer_norm " << layer_norm << ", mini_batch " << mini_batch
        << ", gates " << (gentle ? "gentle " : "normal ") << name_of(gates) << ", theta ×"
        << theta_scale << ", random parameters " << random_parameters << ", random state "
        << random_state;
      return s.str();
    }
  };

  static Config draw(Rng& rng) {
    Config c;
    c.T = draw_length(rng);
    c.dk = draw_dim(rng);
    const double u = real(rng, 0, 1);
    c.depth = u < 0.5 ? 1 : u < 0.75 ? 2 : u < 0.9 ? 3 : 4;
    // LayerNorm: d ≤ 3 as TTT above. Deeper or wider, LN made the memory chaotic (forms
    // apart by 6e-2 in double and 2e-5 in long double at depth 4; by 7e-2 in double at
    // depth 2, key_dim 47): LN only at depth 1, or depth 2 with key_dim ≤ 12.
    c.layer_norm = c.dk >= 4 && (c.depth == 1 || (c.depth == 2 && c.dk <= 12)) && chance(rng, 0.3);
    c.dv = c.layer_norm ? c.dk : draw_dim(rng);  // LayerNorm needs key_dim = value_dim
    c.expansion = std::max<Index>(1, std::min<Index>(uniform_index(rng, 1, 4), 64 / c.dk));
    c.activation = chance(rng, 0.5) ? Activation::silu : Activation::gelu_tanh;
    c.bias = chance(rng, 0.5);
    c.mini_batch = draw_mini_batch(rng);
    c.random_parameters = chance(rng, 0.5);
    c.random_state = chance(rng, 0.7);
    const double g = real(rng, 0, 1);
    c.gates = g < 0.45   ? Gates::plain
              : g < 0.75 ? Gates::extremes
              : g < 0.85 ? Gates::frictionless
                         : Gates::long_small;
    // As tests/titans_test.cpp: with LayerNorm the usual steps make the memory chaotic (the
    // step grows as forgetting shrinks W; float forms 0.2 apart at depth 2), so LN gets gentle
    // steps. Stale (mini-batch) gradients grow a deep memory without bound (overflow at
    // depth 3, b = 24..29) unless the mini-batch is small, and momentum without friction
    // (η = 1, α = 0 throughout) needs a small one at any depth.
    // Forgetting that nearly erases W (α → 1) sends LN's σ to 0 (a huge step): with LN no
    // extreme or long-small gates.
    c.gentle = c.layer_norm;
    if (c.layer_norm && (c.gates == Gates::extremes || c.gates == Gates::long_small)) {
      c.gates = Gates::plain;
    }
    // A deep memory's curvature in its first layers grows like value_dim/hidden (the loss sums
    // value_dim outputs through W_L), and stale gradients add up over a mini-batch: smaller
    // steps at depth ≥ 2 and mini-batches ≤ 8 (unless one spans the call). Without this, 2% of
    // the cases overflowed (the recurrence itself), all at depth ≥ 2.
    if (c.depth >= 2) {
      const double hidden = static_cast<double>(c.expansion * c.dk);
      c.theta_scale = 0.5 * std::min(1.0, hidden / static_cast<double>(c.dv)) /
                      static_cast<double>(c.depth - 1);
      if (c.mini_batch > 8 && c.mini_batch < c.T) c.mini_batch = uniform_index(rng, 1, 8);
    }
    if (c.gates == Gates::frictionless) c.mini_batch = std::min<Index>(c.mini_batch, 3);
    return c;
  }

  static Layer make(const Config& c, Rng& rng) {
    const typename Layer::Options o{.key_dim = c.dk,
                                    .value_dim = c.dv,
                                    .depth = c.depth,
                                    .expansion = c.expansion,
                                    .activation = c.activation,
                                    .bias = c.bias,
                                    .layer_norm = c.layer_norm,
                                    .mini_batch = c.mini_batch};
    if (!c.random_parameters) return Layer(o);
    const Layer plain(o);
    return Layer(o, typename Layer::Parameters{random_weights(plain.parameters().initial, rng, 2.0),
                                               uniform<Scalar>(rng, 1, c.dv, 0.5, 1.5),
                                               uniform<Scalar>(rng, 1, c.dv, -0.3, 0.3)});
  }

  struct Data {
    Matrix<Scalar> q, k, v;
    Vector<Scalar> theta, alpha, eta;
    Inputs slice(Index b, Index n) const {
      return {.q = q.middleRows(b, n),
              .k = k.middleRows(b, n),
              .v = v.middleRows(b, n),
              .learning_rate = GateRef<Scalar>(theta.segment(b, n)),
              .forgetting = GateRef<Scalar>(alpha.segment(b, n)),
              .momentum_decay = GateRef<Scalar>(eta.segment(b, n))};
    }
  };

  /// Unit keys (as tests/titans_test.cpp); gates as described at `Gates`.
  static Data data(const Config& c, const Layer&, Rng& rng) {
    const Index T = c.T;
    Data d{uniform<Scalar>(rng, T, c.dk),
           unit_rows(uniform<double>(rng, T, c.dk)).template cast<Scalar>(),
           uniform<Scalar>(rng, T, c.dv),
           column(uniform<Scalar>(rng, T, 1, 0.005, 0.1)),
           column(uniform<Scalar>(rng, T, 1, 0.0, 0.2)),
           column(uniform<Scalar>(rng, T, 1, 0.5, 0.95))};
    if (c.gentle) {
      d.theta = column(uniform<Scalar>(rng, T, 1, 0.005, 0.02));
      d.alpha = column(uniform<Scalar>(rng, T, 1, 0.0, 0.05));
    }
    switch (c.gates) {
      case Gates::plain: break;
      case Gates::extremes:  // α ∈ {0, 1}, η ∈ {0, 1}, θ = 0 on random tokens
        for (Index t = 0; t < T; ++t) {
          switch (uniform_index(rng, 0, 7)) {
            case 0: d.alpha(t) = Scalar(1); break;
            case 1: d.eta(t) = Scalar(0); break;
            case 2: d.theta(t) = Scalar(0); break;
            case 3:
              d.alpha(t) = Scalar(1);
              d.eta(t) = Scalar(0);
              break;
            case 4: d.alpha(t) = Scalar(0); break;
            case 5: d.eta(t) = Scalar(1); break;
            default: break;
          }
        }
        break;
      case Gates::frictionless:  // η = 1 and α = 0 on every token, small steps
        d.theta = column(uniform<Scalar>(rng, T, 1, 0.0005, 0.005));
        d.alpha.setZero();
        d.eta.setOnes();
        break;
      case Gates::long_small:  // runs of 40 tokens with α ∈ [0.95, 1], η ∈ [0, 0.05]
        for (Index t = 0; t < T; ++t) {
          if ((t / 40) % 2 == 1) continue;
          d.alpha(t) = static_cast<Scalar>(real(rng, 0.95, 1.0));
          d.eta(t) = static_cast<Scalar>(real(rng, 0.0, 0.05));
        }
        break;
    }
    d.theta *= static_cast<Scalar>(c.theta_scale);
    return d;
  }

  static State init(const Config& c, const Layer& layer, Rng& rng) {
    State s = layer.initial_state();
    if (!c.random_state) return s;
    s.reference = random_weights(s.reference, rng, 1.5);
    s.current = random_weights(s.current, rng, 1.5);
    s.momentum = random_weights(s.momentum, rng, 0.01);
    s.position = uniform_index(rng, 0, c.mini_batch - 1);
    return s;
  }

  static std::vector<Matrix<Scalar>> tensors(const State& s) {
    std::vector<Matrix<Scalar>> out;
    append(out, s.reference);
    append(out, s.current);
    append(out, s.momentum);
    out.push_back(Matrix<Scalar>::Constant(1, 1, Scalar(s.position)));
    return out;
  }

  static Index parallel_limit(const Layer& layer, const State& s) {
    return layer.options().mini_batch - s.position;
  }
};

// ---------------------------------------------------------------------------------------------
// The property
// ---------------------------------------------------------------------------------------------

template <class Layer>
const char* layer_name() {
  using S = typename Layer::Scalar;
  constexpr bool f = std::is_same_v<S, float>;
  if constexpr (std::is_same_v<Layer, LinearAttention<S>>)
    return f ? "LinearAttention<float>" : "LinearAttention<double>";
  if constexpr (std::is_same_v<Layer, SoftmaxAttention<S>>)
    return f ? "SoftmaxAttention<float>" : "SoftmaxAttention<double>";
  if constexpr (std::is_same_v<Layer, DeltaNet<S>>)
    return f ? "DeltaNet<float>" : "DeltaNet<double>";
  if constexpr (std::is_same_v<Layer, TTTLinear<S>>)
    return f ? "TTTLinear<float>" : "TTTLinear<double>";
  if constexpr (std::is_same_v<Layer, TTTMLP<S>>) return f ? "TTTMLP<float>" : "TTTMLP<double>";
  if constexpr (std::is_same_v<Layer, TitansMemory<S>>)
    return f ? "TitansMemory<float>" : "TitansMemory<double>";
  if constexpr (std::is_same_v<Layer, GatedLinearAttention<S>>)
    return f ? "GatedLinearAttention<float>" : "GatedLinearAttention<double>";
  if constexpr (std::is_same_v<Layer, KimiDeltaAttention<S>>)
    return f ? "KimiDeltaAttention<float>" : "KimiDeltaAttention<double>";
  if constexpr (std::is_same_v<Layer, GeneralizedDeltaRule<S>>)
    return f ? "GeneralizedDeltaRule<float>" : "GeneralizedDeltaRule<double>";
  return "?";
}

/// Length of the next call: empty, one token, a short run, or everything left.
Index draw_call_length(Rng& rng, Index left) {
  const double u = real(rng, 0, 1);
  if (u < 0.05) return 0;
  if (u < 0.2) return std::min<Index>(1, left);
  if (u < 0.8) return uniform_index(rng, 1, left);
  return left;
}

/// One configuration run both ways: one recurrent call, and a random split into calls of random
/// forms, from the same initial state.
template <class Layer>
struct CaseRun {
  using Scalar = typename Layer::Scalar;
  typename Family<Layer>::Config config;
  std::string calls, error;                          // error: what a call threw (none should)
  Matrix<Scalar> ref, out;                           // outputs: recurrent, split
  std::vector<Matrix<Scalar>> ref_state, out_state;  // final state tensors
};

/// `jitter` ≠ 0 scales v by (1 + jitter): a perturbation of the size of rounding errors, to
/// measure how much the configuration amplifies them.
template <class Layer>
CaseRun<Layer> run_case(std::uint64_t seed, double jitter = 0.0) {
  using F = Family<Layer>;
  using Scalar = typename Layer::Scalar;
  Rng rng(seed);
  CaseRun<Layer> run;
  run.config = F::draw(rng);
  const Layer layer = F::make(run.config, rng);
  auto data = F::data(run.config, layer, rng);
  if (jitter != 0.0) data.v *= static_cast<Scalar>(1.0 + jitter);
  const auto init = F::init(run.config, layer, rng);
  const Index T = run.config.T;

  auto ref_state = init;
  run.ref = forward(layer, Form::recurrent, data.slice(0, T), ref_state);
  run.ref_state = F::tensors(ref_state);

  auto state = init;
  run.out.resize(T, run.ref.cols());
  std::ostringstream calls;
  for (Index begin = 0; begin < T;) {
    const Form form = all_forms[uniform_index(rng, 0, 2)];
    Index n = draw_call_length(rng, T - begin);
    if (form == Form::parallel) n = std::min(n, F::parallel_limit(layer, state));
    calls << to_string(form) << "(" << n << ") ";
    try {
      run.out.middleRows(begin, n) = forward(layer, form, data.slice(begin, n), state);
    } catch (const std::exception& e) {
      run.error = e.what();
      break;
    }
    begin += n;
  }
  run.calls = calls.str();
  run.out_state = F::tensors(state);
  return run;
}

/// max|a − b| / (1 + max|b|): the measure of the cross-form tolerance.
template <class A, class B>
double relative_difference(const A& a, const B& b) {
  double worst = 0.0, scale = 0.0;
  for (Index i = 0; i < b.rows(); ++i) {
    for (Index j = 0; j < b.cols(); ++j) {
      scale = std::max(scale, std::abs(static_cast<double>(b(i, j))));
      worst =
          std::max(worst, std::abs(static_cast<double>(a(i, j)) - static_cast<double>(b(i, j))));
    }
  }
  return worst / (1.0 + scale);
}

/// The same layer in double.
template <class Layer>
struct InDouble;
template <template <class> class L, class S>
struct InDouble<L<S>> {
  using type = L<double>;
};
template <class S, TTTModel M>
struct InDouble<TTT<S, M>> {
  using type = TTT<double, M>;
};

/// How strongly the configuration amplifies rounding: the relative change of the recurrent
/// outputs when v is scaled by (1 + 8ε), a perturbation of the size of a few roundings.
template <class Layer>
double sensitivity(std::uint64_t seed, const CaseRun<Layer>& run) {
  constexpr double jitter = 8 * std::numeric_limits<typename Layer::Scalar>::epsilon();
  return relative_difference(run_case<Layer>(seed, jitter).ref, run.ref);
}

enum class Outcome { agreed, ill_conditioned, diverged, failed };

struct Tally {
  int cases = 0, agreed = 0, ill_conditioned = 0, diverged = 0, failed = 0;
  double worst = 0.0;  // largest difference / tolerance among agreeing cases
  std::vector<std::string> skipped;
};

/// One configuration. A split that disagrees with the recurrence fails the test unless the
/// configuration itself amplifies rounding past the tolerance (sensitivity > tolerance/10):
/// then the forms differ by rounding amplified by the dynamics, not by a wrong form, and the
/// case is counted as ill-conditioned. A recurrence that overflows counts as diverged.
/// (A wrong form shows in the many well-conditioned cases.)
template <class Layer>
Outcome check_case(std::uint64_t seed, Tally& tally) {
  using Scalar = typename Layer::Scalar;
  constexpr double tol = cross_form_tolerance<Scalar>();
  ::testing::ScopedTrace trace_seed(__FILE__, __LINE__,
                                    ::testing::Message() << layer_name<Layer>() << ", case seed "
                                                         << seed << " (rerun: SEQMEM_PROPERTY_SEED="
                                                         << seed << " SEQMEM_PROPERTY_CASES=1)");
  const CaseRun<Layer> run = run_case<Layer>(seed);
  ::testing::ScopedTrace trace_config(__FILE__, __LINE__,
                                      run.config.describe() + "; calls: " + run.calls);
  bool finite = run.ref.allFinite();
  for (const auto& m : run.ref_state)
    finite = finite && m.allFinite();
  if (!finite) {
    tally.skipped.push_back("seed " + std::to_string(seed) + " diverged (" + run.config.describe() +
                            ")");
    return Outcome::diverged;
  }
  if (!run.error.empty()) {
    ADD_FAILURE() << "a call threw: " << run.error;
    return Outcome::failed;
  }
  std::vector<std::string> problems;
  double worst = 0.0;
  auto compare = [&](const auto& got, const auto& want, const std::string& what) {
    worst = std::max(worst, relative_difference(got, want) / tol);
    if (auto r = near(got, want, tol); !r) problems.push_back(what + ": " + r.message());
  };
  compare(run.out, run.ref, "outputs");
  if (run.out_state.size() != run.ref_state.size()) {
    ADD_FAILURE() << "state tensor count " << run.out_state.size()
                  << " != " << run.ref_state.size();
    return Outcome::failed;
  }
  for (std::size_t i = 0; i < run.out_state.size(); ++i) {
    compare(run.out_state[i], run.ref_state[i], "state tensor " + std::to_string(i));
  }
  if (problems.empty()) {
    tally.worst = std::max(tally.worst, worst);
    return Outcome::agreed;
  }
  const double sens = sensitivity(seed, run);
  if (sens > tol / 10) {
    std::ostringstream note;
    note << "seed " << seed << " ill-conditioned: forms " << worst << "× the tolerance apart, "
         << "sensitivity " << sens << " (" << run.config.describe() << ")";
    tally.skipped.push_back(note.str());
    return Outcome::ill_conditioned;
  }
  for (const auto& p : problems)
    ADD_FAILURE() << p;
  std::ostringstream why;
  why << "not explained by conditioning: scaling v by (1 + 8ε) moves the recurrent outputs by only "
      << sens << "·(1 + max|o|)";
  if constexpr (!std::is_same_v<Scalar, double>) {
    const auto precise = run_case<typename InDouble<Layer>::type>(seed);
    why << "; vs the double recurrence: the " << layer_name<Layer>() << " recurrence is "
        << relative_difference(run.ref, precise.ref) << "·(1 + max|o|) away, the split "
        << relative_difference(run.out, precise.ref);
  }
  ADD_FAILURE() << why.str();
  return Outcome::failed;
}

template <class Layer>
class Property : public ::testing::Test {};

using Layers = ::testing::Types<
    LinearAttention<float>, LinearAttention<double>, SoftmaxAttention<float>,
    SoftmaxAttention<double>, DeltaNet<float>, DeltaNet<double>, TTTLinear<float>,
    TTTLinear<double>, TTTMLP<float>, TTTMLP<double>, TitansMemory<float>, TitansMemory<double>,
    GatedLinearAttention<float>, GatedLinearAttention<double>, KimiDeltaAttention<float>,
    KimiDeltaAttention<double>, GeneralizedDeltaRule<float>, GeneralizedDeltaRule<double>>;

class LayerNames {
 public:
  template <class Layer>
  static std::string GetName(int) {
    std::string name = layer_name<Layer>();
    std::replace(name.begin(), name.end(), '<', '_');
    name.erase(std::remove(name.begin(), name.end(), '>'), name.end());
    return name;
  }
};

TYPED_TEST_SUITE(Property, Layers, LayerNames);

// Random splits into calls of random forms agree with one recurrent call.
TYPED_TEST(Property, RandomSplitsMatchOneRecurrentCall) {
  const int cases = property_cases();
  const std::uint64_t seed = property_seed();
  Tally tally;
  for (int i = 0; i < cases; ++i) {
    ++tally.cases;
    switch (check_case<TypeParam>(seed + static_cast<std::uint64_t>(i), tally)) {
      case Outcome::agreed: ++tally.agreed; break;
      case Outcome::ill_conditioned: ++tally.ill_conditioned; break;
      case Outcome::diverged: ++tally.diverged; break;
      case Outcome::failed: ++tally.failed; break;
    }
    if (tally.failed >= 5) {
      ADD_FAILURE() << "stopping after 5 failing cases";
      break;
    }
  }
  std::cout << "[ property ] " << layer_name<TypeParam>() << ": " << tally.cases << " cases (seeds "
            << seed << ".." << seed + static_cast<std::uint64_t>(tally.cases - 1)
            << "): " << tally.agreed << " agreed (worst " << tally.worst << "× the tolerance), "
            << tally.ill_conditioned << " ill-conditioned, " << tally.diverged << " diverged, "
            << tally.failed << " failed\n";
  for (const auto& note : tally.skipped)
    std::cout << "[ property ]   " << note << "\n";
  // The generators keep to well-conditioned ranges; skipping more than a few cases means a
  // range is too wide and the suite tests less than it claims.
  const int skipped = tally.ill_conditioned + tally.diverged;
  EXPECT_LE(skipped, std::max(3, tally.cases / 20))
      << "too many ill-conditioned or diverging configurations: tighten the generator's ranges";
}

// ---------------------------------------------------------------------------------------------
// Identities of the diagonal-gate layers (docs/math.md §7–§9)
// ---------------------------------------------------------------------------------------------
//
// The split property compares a layer's forms with its own recurrence: a recurrence that is
// wrong in the same way in every form passes it. These compare each diagonal-gate layer with
// the layer it generalizes, on random inputs (one random form per layer and case, different
// chunk sizes), within the cross-form tolerance:
//   GatedLinearAttention with g_{t,c} = g_t on every channel  =  gated LinearAttention (§2);
//   KimiDeltaAttention with g_{t,c} = g_t                       =  gated DeltaNet (§3);
//   GeneralizedDeltaRule with a = b = 0                         =  GatedLinearAttention (§7);
//   GeneralizedDeltaRule with a_t = −k_t ⊙ exp(g_t), b_t = β_t k_t and the written key β_t k_t
//                                                               =  KimiDeltaAttention (§8).
// In the last, a_t ∦ b_t wherever g_t differs between channels, so a rule that applied
// D + aᵀb instead of D + bᵀa would fail it.

/// One case: random sizes, inputs, start state and forms; returns the failures, if any.
template <class Scalar>
std::vector<std::string> identity_case(std::uint64_t seed) {
  using Mat = Matrix<Scalar>;
  Rng rng(seed);
  const Index T = draw_length(rng), dk = draw_dim(rng), dv = draw_dim(rng);
  const auto form = [&rng] { return all_forms[uniform_index(rng, 0, 2)]; };
  const auto chunk = [&rng, T] { return draw_chunk(rng, T); };
  const bool l2norm = chance(rng, 0.5);
  const ChannelDecays decays = ChannelDecays::draw(rng, dk);
  const Mat q = uniform<Scalar>(rng, T, dk), v = uniform<Scalar>(rng, T, dv);
  const Matrix<double> k_raw = uniform<double>(rng, T, dk), k = unit_rows(k_raw);
  const Vector<Scalar> beta = draw_beta<Scalar>(rng, T, chance(rng, 0.25));
  const Matrix<double> g = decays.template values<double>(rng, T, dk);
  const Vector<Scalar> g_token = draw_log_decay<Scalar>(rng, T);
  const Mat g_shared = g_token.replicate(1, dk);
  const Mat S0 = uniform<Scalar>(rng, dk, dv);
  const Mat ks = k.cast<Scalar>(), gs = g.cast<Scalar>();
  const Mat k_delta = l2norm ? Mat(k_raw.cast<Scalar>()) : ks;  // the layers normalize k

  std::vector<std::string> failures;
  std::ostringstream where;
  where << "T " << T << ", key_dim " << dk << ", value_dim " << dv << ", qk_l2norm " << l2norm
        << ", " << decays.describe();
  const auto compare = [&](const char* what, const Mat& got, const Mat& want, Form f1, Form f2) {
    if (auto r = near(got, want, cross_form_tolerance<Scalar>()); !r) {
      std::ostringstream f;
      f << what << " (" << to_string(f1) << " vs " << to_string(f2) << "; " << where.str()
        << "): " << r.message();
      failures.push_back(f.str());
    }
  };

  {  // GLA with shared channels = gated linear attention
    const GatedLinearAttention<Scalar> gla({.key_dim = dk, .value_dim = dv, .chunk_size = chunk()});
    const LinearAttention<Scalar> lin({.key_dim = dk, .value_dim = dv, .chunk_size = chunk()});
    typename GatedLinearAttention<Scalar>::State s1{S0};
    auto s2 = lin.initial_state();
    s2.S = S0;
    const Form f1 = form(), f2 = form();
    const Mat o1 = forward(gla, f1, {.q = q, .k = ks, .v = v, .log_decay = g_shared}, s1);
    const Mat o2 =
        forward(lin, f2, {.q = q, .k = ks, .v = v, .log_decay = GateRef<Scalar>(g_token)}, s2);
    compare("GLA with shared channels vs gated LinearAttention: outputs", o1, o2, f1, f2);
    compare("GLA with shared channels vs gated LinearAttention: state", s1.S, s2.S, f1, f2);
  }
  {  // KDA with shared channels = gated DeltaNet
    const KimiDeltaAttention<Scalar> kda(
        {.key_dim = dk, .value_dim = dv, .chunk_size = chunk(), .qk_l2norm = l2norm});
    const DeltaNet<Scalar> delta(
        {.key_dim = dk, .value_dim = dv, .chunk_size = chunk(), .qk_l2norm = l2norm});
    typename KimiDeltaAttention<Scalar>::State s1{S0};
    typename DeltaNet<Scalar>::State s2{S0};
    const Form f1 = form(), f2 = form();
    const Mat o1 = forward(
        kda, f1,
        {.q = q, .k = k_delta, .v = v, .beta = GateRef<Scalar>(beta), .log_decay = g_shared}, s1);
    const Mat o2 = forward(delta, f2,
                           {.q = q,
                            .k = k_delta,
                            .v = v,
                            .beta = GateRef<Scalar>(beta),
                            .log_decay = GateRef<Scalar>(g_token)},
                           s2);
    compare("KDA with shared channels vs gated DeltaNet: outputs", o1, o2, f1, f2);
    compare("KDA with shared channels vs gated DeltaNet: state", s1.S, s2.S, f1, f2);
  }
  {  // generalized delta rule with a = b = 0 = GLA
    const GeneralizedDeltaRule<Scalar> gdr({.key_dim = dk, .value_dim = dv, .chunk_size = chunk()});
    const GatedLinearAttention<Scalar> gla({.key_dim = dk, .value_dim = dv, .chunk_size = chunk()});
    typename GeneralizedDeltaRule<Scalar>::State s1{S0};
    typename GatedLinearAttention<Scalar>::State s2{S0};
    const Mat zero = Mat::Zero(T, dk);
    const Form f1 = form(), f2 = form();
    const Mat o1 =
        forward(gdr, f1, {.q = q, .k = ks, .v = v, .a = zero, .b = zero, .log_decay = gs}, s1);
    const Mat o2 = forward(gla, f2, {.q = q, .k = ks, .v = v, .log_decay = gs}, s2);
    compare("GeneralizedDeltaRule with a = b = 0 vs GLA: outputs", o1, o2, f1, f2);
    compare("GeneralizedDeltaRule with a = b = 0 vs GLA: state", s1.S, s2.S, f1, f2);
  }
  {  // generalized delta rule with KDA's a, b and written key = KDA (unit keys, no l2norm)
    const GeneralizedDeltaRule<Scalar> gdr({.key_dim = dk, .value_dim = dv, .chunk_size = chunk()});
    const KimiDeltaAttention<Scalar> kda({.key_dim = dk, .value_dim = dv, .chunk_size = chunk()});
    typename GeneralizedDeltaRule<Scalar>::State s1{S0};
    typename KimiDeltaAttention<Scalar>::State s2{S0};
    const Matrix<double> b = beta.template cast<double>().asDiagonal() * k;
    const Mat a = (-k.cwiseProduct(g.array().exp().matrix())).template cast<Scalar>();
    const Mat bs = b.cast<Scalar>();
    const Form f1 = form(), f2 = form();
    const Mat o1 =
        forward(gdr, f1, {.q = q, .k = bs, .v = v, .a = a, .b = bs, .log_decay = gs}, s1);
    const Mat o2 = forward(
        kda, f2, {.q = q, .k = ks, .v = v, .beta = GateRef<Scalar>(beta), .log_decay = gs}, s2);
    compare("GeneralizedDeltaRule with KDA's a, b vs KDA: outputs", o1, o2, f1, f2);
    compare("GeneralizedDeltaRule with KDA's a, b vs KDA: state", s1.S, s2.S, f1, f2);
  }
  return failures;
}

template <class Scalar>
void check_identities() {
  const int cases = property_cases();
  const std::uint64_t seed = property_seed();
  int failed = 0;
  for (int i = 0; i < cases && failed < 5; ++i) {
    const std::uint64_t s = seed + static_cast<std::uint64_t>(i);
    const auto failures = identity_case<Scalar>(s);
    for (const auto& f : failures)
      ADD_FAILURE() << "case seed " << s << ": " << f;
    failed += failures.empty() ? 0 : 1;
  }
  std::cout << "[ property ] diagonal-gate identities ("
            << (std::is_same_v<Scalar, float> ? "float" : "double") << "): " << cases << " cases, "
            << failed << " failed\n";
}

TEST(DiagonalGateIdentities, Float) {
  check_identities<float>();
}
TEST(DiagonalGateIdentities, Double) {
  check_identities<double>();
}

}  // namespace
}  // namespace seqmem::test
