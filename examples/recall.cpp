/// @file
/// Memory capacity: how many key→value pairs each memory can hold and give back.
///
/// For N ∈ {8, 16, 32, 64, 128, 256}, write N random pairs (unit keys k_i in d = 64
/// dimensions; values unit, or N(0, 1)/√d with --values=gaussian) into a fresh memory, one
/// token per pair (q = k = k_i, v = v_i), then read every key back (query = k_i) and score the
/// read-out o_i against the stored values:
///
///   - mean cosine: the average of cos(o_i, v_i) (cosine, so a memory's output scale, e.g.
///     linear attention's 1/√d, does not matter),
///   - exact recall: the share of keys whose read-out is nearest, by cosine, to the right
///     value among all N stored values.
///
/// Each cell averages at least 2048 reads (⌈2048 / N⌉ independent sets of pairs, the same sets
/// for every memory). Softmax attention keeps every pair in its KV cache (unbounded) and, with
/// a sharp scale, is an exact lookup: the ceiling. The matrix memories hold a d×d state, so
/// they cannot keep more than d = 64 independent pairs exactly; the deep memories have more
/// weights, but write them one gradient step at a time.
///
/// Reading the results: the table is what these memories do with these settings, not a
/// ranking of the architectures (trained models choose their gates per token). Things to look
/// for: rows that coincide are the identities of examples/unified.cpp; β = 1 stores the newest
/// pair exactly but partly erases older pairs whose keys overlap, so once N nears d the delta
/// rule can fall behind plain linear attention, which spreads the interference evenly; decays
/// fade old pairs; a deep memory holds more pairs than d only as well as its tuned step allows,
/// and biases (TTT-MLP) cost capacity.
///
/// How the reads avoid disturbing the memory: every seqmem layer reads *after* writing the
/// call's own token (docs/math.md §0), so a read token is also a write. Where the layer has a
/// write strength, the read tokens write with strength 0, and all N reads are one call:
///   - linear attention, GLA: v = 0 (the write k v adds k·0 = 0) and no decay (g = 0);
///   - DeltaNet, gated DeltaNet, KDA: β = 0 (the transition I − β kᵀk is the identity) and g = 0;
///   - TTT: learning rate 0 (the gradient is added with weight 0). This needs token-index
///     scaling off: with it the token at mini-batch position i reads W_ref − G/(i+1), so the
///     same stored gradients would read differently at every position;
///   - Titans: θ = 0, α = 0 and η = 0 (η = 0 also drops the leftover momentum, which would
///     otherwise keep moving the weights).
/// Softmax attention has no write strength: the read token's own key and value join the
/// cache and the softmax. Each read therefore runs on a copy of the written state (State is a
/// value type) with k = −10⁴·q and v = 0, so its own weight is exp(−huge) = 0 and nothing of it
/// stays.
///
/// Build and run:
///     cmake --build build --target recall && build/examples/recall [--csv=recall.csv]
///         [--values=unit|gaussian] [--seed=N]
///     python3 scripts/plots.py --recall=recall.csv        (draws docs/recall.png)

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <seqmem/seqmem.hpp>

namespace {

using seqmem::Form;
using seqmem::Index;
using Scalar = float;
using Mat = seqmem::Matrix<Scalar>;
using Vec = seqmem::Vector<Scalar>;

constexpr Index kDim = 64;
constexpr Index kSizes[] = {8, 16, 32, 64, 128, 256};
constexpr Index kReadsPerCell = 2048;

/// N pairs: unit keys K (N×d) and values V (N×d).
struct Pairs {
  Mat K, V;
};

Pairs random_pairs(std::uint64_t seed, Index N, bool gaussian_values) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  const auto gaussian = [&](Index rows, Index cols) {
    Mat m(rows, cols);
    for (Index i = 0; i < rows; ++i)
      for (Index j = 0; j < cols; ++j)
        m(i, j) = static_cast<Scalar>(normal(rng));
    return m;
  };
  Pairs p{gaussian(N, kDim), gaussian(N, kDim)};
  p.K.rowwise().normalize();  // unit keys, uniformly distributed on the sphere
  if (gaussian_values) {
    p.V /= std::sqrt(static_cast<Scalar>(kDim));  // N(0, 1)/√d: norm ≈ 1
  } else {
    p.V.rowwise().normalize();
  }
  return p;
}

/// A memory under test: writes `pairs` into a fresh state and returns the N read-outs.
using Memory = std::function<Mat(const Pairs& pairs)>;

Vec constant(Index n, double value) {
  return Vec::Constant(n, static_cast<Scalar>(value));
}

