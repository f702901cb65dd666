// MultiHead: heads and sequences of a batch run exactly as each head alone, for any number of
// threads, and a bad head leaves every state unchanged.

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace seqmem::test {
namespace {

constexpr Index kHeads = 3, kDk = 5, kDv = 4;

struct Packed {
  Matrix<double> q, k, v, g;
  LinearAttention<double>::Inputs inputs() const {
    return {.q = q, .k = k, .v = v, .log_decay = GateRef<double>(g)};
  }
};

Packed packed(Rng& rng, Index T) {
  return {uniform<double>(rng, T, kHeads * kDk), uniform<double>(rng, T, kHeads * kDk),
          uniform<double>(rng, T, kHeads * kDv), uniform<double>(rng, T, kHeads, -0.3, 0.0)};
}

const LinearAttention<double> kLayer({.key_dim = kDk, .value_dim = kDv, .chunk_size = 7});

TEST(MultiHead, EqualsHeadsAloneBitForBitForAnyThreadCount) {
  Rng rng(11);
  const std::vector<Index> lengths{40, 1, 77, 13};
  std::vector<Packed> data;
  for (Index T : lengths)
    data.push_back(packed(rng, T));
  for (Form form : all_forms) {
    // Reference: every (sequence, head) alone, on the same column slices.
    std::vector<Matrix<double>> want;
    std::vector<std::vector<LinearAttention<double>::State>> want_states;
    for (const auto& d : data) {
      Matrix<double> o(d.q.rows(), kHeads * kDv);
      want_states.emplace_back();
      for (Index h = 0; h < kHeads; ++h) {
        auto state = kLayer.initial_state();
        state.S.setConstant(0.1 * double(h));
        o.middleCols(h * kDv, kDv) = kLayer.forward(form,
                                                    {.q = d.q.middleCols(h * kDk, kDk),
                                                     .k = d.k.middleCols(h * kDk, kDk),
                                                     .v = d.v.middleCols(h * kDv, kDv),
                                                     .log_decay = GateRef<double>(d.g.col(h))},
                                                    state);
        want_states.back().push_back(state);
      }
      want.push_back(o);
    }
    for (Index threads : {1, 2, 3, 8}) {
      SCOPED_TRACE(::testing::Message() << to_string(form) << ", threads " << threads);
      MultiHead executor(kLayer, kHeads, threads);
      std::vector<MultiHead<LinearAttention<double>>::States> states(data.size(),
                                                                     executor.initial_state());
      for (auto& s : states)
        for (Index h = 0; h < kHeads; ++h)
          s[std::size_t(h)].S.setConstant(0.1 * double(h));
      std::vector<LinearAttention<double>::Inputs> seqs;
      for (const auto& d : data)
        seqs.push_back(d.inputs());
      const auto outs = executor.forward_batch(form, seqs, states);
      for (std::size_t s = 0; s < data.size(); ++s) {
        EXPECT_EQ(outs[s], want[s]) << "sequence " << s;
        for (std::size_t h = 0; h < std::size_t(kHeads); ++h)
          EXPECT_EQ(states[s][h].S, want_states[s][h].S) << "sequence " << s << " head " << h;
      }
    }
  }
}

TEST(MultiHead, OneSequenceOverload) {
  Rng rng(12);
  const auto d = packed(rng, 30);
  MultiHead executor(kLayer, kHeads, 2);
  auto states = executor.initial_state();
  const auto out = executor.forward(Form::chunkwise, d.inputs(), states);
  EXPECT_EQ(out.rows(), 30);
  EXPECT_EQ(out.cols(), kHeads * kDv);
  auto s1 = kLayer.initial_state();
  const auto head1 = kLayer.forward(Form::chunkwise,
                                    {.q = d.q.middleCols(kDk, kDk),
                                     .k = d.k.middleCols(kDk, kDk),
                                     .v = d.v.middleCols(kDv, kDv),
                                     .log_decay = GateRef<double>(d.g.col(1))},
                                    s1);
  EXPECT_EQ(out.middleCols(kDv, kDv), head1);
}

TEST(MultiHead, BadInputAnywhereLeavesAllStatesUnchanged) {
  Rng rng(13);
  std::vector<Packed> data{packed(rng, 10), packed(rng, 12)};
  data[1].g(5, 2) = 0.25;  // sequence 1, head 2: a positive log_decay
  MultiHead executor(kLayer, kHeads, 2);
  std::vector<MultiHead<LinearAttention<double>>::States> states(2, executor.initial_state());
  for (auto& s : states)
    for (auto& h : s)
      h.S.setConstant(0.5);
  const auto before = states;
  std::vector<LinearAttention<double>::Inputs> seqs{data[0].inputs(), data[1].inputs()};
  EXPECT_THROW((void)executor.forward_batch(Form::chunkwise, seqs, states),
               seqmem::invalid_argument);
  for (std::size_t s = 0; s < 2; ++s)
    for (std::size_t h = 0; h < std::size_t(kHeads); ++h)
      EXPECT_EQ(states[s][h].S, before[s][h].S);

  data[1].g(5, 2) = 0.0;
  data[1].v.conservativeResize(Eigen::NoChange, kHeads * kDv - 1);  // packed v too narrow
  std::vector<LinearAttention<double>::Inputs> seqs2{data[0].inputs(), data[1].inputs()};
  try {
    (void)executor.forward_batch(Form::recurrent, seqs2, states);
    ADD_FAILURE() << "no exception";
  } catch (const seqmem::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("v (packed) must be 12x12, got 12x11"), std::string::npos)
        << e.what();
  }
  for (std::size_t s = 0; s < 2; ++s)
    for (std::size_t h = 0; h < std::size_t(kHeads); ++h)
      EXPECT_EQ(states[s][h].S, before[s][h].S);
}

TEST(MultiHead, RejectsBadArguments) {
  EXPECT_THROW(MultiHead(kLayer, 0), seqmem::invalid_argument);
  EXPECT_THROW(MultiHead(kLayer, 2, -1), seqmem::invalid_argument);
  MultiHead executor(kLayer, 2);
  EXPECT_GE(executor.num_threads(), 1);
  std::vector<MultiHead<LinearAttention<double>>::States> states(1);  // wrong head count
  Rng rng(14);
  const Matrix<double> x = uniform<double>(rng, 4, 2 * kDk), v = uniform<double>(rng, 4, 2 * kDv);
  std::vector<LinearAttention<double>::Inputs> seqs{{.q = x, .k = x, .v = v}};
  EXPECT_THROW((void)executor.forward_batch(Form::parallel, seqs, states),
               seqmem::invalid_argument);
}

TEST(MultiHead, SoftmaxAttentionHeads) {
  SoftmaxAttention<float> layer({.key_dim = 4, .value_dim = 4, .window = 6});
  MultiHead executor(layer, 2, 2);
  Rng rng(15);
  const Matrix<float> x = uniform<float>(rng, 20, 8);
  auto states = executor.initial_state();
  const auto out = executor.forward(Form::chunkwise, {.q = x, .k = x, .v = x}, states);
  auto s0 = layer.initial_state();
  const auto head0 = layer.forward(
      Form::chunkwise, {.q = x.leftCols(4), .k = x.leftCols(4), .v = x.leftCols(4)}, s0);
  EXPECT_EQ(out.leftCols(4), head0);
  EXPECT_EQ(states[0].cached(), 5);
}

}  // namespace
}  // namespace seqmem::test
