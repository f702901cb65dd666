// Concurrent use. A layer's forward is const and keeps nothing between calls, so one layer
// object may serve several threads at once, each with its own state: every thread must get,
// bit for bit, the outputs and final state of the same calls run one after another on one
// thread (all layers; some threads share one input buffer, read concurrently). And
// seqmem::MultiHead on several worker threads must equal MultiHead on one thread, bit for bit,
// over a batch of sequences and two consecutive calls.
//
// Small shapes (d = 8, T = 200), so that scripts/sanitize.sh runs this under ThreadSanitizer.

#include <gtest/gtest.h>

#include <cstring>
#include <exception>
#include <latch>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "test_util.hpp"

namespace seqmem::test {
namespace {

constexpr Index kDim = 8;
constexpr Index kT = 200;
constexpr int kThreads = 4;
constexpr int kRounds = 3;

template <class Scalar>
Matrix<Scalar> unit_rows(Matrix<Scalar> x) {
  x.rowwise().normalize();
  return x;
}

template <class Scalar>
void append(std::vector<Matrix<Scalar>>& out, const Weights<Scalar>& w) {
  out.insert(out.end(), w.W.begin(), w.W.end());
  out.insert(out.end(), w.b.begin(), w.b.end());
}

/// Gate `h` of a packed T×H gate matrix, rows [b, b + n).
template <class Scalar>
GateRef<Scalar> gate_rows(const Matrix<Scalar>& g, Index b, Index n) {
  return GateRef<Scalar>(g.middleRows(b, n));
}

// ---------------------------------------------------------------------------------------------
// Per layer: build it, draw packed inputs for H heads (q, k: T×(H·dk), v: T×(H·dv), gates
// T×H), slice one head's rows (H = 1), list the state's tensors, and the longest parallel call.
// ---------------------------------------------------------------------------------------------

template <class Layer>
struct Case;

template <class Scalar>
struct Case<LinearAttention<Scalar>> {
  using Layer = LinearAttention<Scalar>;
  static Layer make(Index) {
    return Layer({.key_dim = kDim, .value_dim = kDim, .normalize = true, .chunk_size = 16});
  }
  struct Data {
    Matrix<Scalar> q, k, v, g;
    typename Layer::Inputs all() const {
      return {.q = q, .k = k, .v = v, .log_decay = GateRef<Scalar>(g)};
    }
    typename Layer::Inputs slice(Index b, Index n) const {
      return {.q = q.middleRows(b, n),
              .k = k.middleRows(b, n),
              .v = v.middleRows(b, n),
              .log_decay = gate_rows(g, b, n)};
    }
  };
  static Data data(Index T, Index H, Rng& rng) {
    return {uniform<Scalar>(rng, T, H * kDim, 0.05, 1.0),
            uniform<Scalar>(rng, T, H * kDim, 0.05, 1.0), uniform<Scalar>(rng, T, H * kDim),
            uniform<Scalar>(rng, T, H, -0.5, 0.0)};
  }
  static std::vector<Matrix<Scalar>> tensors(const typename Layer::State& s) { return {s.S, s.z}; }
  static Index parallel_limit(const Layer&, const typename Layer::State&) { return kT; }
};

template <class Scalar>
struct Case<SoftmaxAttention<Scalar>> {
  using Layer = SoftmaxAttention<Scalar>;
  static Layer make(Index) {
    return Layer({.key_dim = kDim, .value_dim = kDim, .window = 24, .chunk_size = 16});
  }
  struct Data {
    Matrix<Scalar> q, k, v;
    typename Layer::Inputs all() const { return {.q = q, .k = k, .v = v}; }
    typename Layer::Inputs slice(Index b, Index n) const {
      return {.q = q.middleRows(b, n), .k = k.middleRows(b, n), .v = v.middleRows(b, n)};
    }
  };
  static Data data(Index T, Index H, Rng& rng) {
    return {uniform<Scalar>(rng, T, H * kDim, -2, 2), uniform<Scalar>(rng, T, H * kDim, -2, 2),
            uniform<Scalar>(rng, T, H * kDim)};
  }
  static std::vector<Matrix<Scalar>> tensors(const typename Layer::State& s) {
    return {s.keys(), s.values(), Matrix<Scalar>::Constant(1, 1, Scalar(s.tokens()))};
  }
  static Index parallel_limit(const Layer&, const typename Layer::State&) { return kT; }
};

template <class Scalar>
struct Case<DeltaNet<Scalar>> {
  using Layer = DeltaNet<Scalar>;
  static Layer make(Index) { return Layer({.key_dim = kDim, .value_dim = kDim, .chunk_size = 16}); }
  struct Data {
    Matrix<Scalar> q, k, v, beta, g;
    typename Layer::Inputs all() const {
      return {
          .q = q, .k = k, .v = v, .beta = GateRef<Scalar>(beta), .log_decay = GateRef<Scalar>(g)};
    }
    typename Layer::Inputs slice(Index b, Index n) const {
      return {.q = q.middleRows(b, n),
              .k = k.middleRows(b, n),
              .v = v.middleRows(b, n),
              .beta = gate_rows(beta, b, n),
              .log_decay = gate_rows(g, b, n)};
    }
  };
  static Data data(Index T, Index H, Rng& rng) {
    Matrix<Scalar> k(T, H * kDim);
    for (Index h = 0; h < H; ++h)
      k.middleCols(h * kDim, kDim) = unit_rows(uniform<Scalar>(rng, T, kDim));
    return {uniform<Scalar>(rng, T, H * kDim), k, uniform<Scalar>(rng, T, H * kDim),
            uniform<Scalar>(rng, T, H, 0.0, 2.0), uniform<Scalar>(rng, T, H, -0.2, 0.0)};
  }
  static std::vector<Matrix<Scalar>> tensors(const typename Layer::State& s) { return {s.S}; }
  static Index parallel_limit(const Layer&, const typename Layer::State&) { return kT; }
};

template <class Scalar, TTTModel Model>
struct Case<TTT<Scalar, Model>> {
  using Layer = TTT<Scalar, Model>;
  static Layer make(Index mini_batch) {
    typename Layer::Options o;
    o.dim = kDim;
    o.mini_batch = mini_batch;
    o.expansion = 2;
    return Layer(o);
  }
  struct Data {
    Matrix<Scalar> q, k, v, eta;
    typename Layer::Inputs all() const {
      return {.q = q, .k = k, .v = v, .eta = GateRef<Scalar>(eta)};
    }
    typename Layer::Inputs slice(Index b, Index n) const {
      return {.q = q.middleRows(b, n),
              .k = k.middleRows(b, n),
              .v = v.middleRows(b, n),
              .eta = gate_rows(eta, b, n)};
    }
  };
  static Data data(Index T, Index H, Rng& rng) {
    return {uniform<Scalar>(rng, T, H * kDim), uniform<Scalar>(rng, T, H * kDim),
            uniform<Scalar>(rng, T, H * kDim), uniform<Scalar>(rng, T, H, 0.0, 1.0 / kDim)};
  }
  static std::vector<Matrix<Scalar>> tensors(const typename Layer::State& s) {
    std::vector<Matrix<Scalar>> out;
    append(out, s.reference);
    append(out, s.gradient);
    out.push_back(Matrix<Scalar>::Constant(1, 1, Scalar(s.position)));
    return out;
  }
  static Index parallel_limit(const Layer& layer, const typename Layer::State& s) {
    return layer.options().mini_batch - s.position;
  }
};

template <class Scalar>
struct Case<TitansMemory<Scalar>> {
  using Layer = TitansMemory<Scalar>;
  static Layer make(Index mini_batch) {
    return Layer({.key_dim = kDim,
                  .value_dim = kDim,
                  .depth = 2,
                  .expansion = 2,
                  .bias = true,
                  .mini_batch = mini_batch});
  }
  struct Data {
    Matrix<Scalar> q, k, v, theta, alpha, eta;
    typename Layer::Inputs all() const {
      return {.q = q,
              .k = k,
              .v = v,
              .theta = GateRef<Scalar>(theta),
              .alpha = GateRef<Scalar>(alpha),
              .momentum = GateRef<Scalar>(eta)};
    }
    typename Layer::Inputs slice(Index b, Index n) const {
      return {.q = q.middleRows(b, n),
              .k = k.middleRows(b, n),
              .v = v.middleRows(b, n),
              .theta = gate_rows(theta, b, n),
              .alpha = gate_rows(alpha, b, n),
              .momentum = gate_rows(eta, b, n)};
    }
  };
  static Data data(Index T, Index H, Rng& rng) {
    Matrix<Scalar> k(T, H * kDim);
    for (Index h = 0; h < H; ++h)
      k.middleCols(h * kDim, kDim) = unit_rows(uniform<Scalar>(rng, T, kDim));
    return {uniform<Scalar>(rng, T, H * kDim),    k,
            uniform<Scalar>(rng, T, H * kDim),    uniform<Scalar>(rng, T, H, 0.005, 0.05),
            uniform<Scalar>(rng, T, H, 0.0, 0.2), uniform<Scalar>(rng, T, H, 0.5, 0.95)};
  }
  static std::vector<Matrix<Scalar>> tensors(const typename Layer::State& s) {
    std::vector<Matrix<Scalar>> out;
    append(out, s.reference);
    append(out, s.current);
    append(out, s.momentum);
    out.push_back(Matrix<Scalar>::Constant(1, 1, Scalar(s.position)));
    return out;
  }
  static Index parallel_limit(const Layer& layer, const typename Layer::State& s) {
    return layer.options().mini_batch - s.position;
  }
};

// ---------------------------------------------------------------------------------------------

/// Same shape and the same bytes.
template <class Scalar>
bool identical(const Matrix<Scalar>& a, const Matrix<Scalar>& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         (a.size() == 0 || std::memcmp(a.data(), b.data(),
                                       sizeof(Scalar) * static_cast<std::size_t>(a.size())) == 0);
}

template <class Layer>
struct Result {
  std::vector<Matrix<typename Layer::Scalar>> outputs, state;
};

struct Call {
  Form form;
  Index begin, n;
};

/// A script of calls of random forms and lengths over T tokens (parallel calls kept inside
/// the TTT/Titans mini-batch, simulated on a state of its own).
template <class Layer>
std::vector<Call> script(const Layer& layer, const typename Case<Layer>::Data& data, Rng& rng) {
  std::vector<Call> calls;
  auto state = layer.initial_state();
  for (Index begin = 0; begin < kT;) {
    const Form form = all_forms[uniform_index(rng, 0, 2)];
    Index n = std::min<Index>(uniform_index(rng, 1, 40), kT - begin);
    if (form == Form::parallel) n = std::min(n, Case<Layer>::parallel_limit(layer, state));
    (void)forward(layer, form, data.slice(begin, n), state);
    calls.push_back({form, begin, n});
    begin += n;
  }
  return calls;
}

template <class Layer>
Result<Layer> replay(const Layer& layer, const typename Case<Layer>::Data& data,
                     const std::vector<Call>& calls) {
  Result<Layer> r;
  auto state = layer.initial_state();
  for (const Call& c : calls)
    r.outputs.push_back(forward(layer, c.form, data.slice(c.begin, c.n), state));
  r.state = Case<Layer>::tensors(state);
  return r;
}

template <class Layer>
::testing::AssertionResult same(const Result<Layer>& got, const Result<Layer>& want) {
  if (got.outputs.size() != want.outputs.size())
    return ::testing::AssertionFailure() << "call count";
  for (std::size_t i = 0; i < got.outputs.size(); ++i) {
    if (!identical(got.outputs[i], want.outputs[i])) {
      return ::testing::AssertionFailure() << "outputs of call " << i << " differ";
    }
  }
  if (got.state.size() != want.state.size()) return ::testing::AssertionFailure() << "state size";
  for (std::size_t i = 0; i < got.state.size(); ++i) {
    if (!identical(got.state[i], want.state[i])) {
      return ::testing::AssertionFailure() << "state tensor " << i << " differs";
    }
  }
  return ::testing::AssertionSuccess();
}

template <class Layer>
class Concurrency : public ::testing::Test {};

using Layers = ::testing::Types<LinearAttention<double>, SoftmaxAttention<double>, DeltaNet<double>,
                                TTTLinear<double>, TTTMLP<double>, TitansMemory<double>,
                                DeltaNet<float>, TitansMemory<float>>;
TYPED_TEST_SUITE(Concurrency, Layers);

// kThreads threads share one const layer, each with its own state (threads t and t + 2 also
// share one input buffer), released together by a latch, kRounds times: every result equals
// the same calls run sequentially on this thread, bit for bit.
TYPED_TEST(Concurrency, SharedLayerPerThreadStateIsBitIdentical) {
  using Layer = TypeParam;
  using C = Case<Layer>;
  const Layer layer = C::make(16);
  Rng rng(42);
  const std::vector<typename C::Data> data{C::data(kT, 1, rng), C::data(kT, 1, rng)};
  std::vector<std::vector<Call>> scripts;
  std::vector<Result<Layer>> want;
  for (int t = 0; t < kThreads; ++t) {
    scripts.push_back(script(layer, data[std::size_t(t % 2)], rng));
    want.push_back(replay(layer, data[std::size_t(t % 2)], scripts.back()));
  }
  for (int round = 0; round < kRounds; ++round) {
    std::vector<Result<Layer>> got(kThreads);
    std::vector<std::exception_ptr> errors(kThreads);
    std::latch start(kThreads);
    {
      std::vector<std::jthread> pool;
      for (int t = 0; t < kThreads; ++t) {
        pool.emplace_back([&, t] {
          start.arrive_and_wait();
          try {
            got[std::size_t(t)] = replay(layer, data[std::size_t(t % 2)], scripts[std::size_t(t)]);
          } catch (...) {
            errors[std::size_t(t)] = std::current_exception();
          }
        });
      }
    }
    for (int t = 0; t < kThreads; ++t) {
      SCOPED_TRACE(::testing::Message() << "round " << round << ", thread " << t);
      if (errors[std::size_t(t)]) {
        try {
          std::rethrow_exception(errors[std::size_t(t)]);
        } catch (const std::exception& e) {
          ADD_FAILURE() << "threw: " << e.what();
        }
        continue;
      }
      EXPECT_TRUE(same(got[std::size_t(t)], want[std::size_t(t)]));
    }
  }
}

// MultiHead on 4 worker threads equals MultiHead on 1, bit for bit: 4 heads, a batch of three
// sequences, two consecutive calls per form (the second continues from the first's states).
TYPED_TEST(Concurrency, MultiHeadThreadsAreBitIdentical) {
  using Layer = TypeParam;
  using C = Case<Layer>;
  using Scalar = typename Layer::Scalar;
  constexpr Index H = 4;
  const Layer layer = C::make(64);  // parallel calls of up to 64 tokens
  Rng rng(7);
  const std::vector<Index> lengths{40, 1, 64};
  for (Form form : all_forms) {
    SCOPED_TRACE(to_string(form));
    const MultiHead<Layer> one(layer, H, 1), many(layer, H, 4);
    std::vector<typename MultiHead<Layer>::States> states_one(lengths.size(), one.initial_state());
    auto states_many = states_one;
    for (int call = 0; call < 2; ++call) {
      std::vector<typename C::Data> data;
      for (Index T : lengths)
        data.push_back(C::data(form == Form::parallel ? T / 2 : T, H, rng));
      std::vector<typename Layer::Inputs> seqs;
      for (const auto& d : data)
        seqs.push_back(d.all());
      const auto out_one = forward_batch(one, form, seqs, states_one);
      const auto out_many = forward_batch(many, form, seqs, states_many);
      ASSERT_EQ(out_one.size(), out_many.size());
      for (std::size_t s = 0; s < out_one.size(); ++s) {
        EXPECT_TRUE(identical<Scalar>(out_many[s], out_one[s]))
            << "call " << call << ", sequence " << s;
        for (std::size_t h = 0; h < std::size_t(H); ++h) {
          const auto a = C::tensors(states_many[s][h]), b = C::tensors(states_one[s][h]);
          for (std::size_t i = 0; i < a.size(); ++i) {
            EXPECT_TRUE(identical<Scalar>(a[i], b[i])) << "call " << call << ", sequence " << s
                                                       << ", head " << h << ", state tensor " << i;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace seqmem::test