/// Writes the pairs with one chunkwise call and reads them back with another whose tokens
/// write nothing (`read`); returns the read call's outputs.
template <class Layer>
Mat write_then_read(const Layer& layer, const typename Layer::Inputs& write,
                    const typename Layer::Inputs& read) {
  auto state = layer.initial_state();
  layer.forward(Form::chunkwise, write, state);
  return layer.forward(Form::chunkwise, read, state);
}

// ---------------------------------------------------------------------------------------------
// The memories and their gates
// ---------------------------------------------------------------------------------------------

/// Softmax attention with the given scale (weights ∝ exp(scale · k_i·q)). Reads: see the file
/// comment (a copy of the state per read, a read key that gets weight 0). With unit keys the
/// right key scores scale·1 and a wrong one scale·cos, where cos stays below about 0.6 among
/// 256 random keys in 64 dimensions: at scale 32 every wrong key weighs less than e^−12.8 of
/// the right one (a lookup), at the default 1/√d = 1/8 all weights are within a factor e^0.25
/// of each other (an average of all values).
Memory softmax_attention(double scale) {
  return [scale](const Pairs& p) {
    const seqmem::SoftmaxAttention<Scalar> layer(
        {.key_dim = kDim, .value_dim = kDim, .scale = static_cast<Scalar>(scale)});
    auto written = layer.initial_state();
    layer.forward(Form::chunkwise, {.q = p.K, .k = p.K, .v = p.V}, written);
    const Index N = p.K.rows();
    Mat out(N, kDim);
    const Mat zero = Mat::Zero(1, kDim);
    for (Index i = 0; i < N; ++i) {
      auto state = written;  // a copy: the read token joins the copy's cache, not `written`
      const Mat q = p.K.row(i);
      const Mat k = Scalar(-1e4) * q;
      layer.forward(Form::recurrent, {.q = q, .k = k, .v = zero}, state, out.middleRows(i, 1));
    }
    return out;
  };
}

/// Linear attention, S = Σ kᵀv: every pair adds its outer product. Keys that are not
/// orthogonal interfere; nothing is corrected.
Memory linear_attention() {
  return [](const Pairs& p) {
    const seqmem::LinearAttention<Scalar> layer({.key_dim = kDim, .value_dim = kDim});
    const Mat zero = Mat::Zero(p.V.rows(), kDim);
    return write_then_read(layer, {.q = p.K, .k = p.K, .v = p.V}, {.q = p.K, .k = p.K, .v = zero});
  };
}

/// DeltaNet with β = 1: with a unit key the write S += kᵀ(v − kS) makes k S = v exactly, i.e.
/// the newest pair is stored exactly and the older ones are corrected along k. With a per-token
/// decay exp(g) it is gated DeltaNet.
Memory delta_net(double decay) {
  return [decay](const Pairs& p) {
    const Index N = p.K.rows();
    const seqmem::DeltaNet<Scalar> layer({.key_dim = kDim, .value_dim = kDim});
    // Inputs are views: the gates they view are named here, so that they outlive the calls (a
    // view of a temporary Vector would dangle after the statement that made it).
    const Vec one = constant(N, 1), zero = constant(N, 0), g = constant(N, std::log(decay));
    seqmem::DeltaNet<Scalar>::Inputs write{.q = p.K, .k = p.K, .v = p.V, .beta = one};
    if (decay < 1) write.log_decay.emplace(g);
    return write_then_read(layer, write, {.q = p.K, .k = p.K, .v = p.V, .beta = zero});
  };
}

/// Per-key-channel decays spread evenly over [lo, hi] (channel c forgets at its own rate, the
/// same at every token), as `T×d` log-decays.
Mat channel_log_decays(Index T, double lo, double hi) {
  Mat g(T, kDim);
  for (Index c = 0; c < kDim; ++c)
    g.col(c).setConstant(
        static_cast<Scalar>(std::log(lo + (hi - lo) * static_cast<double>(c) / (kDim - 1))));
  return g;
}

/// Gated linear attention with per-channel decays in [lo, hi].
Memory gla(double lo, double hi) {
  return [lo, hi](const Pairs& p) {
    const Index N = p.K.rows();
    const seqmem::GatedLinearAttention<Scalar> layer({.key_dim = kDim, .value_dim = kDim});
    const Mat zero = Mat::Zero(N, kDim);
    return write_then_read(
        layer, {.q = p.K, .k = p.K, .v = p.V, .log_decay = channel_log_decays(N, lo, hi)},
        {.q = p.K, .k = p.K, .v = zero, .log_decay = zero});
  };
}

