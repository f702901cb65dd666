// Long streams: 1,000,000 tokens (d = 16, double) through every layer in calls of random
// length (single tokens, short and long calls), with decay / forgetting on (per key channel for
// the diagonal-gate layers of docs/math.md §7–§9). The recurrent form runs the whole stream and
// a chunkwise copy of the state runs the same calls alongside, so the two are compared after a
// million tokens of independent rounding. Every output of both must stay finite, and at the end
// the last 1,000 outputs and the final states of the two must still agree within the cross-form
// tolerance of docs/math.md §6 (1e-10·(1 + max|value|)).
// Softmax attention with a window must keep its KV cache bounded: at most window − 1 cached
// rows, and a buffer (measured through the public keys() view) that does not grow with the
// stream.
//
// Each test prints the largest differences it saw and the time each form took.
// SEQMEM_LONG_RUN_TOKENS sets the stream length (default 1000000), e.g. for a quick run.

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "test_util.hpp"

namespace seqmem::test {
namespace {

constexpr Index kDim = 16;
constexpr Index kTail = 1000;     // outputs compared at the end
constexpr Index kMaxCall = 2048;  // longest call

/// 0 for text that is not a positive integer (the test then fails).
Index stream_tokens() {
  const char* text = std::getenv("SEQMEM_LONG_RUN_TOKENS");
  if (text == nullptr || *text == '\0') return 1'000'000;
  char* end = nullptr;
  const long long n = std::strtoll(text, &end, 10);
  return *end == '\0' && n > 0 ? static_cast<Index>(n) : 0;
}

double real(Rng& rng, double lo, double hi) {
  return std::uniform_real_distribution<double>(lo, hi)(rng);
}

/// Length of the next call: 30% one token (decoding), 30% 2..64, 40% 65..kMaxCall.
Index call_length(Rng& rng, Index left) {
  const double u = real(rng, 0, 1);
  const Index n = u < 0.3   ? 1
                  : u < 0.6 ? uniform_index(rng, 2, 64)
                            : uniform_index(rng, 65, kMaxCall);
  return std::min(n, left);
}

Matrix<double> unit_rows(Matrix<double> x) {
  x.rowwise().normalize();
  return x;
}

Vector<double> gate(Rng& rng, Index n, double lo, double hi) {
  return uniform<double>(rng, n, 1, lo, hi).col(0);
}

void append(std::vector<Matrix<double>>& out, const Weights<double>& w) {
  out.insert(out.end(), w.W.begin(), w.W.end());
  out.insert(out.end(), w.b.begin(), w.b.end());
}

// ---------------------------------------------------------------------------------------------
// The layers of the stream: each says how to build it, draw one call's inputs and list its
// state's tensors; `check(state)` runs after every call.
// ---------------------------------------------------------------------------------------------

struct LinearCase {
  using Layer = LinearAttention<double>;
  static constexpr const char* kName = "LinearAttention (gated, normalized, elu+1)";
  static Layer make() {
    return Layer({.key_dim = kDim,
                  .value_dim = kDim,
                  .feature_map = FeatureMap::elu_plus_one,
                  .normalize = true,
                  .chunk_size = 64});
  }
  struct Data {
    Matrix<double> q, k, v;
    Vector<double> g;
    Layer::Inputs inputs() const {
      return {.q = q, .k = k, .v = v, .log_decay = GateRef<double>(g)};
    }
  };
  static Data data(Index n, Rng& rng) {
    return {uniform<double>(rng, n, kDim), uniform<double>(rng, n, kDim),
            uniform<double>(rng, n, kDim), gate(rng, n, -0.2, 0.0)};
  }
  static std::vector<Matrix<double>> tensors(const Layer::State& s) { return {s.S, s.z}; }
  static void check(const Layer::State&) {}
  static std::string report() { return {}; }
};

struct SoftmaxCase {
  using Layer = SoftmaxAttention<double>;
  static constexpr const char* kName = "SoftmaxAttention (window 128)";
  static constexpr Index kWindow = 128;
  static Layer make() {
    max_cached = max_buffer = 0;
    return Layer({.key_dim = kDim, .value_dim = kDim, .window = kWindow, .chunk_size = 64});
  }
  struct Data {
    Matrix<double> q, k, v;
    Layer::Inputs inputs() const { return {.q = q, .k = k, .v = v}; }
  };
  static Data data(Index n, Rng& rng) {
    return {uniform<double>(rng, n, kDim, -2, 2), uniform<double>(rng, n, kDim, -2, 2),
            uniform<double>(rng, n, kDim)};
  }
  static std::vector<Matrix<double>> tensors(const Layer::State& s) {
    return {s.keys(), s.values(), Matrix<double>::Constant(1, 1, double(s.tokens()))};
  }
  /// Rows of the buffer behind the cache: keys() is a view into it.
  static Index buffer_rows(const Layer::State& s) { return s.keys().nestedExpression().rows(); }
  /// At most window − 1 cached rows; the buffer (spare room for appends) stays within twice
  /// the cache plus the longest call, whatever the length of the stream.
  static void check(const Layer::State& s) {
    max_cached = std::max(max_cached, s.cached());
    max_buffer = std::max(max_buffer, buffer_rows(s));
    ASSERT_LE(s.cached(), kWindow - 1);
    ASSERT_LE(buffer_rows(s), 2 * (kWindow - 1 + kMaxCall));
    ASSERT_EQ(s.values().nestedExpression().rows(), buffer_rows(s));
  }
  static std::string report() {
    const auto bytes = [](Index rows) {
      return std::to_string(rows * 2 * kDim * Index(sizeof(double)) / 1024) + " KiB";
    };
    return "; KV cache at most " + std::to_string(max_cached) + " rows (" + bytes(max_cached) +
           "), buffer at most " + std::to_string(max_buffer) + " rows (" + bytes(max_buffer) + ")";
  }
  static inline Index max_cached = 0, max_buffer = 0;  // over both states and the whole run
};

template <bool Gated>
struct DeltaCase {
  using Layer = DeltaNet<double>;
  static constexpr const char* kName = Gated ? "DeltaNet (gated)" : "DeltaNet";
  static Layer make() { return Layer({.key_dim = kDim, .value_dim = kDim, .chunk_size = 64}); }
  struct Data {
    Matrix<double> q, k, v;
    Vector<double> beta, g;
    Layer::Inputs inputs() const {
      Layer::Inputs in{.q = q, .k = k, .v = v, .beta = GateRef<double>(beta)};
      if constexpr (Gated) in.log_decay.emplace(g);
      return in;
    }
  };
  /// Unit keys and β ∈ [0, 2]: each write is (I − β kᵀk), of norm ≤ 1, so S stays bounded
  /// without decay too.
  static Data data(Index n, Rng& rng) {
    return {uniform<double>(rng, n, kDim), unit_rows(uniform<double>(rng, n, kDim)),
            uniform<double>(rng, n, kDim), gate(rng, n, 0.0, 2.0),
            Gated ? gate(rng, n, -0.05, 0.0) : Vector<double>()};
  }
  static std::vector<Matrix<double>> tensors(const Layer::State& s) { return {s.S}; }
  static void check(const Layer::State&) {}
  static std::string report() { return {}; }
};

template <TTTModel Model, Index Expansion>
struct TTTCase {
  using Layer = TTT<double, Model>;
  static constexpr const char* kName = Model == TTTModel::linear
                                           ? "TTTLinear (mini_batch 16)"
                                           : "TTTMLP (mini_batch 16, hidden 4·16)";
  static Layer make() {
    typename Layer::Options o;
    o.key_dim = kDim;
    o.mini_batch = 16;
    o.expansion = Expansion;
    return Layer(o);
  }
  struct Data {
    Matrix<double> q, k, v;
    Vector<double> eta;
    typename Layer::Inputs inputs() const {
      return {.q = q, .k = k, .v = v, .learning_rate = GateRef<double>(eta)};
    }
  };
  /// Inner rates a_t ≤ 1/d, as tests/ttt_test.cpp.
  static Data data(Index n, Rng& rng) {
    return {uniform<double>(rng, n, kDim), uniform<double>(rng, n, kDim),
            uniform<double>(rng, n, kDim), gate(rng, n, 0.0, 1.0 / double(kDim))};
  }
  static std::vector<Matrix<double>> tensors(const typename Layer::State& s) {
    std::vector<Matrix<double>> out;
    append(out, s.reference);
    append(out, s.gradient);
    out.push_back(Matrix<double>::Constant(1, 1, double(s.position)));
    return out;
  }
  static void check(const typename Layer::State&) {}
  static std::string report() { return {}; }
};

template <Index Depth, Index Expansion>
struct TitansCase {
  using Layer = TitansMemory<double>;
  static constexpr const char* kName =
      Depth == 1 ? "TitansMemory (depth 1, mini_batch 16)"
                 : "TitansMemory (depth 2 MLP, hidden 4·16, mini_batch 8)";
  static Layer make() {
    return Layer({.key_dim = kDim,
                  .value_dim = kDim,
                  .depth = Depth,
                  .expansion = Expansion,
                  .bias = Depth > 1,
                  .mini_batch = Depth == 1 ? 16 : 8});
  }
  struct Data {
    Matrix<double> q, k, v;
    Vector<double> theta, alpha, eta;
    Layer::Inputs inputs() const {
      return {.q = q,
              .k = k,
              .v = v,
              .learning_rate = GateRef<double>(theta),
              .forgetting = GateRef<double>(alpha),
              .momentum_decay = GateRef<double>(eta)};
    }
  };
  /// Unit keys; θ ∈ (0.005, 0.1) (halved at depth 2, see tests/property_test.cpp),
  /// forgetting α ∈ (0, 0.2), momentum η ∈ (0.5, 0.95), as tests/titans_test.cpp.
  static Data data(Index n, Rng& rng) {
    const double step = Depth == 1 ? 1.0 : 0.5;
    return {uniform<double>(rng, n, kDim), unit_rows(uniform<double>(rng, n, kDim)),
            uniform<double>(rng, n, kDim), gate(rng, n, 0.005 * step, 0.1 * step),
            gate(rng, n, 0.0, 0.2),        gate(rng, n, 0.5, 0.95)};
  }
  static std::vector<Matrix<double>> tensors(const Layer::State& s) {
    std::vector<Matrix<double>> out;
    append(out, s.reference);
    append(out, s.current);
    append(out, s.momentum);
    out.push_back(Matrix<double>::Constant(1, 1, double(s.position)));
    return out;
  }
  static void check(const Layer::State&) {}
  static std::string report() { return {}; }
};

/// Per-channel log-decays (T×dk, docs/math.md §7–§9): channel c in [−r_c, 0], with the rates
/// r_c spread from 0.01 (a memory of ~200 tokens) to 0.5 over the channels.
Matrix<double> channel_decay(Rng& rng, Index n) {
  Matrix<double> g(n, kDim);
  for (Index c = 0; c < kDim; ++c) {
    const double rate = std::pow(10.0, -2.0 + 1.7 * double(c) / double(kDim - 1));
    g.col(c) = gate(rng, n, -rate, 0.0);
  }
  return g;
}

struct GlaCase {
  using Layer = GatedLinearAttention<double>;
  static constexpr const char* kName = "GatedLinearAttention (per-channel decay)";
  static Layer make() { return Layer({.key_dim = kDim, .value_dim = kDim, .chunk_size = 64}); }
  struct Data {
    Matrix<double> q, k, v, g;
    Layer::Inputs inputs() const { return {.q = q, .k = k, .v = v, .log_decay = g}; }
  };
  static Data data(Index n, Rng& rng) {
    return {uniform<double>(rng, n, kDim), uniform<double>(rng, n, kDim),
            uniform<double>(rng, n, kDim), channel_decay(rng, n)};
  }
  static std::vector<Matrix<double>> tensors(const Layer::State& s) { return {s.S}; }
  static void check(const Layer::State&) {}
  static std::string report() { return {}; }
};

struct KdaCase {
  using Layer = KimiDeltaAttention<double>;
  static constexpr const char* kName = "KimiDeltaAttention (per-channel decay)";
  static Layer make() { return Layer({.key_dim = kDim, .value_dim = kDim, .chunk_size = 64}); }
  struct Data {
    Matrix<double> q, k, v;
    Vector<double> beta;
    Matrix<double> g;
    Layer::Inputs inputs() const {
      return {.q = q, .k = k, .v = v, .beta = GateRef<double>(beta), .log_decay = g};
    }
  };
  /// Unit keys and β ∈ (0, 1): each write (I − β kᵀk) diag(e^g) has norm ≤ 1.
  static Data data(Index n, Rng& rng) {
    return {uniform<double>(rng, n, kDim), unit_rows(uniform<double>(rng, n, kDim)),
            uniform<double>(rng, n, kDim), gate(rng, n, 0.0, 1.0), channel_decay(rng, n)};
  }
  static std::vector<Matrix<double>> tensors(const Layer::State& s) { return {s.S}; }
  static void check(const Layer::State&) {}
  static std::string report() { return {}; }
};

struct GeneralizedDeltaCase {
  using Layer = GeneralizedDeltaRule<double>;
  static constexpr const char* kName = "GeneralizedDeltaRule (RWKV-7 a, b and decay)";
  static Layer make() {
    return Layer({.key_dim = kDim, .value_dim = kDim, .scale = 1.0, .chunk_size = 64});
  }
  struct Data {
    Matrix<double> q, k, v, a, b, g;
    Layer::Inputs inputs() const {
      return {.q = q, .k = k, .v = v, .a = a, .b = b, .log_decay = g};
    }
  };
  /// As RWKV-7 (docs/math.md §9): a = −κ̂, b = κ̂ ⊙ α with κ̂ unit rows and α ∈ (0, 1), and
  /// g = −e^{−½}·σ(x) ∈ (−0.607, 0) with x ∈ [−6, 6]; scale 1.
  static Data data(Index n, Rng& rng) {
    Data d{uniform<double>(rng, n, kDim),
           uniform<double>(rng, n, kDim),
           uniform<double>(rng, n, kDim),
           -unit_rows(uniform<double>(rng, n, kDim)),
           Matrix<double>(),
           Matrix<double>()};
    d.b = -d.a.cwiseProduct(uniform<double>(rng, n, kDim, 0.0, 1.0));
    d.g = uniform<double>(rng, n, kDim, -6.0, 6.0).unaryExpr([](double x) {
      return -std::exp(-0.5) / (1.0 + std::exp(-x));
    });
    return d;
  }
  static std::vector<Matrix<double>> tensors(const Layer::State& s) { return {s.S}; }
  static void check(const Layer::State&) {}
  static std::string report() { return {}; }
};

// ---------------------------------------------------------------------------------------------
// The stream
// ---------------------------------------------------------------------------------------------

double max_abs(const Matrix<double>& m) {
  return m.size() == 0 ? 0.0 : m.cwiseAbs().maxCoeff();
}

template <class Case>
void stream(std::uint64_t seed) {
  using Clock = std::chrono::steady_clock;
  const Index N = stream_tokens();
  ASSERT_GT(N, 0) << "SEQMEM_LONG_RUN_TOKENS must be a positive integer";
  const typename Case::Layer layer = Case::make();
  auto recurrent = layer.initial_state();
  auto chunkwise = recurrent;
  Rng rng(seed);
  double seconds_recurrent = 0, seconds_chunkwise = 0;
  double run_worst = 0;                // max over calls of max|diff| / (1 + max|o|) of the call
  double tail_diff = 0, tail_max = 0;  // over the last kTail outputs
  Index calls = 0;
  for (Index done = 0; done < N; ++calls) {
    const Index n = call_length(rng, N - done);
    const auto data = Case::data(n, rng);
    const auto t0 = Clock::now();
    const Matrix<double> o_rec = forward(layer, Form::recurrent, data.inputs(), recurrent);
    const auto t1 = Clock::now();
    const Matrix<double> o_chunk = forward(layer, Form::chunkwise, data.inputs(), chunkwise);
    const auto t2 = Clock::now();
    seconds_recurrent += std::chrono::duration<double>(t1 - t0).count();
    seconds_chunkwise += std::chrono::duration<double>(t2 - t1).count();
    ASSERT_TRUE(o_rec.allFinite())
        << "recurrent outputs not finite in tokens [" << done << ", " << done + n << ")";
    ASSERT_TRUE(o_chunk.allFinite())
        << "chunkwise outputs not finite in tokens [" << done << ", " << done + n << ")";
    Case::check(recurrent);
    Case::check(chunkwise);
    if (::testing::Test::HasFatalFailure()) return;
    const Matrix<double> diff = (o_chunk - o_rec).cwiseAbs();
    run_worst = std::max(run_worst, max_abs(diff) / (1.0 + max_abs(o_rec)));
    const Index tail_begin = std::max<Index>(0, N - kTail - done);  // first row in the tail
    if (tail_begin < n) {
      tail_diff = std::max(tail_diff, max_abs(diff.bottomRows(n - tail_begin)));
      tail_max = std::max(tail_max, max_abs(o_rec.bottomRows(n - tail_begin)));
    }
    done += n;
  }
  const auto want = Case::tensors(recurrent), got = Case::tensors(chunkwise);
  ASSERT_EQ(got.size(), want.size());
  double state_worst = 0;  // max over tensors of max|diff| / (1 + max|value|)
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(near(got[i], want[i], cross_form_tolerance<double>())) << "state tensor " << i;
    state_worst =
        std::max(state_worst, max_abs((got[i] - want[i]).cwiseAbs()) / (1.0 + max_abs(want[i])));
  }
  const double tail_bound = cross_form_tolerance<double>() * (1.0 + tail_max);
  EXPECT_LE(tail_diff, tail_bound) << "last " << kTail << " outputs: chunkwise and recurrent apart";
  std::cout << std::setprecision(3) << "[ long run ] " << Case::kName << ": " << N << " tokens in "
            << calls << " calls; recurrent " << std::fixed << seconds_recurrent << " s, chunkwise "
            << seconds_chunkwise << " s" << std::defaultfloat << "; chunkwise vs recurrent: last "
            << kTail << " outputs max|diff| " << tail_diff << " (max|o| " << tail_max
            << ", relative " << tail_diff / (1.0 + tail_max) << "), final state relative "
            << state_worst << ", worst call over the run (relative) " << run_worst << Case::report()
            << "\n";
}

TEST(LongRun, LinearAttention) {
  stream<LinearCase>(1);
}
TEST(LongRun, SoftmaxAttentionWindowed) {
  stream<SoftmaxCase>(2);
}
TEST(LongRun, DeltaNet) {
  stream<DeltaCase<false>>(3);
}
TEST(LongRun, GatedDeltaNet) {
  stream<DeltaCase<true>>(8);
}
TEST(LongRun, TTTLinear) {
  stream<TTTCase<TTTModel::linear, 1>>(4);
}
TEST(LongRun, TTTMLP) {
  stream<TTTCase<TTTModel::mlp, 4>>(5);
}
TEST(LongRun, TitansLinearMemory) {
  stream<TitansCase<1, 4>>(6);
}
TEST(LongRun, TitansMLPMemory) {
  stream<TitansCase<2, 4>>(7);
}
TEST(LongRun, GatedLinearAttention) {
  stream<GlaCase>(9);
}
TEST(LongRun, KimiDeltaAttention) {
  stream<KdaCase>(10);
}
TEST(LongRun, GeneralizedDeltaRule) {
  stream<GeneralizedDeltaCase>(11);
}

}  // namespace
}  // namespace seqmem::test
