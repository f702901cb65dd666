/// @file
/// Benchmark suite of every seqmem layer (Google Benchmark). Run `scripts/bench.sh` for the
/// whole pipeline (build, run, plots, docs/benchmarks.md); this binary is one step of it.
///
///   layers_bench [--suite=full|quick|guard|chunks|diagonal|threads|layers|layer_blocks]
///   [--benchmark_* flags]
///
/// Suites (default `full`; docs/benchmarks.md lists exactly what each one runs):
///   full   every layer × every form × T ∈ {256, 1024, 4096, 16384} × d ∈ {64, 128}, float,
///          one head; TTT/Titans also at T = 16 (one mini-batch, where their parallel form is
///          defined); a double subset; 4 heads (seqmem::MultiHead) on 1 and 2 threads, and
///          the `threads` cases; decode latency; Eigen GEMM references.
///   quick  the same kinds of cases on fewer sizes (T ≤ 4096), for a run of a few minutes.
///   guard  the handful of cases bench/ratio_guard.py compares (ctest bench.ratio_guard).
///   chunks chunkwise linear attention, (gated) DeltaNet and softmax attention at T = 4096,
///          d ∈ {64, 128} over chunk_size ∈ {16 … 192} (how the defaults were chosen).
///   diagonal  GLA, KDA and the generalized delta rule (docs/math.md §7–§9) at T = 4096,
///          d ∈ {64, 128}: every form, 4 heads chunkwise, decode on 1 and 4 heads.
///   threads 4 heads chunkwise at T = 4096, d ∈ {64, 128}, every layer: MultiHead on 2
///          threads vs 1, interleaved with two threads that share nothing (the bound the
///          machine sets; run_thread_scaling).
///   layers the layers from x (include/seqmem/models/) at D = 1024: prefill T = 4096 and
///          decode, with the share of projections, memory and the rest (bench/layers_from_x.cpp
///          describes the cases and the method); `full` and `quick` run them too.
///   layer_blocks  prefill of those layers over their row-block size (block_size).
///
/// Excluded on purpose (too slow or too much memory for what they would show):
///   - TTT/Titans parallel form for T > mini_batch (= 16): not defined, the layer throws.
///   - Linear attention and (gated) DeltaNet parallel form for T > 4096: it builds a T×T
///     matrix (O(T²) memory and time); softmax attention's parallel form is kept up to 16384
///     for the memory comparison with its chunkwise form (bench/softmax_memory.cpp).
///
/// Case names: `BM_<layer>/<form>/T:<T>/d:<d>[/f64][/heads:<H>/threads:<n>]`, decode cases
/// `BM_<layer>/decode/ctx:4096/d:<d>[/heads:<H>]`, thread scaling
/// `BM_<layer>/chunkwise/T:4096/d:<d>/heads:4/scaling`, references `BM_eigen_gemm[_f64]/<n>` and
/// `BM_eigen_product|BM_engine_product/<m>x<k>x<n>` (the TTT/Titans engine's skinny products).
///
/// Counters (per case):
///   tokens/s          tokens of the sequence processed per second (all heads together)
///   head_tokens/s     tokens × heads per second (= tokens/s for one head)
///   GFLOP/s           analytic FLOP count of the algorithm the form runs (including masked
///                     work that is computed and thrown away) per second: how well the form
///                     uses the machine. Compare with `BM_eigen_gemm/128` of the same run.
///   useful_GFLOP/s    the RECURRENT form's FLOP count of the same call per second, the same
///                     numerator for every form of a layer: forms compare fairly by it.
///   us/token (decode) microseconds per decoded token (per head-token: us/head_token).
///
/// Timing: one-head cases: rates by CPU time of the benchmark thread. Multi-head cases: rates
/// by wall-clock (real) time, since their work runs on several threads, and their CPU time
/// is the process's (all threads). Decode cases time only the decode steps (manual timing;
/// restoring the prefilled state is not timed).
///
/// Adding a layer = writing a bench case (see `GatedLinearAttention` below) and ONE line in
/// `layer_table()`.

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <Eigen/Core>
#include <seqmem/detail/parallel.hpp>
#include <seqmem/seqmem.hpp>

#include "layers_from_x.hpp"

namespace {

using seqmem::Form;
using seqmem::Index;
using Rng = std::mt19937_64;

constexpr std::uint64_t kSeed = 0x5e9e3;  // inputs are the same in every run

template <class Scalar>
seqmem::Matrix<Scalar> random_normal(Rng& rng, Index rows, Index cols, double stddev) {
  std::normal_distribution<double> dist(0.0, stddev);
  seqmem::Matrix<Scalar> m(rows, cols);
  for (Index i = 0; i < m.size(); ++i)
    m.data()[i] = static_cast<Scalar>(dist(rng));
  return m;
}

/// Gates: `T×H` (one column per head), uniform in [lo, hi].
template <class Scalar>
seqmem::Matrix<Scalar> random_uniform(Rng& rng, Index rows, Index cols, double lo, double hi) {
  std::uniform_real_distribution<double> dist(lo, hi);
  seqmem::Matrix<Scalar> m(rows, cols);
  for (Index i = 0; i < m.size(); ++i)
    m.data()[i] = static_cast<Scalar>(dist(rng));
  return m;
}

/// L2-normalizes every head's `d` columns of every row of a packed `T×(H·d)` matrix.
template <class Scalar>
void normalize_heads(seqmem::Matrix<Scalar>& m, Index d) {
  for (Index c = 0; c < m.cols(); c += d)
    m.middleCols(c, d).rowwise().normalize();
}

/// q, k ~ N(0, d^(-1/2)) per entry, so that q·k ~ N(0, 1); v ~ N(0, 1).
double qk_stddev(Index d) {
  return 1.0 / std::sqrt(std::sqrt(static_cast<double>(d)));
}

double as_double(Index n) {
  return static_cast<double>(n);
}

// ---------------------------------------------------------------------------------------------
// Bench cases. A bench case is a traits type with
//
//   using Layer = ...;                               a seqmem::MultiHeadLayer
//   static Layer make_layer(Index d);                key_dim = value_dim = d
//   struct Data { ...; Layer::Inputs inputs() const; };   owns the inputs of one call
//   static Data make_data(Index T, Index d, Index H, Rng&);
//                                 random inputs for T tokens and H heads packed side by side
//                                 (q, k, v `T×(H·d)`, gates `T×H`); H = 1 is one head
//   static std::optional<double> flops(const Layer&, Form, Index T);
//                                 optional member: analytic FLOPs of one head's call (nullopt
//                                 or no member = no GFLOP/s counters)
// ---------------------------------------------------------------------------------------------

template <class Case>
concept BenchCase = seqmem::MultiHeadLayer<typename Case::Layer> &&
    requires(Index n, Rng& rng, const typename Case::Data& data) {
  { Case::make_layer(n) } -> std::same_as<typename Case::Layer>;
  { Case::make_data(n, n, n, rng) } -> std::same_as<typename Case::Data>;
  { data.inputs() } -> std::same_as<typename Case::Layer::Inputs>;
};

/// The case has an analytic FLOP count.
template <class Case>
concept HasFlops = requires(const typename Case::Layer& layer, Form form, Index n) {
  { Case::flops(layer, form, n) } -> std::same_as<std::optional<double>>;
};

/// FLOPs of the decayed linear-attention chunk (seqmem::detail::decayed_linear_chunk) over T
/// tokens in chunks of C. Per chunk of n rows:
///   Q·Kᵀ 2n²·dk  +  scores·V 2n²·dv  +  Q·S 2n·dk·dv  +  Kᵀ·V 2n·dk·dv
/// (the full n×n score block is computed, then masked). Decay scalings and exps not counted.
double linear_chunked_flops(Index T, Index C, Index dk, Index dv) {
  double total = 0.0;
  for (Index begin = 0; begin < T; begin += C) {
    const double n = as_double(std::min(C, T - begin));
    total += 2.0 * n * n * as_double(dk + dv) + 4.0 * n * as_double(dk * dv);
  }
  return total;
}

/// Linear attention with a log_decay gate (simple GLA).
template <class Scalar>
struct GatedLinearAttention {
  using Layer = seqmem::LinearAttention<Scalar>;

