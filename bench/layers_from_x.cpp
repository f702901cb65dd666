/// @file
/// Benchmarks of the layers from x (include/seqmem/models/) at hidden size D = 1024, float,
/// one thread, with their time split into projections, memory and the rest. Part of
/// layers_bench: `--suite=layers` runs only these; `full` and `quick` run them too.
///
/// Cases (weights: a random checkpoint, bench/random_checkpoint.hpp, built from the layer's
/// own `tensor_specs(config)` and loaded through its checkpoint constructor):
///   `BM_from_x/<layer>/chunkwise/T:4096/D:1024`  prefill: one chunkwise call of 4096 tokens
///                                                from the initial state (allocating the
///                                                state is timed: part of a real call)
///   `BM_from_x/<layer>/decode/ctx:4096/D:1024`   decode: 16 recurrent calls of one token,
///                                                from the state after a 4096-token chunkwise
///                                                prefill (restored before every round, not
///                                                timed)
///
/// The share split. Every timed round runs three things, each timed on its own (CPU time of
/// the thread, as the one-head cases of layers_bench: on a shared machine wall time also
/// counts the time other processes hold the core), in an order that rotates from round to round (so
/// that none always runs first, on a cold cache, or last):
///   layer        the whole layer's forward, into a preallocated output,
///   projections  the layer's linear maps alone: one pieces::Linear for every 2-D
///                `*proj.weight` tensor of `tensor_specs(config)`, applied to a random
///                `T×in` input at the same shapes as in the layer (the same GEMMs; in decode
///                the same GEMVs),
///   memory       the layer's memory alone over its heads at the same shapes (seqmem::MultiHead
///                on one thread, random inputs in the gates' ranges), from the initial state
///                (prefill) or from a 4096-token state (decode).
/// rest = layer − projections − memory, from each part's fastest round (on a loaded machine
/// other processes only add time, and medians of a few rounds left a rest of ±10 % of noise;
/// every part gets the same number of rounds, interleaved, so none is favoured): short
/// convolutions, activations, gates, norms, input checks, copies and allocations (the layer's
/// glue).
///
/// Counters (each part's fastest round; a time per token is the round's time / its tokens):
///   tokens/s, us/token                     the layer
///   proj_us/token, memory_us/token, rest_us/token
///   share_proj, share_memory, share_rest   fractions of the layer's time (sum 1)
///
/// Shapes (the peers' usual ones at hidden_size 1024):
///   gated_deltanet     fla GatedDeltaNet defaults (hidden 2048, head_dim 256, 6 heads,
///                      expand_v 2) with head_dim scaled to 128: 6 heads, q/k 6·128 = 768 =
///                      0.75·D and v 6·256 = 1536 = 1.5·D, the defaults' ratios to hidden.
///   gated_deltanet_h4  the same with 4 heads (q/k 512, v 1024): the other usual choice at
///                      D = 1024 (value width = D).
///   deltanet           fla DeltaNet defaults at hidden 1024 (its default hidden size):
///                      expand_k = expand_v = 1 with 8 heads of 128 (fla's default is 4 heads).
///   attention          fla Attention: 8 query heads of 128 over 2 KV heads (GQA), no window.
///   mamba2             fla Mamba2 defaults at hidden 1024: expand 2, head_dim 64 (32 heads),
///                      state_size 128, n_groups 1 (memory alone: per head, q/k as views of
///                      the group's columns, as the layer does).
///   ttt_linear/ttt_mlp ttt-lm TTTLinear / TTTMLP: 16 heads of 64, mini_batch 16.
///   titans             seqmem's TitansConfig defaults (already D = 1024): 8 heads of 128,
///                      depth 2, expansion 4, mini_batch 16.
///
/// Adding a layer: a traits struct like `GatedDeltaNetX` below (the model, its configuration,
/// its memory alone) and ONE line in `from_x_table()`. A memory not used yet needs an inputs
/// struct like `DeltaNetInputs`.

#include "layers_from_x.hpp"

#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <ctime>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <seqmem/models/attention.hpp>
#include <seqmem/models/deltanet.hpp>
#include <seqmem/models/gated_deltanet.hpp>
#include <seqmem/models/mamba2.hpp>
#include <seqmem/models/titans.hpp>
#include <seqmem/models/ttt.hpp>
#include <seqmem/multi_head.hpp>
#include <seqmem/pieces/linear.hpp>

