/// @file
/// What the non-finite input check (Options::check_finite, on by default) costs: the same
/// chunkwise call at T = 4096, d = 64 (float) with the check on and off, interleaved, the
/// best of many runs each; and the q, k, v check alone next to Eigen's allFinite().
///
///   build/bench/finite_check_cost

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>

#include "seqmem/seqmem.hpp"

namespace {

using seqmem::Form;
using seqmem::Index;
using Matrix = seqmem::Matrix<float>;
using Gate = seqmem::GateRef<float>;

template <class F>
double best_seconds(F&& f, int runs = 40) {
  double best = 1e30;
  for (int r = 0; r < runs; ++r) {
    const auto start = std::chrono::steady_clock::now();
    f();
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    best = std::min(best, took.count());
  }
  return best;
}

/// Times `Layer` with the check on and off; `call(layer, state)` runs one forward.
template <class Layer, class Call>
void compare(const char* name, typename Layer::Options options, Call call) {
  options.check_finite = true;
  const Layer on(options);
  options.check_finite = false;
  const Layer off(options);
  const auto run = [&](const Layer& layer) {
    auto state = layer.initial_state();
    call(layer, state);
  };
  double t_on = 1e30, t_off = 1e30;
  for (int round = 0; round < 3; ++round) {  // interleaved: load drifts hit both alike
    t_on = std::min(t_on, best_seconds([&] { run(on); }));
    t_off = std::min(t_off, best_seconds([&] { run(off); }));
  }
  std::printf("%-24s check on %9.1f us   off %9.1f us   cost %7.1f us (%.1f%%)\n", name, t_on * 1e6,
              t_off * 1e6, (t_on - t_off) * 1e6, 100.0 * (t_on - t_off) / t_off);
}

}  // namespace

int main() {
  const Index T = 4096, d = 64;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 0.125f);
  const auto random = [&](Index rows, Index cols) {
    Matrix m(rows, cols);
    for (Index i = 0; i < m.size(); ++i)
      m.data()[i] = normal(rng);
    return m;
  };
  const Matrix q = random(T, d), v = random(T, d);
  Matrix k = random(T, d);
  k.rowwise().normalize();
  const Matrix log_decay = Matrix::Constant(T, 1, -0.01f), beta = Matrix::Constant(T, 1, 0.5f),
               eta = Matrix::Constant(T, 1, 0.1f);
  Matrix out(T, d);

  volatile bool sink = false;
  const double fast = best_seconds([&] {
    sink = seqmem::detail::all_finite(q) && seqmem::detail::all_finite(k) &&
           seqmem::detail::all_finite(v);
  });
  const double eigen =
      best_seconds([&] { sink = q.allFinite() && k.allFinite() && v.allFinite(); });
  std::printf("q, k, v (T=%td, d=%td) checked alone: %.1f us (Eigen allFinite(): %.1f us)\n", T, d,
              fast * 1e6, eigen * 1e6);

  compare<seqmem::LinearAttention<float>>(
      "linear attention (gated)", {.key_dim = d, .value_dim = d}, [&](const auto& l, auto& s) {
        l.forward(Form::chunkwise, {.q = q, .k = k, .v = v, .log_decay = Gate(log_decay)}, s, out);
      });
  compare<seqmem::DeltaNet<float>>(
      "DeltaNet", {.key_dim = d, .value_dim = d}, [&](const auto& l, auto& s) {
        l.forward(Form::chunkwise, {.q = q, .k = k, .v = v, .beta = Gate(beta)}, s, out);
      });
  compare<seqmem::TTTLinear<float>>("TTT-Linear", {.key_dim = d}, [&](const auto& l, auto& s) {
    l.forward(Form::chunkwise, {.q = q, .k = k, .v = v, .learning_rate = Gate(eta)}, s, out);
  });
  compare<seqmem::SoftmaxAttention<float>>(
      "softmax attention", {.key_dim = d, .value_dim = d}, [&](const auto& l, auto& s) {
        l.forward(Form::chunkwise, {.q = q, .k = k, .v = v}, s, out);
      });
}