  static Layer make_layer(Index d) { return Layer({.key_dim = d, .value_dim = d}); }

  struct Data {
    seqmem::Matrix<Scalar> q, k, v, log_decay;
    typename Layer::Inputs inputs() const {
      return {.q = q, .k = k, .v = v, .log_decay = seqmem::GateRef<Scalar>(log_decay)};
    }
  };

  static Data make_data(Index T, Index d, Index H, Rng& rng) {
    return {.q = random_normal<Scalar>(rng, T, H * d, qk_stddev(d)),
            .k = random_normal<Scalar>(rng, T, H * d, qk_stddev(d)),
            .v = random_normal<Scalar>(rng, T, H * d, 1.0),
            .log_decay = random_uniform<Scalar>(rng, T, H, -0.1, -0.001)};
  }

  static std::optional<double> flops(const Layer& layer, Form form, Index T) {
    const Index dk = layer.options().key_dim, dv = layer.options().value_dim;
    switch (form) {
      // Per token: S += kᵀv (2·dk·dv) and o = q·S (2·dk·dv) = 4·dk·dv; the decay S *= e^g
      // (dk·dv multiplies) is not counted.
      case Form::recurrent: return 4.0 * as_double(T * dk * dv);
      case Form::parallel: return linear_chunked_flops(T, T, dk, dv);  // one chunk of T
      case Form::chunkwise: return linear_chunked_flops(T, layer.options().chunk_size, dk, dv);
    }
    return std::nullopt;
  }
};

/// Causal softmax attention without a window (the KV cache keeps every token).
template <class Scalar>
struct SoftmaxAttention {
  using Layer = seqmem::SoftmaxAttention<Scalar>;

  static Layer make_layer(Index d) { return Layer({.key_dim = d, .value_dim = d}); }

  struct Data {
    seqmem::Matrix<Scalar> q, k, v;
    typename Layer::Inputs inputs() const { return {.q = q, .k = k, .v = v}; }
  };

  static Data make_data(Index T, Index d, Index H, Rng& rng) {
    return {.q = random_normal<Scalar>(rng, T, H * d, qk_stddev(d)),
            .k = random_normal<Scalar>(rng, T, H * d, qk_stddev(d)),
            .v = random_normal<Scalar>(rng, T, H * d, 1.0)};
  }