#include "random_checkpoint.hpp"

namespace seqmem::bench {
namespace {

using Rng = std::mt19937_64;

constexpr std::uint64_t kSeed = 0x5e9e3;
constexpr Index kHidden = 1024;
constexpr Index kPrefill = 4096;     // prefill tokens, and the decode context
constexpr Index kDecodeSteps = 16;   // one-token calls per decode round
constexpr Index kPrefillRounds = 9;  // timed rounds (each runs all three parts)
constexpr Index kDecodeRounds = 40;

template <class Scalar>
Matrix<Scalar> normal(Rng& rng, Index rows, Index cols, double stddev) {
  std::normal_distribution<double> dist(0.0, stddev);
  Matrix<Scalar> m(rows, cols);
  for (Index i = 0; i < m.size(); ++i)
    m.data()[i] = static_cast<Scalar>(dist(rng));
  return m;
}

template <class Scalar>
Matrix<Scalar> uniform(Rng& rng, Index rows, Index cols, double lo, double hi) {
  std::uniform_real_distribution<double> dist(lo, hi);
  Matrix<Scalar> m(rows, cols);
  for (Index i = 0; i < m.size(); ++i)
    m.data()[i] = static_cast<Scalar>(dist(rng));
  return m;
}

// ---------------------------------------------------------------------------------------------
// The memory alone: a memory over `heads` heads (MultiHead, one thread) on random inputs.
// ---------------------------------------------------------------------------------------------

/// Random packed inputs of (gated) DeltaNet: q, k `T×(H·dk)` (k L2-normalized per head),
/// v `T×(H·dv)`, β ∈ (0, 1) and g ∈ [−0.1, −0.001] `T×H`.
template <class Scalar>
struct DeltaNetInputs {
  Matrix<Scalar> q, k, v, beta, log_decay;
  bool gated = false;

  DeltaNetInputs(Index T, Index heads, const typename DeltaNet<Scalar>::Options& o, bool gated_,
                 Rng& rng)
      : q(normal<Scalar>(rng, T, heads * o.key_dim, 1.0)),
        k(normal<Scalar>(rng, T, heads * o.key_dim, 1.0)),
        v(normal<Scalar>(rng, T, heads * o.value_dim, 1.0)),
        beta(uniform<Scalar>(rng, T, heads, 0.0, 1.0)),
        log_decay(uniform<Scalar>(rng, T, heads, -0.1, -0.001)),
        gated(gated_) {
    for (Index c = 0; c < k.cols(); c += o.key_dim)
      k.middleCols(c, o.key_dim).rowwise().normalize();
  }

  /// Rows [begin, begin + n) of every input.
  typename DeltaNet<Scalar>::Inputs rows(Index begin, Index n) const {
    typename DeltaNet<Scalar>::Inputs in{.q = q.middleRows(begin, n),
                                         .k = k.middleRows(begin, n),
                                         .v = v.middleRows(begin, n),
                                         .beta = GateRef<Scalar>(beta.middleRows(begin, n))};
    if (gated) in.log_decay.emplace(log_decay.middleRows(begin, n));
    return in;
  }
};

/// `memory` over `heads` heads on `inputs` (a struct with `rows(begin, n)`).
template <class Memory, class Inputs>
struct MemoryAlone {
  using Scalar = typename Memory::Scalar;
  using States = typename MultiHead<Memory>::States;
  MultiHead<Memory> heads;
  Inputs inputs;

