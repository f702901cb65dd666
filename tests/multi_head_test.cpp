// MultiHead: heads and sequences of a batch run exactly as each head alone, for any number of
// threads, and a bad head leaves every state unchanged.

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

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

TEST(MultiHead, EqualsHeadsAloneBitForBitForAnyThreadCountAndBlock) {
  Rng rng(11);
  const std::vector<Index> lengths{40, 1, 77, 13, 300};
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
        o.middleCols(h * kDv, kDv) = forward(kLayer, form,
                                             {.q = d.q.middleCols(h * kDk, kDk),
                                              .k = d.k.middleCols(h * kDk, kDk),
                                              .v = d.v.middleCols(h * kDv, kDv),
                                              .log_decay = GateRef<double>(d.g.col(h))},
                                             state);
        want_states.back().push_back(state);
      }
      want.push_back(o);
    }
    // Blocks of 5 and 16 tokens cut the long sequences (in the chunkwise form, whose chunk is
    // 7, both become 112 tokens: multiples of the chunk and of 16, LayerBase::chunk_split, so
    // only the 300 tokens are cut); the automatic block cuts none of these.
    for (auto [threads, block] : {std::pair<Index, Index>{1, 0},
                                  {1, 5},
                                  {1, 16},
                                  {2, 0},
                                  {2, 5},
                                  {3, 16},
                                  {8, 0},
                                  {8, 5}}) {
      SCOPED_TRACE(::testing::Message()
                   << to_string(form) << ", threads " << threads << ", block tokens " << block);
      MultiHead executor(kLayer, kHeads, threads);
      executor.set_block_tokens(block);
      EXPECT_EQ(executor.block_tokens(), block);
      std::vector<MultiHead<LinearAttention<double>>::States> states(data.size(),
                                                                     executor.initial_state());
      for (auto& s : states)
        for (Index h = 0; h < kHeads; ++h)
          s[std::size_t(h)].S.setConstant(0.1 * double(h));
      std::vector<LinearAttention<double>::Inputs> seqs;
      for (const auto& d : data)
        seqs.push_back(d.inputs());
      const auto outs = forward_batch(executor, form, seqs, states);
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
  const auto out = forward(executor, Form::chunkwise, d.inputs(), states);
  EXPECT_EQ(out.rows(), 30);
  EXPECT_EQ(out.cols(), kHeads * kDv);
  auto s1 = kLayer.initial_state();
  const auto head1 = forward(kLayer, Form::chunkwise,
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
  try {
    (void)forward_batch(executor, Form::chunkwise, seqs, states);
    ADD_FAILURE() << "no exception";
  } catch (const seqmem::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("log_decay[5] must be finite and <= 0, got 0.25 "
                                         "[sequence 1, head 2 of 3]"),
              std::string::npos)
        << e.what();
  }
  for (std::size_t s = 0; s < 2; ++s)
    for (std::size_t h = 0; h < std::size_t(kHeads); ++h)
      EXPECT_EQ(states[s][h].S, before[s][h].S);

  data[1].g(5, 2) = 0.0;
  data[1].v.conservativeResize(Eigen::NoChange, kHeads * kDv - 1);  // packed v too narrow
  std::vector<LinearAttention<double>::Inputs> seqs2{data[0].inputs(), data[1].inputs()};
  try {
    (void)forward_batch(executor, Form::recurrent, seqs2, states);
    ADD_FAILURE() << "no exception";
  } catch (const seqmem::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("v (3 heads packed side by side) must be 12x12 (T x "
                                         "heads·value_dim = 3·4), got 12x11"),
              std::string::npos)
        << e.what();
  }
  for (std::size_t s = 0; s < 2; ++s)
    for (std::size_t h = 0; h < std::size_t(kHeads); ++h)
      EXPECT_EQ(states[s][h].S, before[s][h].S);
}

