/// @file
/// How much faster the chunkwise (dual) form of TTT and Titans is than the recurrent (primal)
/// form — the speed targets of issues #4 and #5 — measured so that a shared, noisy machine
/// cannot fake it: the two forms' calls alternate (T = 4096, d = 64, b = 16, float, the inputs of
/// layers_bench), so a change of load hits both alike. Prints, per layer, the best call of
/// each form, the ratio of the bests and the median of the ratios of adjacent pairs.
///
/// For Titans L = 2 it also times, in the same alternation, the dual form's matrix products
/// alone (the 11 products of 16×64×256 size and 4 smaller ones of each mini-batch, on operands
/// that stay in cache, with nothing between them): the recurrent time over that time is the
/// ratio the chunkwise form could reach on this machine and product backend if everything else
/// it does were free.
///
///   build/bench/form_ratio [rounds [layer]]   (default 15 rounds per layer, ~1 min in all;
///                                            layer: only the one whose name starts so)

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#include "seqmem/seqmem.hpp"

namespace {

using seqmem::Form;
using seqmem::Index;
using Matrix = seqmem::Matrix<float>;
using Gate = seqmem::GateRef<float>;

/// Seconds of one call of `form` from the layer's initial state.
template <class Layer, class Inputs>
double seconds(const Layer& layer, Form form, const Inputs& in, Matrix& out) {
  auto state = layer.initial_state();
  const auto start = std::chrono::steady_clock::now();
  layer.forward(form, in, state, out);
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
  return took.count();
}

/// Seconds of the Titans L = 2 dual form's products for T tokens (T/b mini-batches of b rows;
/// widths d and 4d), in the engine's order: the trace (forward through both layers and the
/// backward product), the dual outputs (query–key scores times Δ and the products with the
/// weights M and momentum S, per layer) and the rank-b updates of M and S.
double titans_products_seconds(Index T, Index d, Index b) {
  namespace sd = seqmem::detail;
  const Index h = 4 * d;
  Matrix W0 = Matrix::Random(d, h), S0 = Matrix::Random(d, h), W1 = Matrix::Random(h, d),
         S1 = Matrix::Random(h, d);
  const Matrix K = Matrix::Random(b, d), Q = Matrix::Random(b, d), X1 = Matrix::Random(b, h),
               H = Matrix::Random(b, h), D1 = 1e-3f * Matrix::Random(b, d);
  Matrix D0 = 1e-3f * Matrix::Random(b, h), Z0, Z1, z, attn;
  std::array<Matrix, 2> scratch;
  const auto start = std::chrono::steady_clock::now();
  for (Index i = 0; i < T / b; ++i) {
    sd::multiply(Z0, K, W0);
    sd::multiply(Z1, X1, W1);
    sd::multiply_by_transpose(D0, D1, W1, scratch);
    D0 *= 1e-3f;
    sd::multiply_by_transpose(attn, Q, K, scratch);
    sd::multiply(z, attn, D0);
    sd::multiply(z, Q, W0, true);
    sd::multiply(z, Q, S0, true);
    sd::multiply_by_transpose(attn, H, X1, scratch);
    sd::multiply(Z1, attn, D1);
    sd::multiply(Z1, H, W1, true);
    sd::multiply(Z1, H, S1, true);
    sd::multiply_transposed(W0, K, D0, true);
    sd::multiply_transposed(S0, K, D0, true);
    sd::multiply_transposed(W1, X1, D1, true);
    sd::multiply_transposed(S1, X1, D1, true);
  }
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
  return took.count();
}

const char* g_only = "";  // run only the layers whose name starts with this

/// `bound`, when given, is timed in every round too (see the file comment).
template <class Layer, class Inputs>
void compare(const char* name, const Layer& layer, const Inputs& in, int rounds,
             const std::function<double()>& bound = {}) {
  if (std::strncmp(name, g_only, std::strlen(g_only)) != 0) return;
  Matrix out(in.q.rows(), layer.output_dim());
  seconds(layer, Form::recurrent, in, out);  // warm up (page faults, libxsmm's kernels)
  seconds(layer, Form::chunkwise, in, out);
  std::vector<double> ratios;
  double best_recurrent = 1e30, best_chunkwise = 1e30, best_bound = 1e30;
  for (int r = 0; r < rounds; ++r) {
    const bool recurrent_first = r % 2 == 0;
    double t_rec = 0, t_chunk = 0;
    if (recurrent_first) t_rec = seconds(layer, Form::recurrent, in, out);
    t_chunk = seconds(layer, Form::chunkwise, in, out);
    if (!recurrent_first) t_rec = seconds(layer, Form::recurrent, in, out);
    if (bound) best_bound = std::min(best_bound, bound());
    best_recurrent = std::min(best_recurrent, t_rec);
    best_chunkwise = std::min(best_chunkwise, t_chunk);
    ratios.push_back(t_rec / t_chunk);
  }
  std::sort(ratios.begin(), ratios.end());
  std::printf(
      "%-12s recurrent %8.2f ms  chunkwise %7.2f ms  ratio of bests %5.2f  "
      "median pair ratio %5.2f  (pairs %.2f..%.2f)\n",
      name, best_recurrent * 1e3, best_chunkwise * 1e3, best_recurrent / best_chunkwise,
      ratios[ratios.size() / 2], ratios.front(), ratios.back());
  if (bound) {
    std::printf("%-12s its products alone %7.2f ms: at most %.2fx if the rest were free\n", "",
                best_bound * 1e3, best_recurrent / best_bound);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::max(1, std::atoi(argv[1])) : 15;
  if (argc > 2) g_only = argv[2];
  const Index T = 4096, d = 64;
  std::mt19937_64 rng(42);
  const auto normal = [&](Index rows, Index cols) {
    std::normal_distribution<float> dist(0.0f, 1.0f);
    Matrix m(rows, cols);
    for (Index i = 0; i < m.size(); ++i)
      m.data()[i] = dist(rng);
    return m;
  };
  const auto uniform = [&](Index rows, float lo, float hi) {
    std::uniform_real_distribution<float> dist(lo, hi);
    Matrix m(rows, 1);
    for (Index i = 0; i < rows; ++i)
      m(i, 0) = dist(rng);
    return m;
  };
  const Matrix q = normal(T, d), v = normal(T, d);
  Matrix k = normal(T, d);
  k.rowwise().normalize();
  const Matrix eta = uniform(T, 0.0f, 1.0f / float(d)), theta = uniform(T, 0.005f, 0.05f),
               alpha = uniform(T, 0.0f, 0.2f), momentum = uniform(T, 0.5f, 0.95f);
  std::printf("chunkwise vs recurrent, T = %td, d = %td, b = 16, float, %d alternating pairs\n", T,
              d, rounds);

  compare("TTT-Linear", seqmem::TTTLinear<float>({.key_dim = d}),
          seqmem::TTTLinear<float>::Inputs{.q = q, .k = k, .v = v, .learning_rate = Gate(eta)},
          rounds);
  compare("TTT-MLP", seqmem::TTTMLP<float>({.key_dim = d}),
          seqmem::TTTMLP<float>::Inputs{.q = q, .k = k, .v = v, .learning_rate = Gate(eta)},
          rounds);
  const seqmem::TitansMemory<float>::Inputs titans_in{.q = q,
                                                      .k = k,
                                                      .v = v,
                                                      .learning_rate = Gate(theta),
                                                      .forgetting = Gate(alpha),
                                                      .momentum_decay = Gate(momentum)};
  for (const Index depth : {1, 2}) {
    const seqmem::TitansMemory<float> titans(
        {.key_dim = d, .value_dim = d, .depth = depth, .mini_batch = 16});
    if (depth == 1) {
      compare("Titans L=1", titans, titans_in, rounds);
    } else {
      compare("Titans L=2", titans, titans_in, rounds,
              [&] { return titans_products_seconds(T, d, 16); });
    }
  }
}
