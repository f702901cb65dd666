#pragma once

// The conformance suite every layer runs (typed over float and double).
//
// A layer test file specializes `LayerCase<Layer>` (see linear_attention_test.cpp) with:
//   using Variant;                                   a named configuration of the layer
//   static std::vector<Variant> variants();          (Variant has a `std::string name`)
//   static Layer make(const Variant&, Index chunk);  the layer with that chunk size
//   struct Data { Inputs slice(Index begin, Index n) const; Inputs whole() const; };
//                                                    (whole(): every tensor as it is, even
//                                                    when a bad-input test made it the wrong shape)
//   static Data data(const Variant&, const Layer&, Index T, Rng&);     random inputs
//   static void randomize(const Layer&, State&, Rng&);                 a nonzero state
//   static std::vector<Matrix<Scalar>> tensors(const State&);          state to compare
//   static bool defined(const Layer&, Form, const State&, Index T);    form allowed here?
//   static std::vector<BadInput<Data>> bad_inputs();  bad calls and a word of their message
//   static std::vector<BadOption<Layer>> bad_options();
// and instantiates: INSTANTIATE_TYPED_TEST_SUITE_P(Name, Conformance, Types).

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "test_util.hpp"

namespace seqmem::test {

template <class Layer>
struct LayerCase;

/// A call made bad by `mutate`; the thrown message must contain `expect`.
template <class Data>
struct BadInput {
  std::string what;
  std::function<void(Data&)> mutate;
  std::string expect;
};

/// Options that the constructor must refuse with a message containing `expect`.
template <class Layer>
struct BadOption {
  std::string what;
  std::function<Layer()> make;
  std::string expect;
};

template <class Layer>
class Conformance : public ::testing::Test {
 protected:
  using CaseT = LayerCase<Layer>;
  using ScalarT = typename Layer::Scalar;
  using State = typename Layer::State;
  using Data = typename CaseT::Data;

  static constexpr double kTol = cross_form_tolerance<ScalarT>();

  static State start_state(const Layer& layer, bool random, Rng& rng) {
    State state = layer.initial_state();
    if (random) CaseT::randomize(layer, state, rng);
    return state;
  }

  /// Runs `form` on the call and returns the output; the state is updated.
  static Matrix<ScalarT> run(const Layer& layer, Form form, const Data& data, Index begin, Index n,
                             State& state) {
    return forward(layer, form, data.slice(begin, n), state);
  }

  static ::testing::AssertionResult same_state(const State& got, const State& want, double tol) {
    const auto a = CaseT::tensors(got), b = CaseT::tensors(want);
    if (a.size() != b.size()) return ::testing::AssertionFailure() << "state tensor count";
    for (std::size_t i = 0; i < a.size(); ++i) {
      auto r = near(a[i], b[i], tol);
      if (!r) return r << " (state tensor " << i << ")";
    }
    return ::testing::AssertionSuccess();
  }