// A call cut into blocks checks each block's values just before it runs: a bad value in a late
// block must still leave every state as it was and throw what checking up front throws (the
// first bad head in sequence-then-head order), whichever thread meets which block first.
TEST(MultiHead, BadValueInALateBlockLeavesAllStatesUnchanged) {
  Rng rng(14);
  using Executor = MultiHead<LinearAttention<double>>;
  for (Form form : {Form::recurrent, Form::chunkwise}) {
    for (Index threads : {1, 2}) {
      for (int bad : {0, 1, 2}) {
        SCOPED_TRACE(::testing::Message()
                     << to_string(form) << ", threads " << threads << ", bad case " << bad);
        std::vector<Packed> data{packed(rng, 300), packed(rng, 40), packed(rng, 260)};
        if (bad == 0) data[0].q(250, 1 * kDk + 2) = std::nan("");  // late block of head 1
        if (bad == 1) data[2].g(259, 0) = 0.5;  // the last token of the last sequence
        if (bad == 2) {  // two: the later sequence's comes first in time, the earlier's counts
          data[1].v(3, 0) = INFINITY;
          data[0].k(299, 2 * kDk) = -INFINITY;
        }
        Executor blocked(kLayer, kHeads, threads);
        blocked.set_block_tokens(16);
        Executor whole(kLayer, kHeads, threads);
        whole.set_block_tokens(Index(1) << 40);
        std::vector<Executor::States> states(data.size(), blocked.initial_state());
        for (auto& s : states)
          for (auto& h : s)
            h.S.setConstant(0.5);
        const auto before = states;
        std::vector<LinearAttention<double>::Inputs> seqs;
        for (const auto& d : data)
          seqs.push_back(d.inputs());
        std::string want, got;
        try {
          (void)forward_batch(whole, form, seqs, states);
        } catch (const seqmem::invalid_argument& e) {
          want = e.what();
        }
        try {
          (void)forward_batch(blocked, form, seqs, states);
        } catch (const seqmem::invalid_argument& e) {
          got = e.what();
        }
        EXPECT_NE(want, "");
        EXPECT_EQ(got, want);
        for (std::size_t s = 0; s < data.size(); ++s)
          for (std::size_t h = 0; h < std::size_t(kHeads); ++h)
            EXPECT_EQ(states[s][h].S, before[s][h].S) << "sequence " << s << ", head " << h;
      }
    }
  }
}

TEST(MultiHead, RejectsBadArguments) {
  EXPECT_THROW(MultiHead(kLayer, 0), seqmem::invalid_argument);
  EXPECT_THROW(MultiHead(kLayer, 2, -1), seqmem::invalid_argument);
  MultiHead executor(kLayer, 2);
  EXPECT_GE(executor.num_threads(), 1);
  EXPECT_THROW(executor.set_block_tokens(-1), seqmem::invalid_argument);
  EXPECT_EQ(executor.block_tokens(), 0);
  std::vector<MultiHead<LinearAttention<double>>::States> states(1);  // wrong head count
  Rng rng(14);
  const Matrix<double> x = uniform<double>(rng, 4, 2 * kDk), v = uniform<double>(rng, 4, 2 * kDv);
  std::vector<LinearAttention<double>::Inputs> seqs{{.q = x, .k = x, .v = v}};
  EXPECT_THROW((void)forward_batch(executor, Form::parallel, seqs, states),
               seqmem::invalid_argument);
}