  States initial_state() const { return heads.initial_state(); }
  Index width() const { return heads.num_heads() * heads.layer().output_dim(); }
  /// Input rows [begin, begin + n), continuing from `states`, into `out` (`n×width()`).
  void forward(Form form, Index begin, Index n, States& states, MatrixRef<Scalar> out) const {
    heads.forward(form, inputs.rows(begin, n), states, out);
  }
};

template <class Memory, class Inputs>
MemoryAlone<Memory, Inputs> memory_alone(Memory memory, Index heads, Inputs inputs) {
  return {MultiHead<Memory>(std::move(memory), heads, 1), std::move(inputs)};
}

// ---------------------------------------------------------------------------------------------
// Layer traits: `Model`, `static Config config()`, and `static auto memory(const Model&,
// Index tokens, Rng&)`: the memory alone at the layer's shapes on `tokens` random rows.
// ---------------------------------------------------------------------------------------------

template <class Scalar, Index Heads>
struct GatedDeltaNetX {
  using Model = models::GatedDeltaNet<Scalar>;
  static models::GatedDeltaNetConfig config() {
    return {.hidden_size = kHidden, .expand_v = 2, .head_dim = 128, .num_heads = Heads};
  }
  static auto memory(const Model& layer, Index tokens, Rng& rng) {
    const typename DeltaNet<Scalar>::Options o{.key_dim = layer.config().head_dim,
                                               .value_dim = layer.value_dim(),
                                               .chunk_size = layer.config().chunk_size,
                                               .qk_l2norm = true};
    const Index heads = layer.config().num_v_heads;
    return memory_alone(DeltaNet<Scalar>(o), heads,
                        DeltaNetInputs<Scalar>(tokens, heads, o, /*gated=*/true, rng));
  }
};

template <class Scalar>
struct DeltaNetX {
  using Model = models::DeltaNetLayer<Scalar>;
  static models::DeltaNetConfig config() { return {.hidden_size = kHidden, .num_heads = 8}; }
  static auto memory(const Model& layer, Index tokens, Rng& rng) {
    const typename DeltaNet<Scalar>::Options o{.key_dim = layer.key_dim(),
                                               .value_dim = layer.value_dim(),
                                               .chunk_size = layer.config().chunk_size};
    const Index heads = layer.config().num_heads;
    return memory_alone(DeltaNet<Scalar>(o), heads,
                        DeltaNetInputs<Scalar>(tokens, heads, o, /*gated=*/false, rng));
  }
};

/// Random packed inputs of softmax attention with grouped query heads: q `T×(HK·G·d)`,
/// k, v `T×(HK·d)`.
template <class Scalar>
struct SoftmaxInputs {
  Matrix<Scalar> q, k, v;

  SoftmaxInputs(Index T, Index kv_heads, const typename SoftmaxAttention<Scalar>::Options& o,
                Rng& rng)
      : q(normal<Scalar>(rng, T, kv_heads * o.query_heads * o.key_dim, 1.0)),
        k(normal<Scalar>(rng, T, kv_heads * o.key_dim, 1.0)),
        v(normal<Scalar>(rng, T, kv_heads * o.value_dim, 1.0)) {}

  typename SoftmaxAttention<Scalar>::Inputs rows(Index begin, Index n) const {
    return {.q = q.middleRows(begin, n), .k = k.middleRows(begin, n), .v = v.middleRows(begin, n)};
  }
};

/// Random packed inputs of TTT: q, k (L2-normalized per head), v `T×(H·d)` and learning
/// rates in (0, 1/d) `T×H` (the layer's ttt_base_lr·sigmoid(·)/head_dim with base 1).
template <class Scalar>
struct TTTInputs {
  Matrix<Scalar> q, k, v, lr;

  TTTInputs(Index T, Index heads, Index d, Rng& rng)
      : q(normal<Scalar>(rng, T, heads * d, 1.0)),
        k(normal<Scalar>(rng, T, heads * d, 1.0)),
        v(normal<Scalar>(rng, T, heads * d, 1.0)),
        lr(uniform<Scalar>(rng, T, heads, 0.0, 1.0 / double(d))) {}

  template <class Inputs>
  Inputs rows(Index begin, Index n) const {
    return {.q = q.middleRows(begin, n),
            .k = k.middleRows(begin, n),
            .v = v.middleRows(begin, n),
            .learning_rate = GateRef<Scalar>(lr.middleRows(begin, n))};
  }
};

template <class Scalar, TTTModel Model>
struct TTTInputsOf : TTTInputs<Scalar> {
  using TTTInputs<Scalar>::TTTInputs;
  typename TTT<Scalar, Model>::Inputs rows(Index begin, Index n) const {
    return TTTInputs<Scalar>::template rows<typename TTT<Scalar, Model>::Inputs>(begin, n);
  }
};

/// Random packed inputs of the Titans memory: q, k (L2-normalized per head), v `T×(H·d)`,
/// θ ∈ (0, 0.1), α, η ∈ (0, 1) `T×H` (the layer's gate ranges).
template <class Scalar>
struct TitansInputs {
  Matrix<Scalar> q, k, v, theta, alpha, eta;