/// Kimi delta attention with β = 1 and per-channel decays in [lo, hi].
Memory kda(double lo, double hi) {
  return [lo, hi](const Pairs& p) {
    const Index N = p.K.rows();
    const seqmem::KimiDeltaAttention<Scalar> layer({.key_dim = kDim, .value_dim = kDim});
    const Mat zero = Mat::Zero(N, kDim);
    return write_then_read(
        layer,
        {.q = p.K,
         .k = p.K,
         .v = p.V,
         .beta = constant(N, 1),
         .log_decay = channel_log_decays(N, lo, hi)},
        {.q = p.K, .k = p.K, .v = p.V, .beta = constant(N, 0), .log_decay = zero});
  };
}

/// Random first-layer weights N(0, 1/d) and a zero second layer for the deep memories
/// (TTT-MLP, Titans depth 2): the memory starts empty (f ≡ 0, as S = 0 for the matrix
/// memories), with random features in its hidden layer. (Not the layers' default initial
/// weights: sin(1 + i·cols + j)/√rows = (sin(1 + i·cols) cos j + cos(1 + i·cols) sin j)/√rows is
/// a rank-2 matrix, a deterministic start meant for tests, not for storing 256 pairs.)
seqmem::Weights<Scalar> deep_initial_weights(Index hidden, bool bias) {
  std::mt19937_64 rng(12345);
  std::normal_distribution<double> normal(0.0, 1.0 / std::sqrt(static_cast<double>(kDim)));
  seqmem::Weights<Scalar> w;
  w.W.push_back(Mat(kDim, hidden));
  for (Index i = 0; i < kDim; ++i)
    for (Index j = 0; j < hidden; ++j)
      w.W[0](i, j) = static_cast<Scalar>(normal(rng));
  w.W.push_back(Mat::Zero(hidden, kDim));
  if (bias) {
    w.b.push_back(Mat::Zero(1, hidden));
    w.b.push_back(Mat::Zero(1, kDim));
  }
  return w;
}

/// TTT-Linear or TTT-MLP with inner learning rate `rate` and mini-batch `b`. Residual +
/// LayerNorm off: LayerNorm fixes its output to zero mean and norm √d·γ, so with the default
/// γ = 1 it cannot even express a unit value (a trained model learns γ for its data); without
/// it the inner model itself is the memory. Token-index scaling off (see the file comment).
/// TTT-Linear starts at W = 0 and no bias, the matrix memory of the TTT paper's Theorem 1.
/// TTT-MLP keeps its default biases: a bias is a slot every write updates and every read
/// returns, so with values of mean 0 it adds the same interference to every read-out.
/// Without biases, TTT-MLP here is Titans depth 2 with θ = rate/2 (same model, and the same
/// optimizer once Titans has no momentum and no forgetting; examples/unified.cpp).
template <class Layer>
Memory ttt(double rate, Index b) {
  return [rate, b](const Pairs& p) {
    constexpr bool kLinear = std::is_same_v<Layer, seqmem::TTTLinear<Scalar>>;
    const Index N = p.K.rows();
    typename Layer::Parameters parameters;
    parameters.initial = kLinear ? seqmem::Weights<Scalar>{{Mat::Zero(kDim, kDim)}, {}}
                                 : deep_initial_weights(4 * kDim, true);
    const Layer layer({.key_dim = kDim,
                       .mini_batch = b,
                       .token_index_scaling = false,
                       .layer_norm = false,
                       .bias = !kLinear},
                      parameters);
    return write_then_read(layer,
                           {.q = p.K, .k = p.K, .v = p.V, .learning_rate = constant(N, rate)},
                           {.q = p.K, .k = p.K, .v = p.V, .learning_rate = constant(N, 0)});
  };
}

/// Titans memory of depth L and mini-batch b with learning rate θ, no momentum (η = 0) and no
/// forgetting (α = 0): a pure capacity test. Momentum would keep adding earlier gradients
/// after their pair was written (at b = 1 it overshoots the exact write of θ = 1/2);
/// forgetting erases old pairs on purpose. Depth 1 starts at W = 0 (its default).
Memory titans(Index depth, Index b, double theta) {
  return [depth, b, theta](const Pairs& p) {
    const Index N = p.K.rows();
    std::optional<seqmem::TitansMemory<Scalar>::Parameters> parameters;
    if (depth == 2) parameters.emplace().initial = deep_initial_weights(4 * kDim, false);
    const seqmem::TitansMemory<Scalar> layer(
        {.key_dim = kDim, .value_dim = kDim, .depth = depth, .mini_batch = b}, parameters);
    const Vec zero = constant(N, 0);
    return write_then_read(layer,
                           {.q = p.K,
                            .k = p.K,
                            .v = p.V,
                            .learning_rate = constant(N, theta),
                            .forgetting = zero,
                            .momentum_decay = zero},
                           {.q = p.K,
                            .k = p.K,
                            .v = p.V,
                            .learning_rate = zero,
                            .forgetting = zero,
                            .momentum_decay = zero});
  };
}