  /// Score and weighted-sum FLOPs, 2·(dk + dv) per (query, key) pair computed; exps and the
  /// softmax normalization are not counted.
  static std::optional<double> flops(const Layer& layer, Form form, Index T) {
    const double per_pair = 2.0 * as_double(layer.options().key_dim + layer.options().value_dim);
    switch (form) {
      // Query t (0-based) sees t + 1 keys: Σ (t + 1) = T(T + 1)/2 pairs.
      case Form::recurrent: return per_pair * as_double(T) * as_double(T + 1) / 2.0;
      // The full T×T score matrix is computed, then masked: T² pairs.
      case Form::parallel: return per_pair * as_double(T) * as_double(T);
      // Tiles of C queries × C keys up to and including the diagonal tile: a block of nq
      // queries starting at q0 is scored against q0 + nq keys.
      case Form::chunkwise: {
        const Index C = layer.options().chunk_size;
        double pairs = 0.0;
        for (Index q0 = 0; q0 < T; q0 += C) {
          const Index nq = std::min(C, T - q0);
          pairs += as_double(nq) * as_double(q0 + nq);
        }
        return per_pair * pairs;
      }
    }
    return std::nullopt;
  }
};

/// DeltaNet (docs/math.md §3), plain or gated; keys L2-normalized, β ∈ (0, 1).
template <class Scalar, bool Gated>
struct DeltaNetCase {
  using Layer = seqmem::DeltaNet<Scalar>;
  static Layer make_layer(Index d) { return Layer({.key_dim = d, .value_dim = d}); }
  struct Data {
    seqmem::Matrix<Scalar> q, k, v, beta, log_decay;
    typename Layer::Inputs inputs() const {
      typename Layer::Inputs in{.q = q, .k = k, .v = v, .beta = seqmem::GateRef<Scalar>(beta)};
      if (Gated) in.log_decay.emplace(log_decay);
      return in;
    }
  };
  static Data make_data(Index T, Index d, Index H, Rng& rng) {
    Data data{.q = random_normal<Scalar>(rng, T, H * d, qk_stddev(d)),
              .k = random_normal<Scalar>(rng, T, H * d, 1.0),
              .v = random_normal<Scalar>(rng, T, H * d, 1.0),
              .beta = random_uniform<Scalar>(rng, T, H, 0.0, 1.0),
              .log_decay = random_uniform<Scalar>(rng, T, H, -0.1, -0.001)};
    normalize_heads(data.k, d);
    return data;
  }
  /// Per chunk of n rows: K·S 2n·dk·dv, K·Kᵀ 2n²·dk, the triangular solve n²·dv, then the
  /// linear-attention chunk on the pseudo-values (2n²(dk + dv) + 4n·dk·dv):
  /// 6n·dk·dv + 4n²·dk + 3n²·dv. Recurrent: k·S, the rank-1 update and q·S: 6·dk·dv per token.
  static std::optional<double> flops(const Layer& layer, Form form, Index T) {
    const double dk = as_double(layer.options().key_dim), dv = as_double(layer.options().value_dim);
    if (form == Form::recurrent) return 6.0 * as_double(T) * dk * dv;
    const Index C = form == Form::parallel ? T : layer.options().chunk_size;
    double total = 0.0;
    for (Index begin = 0; begin < T; begin += C) {
      const double n = as_double(std::min(C, T - begin));
      total += 6.0 * n * dk * dv + 4.0 * n * n * dk + 3.0 * n * n * dv;
    }
    return total;
  }
};
/// FLOPs of a diagonal-gate chunk (docs/math.md §7–§9) over T tokens in chunks of C, from the
/// per-chunk counts of n rows `pairs`·n²·dk + `values`·n²·dv + `state`·n·dk·dv (every n×n pair
/// matrix is computed whole, then masked; exps and decay scalings are not counted).
double diagonal_chunked_flops(Index T, Index C, Index dk, Index dv, double pairs, double values,
                              double state) {
  double total = 0.0;
  for (Index begin = 0; begin < T; begin += C) {
    const double n = as_double(std::min(C, T - begin));
    total += pairs * n * n * as_double(dk) + values * n * n * as_double(dv) +
             state * n * as_double(dk * dv);
  }
  return total;
}

/// The diagonal-gate layers' log-decays: one per key channel, uniform in [−0.1, −0.001]
/// (GLA's logsigmoid/16 and KDA's gates at work lie around there).
template <class Scalar>
seqmem::Matrix<Scalar> channel_log_decay(Rng& rng, Index T, Index width) {
  return random_uniform<Scalar>(rng, T, width, -0.1, -0.001);
}

/// Gated linear attention with per-channel decay (docs/math.md §7). Per chunk of n rows: the
/// q/k pairs 2n²·dk, pairs·V 2n²·dv, Q·S and Kᵀ·V 4n·dk·dv. Recurrent: 4·dk·dv per token.
template <class Scalar>
struct GLA {
  using Layer = seqmem::GatedLinearAttention<Scalar>;
  static Layer make_layer(Index d) { return Layer({.key_dim = d, .value_dim = d}); }
  struct Data {
    seqmem::Matrix<Scalar> q, k, v, log_decay;
    typename Layer::Inputs inputs() const {
      return {.q = q, .k = k, .v = v, .log_decay = log_decay};
    }
  };
  static Data make_data(Index T, Index d, Index H, Rng& rng) {
    return {.q = random_normal<Scalar>(rng, T, H * d, qk_stddev(d)),
            .k = random_normal<Scalar>(rng, T, H * d, qk_stddev(d)),
            .v = random_normal<Scalar>(rng, T, H * d, 1.0),
            .log_decay = channel_log_decay<Scalar>(rng, T, H * d)};
  }
  static std::optional<double> flops(const Layer& layer, Form form, Index T) {
    const Index dk = layer.options().key_dim, dv = layer.options().value_dim;
    if (form == Form::recurrent) return 4.0 * as_double(T * dk * dv);
    const Index C = form == Form::parallel ? T : layer.options().chunk_size;
    return diagonal_chunked_flops(T, C, dk, dv, 2, 2, 4);
  }
};

/// Kimi delta attention (docs/math.md §8); unit keys, β ∈ (0, 1). Per chunk of n rows: K·S
/// 2n·dk·dv, the k/k and q/k pairs 4n²·dk, the solve n²·dv, pairs·V' 2n²·dv, Q·S and Kᵀ·V'
/// 4n·dk·dv. Recurrent: 6·dk·dv per token.
template <class Scalar>
struct KDA {
  using Layer = seqmem::KimiDeltaAttention<Scalar>;
  static Layer make_layer(Index d) { return Layer({.key_dim = d, .value_dim = d}); }
  struct Data {
    seqmem::Matrix<Scalar> q, k, v, beta, log_decay;
    typename Layer::Inputs inputs() const {
      return {.q = q, .k = k, .v = v, .beta = beta, .log_decay = log_decay};
    }
  };
  static Data make_data(Index T, Index d, Index H, Rng& rng) {
    Data data{.q = random_normal<Scalar>(rng, T, H * d, qk_stddev(d)),
              .k = random_normal<Scalar>(rng, T, H * d, 1.0),
              .v = random_normal<Scalar>(rng, T, H * d, 1.0),
              .beta = random_uniform<Scalar>(rng, T, H, 0.0, 1.0),
              .log_decay = channel_log_decay<Scalar>(rng, T, H * d)};
    normalize_heads(data.k, d);
    return data;
  }
  static std::optional<double> flops(const Layer& layer, Form form, Index T) {
    const Index dk = layer.options().key_dim, dv = layer.options().value_dim;
    if (form == Form::recurrent) return 6.0 * as_double(T * dk * dv);
    const Index C = form == Form::parallel ? T : layer.options().chunk_size;
    return diagonal_chunked_flops(T, C, dk, dv, 4, 3, 6);
  }
};

/// The generalized delta rule (docs/math.md §9) as RWKV-7 drives it: a = −κ̂, b = κ̂ ⊙ α with
/// κ̂ unit rows and α ∈ (0, 1), g = −e^{−1/2}·σ(N(0, 1)). Per chunk of n rows: the a/(b, k) and
/// q/(k, b) pairs 8n²·dk, Ā·S 2n·dk·dv, A^ak·V 2n²·dv, the solve n²·dv, the q pairs times V and
/// R 4n²·dv, Q·S 2n·dk·dv, Kᵀ·V and Bᵀ·R 4n·dk·dv. Recurrent: a·S, the two rank-1 updates and
/// q·S, 8·dk·dv per token.
template <class Scalar>
struct DPLR {
  using Layer = seqmem::GeneralizedDeltaRule<Scalar>;
  static Layer make_layer(Index d) { return Layer({.key_dim = d, .value_dim = d}); }
  struct Data {
    seqmem::Matrix<Scalar> q, k, v, a, b, log_decay;
    typename Layer::Inputs inputs() const {
      return {.q = q, .k = k, .v = v, .a = a, .b = b, .log_decay = log_decay};
    }
  };
  static Data make_data(Index T, Index d, Index H, Rng& rng) {
    Data data{.q = random_normal<Scalar>(rng, T, H * d, qk_stddev(d)),
              .k = random_normal<Scalar>(rng, T, H * d, qk_stddev(d)),
              .v = random_normal<Scalar>(rng, T, H * d, 1.0),
              .a = random_normal<Scalar>(rng, T, H * d, 1.0),
              .b = random_uniform<Scalar>(rng, T, H * d, 0.0, 1.0),
              .log_decay = random_normal<Scalar>(rng, T, H * d, 1.0)};
    normalize_heads(data.a, d);
    data.b.array() *= data.a.array();     // b = κ̂ ⊙ α
    data.a = -data.a;                     // a = −κ̂
    const double scale = std::exp(-0.5);  // g = −e^{−1/2}·σ(x)
    data.log_decay = data.log_decay.unaryExpr(
        [scale](Scalar x) { return static_cast<Scalar>(-scale / (1.0 + std::exp(-double(x)))); });
    return data;
  }
  static std::optional<double> flops(const Layer& layer, Form form, Index T) {
    const Index dk = layer.options().key_dim, dv = layer.options().value_dim;
    if (form == Form::recurrent) return 8.0 * as_double(T * dk * dv);
    const Index C = form == Form::parallel ? T : layer.options().chunk_size;
    return diagonal_chunked_flops(T, C, dk, dv, 8, 7, 8);
  }
};

template <class Scalar>
using DeltaNet = DeltaNetCase<Scalar, false>;
template <class Scalar>
using GatedDeltaNet = DeltaNetCase<Scalar, true>;

/// FLOPs of the test-time-training engine (detail/inner_model.hpp) on layer widths `dims`,
/// counting matrix products only. With P = Σ_l d_l·d_{l+1} and P' = Σ_{l≥1} d_l·d_{l+1}:
///   primal, per token: forward 2P, backward 2P', gradient outer products 2P, optimizer
///     update 2P, query forward 2P  →  8P + 2P'
///   dual, per segment of n tokens: forward + backward 2n(P + P'), per layer H·Xᵀ and
///     scores·Δ 2n²(d_l + d_{l+1}) and one product per base 2n·d_l·d_{l+1} each, and one
///     weight update per state matrix (`updates`) 2n·P each.
double engine_flops(const std::vector<Index>& dims, Form form, Index T, Index b, int bases,
                    int updates) {
  double P = 0.0, P_tail = 0.0, widths = 0.0;
  for (std::size_t l = 0; l + 1 < dims.size(); ++l) {
    const double p = as_double(dims[l] * dims[l + 1]);
    P += p;
    if (l > 0) P_tail += p;
    widths += as_double(dims[l] + dims[l + 1]);
  }
  if (form == Form::recurrent) return as_double(T) * (8.0 * P + 2.0 * P_tail);
  const Index C = form == Form::parallel ? T : b;
  double total = 0.0;
  for (Index begin = 0; begin < T; begin += C) {
    const double n = as_double(std::min(C, T - begin));
    total += 2.0 * n * (P + P_tail) + 2.0 * n * n * widths + 2.0 * n * P * (bases + updates);
  }
  return total;
}

/// TTT-Linear / TTT-MLP at b = 16 with LayerNorm and bias (the defaults).
template <class Scalar, seqmem::TTTModel Model>
struct TTTCase {
  using Layer = seqmem::TTT<Scalar, Model>;
  static Layer make_layer(Index d) { return Layer({.key_dim = d, .mini_batch = 16}); }
  struct Data {
    seqmem::Matrix<Scalar> q, k, v, eta;
    typename Layer::Inputs inputs() const {
      return {.q = q, .k = k, .v = v, .learning_rate = seqmem::GateRef<Scalar>(eta)};
    }
  };
  static Data make_data(Index T, Index d, Index H, Rng& rng) {
    return {.q = random_normal<Scalar>(rng, T, H * d, 1.0),
            .k = random_normal<Scalar>(rng, T, H * d, 1.0),
            .v = random_normal<Scalar>(rng, T, H * d, 1.0),
            .eta = random_uniform<Scalar>(rng, T, H, 0.0, 1.0 / as_double(d))};
  }
  static std::optional<double> flops(const Layer& layer, Form form, Index T) {
    const Index d = layer.options().key_dim;
    const std::vector<Index> dims = Model == seqmem::TTTModel::linear
                                        ? std::vector<Index>{d, d}
                                        : std::vector<Index>{d, layer.options().expansion * d, d};
    return engine_flops(dims, form, T, layer.options().mini_batch, 2, 1);  // W_ref, G; G
  }
};
template <class Scalar>
using TTTLinear = TTTCase<Scalar, seqmem::TTTModel::linear>;
template <class Scalar>
using TTTMLP = TTTCase<Scalar, seqmem::TTTModel::mlp>;

/// Titans memory of depth L at b = 16 (no bias, no LayerNorm: the defaults); forgetting
/// α ∈ [0, 0.2] (its weights decay toward zero: the subnormal cliff case), or α = 0 when not
/// `Forgetting` (the same arithmetic on weights that stay large).
template <class Scalar, Index Depth, bool Forgetting = true>
struct TitansCase {
  using Layer = seqmem::TitansMemory<Scalar>;
  static Layer make_layer(Index d) {
    return Layer({.key_dim = d, .value_dim = d, .depth = Depth, .mini_batch = 16});
  }
  struct Data {
    seqmem::Matrix<Scalar> q, k, v, theta, alpha, eta;
    typename Layer::Inputs inputs() const {
      return {.q = q,
              .k = k,
              .v = v,
              .learning_rate = seqmem::GateRef<Scalar>(theta),
              .forgetting = seqmem::GateRef<Scalar>(alpha),
              .momentum_decay = seqmem::GateRef<Scalar>(eta)};
    }
  };
  static Data make_data(Index T, Index d, Index H, Rng& rng) {
    Data data{.q = random_normal<Scalar>(rng, T, H * d, 1.0),
              .k = random_normal<Scalar>(rng, T, H * d, 1.0),
              .v = random_normal<Scalar>(rng, T, H * d, 1.0),
              .theta = random_uniform<Scalar>(rng, T, H, 0.005, 0.05),
              .alpha = random_uniform<Scalar>(rng, T, H, 0.0, Forgetting ? 0.2 : 0.0),
              .eta = random_uniform<Scalar>(rng, T, H, 0.5, 0.95)};
    normalize_heads(data.k, d);
    return data;
  }
  static std::optional<double> flops(const Layer& layer, Form form, Index T) {
    const Index dk = layer.options().key_dim, hidden = layer.options().expansion * dk;
    std::vector<Index> dims(std::size_t(Depth + 1), hidden);
    dims.front() = dk;
    dims.back() = layer.options().value_dim;
    return engine_flops(dims, form, T, layer.options().mini_batch, 2, 2);  // M, S; M, S
  }
};
template <class Scalar>
using TitansL1 = TitansCase<Scalar, 1>;
template <class Scalar>
using TitansL2 = TitansCase<Scalar, 2>;
template <class Scalar>
using TitansL2NoForgetting = TitansCase<Scalar, 2, false>;

// ---------------------------------------------------------------------------------------------
// The harness: one generic throughput benchmark and one decode benchmark.
// ---------------------------------------------------------------------------------------------

/// One registered throughput case. `threads` = 0: one head, `layer.forward` called directly;
/// otherwise seqmem::MultiHead over `heads` heads on `threads` threads.
struct Spec {
  Form form = Form::chunkwise;
  Index T = 0;
  Index d = 0;
  Index heads = 1;
  Index threads = 0;
  bool f64 = false;
  Index chunk = 0;  ///< chunk_size of the layers that have one; 0: the layer's default
};

/// `layer` with chunk_size `chunk` (0, or a layer without the option: `layer` unchanged).
template <class Layer>
Layer with_chunk(const Layer& layer, Index chunk) {
  if constexpr (requires(typename Layer::Options o) { o.chunk_size = chunk; }) {
    if (chunk > 0) {
      typename Layer::Options options = layer.options();
      options.chunk_size = chunk;
      return Layer(options);
    }
  }
  return layer;
}

void set_flop_counters(benchmark::State& bench, std::optional<double> form_flops,
                       std::optional<double> useful_flops, Index heads) {
  using benchmark::Counter;
  // Counter value × iterations / seconds: FLOP per call, all heads, in units of 1e9.
  if (form_flops) {
    bench.counters["GFLOP/s"] =
        Counter(*form_flops * as_double(heads) * 1e-9, Counter::kIsIterationInvariantRate);
  }
  if (useful_flops) {
    bench.counters["useful_GFLOP/s"] =
        Counter(*useful_flops * as_double(heads) * 1e-9, Counter::kIsIterationInvariantRate);
  }
}

/// One call of `T` tokens from a fresh state into a preallocated output, one head called
/// directly or all heads through MultiHead (as a model that keeps its buffers calls them).
template <BenchCase Case>
void run_layer(benchmark::State& bench, const Spec& spec) {
  using Layer = typename Case::Layer;
  const Layer layer = with_chunk(Case::make_layer(spec.d), spec.chunk);
  Rng rng(kSeed);
  const typename Case::Data data = Case::make_data(spec.T, spec.d, spec.heads, rng);
  const typename Layer::Inputs inputs = data.inputs();  // views into `data`

  if (spec.threads == 0) {
    seqmem::Matrix<typename Layer::Scalar> out(spec.T, layer.output_dim());
    for ([[maybe_unused]] auto _ : bench) {
      typename Layer::State state = layer.initial_state();  // timed: part of a real call
      layer.forward(spec.form, inputs, state, out);
      benchmark::DoNotOptimize(out.data());
      benchmark::DoNotOptimize(state);
      benchmark::ClobberMemory();
    }
  } else {
    const seqmem::MultiHead<Layer> multi(layer, spec.heads, spec.threads);
    seqmem::Matrix<typename Layer::Scalar> out(spec.T, spec.heads * layer.output_dim());
    for ([[maybe_unused]] auto _ : bench) {
      typename seqmem::MultiHead<Layer>::States states = multi.initial_state();
      multi.forward(spec.form, inputs, states, out);
      benchmark::DoNotOptimize(out.data());
      benchmark::DoNotOptimize(states);
      benchmark::ClobberMemory();
    }
  }

  using benchmark::Counter;
  bench.counters["tokens/s"] = Counter(as_double(spec.T), Counter::kIsIterationInvariantRate);
  bench.counters["head_tokens/s"] =
      Counter(as_double(spec.T * spec.heads), Counter::kIsIterationInvariantRate);
  if constexpr (HasFlops<Case>) {
    set_flop_counters(bench, Case::flops(layer, spec.form, spec.T),
                      Case::flops(layer, Form::recurrent, spec.T), spec.heads);
  }
}

/// Median of `values` (sorts them).
double median(std::vector<double>& values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n == 0 ? 0.0 : n % 2 == 1 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

/// How 4 heads scale from 1 to 2 threads, against what this machine allows (issue 17). Each
/// iteration times, one after another: (a) MultiHead on 1 thread and (b) on 2 threads, a
/// chunkwise call of T tokens from fresh states into a preallocated output; (c) the same 4
/// head calls made directly, 2 heads from each of two copies of the inputs, one after another
/// on one thread, and (d) those two halves at once on 2 threads (the same thread pool), each
/// with its own inputs and output: two threads that share nothing. (c)/(d) is the speedup the
/// machine gives such work (its cores, caches and memory, and other load); (a)/(b) is
/// MultiHead's. Counters: the medians' ratios, and the medians in ms. Wall-clock time.
template <BenchCase Case>
void run_thread_scaling(benchmark::State& bench, Index T, Index d) {
  using Layer = typename Case::Layer;
  using Clock = std::chrono::steady_clock;
  constexpr Index kHeads = 4;
  const Layer layer = Case::make_layer(d);
  Rng rng(kSeed);
  const typename Case::Data data = Case::make_data(T, d, kHeads, rng);
  const typename Case::Data copy = data;
  const typename Layer::Inputs inputs[2] = {data.inputs(), copy.inputs()};
  const Index dv = layer.output_dim();
  seqmem::Matrix<typename Layer::Scalar> out[2] = {{T, kHeads * dv}, {T, kHeads * dv}};
  const seqmem::MultiHead<Layer> one(layer, kHeads, 1), two(layer, kHeads, 2);
  // Half p: heads 2p and 2p + 1 of copy p, called directly into out[p].
  const auto half = [&](Index p) {
    for (Index h = 2 * p; h < 2 * p + 2; ++h) {
      typename Layer::State state = layer.initial_state();
      layer.forward(Form::chunkwise, layer.head(inputs[p], h, kHeads), state,
                    out[p].middleCols(h * dv, dv));
    }
  };
  std::vector<double> times[4];
  for ([[maybe_unused]] auto _ : bench) {
    double total = 0.0;
    for (int variant = 0; variant < 4; ++variant) {
      const auto start = Clock::now();
      if (variant < 2) {
        typename seqmem::MultiHead<Layer>::States states = one.initial_state();
        (variant == 0 ? one : two).forward(Form::chunkwise, inputs[0], states, out[0]);
      } else if (variant == 2) {
        half(0);
        half(1);
      } else {
        seqmem::detail::run_parallel(2, 2, half);
      }
      benchmark::DoNotOptimize(out[0].data());
      benchmark::DoNotOptimize(out[1].data());
      benchmark::ClobberMemory();
      const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
      times[variant].push_back(seconds);
      total += seconds;
    }
    bench.SetIterationTime(total);
  }
  double medians[4];
  for (int variant = 0; variant < 4; ++variant)
    medians[variant] = median(times[variant]);
  if (medians[1] > 0.0 && medians[3] > 0.0) {
    bench.counters["multihead_speedup"] = medians[0] / medians[1];
    bench.counters["independent_speedup"] = medians[2] / medians[3];
  }
  bench.counters["multihead_1t_ms"] = medians[0] * 1e3;
  bench.counters["multihead_2t_ms"] = medians[1] * 1e3;
  bench.counters["independent_1t_ms"] = medians[2] * 1e3;
  bench.counters["independent_2t_ms"] = medians[3] * 1e3;
}

constexpr Index kDecodeContext = 4096;  // tokens the state has seen before decoding
/// Decode steps timed per iteration: one TTT/Titans mini-batch (b = 16), so every timed
/// burst contains exactly one end-of-mini-batch weight update, as steady decoding does.
constexpr Index kDecodeSteps = 16;

/// Decode latency: `heads` heads whose state has seen kDecodeContext tokens (chunkwise
/// prefill, not timed) decode kDecodeSteps tokens one recurrent call at a time. Every
/// iteration restores the prefilled state first (not timed), so softmax attention's KV cache
/// stays at 4096..4111 rows however many iterations run.
template <BenchCase Case>
void run_decode(benchmark::State& bench, Index d, Index heads) {
  using Layer = typename Case::Layer;
  using Scalar = typename Layer::Scalar;
  using Clock = std::chrono::steady_clock;
  const Layer layer = Case::make_layer(d);
  Rng rng(kSeed);
  std::vector<typename Case::Data> tokens;  // one Data per decoded token
  for (Index i = 0; i < kDecodeSteps; ++i)
    tokens.push_back(Case::make_data(1, d, heads, rng));
  const typename Case::Data prompt = Case::make_data(kDecodeContext, d, heads, rng);

  double timed_seconds = 0.0;
  if (heads == 1) {
    typename Layer::State prefilled = layer.initial_state();
    layer.forward(Form::chunkwise, prompt.inputs(), prefilled);
    typename Layer::State state = prefilled;
    seqmem::Matrix<Scalar> out(1, layer.output_dim());
    for ([[maybe_unused]] auto _ : bench) {
      state = prefilled;
      const auto start = Clock::now();
      for (const auto& token : tokens)
        layer.forward(Form::recurrent, token.inputs(), state, out);
      benchmark::DoNotOptimize(out.data());
      benchmark::ClobberMemory();
      const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
      bench.SetIterationTime(seconds);
      timed_seconds += seconds;
    }
  } else {
    // Few tokens in all: MultiHead runs the heads on the calling thread (no thread start),
    // into the caller's output (as the one-head case: a decode step allocates nothing).
    const seqmem::MultiHead<Layer> multi(layer, heads, 1);
    using States = typename seqmem::MultiHead<Layer>::States;
    States prefilled = multi.initial_state();
    multi.forward(Form::chunkwise, prompt.inputs(), prefilled);
    States states = prefilled;
    seqmem::Matrix<Scalar> out(1, heads * layer.output_dim());
    for ([[maybe_unused]] auto _ : bench) {
      states = prefilled;
      const auto start = Clock::now();
      for (const auto& token : tokens)
        multi.forward(Form::recurrent, token.inputs(), states, out);
      benchmark::DoNotOptimize(out.data());
      benchmark::ClobberMemory();
      const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
      bench.SetIterationTime(seconds);
      timed_seconds += seconds;
    }
  }

  using benchmark::Counter;
  const double steps = as_double(kDecodeSteps) * as_double(bench.iterations());
  bench.counters["tokens/s"] = Counter(as_double(kDecodeSteps), Counter::kIsIterationInvariantRate);
  if (steps > 0) {
    bench.counters["us/token"] = timed_seconds * 1e6 / steps;
    bench.counters["us/head_token"] = timed_seconds * 1e6 / (steps * as_double(heads));
  }
}

// ---------------------------------------------------------------------------------------------
// Reference: Eigen's own GEMM (n×n times n×n), for GFLOP/s efficiency in the same run.
// ---------------------------------------------------------------------------------------------

template <class Scalar>
void run_eigen_gemm(benchmark::State& bench, Index n) {
  Rng rng(kSeed);
  const seqmem::Matrix<Scalar> a = random_normal<Scalar>(rng, n, n, 1.0);
  const seqmem::Matrix<Scalar> b = random_normal<Scalar>(rng, n, n, 1.0);
  seqmem::Matrix<Scalar> c(n, n);
  for ([[maybe_unused]] auto _ : bench) {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  // 2·n³ FLOP (n³ multiply-adds).
  bench.counters["GFLOP/s"] = benchmark::Counter(2e-9 * as_double(n * n * n),
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

void register_gemm(Index n, bool f64) {
  std::ostringstream name;
  name << (f64 ? "BM_eigen_gemm_f64/" : "BM_eigen_gemm/") << n;
  benchmark::RegisterBenchmark(name.str().c_str(), [n, f64](benchmark::State& bench) {
    if (f64) {
      run_eigen_gemm<double>(bench, n);
    } else {
      run_eigen_gemm<float>(bench, n);
    }
  })->Unit(benchmark::kMicrosecond);
}

/// The TTT/Titans engine's skinny products (m×k times k×n, m = a mini-batch of 16 rows): Eigen's
/// product next to the engine's `detail::multiply` (libxsmm's kernel when the build uses it).
template <class Scalar>
void run_skinny_product(benchmark::State& bench, Index m, Index k, Index n, bool engine) {
  Rng rng(kSeed);
  const seqmem::Matrix<Scalar> a = random_normal<Scalar>(rng, m, k, 1.0);
  const seqmem::Matrix<Scalar> b = random_normal<Scalar>(rng, k, n, 1.0);
  seqmem::Matrix<Scalar> c(m, n);
  for ([[maybe_unused]] auto _ : bench) {
    if (engine) {
      seqmem::detail::multiply(c, a, b);
    } else {
      c.noalias() = a * b;
    }
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  bench.counters["GFLOP/s"] = benchmark::Counter(2e-9 * as_double(m * k * n),
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

void register_skinny_products() {
  const Index shapes[][3] = {{16, 64, 64}, {16, 64, 256}, {16, 256, 64}};
  for (const bool engine : {false, true}) {
    for (const auto& [m, k, n] : shapes) {
      std::ostringstream name;
      name << (engine ? "BM_engine_product/" : "BM_eigen_product/") << m << "x" << k << "x" << n;
      benchmark::RegisterBenchmark(name.str().c_str(),
                                   [m = m, k = k, n = n, engine](benchmark::State& bench) {
                                     run_skinny_product<float>(bench, m, k, n, engine);
                                   });
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Registration.
// ---------------------------------------------------------------------------------------------

/// How a layer's parallel form scales, which decides where it is excluded.
enum class ParallelForm {
  quadratic,   ///< builds a T×T matrix: run up to kMaxQuadraticT tokens
  softmax,     ///< T×T scores too, but run up to 16384 for the memory comparison
  mini_batch,  ///< TTT/Titans: defined only within one mini-batch (T ≤ 16)
};

constexpr Index kMaxQuadraticT = 4096;
constexpr Index kMiniBatch = 16;

bool included(ParallelForm kind, Form form, Index T) {
  if (form != Form::parallel) return true;
  switch (kind) {
    case ParallelForm::quadratic: return T <= kMaxQuadraticT;
    case ParallelForm::softmax: return true;
    case ParallelForm::mini_batch: return T <= kMiniBatch;
  }
  return false;
}

std::string case_name(const std::string& layer, const Spec& spec) {
  std::ostringstream name;  // (not operator+: GCC 12 warns falsely, -Wrestrict)
  name << "BM_" << layer << "/" << seqmem::to_string(spec.form) << "/T:" << spec.T
       << "/d:" << spec.d;
  if (spec.f64) name << "/f64";
  if (spec.chunk > 0) name << "/chunk:" << spec.chunk;
  if (spec.threads > 0) name << "/heads:" << spec.heads << "/threads:" << spec.threads;
  return name.str();
}

template <BenchCase Case>
void register_case(const std::string& layer, const Spec& spec) {
  benchmark::internal::Benchmark* b = benchmark::RegisterBenchmark(
      case_name(layer, spec).c_str(),
      [spec](benchmark::State& bench) { run_layer<Case>(bench, spec); });
  b->Unit(benchmark::kMillisecond);
  // Work on several threads: rates by wall clock; the reported CPU time is the whole
  // process's (all threads), so CPU cost per head stays comparable with one head.
  if (spec.threads > 0) b->UseRealTime()->MeasureProcessCPUTime();
}

template <BenchCase Case>
void register_thread_scaling(const std::string& layer, Index T, Index d) {
  std::ostringstream name;
  name << "BM_" << layer << "/chunkwise/T:" << T << "/d:" << d << "/heads:4/scaling";
  benchmark::RegisterBenchmark(
      name.str().c_str(),
      [T, d](benchmark::State& bench) { run_thread_scaling<Case>(bench, T, d); })
      ->Unit(benchmark::kMillisecond)
      ->UseManualTime()
      ->MinTime(1.0);  // enough rounds for a median even where a round takes 0.3 s
}

template <BenchCase Case>
void register_decode(const std::string& layer, Index d, Index heads) {
  std::ostringstream name;
  name << "BM_" << layer << "/decode/ctx:" << kDecodeContext << "/d:" << d;
  if (heads > 1) name << "/heads:" << heads;
  benchmark::RegisterBenchmark(
      name.str().c_str(),
      [d, heads](benchmark::State& bench) { run_decode<Case>(bench, d, heads); })
      ->Unit(benchmark::kMicrosecond)
      ->UseManualTime();
}

/// One layer of the suite: its name, how its parallel form scales, and registrars for a
/// float or double case and for a decode case.
struct LayerEntry {
  std::string name;
  ParallelForm parallel;
  std::function<void(const std::string&, const Spec&)> add;
  std::function<void(const std::string&, Index, Index)> add_decode;
  std::function<void(const std::string&, Index, Index)> add_thread_scaling;

  void operator()(const Spec& spec) const {
    if (included(parallel, spec.form, spec.T)) add(name, spec);
  }
  void decode(Index d, Index heads) const { add_decode(name, d, heads); }
  void thread_scaling(Index T, Index d) const { add_thread_scaling(name, T, d); }
};

template <template <class> class Case>
LayerEntry entry(std::string name, ParallelForm parallel) {
  return {
      std::move(name), parallel,
      [](const std::string& n, const Spec& spec) {
        if (spec.f64) {
          register_case<Case<double>>(n, spec);
        } else {
          register_case<Case<float>>(n, spec);
        }
      },
      [](const std::string& n, Index d, Index heads) { register_decode<Case<float>>(n, d, heads); },
      [](const std::string& n, Index T, Index d) {
        register_thread_scaling<Case<float>>(n, T, d);
      }};
}

/// ONE line per layer.
const std::vector<LayerEntry>& layer_table() {
  static const std::vector<LayerEntry> table{
      entry<GatedLinearAttention>("linear_attention_gated", ParallelForm::quadratic),
      entry<SoftmaxAttention>("softmax_attention", ParallelForm::softmax),
      entry<DeltaNet>("delta_net", ParallelForm::quadratic),
      entry<GatedDeltaNet>("gated_delta_net", ParallelForm::quadratic),
      entry<TTTLinear>("ttt_linear", ParallelForm::mini_batch),
      entry<TTTMLP>("ttt_mlp", ParallelForm::mini_batch),
      entry<TitansL1>("titans_L1", ParallelForm::mini_batch),
      entry<TitansL2>("titans_L2", ParallelForm::mini_batch),
      entry<GLA>("gla", ParallelForm::quadratic),
      entry<KDA>("kda", ParallelForm::quadratic),
      entry<DPLR>("generalized_delta_rule", ParallelForm::quadratic),
  };
  return table;
}

const LayerEntry& layer_named(std::string_view name) {
  for (const LayerEntry& layer : layer_table()) {
    if (layer.name == name) return layer;
  }
  std::fprintf(stderr, "layers_bench: no layer named %.*s\n", int(name.size()), name.data());
  std::abort();
}

constexpr Form kForms[] = {Form::recurrent, Form::parallel, Form::chunkwise};

/// One head, float, every form × T × d (exclusions in `included`); TTT/Titans also at
/// T = 16, where their parallel form is defined.
void register_single_head(const std::vector<Index>& tokens, const std::vector<Index>& dims) {
  for (const LayerEntry& layer : layer_table()) {
    for (const Index d : dims) {
      for (const Form form : kForms) {
        if (layer.parallel == ParallelForm::mini_batch)
          layer({.form = form, .T = kMiniBatch, .d = d});
        for (const Index T : tokens)
          layer({.form = form, .T = T, .d = d});
      }
    }
  }
}

/// 4 heads through seqmem::MultiHead on 1 and 2 threads.
void register_multi_head(const std::vector<Form>& forms, const std::vector<Index>& tokens,
                         const std::vector<Index>& dims) {
  for (const LayerEntry& layer : layer_table()) {
    for (const Index d : dims) {
      for (const Form form : forms) {
        for (const Index T : tokens) {
          for (const Index threads : {1, 2}) {
            layer({.form = form, .T = T, .d = d, .heads = 4, .threads = threads});
          }
        }
      }
    }
  }
}

/// 4 heads on 2 threads vs 1, chunkwise, beside two threads that share nothing
/// (run_thread_scaling).
void register_thread_scaling_all(Index T, const std::vector<Index>& dims) {
  for (const LayerEntry& layer : layer_table()) {
    for (const Index d : dims)
      layer.thread_scaling(T, d);
  }
}

void register_double(const std::vector<Index>& tokens, Index d) {
  for (const LayerEntry& layer : layer_table()) {
    for (const Form form : kForms) {
      for (const Index T : tokens)
        layer({.form = form, .T = T, .d = d, .f64 = true});
    }
  }
}

void register_decode_all(const std::vector<Index>& dims, const std::vector<Index>& heads) {
  for (const LayerEntry& layer : layer_table()) {
    for (const Index d : dims) {
      for (const Index h : heads)
        layer.decode(d, h);
    }
  }
}

void register_gemms() {
  for (const Index n : {64, 128, 1024})
    register_gemm(n, false);
  register_gemm(128, true);
  register_skinny_products();
}

void register_full() {
  register_gemms();
  register_single_head({256, 1024, 4096, 16384}, {64, 128});
  register_double({1024, 4096}, 64);
  register_multi_head({Form::recurrent, Form::chunkwise}, {256, 1024, 4096}, {64, 128});
  register_thread_scaling_all(4096, {64, 128});
  register_decode_all({64, 128}, {1, 4});
  seqmem::bench::register_layers_from_x();
}

void register_quick() {
  register_gemms();
  register_single_head({256, 1024, 4096}, {64, 128});
  register_multi_head({Form::recurrent, Form::chunkwise}, {4096}, {64});
  register_decode_all({64, 128}, {1});
  seqmem::bench::register_layers_from_x(0.3);
}

/// The cases bench/ratio_guard.py compares (keep the two lists in sync).
void register_guard() {
  const auto add = [](std::string_view layer, Form form, Index T, Index d = 64) {
    layer_named(layer)({.form = form, .T = T, .d = d});
  };
  // Asked for by the issue; measured and reported, not checked (see docs/benchmarks.md).
  add("delta_net", Form::recurrent, 2048);
  add("delta_net", Form::chunkwise, 2048);
  // Checked.
  add("ttt_mlp", Form::recurrent, 1024);
  add("ttt_mlp", Form::chunkwise, 1024);
  add("ttt_linear", Form::recurrent, 1024);
  add("ttt_linear", Form::chunkwise, 1024);
  add("softmax_attention", Form::recurrent, 2048);
  add("softmax_attention", Form::parallel, 2048);
  add("softmax_attention", Form::chunkwise, 2048);
  add("delta_net", Form::parallel, 4096);
  add("delta_net", Form::chunkwise, 4096);
  add("delta_net", Form::parallel, 1024);
  add("delta_net", Form::chunkwise, 1024);
  add("linear_attention_gated", Form::parallel, 4096);
  add("linear_attention_gated", Form::chunkwise, 4096);
  // Decode, 4 heads through MultiHead (1 thread) vs one head called directly, d = 128: the
  // per-head cost of MultiHead's decode path.
  for (std::string_view layer : {"linear_attention_gated", "gated_delta_net"}) {
    for (const Index heads : {1, 4})
      layer_named(layer).decode(128, heads);
  }
  // The subnormal cliff: Titans L = 2 with forgetting (weights decay toward zero) vs α = 0.
  for (const Form form : {Form::recurrent, Form::chunkwise}) {
    add("titans_L2", form, 4096);
    register_case<TitansL2NoForgetting<float>>("titans_L2_no_forgetting",
                                               {.form = form, .T = 4096, .d = 64});
  }
}

/// Chunk-size sweep of the chunked layers (how the default chunk_size was chosen).
void register_chunks() {
  register_gemms();
  for (std::string_view name : {"linear_attention_gated", "delta_net", "gated_delta_net",
                                "softmax_attention", "gla", "kda", "generalized_delta_rule"}) {
    for (const Index d : {64, 128}) {
      for (const Index chunk : {16, 32, 48, 64, 96, 128, 192})
        layer_named(name)({.form = Form::chunkwise, .T = 4096, .d = d, .chunk = chunk});
    }
  }
}

/// The diagonal-gate layers (docs/math.md §7–§9) at T = 4096, d ∈ {64, 128}: every form on one
/// head, chunkwise on 4 heads (1 and 2 threads), decode on 1 and 4 heads, beside the GEMMs.
void register_diagonal() {
  register_gemms();
  for (std::string_view name : {"gla", "kda", "generalized_delta_rule"}) {
    const LayerEntry& layer = layer_named(name);
    for (const Index d : {64, 128}) {
      for (const Form form : kForms)
        layer({.form = form, .T = 4096, .d = d});
      for (const Index threads : {1, 2})
        layer({.form = Form::chunkwise, .T = 4096, .d = d, .heads = 4, .threads = threads});
      for (const Index heads : {1, 4})
        layer.decode(d, heads);
    }
  }
}

bool register_suite(std::string_view suite) {
  if (suite == "full") {
    register_full();
  } else if (suite == "quick") {
    register_quick();
  } else if (suite == "guard") {
    register_guard();
  } else if (suite == "chunks") {
    register_chunks();
  } else if (suite == "threads") {
    register_thread_scaling_all(4096, {64, 128});
  } else if (suite == "diagonal") {
    register_diagonal();
  } else if (suite == "layers") {
    seqmem::bench::register_layers_from_x();
  } else if (suite == "layer_blocks") {
    seqmem::bench::register_layers_from_x_blocks();
  } else {
    return false;
  }
  return true;
}

std::string simd_in_use() {
  return Eigen::SimdInstructionSetsInUse();
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  std::string suite = "full";
  std::vector<char*> rest{argv[0]};
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg(argv[i]);
    if (arg.starts_with("--suite=")) {
      suite = std::string(arg.substr(8));
    } else {
      rest.push_back(argv[i]);
    }
  }
  int rest_count = static_cast<int>(rest.size());
  if (benchmark::ReportUnrecognizedArguments(rest_count, rest.data())) return 1;
  if (!register_suite(suite)) {
    std::fprintf(stderr,
                 "layers_bench: unknown --suite=%s (full, quick, guard, chunks, diagonal, threads, "
                 "layers or layer_blocks)\n",
                 suite.c_str());
    return 1;
  }

  std::ostringstream eigen;
  eigen << EIGEN_WORLD_VERSION << "." << EIGEN_MAJOR_VERSION << "." << EIGEN_MINOR_VERSION;
  std::ostringstream version;
  version << SEQMEM_VERSION_MAJOR << "." << SEQMEM_VERSION_MINOR << "." << SEQMEM_VERSION_PATCH;
  benchmark::AddCustomContext("seqmem_suite", suite);
  benchmark::AddCustomContext("seqmem_version", version.str());
#if defined(__clang__)
  benchmark::AddCustomContext("compiler", std::string("clang ") + __clang_version__);
#elif defined(__GNUC__)
  benchmark::AddCustomContext("compiler", std::string("gcc ") + __VERSION__);
#endif
  benchmark::AddCustomContext("eigen_version", eigen.str());
  benchmark::AddCustomContext("eigen_simd", simd_in_use());
#if defined(SEQMEM_USE_LIBXSMM)
  benchmark::AddCustomContext("engine_products", std::string("libxsmm ") + LIBXSMM_CONFIG_VERSION +
                                                     " (SEQMEM_USE_LIBXSMM)");
#else
  benchmark::AddCustomContext("engine_products", "Eigen");
#endif
#ifdef NDEBUG
  benchmark::AddCustomContext("seqmem_build", "NDEBUG (optimized)");
#else
  benchmark::AddCustomContext("seqmem_build", "assertions on (not NDEBUG)");
#endif

  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