  TitansInputs(Index T, Index heads, Index d, Rng& rng)
      : q(normal<Scalar>(rng, T, heads * d, 1.0)),
        k(normal<Scalar>(rng, T, heads * d, 1.0)),
        v(normal<Scalar>(rng, T, heads * d, 1.0)),
        theta(uniform<Scalar>(rng, T, heads, 0.0, 0.1)),
        alpha(uniform<Scalar>(rng, T, heads, 0.0, 1.0)),
        eta(uniform<Scalar>(rng, T, heads, 0.0, 1.0)) {
    for (Index c = 0; c < q.cols(); c += d) {
      q.middleCols(c, d).rowwise().normalize();
      k.middleCols(c, d).rowwise().normalize();
    }
  }

  typename TitansMemory<Scalar>::Inputs rows(Index begin, Index n) const {
    return {.q = q.middleRows(begin, n),
            .k = k.middleRows(begin, n),
            .v = v.middleRows(begin, n),
            .learning_rate = GateRef<Scalar>(theta.middleRows(begin, n)),
            .forgetting = GateRef<Scalar>(alpha.middleRows(begin, n)),
            .momentum_decay = GateRef<Scalar>(eta.middleRows(begin, n))};
  }
};

/// Mamba2's memory alone: gated linear attention over H heads whose q (C) and k (B) are one
/// group's columns, shared by the group's heads (views, as in the layer; not MultiHead,
/// which would need them packed per head): q, k `T×(G·N)`, v `T×(H·P)`, log decay
/// dt·A ∈ [−0.1·16, 0) `T×H`.
template <class Scalar>
struct GroupedLinearAttentionAlone {
  using Memory = LinearAttention<Scalar>;
  using States = std::vector<typename Memory::State>;
  Memory memory;
  Index heads, groups;
  Matrix<Scalar> q, k, v, log_decay;

  GroupedLinearAttentionAlone(Memory memory_, Index heads_, Index groups_, Index T, Rng& rng)
      : memory(std::move(memory_)),
        heads(heads_),
        groups(groups_),
        q(normal<Scalar>(rng, T, groups * memory.options().key_dim, 1.0)),
        k(normal<Scalar>(rng, T, groups * memory.options().key_dim, 1.0)),
        v(normal<Scalar>(rng, T, heads * memory.options().value_dim, 0.05)),
        log_decay(uniform<Scalar>(rng, T, heads, -1.6, -1e-3)) {}

