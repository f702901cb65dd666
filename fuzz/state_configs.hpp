#pragma once

// The layers the state-file fuzz target loads states for (one per family and scalar type),
// and one valid call for each: shared by state_io_fuzz.cpp and make_state_corpus.cpp.

#include <random>

#include <seqmem/seqmem.hpp>

namespace seqmem_fuzz {

using seqmem::Index;

inline constexpr int kStateConfigs = 16;

/// Calls fn(layer) with configuration `i` (0 ≤ i < kStateConfigs).
template <class Fn>
void with_state_config(int i, Fn&& fn) {
  using namespace seqmem;
  switch (i) {
    case 0: fn(LinearAttention<double>({.key_dim = 3, .value_dim = 2, .normalize = true})); break;
    case 1: fn(LinearAttention<float>({.key_dim = 2, .value_dim = 3})); break;
    case 2: fn(SoftmaxAttention<double>({.key_dim = 2, .value_dim = 2, .window = 4})); break;
    case 3: fn(SoftmaxAttention<float>({.key_dim = 3, .value_dim = 2})); break;
    case 4: fn(DeltaNet<double>({.key_dim = 2, .value_dim = 3})); break;
    case 5: fn(DeltaNet<float>({.key_dim = 3, .value_dim = 3})); break;
    case 6: {
      TTTLinear<double>::Options o;
      o.key_dim = 2;
      o.mini_batch = 4;
      fn(TTTLinear<double>(o));
      break;
    }
    case 7: {
      TTTMLP<float>::Options o;
      o.key_dim = 2;
      o.mini_batch = 3;
      o.expansion = 2;
      fn(TTTMLP<float>(o));
      break;
    }
    case 8:
      fn(TitansMemory<double>({.key_dim = 2,
                               .value_dim = 3,
                               .depth = 2,
                               .expansion = 2,
                               .bias = true,
                               .mini_batch = 4}));
      break;
    case 9: fn(TitansMemory<float>({.key_dim = 2, .value_dim = 2, .mini_batch = 2})); break;
    case 10: fn(GatedLinearAttention<double>({.key_dim = 3, .value_dim = 2})); break;
    case 11: fn(GatedLinearAttention<float>({.key_dim = 2, .value_dim = 3})); break;
    case 12:
      fn(KimiDeltaAttention<double>({.key_dim = 2, .value_dim = 3, .qk_l2norm = true}));
      break;
    case 13: fn(KimiDeltaAttention<float>({.key_dim = 3, .value_dim = 2})); break;
    case 14: fn(GeneralizedDeltaRule<double>({.key_dim = 3, .value_dim = 3})); break;
    default: fn(GeneralizedDeltaRule<float>({.key_dim = 2, .value_dim = 2})); break;
  }
}

template <class S>
seqmem::Matrix<S> uniform_matrix(Index rows, Index cols, double lo, double hi, std::mt19937& gen) {
  std::uniform_real_distribution<double> dist(lo, hi);
  seqmem::Matrix<S> m(rows, cols);
  for (Index i = 0; i < rows; ++i)
    for (Index j = 0; j < cols; ++j)
      m(i, j) = static_cast<S>(dist(gen));
  return m;
}

// One valid call of T tokens (recurrent form) on `state`: inputs in range, gates in range.

template <class S>
void valid_call(const seqmem::LinearAttention<S>& l, typename seqmem::LinearAttention<S>::State& st,
                Index T, std::mt19937& gen) {
  const auto& o = l.options();
  const auto q = uniform_matrix<S>(T, o.key_dim, 0, 1, gen),
             k = uniform_matrix<S>(T, o.key_dim, 0, 1, gen),
             v = uniform_matrix<S>(T, o.value_dim, -1, 1, gen),
             g = uniform_matrix<S>(T, 1, -1, 0, gen);
  (void)l.forward(seqmem::Form::recurrent,
                  {.q = q, .k = k, .v = v, .log_decay = seqmem::GateRef<S>(g)}, st);
}

template <class S>
void valid_call(const seqmem::SoftmaxAttention<S>& l,
                typename seqmem::SoftmaxAttention<S>::State& st, Index T, std::mt19937& gen) {
  const auto& o = l.options();
  const auto q = uniform_matrix<S>(T, o.key_dim, -1, 1, gen),
             k = uniform_matrix<S>(T, o.key_dim, -1, 1, gen),
             v = uniform_matrix<S>(T, o.value_dim, -1, 1, gen);
  (void)l.forward(seqmem::Form::recurrent, {.q = q, .k = k, .v = v}, st);
}

template <class S>
void valid_call(const seqmem::DeltaNet<S>& l, typename seqmem::DeltaNet<S>::State& st, Index T,
                std::mt19937& gen) {
  const auto& o = l.options();
  auto k = uniform_matrix<S>(T, o.key_dim, 0.1, 1, gen);
  k.rowwise().normalize();
  const auto q = uniform_matrix<S>(T, o.key_dim, -1, 1, gen),
             v = uniform_matrix<S>(T, o.value_dim, -1, 1, gen),
             b = uniform_matrix<S>(T, 1, 0, 2, gen);
  (void)l.forward(seqmem::Form::recurrent, {.q = q, .k = k, .v = v, .beta = seqmem::GateRef<S>(b)},
                  st);
}

template <class S, seqmem::TTTModel M>
void valid_call(const seqmem::TTT<S, M>& l, typename seqmem::TTT<S, M>::State& st, Index T,
                std::mt19937& gen) {
  const Index d = l.options().key_dim;
  const auto q = uniform_matrix<S>(T, d, -1, 1, gen), k = uniform_matrix<S>(T, d, -1, 1, gen),
             v = uniform_matrix<S>(T, d, -1, 1, gen), eta = uniform_matrix<S>(T, 1, 0, 0.25, gen);
  (void)l.forward(seqmem::Form::recurrent,
                  {.q = q, .k = k, .v = v, .learning_rate = seqmem::GateRef<S>(eta)}, st);
}

template <class S>
void valid_call(const seqmem::TitansMemory<S>& l, typename seqmem::TitansMemory<S>::State& st,
                Index T, std::mt19937& gen) {
  const auto& o = l.options();
  auto k = uniform_matrix<S>(T, o.key_dim, 0.1, 1, gen);
  k.rowwise().normalize();
  const auto q = uniform_matrix<S>(T, o.key_dim, -1, 1, gen),
             v = uniform_matrix<S>(T, o.value_dim, -1, 1, gen),
             theta = uniform_matrix<S>(T, 1, 0, 0.1, gen),
             alpha = uniform_matrix<S>(T, 1, 0, 0.2, gen),
             eta = uniform_matrix<S>(T, 1, 0.5, 0.95, gen);
  (void)l.forward(seqmem::Form::recurrent,
                  {.q = q,
                   .k = k,
                   .v = v,
                   .learning_rate = seqmem::GateRef<S>(theta),
                   .forgetting = seqmem::GateRef<S>(alpha),
                   .momentum_decay = seqmem::GateRef<S>(eta)},
                  st);
}

/// Per-key-channel log-decays T×dk in [−1, 0] (docs/math.md §7–§9).
template <class S>
seqmem::Matrix<S> channel_decays(Index T, Index dk, std::mt19937& gen) {
  return uniform_matrix<S>(T, dk, -1, 0, gen);
}

template <class S>
void valid_call(const seqmem::GatedLinearAttention<S>& l,
                typename seqmem::GatedLinearAttention<S>::State& st, Index T, std::mt19937& gen) {
  const auto& o = l.options();
  const auto q = uniform_matrix<S>(T, o.key_dim, -1, 1, gen),
             k = uniform_matrix<S>(T, o.key_dim, -1, 1, gen),
             v = uniform_matrix<S>(T, o.value_dim, -1, 1, gen),
             g = channel_decays<S>(T, o.key_dim, gen);
  (void)l.forward(seqmem::Form::recurrent, {.q = q, .k = k, .v = v, .log_decay = g}, st);
}

template <class S>
void valid_call(const seqmem::KimiDeltaAttention<S>& l,
                typename seqmem::KimiDeltaAttention<S>::State& st, Index T, std::mt19937& gen) {
  const auto& o = l.options();
  auto k = uniform_matrix<S>(T, o.key_dim, 0.1, 1, gen);
  k.rowwise().normalize();
  const auto q = uniform_matrix<S>(T, o.key_dim, -1, 1, gen),
             v = uniform_matrix<S>(T, o.value_dim, -1, 1, gen),
             b = uniform_matrix<S>(T, 1, 0, 2, gen), g = channel_decays<S>(T, o.key_dim, gen);
  (void)l.forward(seqmem::Form::recurrent,
                  {.q = q, .k = k, .v = v, .beta = seqmem::GateRef<S>(b), .log_decay = g}, st);
}

/// RWKV-7-like a = −κ̂, b = κ̂ ⊙ α (docs/math.md §9).
template <class S>
void valid_call(const seqmem::GeneralizedDeltaRule<S>& l,
                typename seqmem::GeneralizedDeltaRule<S>::State& st, Index T, std::mt19937& gen) {
  const auto& o = l.options();
  auto kappa = uniform_matrix<S>(T, o.key_dim, 0.1, 1, gen);
  kappa.rowwise().normalize();
  const seqmem::Matrix<S> a = -kappa,
                          b = kappa.cwiseProduct(uniform_matrix<S>(T, o.key_dim, 0, 1, gen));
  const auto q = uniform_matrix<S>(T, o.key_dim, -1, 1, gen),
             k = uniform_matrix<S>(T, o.key_dim, -1, 1, gen),
             v = uniform_matrix<S>(T, o.value_dim, -1, 1, gen),
             g = channel_decays<S>(T, o.key_dim, gen);
  (void)l.forward(seqmem::Form::recurrent, {.q = q, .k = k, .v = v, .a = a, .b = b, .log_decay = g},
                  st);
}

}  // namespace seqmem_fuzz
