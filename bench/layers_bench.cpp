/// @file
/// Micro-benchmarks: every layer × every `seqmem::Form` × T ∈ {1024, 4096}, one head,
/// key_dim = value_dim = 64, float, default options. Counters:
///
///   tokens/s  tokens processed per second (compare forms and layers by this)
///   GFLOP/s   analytic FLOP count of the algorithm the form runs (including masked work
///             that is computed and then thrown away), per second: how well a form uses the
///             machine. Compare it with `BM_eigen_gemm/128` from the same run.
///
/// Adding a layer = writing a bench case (see `GatedLinearAttention` below) and ONE line in
/// the registration block at the end of this file.

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <seqmem/seqmem.hpp>

namespace {

using seqmem::Form;
using seqmem::Index;
using Rng = std::mt19937_64;

constexpr std::uint64_t kSeed = 0x5e9e3;    // inputs are the same in every run

template <class Scalar>
seqmem::Matrix<Scalar> random_normal(Rng& rng, Index rows, Index cols, double stddev) {
  std::normal_distribution<double> dist(0.0, stddev);
  seqmem::Matrix<Scalar> m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<Scalar>(dist(rng));
  return m;
}

template <class Scalar>
seqmem::Vector<Scalar> random_uniform(Rng& rng, Index rows, double lo, double hi) {
  std::uniform_real_distribution<double> dist(lo, hi);
  seqmem::Vector<Scalar> v(rows);
  for (Index i = 0; i < v.size(); ++i) v(i) = static_cast<Scalar>(dist(rng));
  return v;
}

/// q, k ~ N(0, d^(-1/2)) per entry, so that q·k ~ N(0, 1); v ~ N(0, 1).
double qk_stddev(Index d) { return 1.0 / std::sqrt(std::sqrt(static_cast<double>(d))); }

double as_double(Index n) { return static_cast<double>(n); }

// ---------------------------------------------------------------------------------------------
// Bench cases. A bench case is a traits type with
//
//   using Layer = ...;                               a seqmem::SequenceMemory
//   static Layer make_layer(Index d);                key_dim = value_dim = d
//   struct Data { ...; Layer::Inputs inputs() const; };   owns the inputs of one call
//   static Data make_data(Index T, Index d, Rng&);   random inputs for T tokens
//   static std::optional<double> flops(const Layer&, Form, Index T);
//                                 optional member: analytic FLOPs of one call (nullopt or no
//                                 member = no GFLOP/s counter)
// ---------------------------------------------------------------------------------------------

template <class Case>
concept BenchCase =
    seqmem::SequenceMemory<typename Case::Layer> &&
    requires(Index n, Rng& rng, const typename Case::Layer& layer, Form form,
             const typename Case::Data& data) {
      { Case::make_layer(n) } -> std::same_as<typename Case::Layer>;
      { Case::make_data(n, n, rng) } -> std::same_as<typename Case::Data>;
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
struct GatedLinearAttention {
  using Layer = seqmem::LinearAttention<float>;

  static Layer make_layer(Index d) { return Layer({.key_dim = d, .value_dim = d}); }

  struct Data {
    seqmem::Matrix<float> q, k, v;
    seqmem::Vector<float> log_decay;
    Layer::Inputs inputs() const { return {.q = q, .k = k, .v = v, .log_decay = log_decay}; }
  };

  static Data make_data(Index T, Index d, Rng& rng) {
    return {.q = random_normal<float>(rng, T, d, qk_stddev(d)),
            .k = random_normal<float>(rng, T, d, qk_stddev(d)),
            .v = random_normal<float>(rng, T, d, 1.0),
            .log_decay = random_uniform<float>(rng, T, -0.1, -0.001)};
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
struct SoftmaxAttention {
  using Layer = seqmem::SoftmaxAttention<float>;

  static Layer make_layer(Index d) { return Layer({.key_dim = d, .value_dim = d}); }

  struct Data {
    seqmem::Matrix<float> q, k, v;
    Layer::Inputs inputs() const { return {.q = q, .k = k, .v = v}; }
  };

  static Data make_data(Index T, Index d, Rng& rng) {
    return {.q = random_normal<float>(rng, T, d, qk_stddev(d)),
            .k = random_normal<float>(rng, T, d, qk_stddev(d)),
            .v = random_normal<float>(rng, T, d, 1.0)};
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

/// DeltaNet (MATH.md §3), plain or gated; keys L2-normalized, β ∈ (0, 1).
template <bool Gated>
struct DeltaNet {
  using Layer = seqmem::DeltaNet<float>;
  static Layer make_layer(Index d) { return Layer({.key_dim = d, .value_dim = d}); }
  struct Data {
    seqmem::Matrix<float> q, k, v;
    seqmem::Vector<float> beta, log_decay;
    Layer::Inputs inputs() const {
      Layer::Inputs in{.q = q, .k = k, .v = v, .beta = seqmem::GateRef<float>(beta)};
      if (Gated) in.log_decay.emplace(log_decay);
      return in;
    }
  };
  static Data make_data(Index T, Index d, Rng& rng) {
    Data data{.q = random_normal<float>(rng, T, d, qk_stddev(d)),
              .k = random_normal<float>(rng, T, d, 1.0),
              .v = random_normal<float>(rng, T, d, 1.0),
              .beta = random_uniform<float>(rng, T, 0.0, 1.0),
              .log_decay = random_uniform<float>(rng, T, -0.1, -0.001)};
    data.k.rowwise().normalize();
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

/// FLOPs of the test-time-training engine (core/inner_model.hpp) on layer widths `dims`,
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
template <seqmem::TTTModel Model>
struct TTT {
  using Layer = seqmem::TTT<float, Model>;
  static Layer make_layer(Index d) { return Layer({.dim = d, .mini_batch = 16}); }
  struct Data {
    seqmem::Matrix<float> q, k, v;
    seqmem::Vector<float> eta;
    typename Layer::Inputs inputs() const {
      return {.q = q, .k = k, .v = v, .eta = seqmem::GateRef<float>(eta)};
    }
  };
  static Data make_data(Index T, Index d, Rng& rng) {
    return {.q = random_normal<float>(rng, T, d, 1.0),
            .k = random_normal<float>(rng, T, d, 1.0),
            .v = random_normal<float>(rng, T, d, 1.0),
            .eta = random_uniform<float>(rng, T, 0.0, 1.0 / as_double(d))};
  }
  static std::optional<double> flops(const Layer& layer, Form form, Index T) {
    const Index d = layer.options().dim;
    const std::vector<Index> dims = Model == seqmem::TTTModel::linear
                                        ? std::vector<Index>{d, d}
                                        : std::vector<Index>{d, layer.options().expansion * d, d};
    return engine_flops(dims, form, T, layer.options().mini_batch, 2, 1);  // W_ref, G; G
  }
};

/// Titans memory of depth L at b = 16 (no bias, no LayerNorm: the defaults).
template <Index Depth>
struct Titans {
  using Layer = seqmem::TitansMemory<float>;
  static Layer make_layer(Index d) {
    return Layer({.key_dim = d, .value_dim = d, .depth = Depth, .mini_batch = 16});
  }
  struct Data {
    seqmem::Matrix<float> q, k, v;
    seqmem::Vector<float> theta, alpha, eta;
    Layer::Inputs inputs() const {
      return {.q = q, .k = k, .v = v, .theta = seqmem::GateRef<float>(theta),
              .alpha = seqmem::GateRef<float>(alpha), .momentum = seqmem::GateRef<float>(eta)};
    }
  };
  static Data make_data(Index T, Index d, Rng& rng) {
    Data data{.q = random_normal<float>(rng, T, d, 1.0),
              .k = random_normal<float>(rng, T, d, 1.0),
              .v = random_normal<float>(rng, T, d, 1.0),
              .theta = random_uniform<float>(rng, T, 0.005, 0.05),
              .alpha = random_uniform<float>(rng, T, 0.0, 0.2),
              .eta = random_uniform<float>(rng, T, 0.5, 0.95)};
    data.k.rowwise().normalize();
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

// ---------------------------------------------------------------------------------------------
// The harness: one generic benchmark, registered for all forms × sizes.
// ---------------------------------------------------------------------------------------------

/// One call of `T` tokens from a fresh state, into a preallocated output.
template <BenchCase Case>
void run_layer(benchmark::State& bench, Form form, Index T, Index d) {
  using Layer = typename Case::Layer;
  const Layer layer = Case::make_layer(d);
  Rng rng(kSeed);
  const typename Case::Data data = Case::make_data(T, d, rng);
  const typename Layer::Inputs inputs = data.inputs();  // views into `data`
  seqmem::Matrix<typename Layer::Scalar> out(T, layer.output_dim());

  for ([[maybe_unused]] auto _ : bench) {
    typename Layer::State state = layer.initial_state();  // timed: part of a real call
    layer.forward(form, inputs, state, out);
    benchmark::DoNotOptimize(out.data());
    benchmark::DoNotOptimize(state);
    benchmark::ClobberMemory();
  }

  using benchmark::Counter;
  bench.counters["tokens/s"] = Counter(as_double(T), Counter::kIsIterationInvariantRate);
  if constexpr (HasFlops<Case>) {
    if (const std::optional<double> flops = Case::flops(layer, form, T)) {
      bench.counters["GFLOP/s"] = Counter(*flops * 1e-9, Counter::kIsIterationInvariantRate);
    }
  }
}

/// Sizes of one layer's cases: T per call and d = key_dim = value_dim; `forms` limits the
/// forms (the parallel form of TTT and Titans is defined only within one mini-batch).
struct Sizes {
  std::vector<Index> tokens = {1024, 4096};
  std::vector<Index> dims = {64};
  std::vector<Form> forms = {seqmem::all_forms[0], seqmem::all_forms[1], seqmem::all_forms[2]};
};

/// Registers `BM_<name>/<form>/T:<T>/d:<d>` for every form, T and d.
template <BenchCase Case>
void register_layer(const std::string& name, const Sizes& sizes = {}) {
  for (const Index d : sizes.dims) {
    for (const Form form : sizes.forms) {
      for (const Index T : sizes.tokens) {
        std::ostringstream full;  // (not operator+: GCC 12 warns falsely, -Wrestrict)
        full << "BM_" << name << "/" << seqmem::to_string(form) << "/T:" << T << "/d:" << d;
        benchmark::RegisterBenchmark(full.str().c_str(),
                                     [form, T, d](benchmark::State& bench) {
                                       run_layer<Case>(bench, form, T, d);
                                     })
            ->Unit(benchmark::kMillisecond);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Reference: Eigen's own float GEMM (n×n times n×n), for GFLOP/s efficiency in the same run.
// ---------------------------------------------------------------------------------------------

void BM_eigen_gemm(benchmark::State& bench) {
  const Index n = bench.range(0);
  Rng rng(kSeed);
  const seqmem::Matrix<float> a = random_normal<float>(rng, n, n, 1.0);
  const seqmem::Matrix<float> b = random_normal<float>(rng, n, n, 1.0);
  seqmem::Matrix<float> c(n, n);
  for ([[maybe_unused]] auto _ : bench) {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  // 2·n³ FLOP (n³ multiply-adds).
  bench.counters["GFLOP/s"] = benchmark::Counter(2e-9 * as_double(n * n * n),
                                                 benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_eigen_gemm)->Arg(128)->Unit(benchmark::kMicrosecond);

// ---------------------------------------------------------------------------------------------
// Registration: ONE line per layer.
// ---------------------------------------------------------------------------------------------

[[maybe_unused]] const bool registered = [] {
  const std::vector<Form> dual_forms{Form::recurrent, Form::chunkwise};
  register_layer<GatedLinearAttention>("linear_attention_gated");
  register_layer<SoftmaxAttention>("softmax_attention");
  register_layer<DeltaNet<false>>("delta_net", {{1024, 4096, 16384}, {64, 128}});
  register_layer<DeltaNet<true>>("gated_delta_net", {{1024, 4096, 16384}, {64, 128}});
  register_layer<TTT<seqmem::TTTModel::linear>>("ttt_linear", {.forms = dual_forms});
  register_layer<TTT<seqmem::TTTModel::mlp>>("ttt_mlp", {.forms = dual_forms});
  register_layer<Titans<1>>("titans_L1", {.forms = dual_forms});
  register_layer<Titans<2>>("titans_L2", {.forms = dual_forms});
  return true;
}();

}  // namespace