  States initial_state() const {
    return States(static_cast<std::size_t>(heads), memory.initial_state());
  }
  Index width() const { return heads * memory.options().value_dim; }
  void forward(Form form, Index begin, Index n, States& states, MatrixRef<Scalar> out) const {
    const Index N = memory.options().key_dim, P = memory.options().value_dim;
    const Index per_group = heads / groups;
    for (Index h = 0; h < heads; ++h) {
      const Index g = h / per_group;
      memory.forward(form,
                     {.q = q.block(begin, g * N, n, N),
                      .k = k.block(begin, g * N, n, N),
                      .v = v.block(begin, h * P, n, P),
                      .log_decay = GateRef<Scalar>(log_decay.block(begin, h, n, 1))},
                     states[static_cast<std::size_t>(h)], out.middleCols(h * P, P));
    }
  }
};

template <class Scalar>
struct AttentionX {
  using Model = models::Attention<Scalar>;
  static models::AttentionConfig config() {
    return {.hidden_size = kHidden, .num_heads = 8, .num_kv_heads = 2};
  }
  static auto memory(const Model& layer, Index tokens, Rng& rng) {
    const auto& c = layer.config();
    const typename SoftmaxAttention<Scalar>::Options o{.key_dim = layer.head_dim(),
                                                       .value_dim = layer.head_dim(),
                                                       .window = c.window_size,
                                                       .query_heads = c.num_heads / c.num_kv_heads,
                                                       .chunk_size = c.chunk_size};
    return memory_alone(SoftmaxAttention<Scalar>(o), c.num_kv_heads,
                        SoftmaxInputs<Scalar>(tokens, c.num_kv_heads, o, rng));
  }
};

template <class Scalar>
struct Mamba2X {
  using Model = models::Mamba2<Scalar>;
  static models::Mamba2Config config() { return {.hidden_size = kHidden}; }
  static auto memory(const Model& layer, Index tokens, Rng& rng) {
    const auto& c = layer.config();
    LinearAttention<Scalar> memory({.key_dim = c.state_size,
                                    .value_dim = c.head_dim,
                                    .scale = Scalar(1),
                                    .chunk_size = c.chunk_size});
    return GroupedLinearAttentionAlone<Scalar>(std::move(memory), c.num_heads, c.n_groups, tokens,
                                               rng);
  }
};

template <class Scalar, TTTModel Kind>
struct TTTX {
  using Model = models::TTTLayer<Scalar, Kind>;
  static models::TTTConfig config() {
    return {.hidden_size = kHidden,
            .num_attention_heads = 16,
            .mini_batch_size = 16,
            .ttt_layer_type = Kind == TTTModel::linear ? "linear" : "mlp"};
  }
  static auto memory(const Model& layer, Index tokens, Rng& rng) {
    const auto& c = layer.config();
    const Index d = layer.head_dim();
    TTT<Scalar, Kind> memory({.key_dim = d,
                              .mini_batch = c.mini_batch_size,
                              .token_scale_offset = std::vector<Scalar>(
                                  static_cast<std::size_t>(c.mini_batch_size), Scalar(0)),
                              .ln_eps = Scalar(1e-6),
                              .expansion = Model::kExpansion,
                              .ttt_lm_gelu_bwd = true});
    return memory_alone(std::move(memory), c.num_attention_heads,
                        TTTInputsOf<Scalar, Kind>(tokens, c.num_attention_heads, d, rng));
  }
};

template <class Scalar>
struct TitansX {
  using Model = models::Titans<Scalar>;
  static models::TitansConfig config() {
    return {.hidden_size = kHidden, .num_heads = 8, .head_dim = 128, .depth = 2, .expansion = 4};
  }
  static auto memory(const Model& layer, Index tokens, Rng& rng) {
    const auto& c = layer.config();
    TitansMemory<Scalar> memory({.key_dim = c.head_dim,
                                 .value_dim = c.head_dim,
                                 .depth = c.depth,
                                 .expansion = c.expansion,
                                 .activation = Activation::gelu_tanh,
                                 .bias = false,
                                 .layer_norm = false,
                                 .mini_batch = c.mini_batch});
    return memory_alone(std::move(memory), c.num_heads,
                        TitansInputs<Scalar>(tokens, c.num_heads, c.head_dim, rng));
  }
};

/// `Traits` with the configuration's block_size set to `Block` (the row-block sweep).
template <class Traits, Index Block>
struct WithBlock : Traits {
  static auto config() {
    auto c = Traits::config();
    c.block_size = Block;
    return c;
  }
};

// ---------------------------------------------------------------------------------------------
// The harness.
// ---------------------------------------------------------------------------------------------

/// The layer's linear maps alone: a random pieces::Linear and a random input for every 2-D
/// `*proj.weight` tensor of `specs`.
template <class Scalar>
struct Projections {
  std::vector<pieces::Linear<Scalar>> maps;
  std::vector<Matrix<Scalar>> inputs, outputs;

  Projections(const std::vector<TensorSpec>& specs, Index tokens, Rng& rng) {
    for (const TensorSpec& spec : specs) {
      if (!spec.name.ends_with("proj.weight") || spec.shape.size() != 2) continue;
      const Index out = spec.shape[0], in = spec.shape[1];
      maps.emplace_back(normal<Scalar>(rng, out, in, 1.0 / std::sqrt(double(in))));
      inputs.push_back(normal<Scalar>(rng, tokens, in, 1.0));
      outputs.emplace_back(tokens, out);
    }
  }