// One parameter set per head (TTT keeps per-head inner weights and LayerNorm): head h runs
// layers[h] from layers[h]'s initial state, so a head given head 0's parameters would differ.
TEST(MultiHead, PerHeadParameterSets) {
  constexpr Index d = 4, H = 3;
  Rng rng(16);
  std::vector<TTTLinear<double>> layers;
  for (Index h = 0; h < H; ++h) {
    TTTLinear<double>::Parameters p{
        {{uniform<double>(rng, d, d, -0.5, 0.5)}, {uniform<double>(rng, 1, d, -0.1, 0.1)}},
        uniform<double>(rng, 1, d, 0.5, 1.5),
        uniform<double>(rng, 1, d, -0.2, 0.2)};
    layers.emplace_back(TTTLinear<double>::Options{.key_dim = d, .mini_batch = 4}, p);
  }
  const Matrix<double> q = uniform<double>(rng, 9, H * d), k = uniform<double>(rng, 9, H * d),
                       v = uniform<double>(rng, 9, H * d),
                       lr = uniform<double>(rng, 9, H, 0.0, 0.5);
  const MultiHead executor(layers, 2);
  EXPECT_EQ(executor.num_heads(), H);
  for (Form form : {Form::chunkwise, Form::recurrent}) {
    auto states = executor.initial_state();
    const auto out = forward(
        executor, form, {.q = q, .k = k, .v = v, .learning_rate = GateRef<double>(lr)}, states);
    for (Index h = 0; h < H; ++h) {
      SCOPED_TRACE(::testing::Message() << to_string(form) << ", head " << h);
      const auto& layer = layers[std::size_t(h)];
      auto state = layer.initial_state();
      const auto alone = forward(layer, form,
                                 {.q = q.middleCols(h * d, d),
                                  .k = k.middleCols(h * d, d),
                                  .v = v.middleCols(h * d, d),
                                  .learning_rate = GateRef<double>(lr.col(h))},
                                 state);
      EXPECT_EQ(out.middleCols(h * d, d), alone);
      EXPECT_EQ(states[std::size_t(h)].reference.W[0], state.reference.W[0]);
      // Head 0's parameters would give another output.
      if (h > 0) {
        auto other = layers[0].initial_state();
        EXPECT_GT((forward(layers[0], form,
                           {.q = q.middleCols(h * d, d),
                            .k = k.middleCols(h * d, d),
                            .v = v.middleCols(h * d, d),
                            .learning_rate = GateRef<double>(lr.col(h))},
                           other) -
                   alone)
                      .cwiseAbs()
                      .maxCoeff(),
                  1e-3);
      }
    }
  }
  // Validation names the head: a bad state in head 2 (of its own layer's shapes).
  auto states = executor.initial_state();
  states[2].reference.W[0].resize(d + 1, d);
  try {
    (void)forward(executor, Form::chunkwise,
                  {.q = q, .k = k, .v = v, .learning_rate = GateRef<double>(lr)}, states);
    ADD_FAILURE() << "no exception";
  } catch (const seqmem::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("[sequence 0, head 2 of 3]"), std::string::npos)
        << e.what();
  }
  // Heads of different widths cannot be packed side by side.
  layers.emplace_back(TTTLinear<double>::Options{.key_dim = d + 1});
  try {
    (void)MultiHead<TTTLinear<double>>(layers);
    ADD_FAILURE() << "no exception";
  } catch (const seqmem::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("head 3 has key_dim"), std::string::npos) << e.what();
  }
  EXPECT_THROW(MultiHead<TTTLinear<double>>(std::vector<TTTLinear<double>>{}),
               seqmem::invalid_argument);
}

TEST(MultiHead, SoftmaxAttentionHeads) {
  SoftmaxAttention<float> layer({.key_dim = 4, .value_dim = 4, .window = 6});
  MultiHead executor(layer, 2, 2);
  Rng rng(15);
  const Matrix<float> x = uniform<float>(rng, 20, 8);
  auto states = executor.initial_state();
  const auto out = forward(executor, Form::chunkwise, {.q = x, .k = x, .v = x}, states);
  auto s0 = layer.initial_state();
  const auto head0 = forward(layer, Form::chunkwise,
                             {.q = x.leftCols(4), .k = x.leftCols(4), .v = x.leftCols(4)}, s0);
  EXPECT_EQ(out.leftCols(4), head0);
  EXPECT_EQ(states[0].cached(), 5);
}