// ---------------------------------------------------------------------------------------------
// Scoring
// ---------------------------------------------------------------------------------------------

struct Score {
  double mean_cosine = 0, exact_recall = 0;
  Index reads = 0;
};

/// Adds the reads of one set of pairs to `score` (sums; divide by reads at the end). A
/// read-out that is not finite (a diverged memory) scores cosine 0 and a miss.
void add_reads(const Pairs& p, const Mat& out, Score& score) {
  const Index N = p.K.rows();
  const Eigen::MatrixXd values = p.V.cast<double>().rowwise().normalized();
  for (Index i = 0; i < N; ++i) {
    const Eigen::RowVectorXd o = out.row(i).cast<double>();
    const double norm = o.norm();
    ++score.reads;
    if (!std::isfinite(norm) || norm == 0) continue;
    const Eigen::VectorXd cosines = values * o.transpose() / norm;
    Index best = 0;
    cosines.maxCoeff(&best);
    score.mean_cosine += cosines(i);
    score.exact_recall += best == i ? 1.0 : 0.0;
  }
}

Score evaluate(const Memory& memory, Index N, bool gaussian_values, std::uint64_t seed,
               Index reads) {
  Score score;
  const Index sets = (reads + N - 1) / N;
  for (Index s = 0; s < sets; ++s) {
    const Pairs p =
        random_pairs(seed * 1000003 + static_cast<std::uint64_t>(N * 4099 + s), N, gaussian_values);
    Mat out;
    try {
      out = memory(p);
    } catch (const seqmem::invalid_argument&) {
      // A memory whose step is too large diverges: its weights overflow, and the next call
      // (the reads) refuses the non-finite state. Every read of the set then misses.
      out = Mat::Constant(N, kDim, std::numeric_limits<Scalar>::quiet_NaN());
    }
    add_reads(p, out, score);
  }
  score.mean_cosine /= static_cast<double>(score.reads);
  score.exact_recall /= static_cast<double>(score.reads);
  return score;
}

/// The learning rate of `make(rate)` from `rates` with the best mean cosine averaged over all
/// N, measured on other pairs than the table's (another seed): a deep memory has no rate at
/// which one gradient step writes a pair exactly, so its rate is tuned, like a model's. Prints
/// the score of every rate.
template <class Make>
double tune(const char* name, Make make, const std::vector<double>& rates, bool gaussian_values,
            std::uint64_t seed) {
  double best_rate = rates.front(), best = -std::numeric_limits<double>::infinity();
  std::printf("tuning %-24s rate: mean cosine over all N (256 reads each) ", name);
  for (double rate : rates) {
    double total = 0;
    for (Index N : kSizes)
      total += evaluate(make(rate), N, gaussian_values, seed + 777, 256).mean_cosine;
    total /= static_cast<double>(std::size(kSizes));
    std::printf(" %g: %.3f", rate, total);
    if (total > best) {
      best = total;
      best_rate = rate;
    }
  }
  std::printf("\n");
  return best_rate;
}

std::string format_rate(double rate) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", rate);
  return buf;
}

}  // namespace