  /// Every map on input rows [begin, begin + n).
  void apply(Index begin, Index n) {
    for (std::size_t i = 0; i < maps.size(); ++i) {
      maps[i].apply(inputs[i].middleRows(begin, n), outputs[i].middleRows(begin, n));
      benchmark::DoNotOptimize(outputs[i].data());
    }
  }
};

/// CPU time of the calling thread, in seconds (POSIX).
double thread_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

/// The thread's CPU seconds that `f` takes.
template <class F>
double seconds_of(F&& f) {
  const double start = thread_seconds();
  f();
  benchmark::ClobberMemory();
  return thread_seconds() - start;
}

/// The least disturbed round's time: on a shared machine other processes only add time.
double fastest(const std::vector<double>& v) {
  return v.empty() ? 0.0 : *std::min_element(v.begin(), v.end());
}

/// Runs the three parts of one round in a rotating order; `parts[i]` returns its seconds.
void round_robin(Index round, const std::array<std::function<double()>, 3>& parts,
                 std::array<std::vector<double>, 3>& times) {
  for (Index j = 0; j < 3; ++j) {
    const auto i = static_cast<std::size_t>((round + j) % 3);
    times[i].push_back(parts[i]());
  }
}

void set_counters(benchmark::State& bench, const std::array<std::vector<double>, 3>& times,
                  Index tokens_per_round) {
  const double layer = fastest(times[0]), proj = fastest(times[1]), memory = fastest(times[2]);
  const double rest = layer - proj - memory, per_token = 1e6 / double(tokens_per_round);
  bench.counters["tokens/s"] = double(tokens_per_round) / layer;
  bench.counters["us/token"] = layer * per_token;
  bench.counters["proj_us/token"] = proj * per_token;
  bench.counters["memory_us/token"] = memory * per_token;
  bench.counters["rest_us/token"] = rest * per_token;
  bench.counters["share_proj"] = proj / layer;
  bench.counters["share_memory"] = memory / layer;
  bench.counters["share_rest"] = rest / layer;
}

template <class Traits>
struct Fixture {
  using Model = typename Traits::Model;
  using Scalar = float;
  using Memory = decltype(Traits::memory(std::declval<const Model&>(), 0, std::declval<Rng&>()));