// States where a model keeps them (one per sequence, not side by side) and outputs written
// into the caller's views (here the column blocks of one wide matrix).
TEST(MultiHead, StatesWhereTheModelKeepsThemAndOutputViews) {
  Rng rng(16);
  const std::vector<Packed> data{packed(rng, 9), packed(rng, 70)};
  MultiHead executor(kLayer, kHeads, 2);
  std::vector<MultiHead<LinearAttention<double>>::States> side_by_side(2, executor.initial_state());
  std::vector<LinearAttention<double>::Inputs> seqs{data[0].inputs(), data[1].inputs()};
  const auto want = forward_batch(executor, Form::chunkwise, seqs, side_by_side);

  struct Model {  // what a model holds per sequence
    MultiHead<LinearAttention<double>>::States states;
    Matrix<double> out;
  };
  std::vector<std::unique_ptr<Model>> models;
  for (const Packed& d : data) {
    models.push_back(std::make_unique<Model>(
        Model{executor.initial_state(), Matrix<double>::Zero(d.q.rows(), 2 * kHeads * kDv)}));
  }
  std::vector<MultiHead<LinearAttention<double>>::States*> states{&models[0]->states,
                                                                  &models[1]->states};
  std::vector<MatrixRef<double>> outs{models[0]->out.rightCols(kHeads * kDv),
                                      models[1]->out.rightCols(kHeads * kDv)};
  forward_batch(executor, Form::chunkwise, seqs, states, outs);
  for (std::size_t s = 0; s < 2; ++s) {
    EXPECT_EQ(models[s]->out.rightCols(kHeads * kDv), want[s]);
    EXPECT_TRUE(models[s]->out.leftCols(kHeads * kDv).isZero(0.0));
    for (std::size_t h = 0; h < std::size_t(kHeads); ++h)
      EXPECT_EQ(models[s]->states[h].S, side_by_side[s][h].S);
  }

  Matrix<double> one(data[0].q.rows(), kHeads * kDv);
  auto fresh = executor.initial_state();
  forward(executor, Form::chunkwise, data[0].inputs(), fresh, one);
  EXPECT_EQ(one, want[0]);

  Matrix<double> narrow(data[0].q.rows(), kHeads * kDv - 1);
  EXPECT_THROW(forward(executor, Form::chunkwise, data[0].inputs(), fresh, narrow),
               seqmem::invalid_argument);
}

// Inputs built from expressions (a scaled gate, a column-major packed gate) and then copied
// into a container, as a user batching sequences would: the copies must stay valid after the
// expressions' temporaries are gone (an Eigen::Ref copy would dangle; ASan runs this test).
TEST(MultiHead, CopiedInputsOfExpressionsStayValid) {
  Rng rng(17);
  const std::vector<Packed> data{packed(rng, 33), packed(rng, 5)};
  std::vector<LinearAttention<double>::Inputs> seqs;
  for (const Packed& d : data) {
    const Eigen::MatrixXd column_major = d.g;  // a column-major T×H gate
    const LinearAttention<double>::Inputs in{
        .q = d.q, .k = d.k, .v = d.v, .log_decay = GateRef<double>(column_major * 1.0)};
    seqs.push_back(in);
  }  // the temporaries and the column-major matrix are gone here
  MultiHead executor(kLayer, kHeads, 2);
  std::vector<MultiHead<LinearAttention<double>>::States> states(2, executor.initial_state());
  const auto got = forward_batch(executor, Form::chunkwise, seqs, states);
  std::vector<LinearAttention<double>::Inputs> plain{data[0].inputs(), data[1].inputs()};
  std::vector<MultiHead<LinearAttention<double>>::States> plain_states(2, executor.initial_state());
  const auto want = forward_batch(executor, Form::chunkwise, plain, plain_states);
  for (std::size_t s = 0; s < 2; ++s)
    EXPECT_EQ(got[s], want[s]);

  // Views that can bind without a copy do so; only expressions own a copy.
  EXPECT_FALSE(seqs[0].q.owns_copy());
  EXPECT_TRUE(seqs[0].log_decay->owns_copy());
  EXPECT_FALSE(plain[0].log_decay->owns_copy());
  const Eigen::MatrixXd column_major = data[0].g;
  EXPECT_FALSE(GateRef<double>(column_major).owns_copy());
  EXPECT_TRUE(InputRef<double>(column_major).owns_copy());  // rows must be contiguous
}

}  // namespace
}  // namespace seqmem::test