int main(int argc, char** argv) try {
  std::string csv_path = "recall.csv";
  bool gaussian_values = false;
  std::uint64_t seed = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.starts_with("--csv=")) {
      csv_path = arg.substr(6);
    } else if (arg == "--values=unit" || arg == "--values=gaussian") {
      gaussian_values = arg == "--values=gaussian";
    } else if (arg.starts_with("--seed=")) {
      seed = std::stoull(std::string(arg.substr(7)));
    } else {
      std::fprintf(stderr,
                   "usage: recall [--csv=recall.csv] [--values=unit|gaussian] [--seed=N]\n");
      return 2;
    }
  }
  const auto start = std::chrono::steady_clock::now();

  // Learning rates of the deep memories, tuned (see `tune`); the grid brackets the step that
  // would write one pair exactly from the initial weights.
  const std::vector<double> grid = {0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0};
  const double ttt_mlp_rate = tune(
      "TTT-MLP, b 16", [](double r) { return ttt<seqmem::TTTMLP<Scalar>>(r, 16); }, grid,
      gaussian_values, seed);
  const double titans2_b1 = tune(
      "Titans depth 2, b 1", [](double r) { return titans(2, 1, r); }, grid, gaussian_values, seed);
  const double titans2_b16 = tune(
      "Titans depth 2, b 16", [](double r) { return titans(2, 16, r); }, grid, gaussian_values,
      seed);

  struct Row {
    std::string name;
    Memory memory;
  };
  // The decays of the gated rows: with the decay off (g = 0) they are exactly LinearAttention
  // and DeltaNet (examples/unified.cpp), so their rows would repeat; instead they keep a decay
  // of a typical size, which shows what forgetting costs in a pure capacity test: the oldest
  // of 256 pairs is faded by 0.99^255 ≈ 0.08 (per channel for GLA and KDA: decays spread over
  // [0.98, 1], the same mean, some channels remembering everything).
  const std::vector<Row> rows = {
      {"softmax attention, scale 1/8 (= 1/sqrt d, the default)", softmax_attention(0.125)},
      {"softmax attention, scale 32 (ceiling)", softmax_attention(32)},
      {"linear attention", linear_attention()},
      {"DeltaNet, beta 1", delta_net(1.0)},
      {"gated DeltaNet, beta 1, decay 0.99", delta_net(0.99)},
      {"GLA, decays 0.98..1", gla(0.98, 1.0)},
      {"KDA, beta 1, decays 0.98..1", kda(0.98, 1.0)},
      // TTT-Linear at rate 1: the ½ loss makes its step kᵀ(v − kW), DeltaNet's β = 1 (b = 1);
      // with b = 16 the 16 steps of a mini-batch are all taken at its starting weights.
      {"TTT-Linear, b 16, rate 1", ttt<seqmem::TTTLinear<Scalar>>(1.0, 16)},
      {"TTT-MLP, b 16, biases, rate " + format_rate(ttt_mlp_rate) + " (tuned)",
       ttt<seqmem::TTTMLP<Scalar>>(ttt_mlp_rate, 16)},
      // Titans' loss is not halved: θ = 1/2 is TTT's rate 1 (at b = 1, DeltaNet's β = 1).
      {"Titans depth 1, b 1, theta 0.5", titans(1, 1, 0.5)},
      {"Titans depth 1, b 16, theta 0.5", titans(1, 16, 0.5)},
      {"Titans depth 2, b 1, theta " + format_rate(titans2_b1) + " (tuned)",
       titans(2, 1, titans2_b1)},
      {"Titans depth 2, b 16, theta " + format_rate(titans2_b16) + " (tuned)",
       titans(2, 16, titans2_b16)},
  };

  std::vector<std::vector<Score>> scores;
  for (const Row& row : rows) {
    scores.emplace_back();
    for (Index N : kSizes)
      scores.back().push_back(evaluate(row.memory, N, gaussian_values, seed, kReadsPerCell));
  }

  std::printf(
      "Memory capacity: N random pairs (unit keys, %s values, d = %lld) written one token per "
      "pair, every key read back; >= %lld reads per cell.\n",
      gaussian_values ? "N(0,1)/sqrt(d)" : "unit", static_cast<long long>(kDim),
      static_cast<long long>(kReadsPerCell));
  for (int table = 0; table < 2; ++table) {
    std::printf("\n%-58s", table == 0 ? "mean cosine(read-out, stored value)"
                                      : "exact recall (nearest stored value is the right one)");
    for (Index N : kSizes)
      std::printf(" %7s", ("N=" + std::to_string(N)).c_str());
    std::printf("\n");
    for (std::size_t r = 0; r < rows.size(); ++r) {
      std::printf("%-58s", rows[r].name.c_str());
      for (const Score& s : scores[r]) {
        if (table == 0) {
          std::printf(" %7.3f", s.mean_cosine);
        } else {
          std::printf(" %6.1f%%", 100.0 * s.exact_recall);
        }
      }
      std::printf("\n");
    }
  }

  std::ofstream csv(csv_path);
  csv << "memory,N,mean_cosine,exact_recall,reads,values\n";
  for (std::size_t r = 0; r < rows.size(); ++r) {
    for (std::size_t n = 0; n < std::size(kSizes); ++n) {
      const Score& s = scores[r][n];
      csv << '"' << rows[r].name << "\"," << kSizes[n] << ',' << s.mean_cosine << ','
          << s.exact_recall << ',' << s.reads << ',' << (gaussian_values ? "gaussian" : "unit")
          << '\n';
    }
  }
  csv.close();
  if (!csv) throw std::runtime_error("could not write " + csv_path);
  std::printf("\nwrote %s (%.1f s)\n", csv_path.c_str(),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "recall: %s\n", e.what());
  return 1;
}