  std::vector<TensorSpec> specs = Model::tensor_specs(Traits::config());
  Model layer{Traits::config(), random_checkpoint(specs, kSeed), ""};
  Rng rng{kSeed};
  Matrix<Scalar> x = normal<Scalar>(rng, kPrefill + kDecodeSteps, kHidden, 1.0);
  Projections<Scalar> projections{specs, kPrefill + kDecodeSteps, rng};
  Memory memory = Traits::memory(layer, kPrefill + kDecodeSteps, rng);
};

/// Prefill: one chunkwise call of kPrefill tokens from the initial state, per part.
template <class Traits>
void run_prefill(benchmark::State& bench) {
  Fixture<Traits> f;
  Matrix<float> y(kPrefill, kHidden), o(kPrefill, f.memory.width());
  std::array<std::vector<double>, 3> times;
  const std::array<std::function<double()>, 3> parts = {
      [&] {
        return seconds_of([&] {
          auto state = f.layer.initial_state();
          f.layer.forward(Form::chunkwise, f.x.topRows(kPrefill), state, y);
          benchmark::DoNotOptimize(y.data());
        });
      },
      [&] { return seconds_of([&] { f.projections.apply(0, kPrefill); }); },
      [&] {
        return seconds_of([&] {
          auto states = f.memory.initial_state();
          f.memory.forward(Form::chunkwise, 0, kPrefill, states, o);
          benchmark::DoNotOptimize(o.data());
        });
      }};
  Index round = 0;
  for ([[maybe_unused]] auto _ : bench) {
    round_robin(round++, parts, times);
    bench.SetIterationTime(times[0].back());
  }
  set_counters(bench, times, kPrefill);
}

/// Decode: kDecodeSteps one-token recurrent calls after a kPrefill-token chunkwise prefill
/// (untimed; the prefilled states are restored before every round, untimed).
template <class Traits>
void run_decode(benchmark::State& bench) {
  Fixture<Traits> f;
  auto prefilled = f.layer.initial_state();
  f.layer.forward(Form::chunkwise, f.x.topRows(kPrefill), prefilled);
  auto memory_prefilled = f.memory.initial_state();
  Matrix<float> o(kPrefill, f.memory.width());
  f.memory.forward(Form::chunkwise, 0, kPrefill, memory_prefilled, o);
  auto state = prefilled;
  auto memory_state = memory_prefilled;
  Matrix<float> y(kDecodeSteps, kHidden);

  std::array<std::vector<double>, 3> times;
  const std::array<std::function<double()>, 3> parts = {
      [&] {
        state = prefilled;
        return seconds_of([&] {
          for (Index t = 0; t < kDecodeSteps; ++t)
            f.layer.forward(Form::recurrent, f.x.middleRows(kPrefill + t, 1), state, y.row(t));
          benchmark::DoNotOptimize(y.data());
        });
      },
      [&] {
        return seconds_of([&] {
          for (Index t = 0; t < kDecodeSteps; ++t)
            f.projections.apply(kPrefill + t, 1);
        });
      },
      [&] {
        memory_state = memory_prefilled;
        return seconds_of([&] {
          for (Index t = 0; t < kDecodeSteps; ++t)
            f.memory.forward(Form::recurrent, kPrefill + t, 1, memory_state, o.row(t));
          benchmark::DoNotOptimize(o.data());
        });
      }};
  Index round = 0;
  for ([[maybe_unused]] auto _ : bench) {
    round_robin(round++, parts, times);
    bench.SetIterationTime(times[0].back());
  }
  set_counters(bench, times, kDecodeSteps);
}

/// One layer of the suite: its name and its two cases.
struct FromXEntry {
  std::string name;
  std::function<void(benchmark::State&)> prefill, decode;
};

template <class Traits>
FromXEntry entry(std::string name) {
  return {std::move(name), run_prefill<Traits>, run_decode<Traits>};
}

/// ONE line per layer from x.
const std::vector<FromXEntry>& from_x_table() {
  static const std::vector<FromXEntry> table{
      entry<GatedDeltaNetX<float, 6>>("gated_deltanet"),
      entry<GatedDeltaNetX<float, 4>>("gated_deltanet_h4"),
      entry<DeltaNetX<float>>("deltanet"),
      entry<AttentionX<float>>("attention"),
      entry<Mamba2X<float>>("mamba2"),
      entry<TTTX<float, TTTModel::linear>>("ttt_linear"),
      entry<TTTX<float, TTTModel::mlp>>("ttt_mlp"),
      entry<TitansX<float>>("titans"),
  };
  return table;
}

/// Prefill of `Traits` at every row-block size of the sweep.
template <class Traits>
void register_block_sweep(const std::string& layer) {
  const auto add = [&layer](Index block, auto run) {
    std::ostringstream name;
    name << "BM_from_x/" << layer << "/chunkwise/T:" << kPrefill << "/D:" << kHidden
         << "/block:" << block;
    benchmark::RegisterBenchmark(name.str().c_str(), run)
        ->Unit(benchmark::kMillisecond)
        ->UseManualTime()
        ->Iterations(kPrefillRounds);
  };
  add(0, run_prefill<WithBlock<Traits, 0>>);
  add(64, run_prefill<WithBlock<Traits, 64>>);
  add(128, run_prefill<WithBlock<Traits, 128>>);
  add(256, run_prefill<WithBlock<Traits, 256>>);
  add(512, run_prefill<WithBlock<Traits, 512>>);
  add(1024, run_prefill<WithBlock<Traits, 1024>>);
}

}  // namespace

void register_layers_from_x_blocks() {
  register_block_sweep<GatedDeltaNetX<float, 6>>("gated_deltanet");
  register_block_sweep<DeltaNetX<float>>("deltanet");
}

void register_layers_from_x(double rounds_scale) {
  const auto rounds = [rounds_scale](Index n) {
    return static_cast<benchmark::IterationCount>(std::max<double>(3.0, double(n) * rounds_scale));
  };
  for (const FromXEntry& layer : from_x_table()) {
    std::ostringstream prefill, decode;
    prefill << "BM_from_x/" << layer.name << "/chunkwise/T:" << kPrefill << "/D:" << kHidden;
    decode << "BM_from_x/" << layer.name << "/decode/ctx:" << kPrefill << "/D:" << kHidden;
    benchmark::RegisterBenchmark(prefill.str().c_str(), layer.prefill)
        ->Unit(benchmark::kMillisecond)
        ->UseManualTime()
        ->Iterations(rounds(kPrefillRounds));
    benchmark::RegisterBenchmark(decode.str().c_str(), layer.decode)
        ->Unit(benchmark::kMicrosecond)
        ->UseManualTime()
        ->Iterations(rounds(kDecodeRounds));
  }
}

}  // namespace seqmem::bench
