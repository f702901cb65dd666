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
#include <type_traits>
#include <vector>

#include "layer_cases.hpp"
#include "test_util.hpp"

namespace seqmem::test {
namespace {

constexpr Index kDim = 8;
constexpr Index kT = 200;
constexpr int kThreads = 4;
constexpr int kRounds = 3;

/// The layers under test, on small shapes (inputs, state parts and parallel limits come from
/// layer_cases.hpp).
template <class Layer>
Layer make_layer(Index mini_batch) {
  using Scalar = typename Layer::Scalar;
  if constexpr (std::is_same_v<Layer, LinearAttention<Scalar>>) {
    return Layer({.key_dim = kDim, .value_dim = kDim, .normalize = true, .chunk_size = 16});
  } else if constexpr (std::is_same_v<Layer, SoftmaxAttention<Scalar>>) {
    return Layer({.key_dim = kDim, .value_dim = kDim, .window = 24, .chunk_size = 16});
  } else if constexpr (std::is_same_v<Layer, DeltaNet<Scalar>>) {
    return Layer({.key_dim = kDim, .value_dim = kDim, .chunk_size = 16});
  } else if constexpr (std::is_same_v<Layer, TitansMemory<Scalar>>) {
    return Layer({.key_dim = kDim,
                  .value_dim = kDim,
                  .depth = 2,
                  .expansion = 2,
                  .bias = true,
                  .mini_batch = mini_batch});
  } else {  // TTT-Linear, TTT-MLP
    return Layer({.key_dim = kDim, .mini_batch = mini_batch, .expansion = 2});
  }
}

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
  r.state = Case<Layer>::parts(state);
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
  const Layer layer = make_layer<Layer>(16);
  Rng rng(42);
  const std::vector<typename C::Data> data{C::data(layer, kT, 1, rng), C::data(layer, kT, 1, rng)};
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
  const Layer layer = make_layer<Layer>(64);  // parallel calls of up to 64 tokens
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
        data.push_back(C::data(layer, form == Form::parallel ? T / 2 : T, H, rng));
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
          const auto a = C::parts(states_many[s][h]), b = C::parts(states_one[s][h]);
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