  static bool all_finite(const Matrix<ScalarT>& m) { return m.allFinite(); }
};

TYPED_TEST_SUITE_P(Conformance);

// All forms agree with the recurrent definition, for every variant, length, chunk size
// (dividing T or not, 1, ≥ T) and with zero or random initial state.
TYPED_TEST_P(Conformance, FormsAgree) {
  using Case = typename TestFixture::CaseT;
  Rng rng(1234);
  for (const auto& variant : Case::variants()) {
    for (Index T : {1, 2, 17, 64, 129, 300}) {
      for (bool random_state : {false, true}) {
        SCOPED_TRACE(::testing::Message() << "variant " << variant.name << ", T " << T
                                          << (random_state ? ", random state" : ", zero state"));
        const auto base = Case::make(variant, 64);
        const auto data = Case::data(variant, base, T, rng);
        const auto init = TestFixture::start_state(base, random_state, rng);
        auto ref_state = init;
        const auto ref = TestFixture::run(base, Form::recurrent, data, 0, T, ref_state);
        ASSERT_TRUE(TestFixture::all_finite(ref));
        if (Case::defined(base, Form::parallel, init, T)) {
          auto state = init;
          const auto out = TestFixture::run(base, Form::parallel, data, 0, T, state);
          EXPECT_TRUE(near(out, ref, TestFixture::kTol)) << "parallel output";
          EXPECT_TRUE(TestFixture::same_state(state, ref_state, TestFixture::kTol))
              << "parallel state";
        }
        for (Index chunk : {Index{1}, Index{3}, Index{16}, Index{64}, T + 5}) {
          SCOPED_TRACE(::testing::Message() << "chunk " << chunk);
          const auto layer = Case::make(variant, chunk);
          auto state = init;
          const auto out = TestFixture::run(layer, Form::chunkwise, data, 0, T, state);
          EXPECT_TRUE(near(out, ref, TestFixture::kTol)) << "chunkwise output";
          EXPECT_TRUE(TestFixture::same_state(state, ref_state, TestFixture::kTol))
              << "chunkwise state";
        }
      }
    }
  }
}

// A sequence split at random points into 2–5 calls of random forms gives the outputs and
// final state of one recurrent call.
TYPED_TEST_P(Conformance, RandomSplitsAgree) {
  using Case = typename TestFixture::CaseT;
  using Scalar = typename TestFixture::ScalarT;
  for (const auto& variant : Case::variants()) {
    for (int trial = 0; trial < 12; ++trial) {
      const std::uint64_t seed = 1000u + static_cast<std::uint64_t>(trial);
      Rng rng(seed);
      const Index T = uniform_index(rng, 5, 140);
      const Index chunk = uniform_index(rng, 1, 40);
      SCOPED_TRACE(::testing::Message() << "variant " << variant.name << ", seed " << seed << ", T "
                                        << T << ", chunk " << chunk);
      const auto layer = Case::make(variant, chunk);
      const auto data = Case::data(variant, layer, T, rng);
      const auto init = TestFixture::start_state(layer, trial % 2 == 1, rng);
      auto ref_state = init;
      const auto ref = TestFixture::run(layer, Form::recurrent, data, 0, T, ref_state);

      const Index calls = uniform_index(rng, 2, 5);
      std::vector<Index> cuts{0, T};
      for (Index c = 1; c < calls; ++c)
        cuts.push_back(uniform_index(rng, 0, T));
      std::sort(cuts.begin(), cuts.end());
      auto state = init;
      Matrix<Scalar> out(T, ref.cols());
      std::string forms;
      for (std::size_t c = 0; c + 1 < cuts.size(); ++c) {
        const Index begin = cuts[c], n = cuts[c + 1] - begin;
        Form form = all_forms[uniform_index(rng, 0, 2)];
        if (!Case::defined(layer, form, state, n)) form = Form::chunkwise;
        forms += std::string(to_string(form)) + "(" + std::to_string(n) + ") ";
        out.middleRows(begin, n) = TestFixture::run(layer, form, data, begin, n, state);
      }
      SCOPED_TRACE("calls: " + forms);
      EXPECT_TRUE(near(out, ref, TestFixture::kTol)) << "outputs";
      EXPECT_TRUE(TestFixture::same_state(state, ref_state, TestFixture::kTol)) << "state";
    }
  }
}

// Where the layer says a call may be cut exactly (`exact_split`), calls cut there at random
// give the outputs and final state of the whole call to the bit; the pieces are taken with
// `token_slice`. MultiHead cuts long calls there (multi_head.hpp).
TYPED_TEST_P(Conformance, ExactSplitsChangeNoBit) {
  using Case = typename TestFixture::CaseT;
  using Scalar = typename TestFixture::ScalarT;
  for (const auto& variant : Case::variants()) {
    for (Form form : all_forms) {
      for (int trial = 0; trial < 6; ++trial) {
        const std::uint64_t seed = 2000u + static_cast<std::uint64_t>(trial);
        Rng rng(seed);
        const Index chunk = uniform_index(rng, 1, 40);
        const auto layer = Case::make(variant, chunk);
        const Index split = layer.exact_split(form);
        if (split == 0) continue;
        const Index T = uniform_index(rng, 1, std::max<Index>(140, 5 * split + split - 1));
        SCOPED_TRACE(::testing::Message()
                     << "variant " << variant.name << ", " << to_string(form) << ", seed " << seed
                     << ", T " << T << ", chunk " << chunk << ", split " << split);
        const auto data = Case::data(variant, layer, T, rng);
        const auto init = TestFixture::start_state(layer, trial % 2 == 1, rng);
        if (!Case::defined(layer, form, init, T)) continue;
        auto whole_state = init;
        const auto whole = forward(layer, form, data.whole(), whole_state);

        std::vector<Index> cuts{0, T};
        for (Index c = uniform_index(rng, 1, 4); c > 0; --c)
          cuts.push_back(split * uniform_index(rng, 0, T / split));
        std::sort(cuts.begin(), cuts.end());
        auto state = init;
        Matrix<Scalar> out(T, whole.cols());
        ::testing::Message calls;
        for (std::size_t c = 0; c + 1 < cuts.size(); ++c) {
          const Index begin = cuts[c], n = cuts[c + 1] - begin;
          calls << " " << n;
          out.middleRows(begin, n) =
              forward(layer, form, layer.token_slice(data.whole(), begin, n), state);
        }
        SCOPED_TRACE(calls << " tokens");
        EXPECT_TRUE(near(out, whole, 0.0)) << "outputs";
        EXPECT_TRUE(TestFixture::same_state(state, whole_state, 0.0)) << "state";
        for (auto [begin, n] : {std::pair<Index, Index>{T, 1}, {-1, 1}, {0, T + 1}, {1, -1}}) {
          try {
            (void)layer.token_slice(data.whole(), begin, n);
            ADD_FAILURE() << "token_slice(" << begin << ", " << n << "): no exception";
          } catch (const seqmem::invalid_argument& e) {
            EXPECT_NE(std::string(e.what()).find("must lie inside the call's"), std::string::npos)
                << e.what();
          }
        }
      }
    }
  }
}

// Bad calls throw seqmem::invalid_argument naming the argument and leave the state as it was.
TYPED_TEST_P(Conformance, BadInputThrowsAndKeepsState) {
  using Case = typename TestFixture::CaseT;
  Rng rng(99);
  const auto variant = Case::variants().front();
  const auto layer = Case::make(variant, 4);
  for (const auto& bad : Case::bad_inputs()) {
    for (Form form : all_forms) {
      SCOPED_TRACE(::testing::Message() << bad.what << ", " << to_string(form));
      auto data = Case::data(variant, layer, 6, rng);
      bad.mutate(data);
      auto state = TestFixture::start_state(layer, true, rng);
      const auto before = state;
      try {
        (void)forward(layer, form, data.whole(), state);
        ADD_FAILURE() << "no exception";
      } catch (const seqmem::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find(bad.expect), std::string::npos)
            << "message: " << e.what() << "\nexpected to contain: " << bad.expect;
      }
      EXPECT_TRUE(TestFixture::same_state(state, before, 0.0)) << "state changed";
    }
  }
  for (const auto& bad : Case::bad_options()) {
    SCOPED_TRACE(bad.what);
    try {
      (void)bad.make();
      ADD_FAILURE() << "no exception";
    } catch (const seqmem::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(bad.expect), std::string::npos)
          << "message: " << e.what() << "\nexpected to contain: " << bad.expect;
    }
  }
}

// An empty call is a no-op in every form.
TYPED_TEST_P(Conformance, EmptyCallKeepsState) {
  using Case = typename TestFixture::CaseT;
  Rng rng(5);
  const auto variant = Case::variants().front();
  const auto layer = Case::make(variant, 4);
  const auto data = Case::data(variant, layer, 3, rng);
  for (Form form : all_forms) {
    auto state = TestFixture::start_state(layer, true, rng);
    const auto before = state;
    const auto out = forward(layer, form, data.slice(0, 0), state);
    EXPECT_EQ(out.rows(), 0);
    EXPECT_TRUE(TestFixture::same_state(state, before, 0.0)) << to_string(form);
  }
}

REGISTER_TYPED_TEST_SUITE_P(Conformance, FormsAgree, RandomSplitsAgree, ExactSplitsChangeNoBit,
                            BadInputThrowsAndKeepsState, EmptyCallKeepsState);

}  // namespace seqmem::test
