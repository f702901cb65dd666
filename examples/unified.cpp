/// @file
/// One theory: every layer is a memory written by an inner loss and read by a query.
///
/// A matrix memory S (or the weights W of a small model f) is written at every token by one
/// step on a loss that asks the memory to return v_t for the key k_t, and read by the query:
/// o_t = q_t S (or f(q_t; W)). The layers differ only in the loss, the step and what is
/// forgotten before it:
///
///   linear attention   ℓ = −⟨k S, v⟩ (a linear loss); one gradient step of size 1 adds kᵀv.
///                      Nothing already stored is corrected.
///   DeltaNet           ℓ = ½‖k S − v‖²; one step of size β: S ← S − β kᵀ(k S − v). With a unit
///                      key and β = 1 the pair is then stored exactly (the "delta rule").
///   gated variants     the memory decays first, S ← exp(g) S — a weight decay toward 0. GLA and
///                      KDA decay each key channel at its own rate (diag(exp(g)) S).
///   generalized rule   the step's direction and what it erases are free low-rank vectors a, b
///                      (RWKV-7): S ← (diag(exp g) + bᵀa) S + kᵀv.
///   TTT                the same ½ loss on a model f (linear, or an MLP, with residual and
///                      LayerNorm), trained by mini-batch gradient descent: the b tokens of a
///                      mini-batch all take their gradient at the weights it started with.
///   Titans             ℓ = ‖M(k) − v‖² on a deep memory M, with momentum (past surprise) and
///                      forgetting α (weight decay), also per mini-batch.
///   softmax attention  no weights are trained: the memory is the list of all pairs (the KV
///                      cache) and the read is a kernel regression, Σ_s softmax(q·k_s) v_s — the
///                      limit of an unbounded memory.
///
/// So when two layers are set up to take the same steps on the same loss, they are the same
/// layer, and seqmem computes the same numbers. This program sets up each such pair (the
/// settings the tests in tests/ttt_test.cpp, tests/titans_test.cpp and
/// tests/diagonal_gates_test.cpp use), runs both layers on the same random inputs — the left
/// one in the chunkwise form, the right one token by token (recurrent) — and prints the largest
/// difference of their outputs and of their final memories. In double precision every
/// identity holds to rounding (tolerance 1e-10 · (1 + max |value|), docs/math.md §6).
///
/// Build and run:  cmake --build build --target unified && build/examples/unified

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <random>
#include <string>

#include <Eigen/QR>  // orthonormal keys (identity 6)

#include <seqmem/seqmem.hpp>

namespace {

using namespace seqmem;
using Mat = Matrix<double>;
using Vec = Vector<double>;

constexpr Index kT = 100;  // tokens: not a multiple of any chunk or mini-batch size below
constexpr Index kD = 16;   // key and value width

std::mt19937_64 rng(2024);

/// T×cols uniform in [lo, hi).
Mat uniform(Index rows, Index cols, double lo = -1, double hi = 1) {
  std::uniform_real_distribution<double> u(lo, hi);
  Mat m(rows, cols);
  for (Index i = 0; i < rows; ++i)
    for (Index j = 0; j < cols; ++j)
      m(i, j) = u(rng);
  return m;
}

Vec uniform_vector(Index n, double lo, double hi) {
  return uniform(n, 1, lo, hi).col(0);
}

Mat unit_rows(Mat m) {
  m.rowwise().normalize();
  return m;
}

bool all_ok = true;

/// Prints one identity: the largest |difference| of the two layers' outputs and final memories,
/// each relative to 1 + the largest |value| of the right-hand side.
void report(const std::string& identity, const Mat& left_out, const Mat& right_out,
            const Mat& left_memory, const Mat& right_memory) {
  const auto diff = [](const Mat& a, const Mat& b) {
    return (a - b).cwiseAbs().maxCoeff() / (1.0 + b.cwiseAbs().maxCoeff());
  };
  const double outputs = diff(left_out, right_out), memories = diff(left_memory, right_memory);
  const bool ok = outputs <= 1e-10 && memories <= 1e-10;
  all_ok = all_ok && ok;
  std::printf("%-72s %9.2g %9.2g  %s\n", identity.c_str(), outputs, memories, ok ? "OK" : "FAIL");
}

/// TTT with its residual and LayerNorm off, no bias, no token-index scaling, mini-batch b and
/// initial weights W0 (the setting of the TTT paper's Theorem 1 when W0 = 0 and b ≥ T).
TTTLinear<double> plain_ttt_linear(Index b, const Mat& W0) {
  return TTTLinear<double>({.key_dim = kD,
                            .mini_batch = b,
                            .token_index_scaling = false,
                            .layer_norm = false,
                            .bias = false},
                           TTTLinear<double>::Parameters{{{W0}, {}}, {}, {}});
}

/// Titans of depth 1 (M(x) = x W, no LayerNorm, no bias) with initial weights W0.
TitansMemory<double> linear_titans(Index b, const Mat& W0) {
  return TitansMemory<double>({.key_dim = kD, .value_dim = kD, .depth = 1, .mini_batch = b},
                              TitansMemory<double>::Parameters{{{W0}, {}}, {}, {}});
}

}  // namespace

int main() try {
  const Mat q = uniform(kT, kD), k = uniform(kT, kD), v = uniform(kT, kD);
  const Mat unit_k = unit_rows(k);  // the delta rule's identities need unit keys
  const Vec ones = Vec::Ones(kT), zeros = Vec::Zero(kT);
  const Mat S0 = uniform(kD, kD);  // a nonzero start where the identity allows it
  const Mat zero_memory = Mat::Zero(kD, kD);

  std::printf("%-72s %9s %9s\n", "identity (left: chunkwise form; right: recurrent)", "outputs",
              "memories");

  // 1. Linear attention = TTT-Linear under batch gradient descent (TTT paper, Theorem 1):
  //    residual, LayerNorm and bias off, W0 = 0, rate a_t = 1, no token-index scaling and one
  //    mini-batch for the whole call (b ≥ T): every gradient is taken at W = 0, where the ½
  //    loss's gradient is −kᵀv, so W_t = Σ_{s≤t} k_sᵀ v_s = S_t (linear attention, scale 1).
  {
    const auto ttt = plain_ttt_linear(128, zero_memory);
    auto ts = ttt.initial_state();
    const Mat left =
        ttt.forward(Form::chunkwise, {.q = q, .k = k, .v = v, .learning_rate = ones}, ts);
    const LinearAttention<double> linear({.key_dim = kD, .value_dim = kD, .scale = 1.0});
    auto ls = linear.initial_state();
    const Mat right = linear.forward(Form::recurrent, {.q = q, .k = k, .v = v}, ls);
    report("TTT-Linear, batch GD (b >= T, W0 = 0, a = 1) = linear attention", left, right,
           ttt.current_weights(ts).W[0], ls.S);
  }
  //    With per-token rates a_t it is linear attention on the keys a_t k_t.
  {
    const Vec a = uniform_vector(kT, 0, 2);
    const auto ttt = plain_ttt_linear(128, zero_memory);
    auto ts = ttt.initial_state();
    const Mat left = ttt.forward(Form::chunkwise, {.q = q, .k = k, .v = v, .learning_rate = a}, ts);
    const LinearAttention<double> linear({.key_dim = kD, .value_dim = kD, .scale = 1.0});
    auto ls = linear.initial_state();
    const Mat scaled_k = a.asDiagonal() * k;
    const Mat right = linear.forward(Form::recurrent, {.q = q, .k = scaled_k, .v = v}, ls);
    report("TTT-Linear, batch GD, rates a_t = linear attention on keys a_t k_t", left, right,
           ttt.current_weights(ts).W[0], ls.S);
  }

  // 2. DeltaNet = TTT-Linear with mini-batch 1 = Titans depth 1, b = 1, no momentum, no
  //    forgetting. With b = 1 each gradient is taken at the current weights: TTT's step is
  //    W ← W − a kᵀ(k W − v), the delta rule with β = a; Titans' loss is not halved, so θ = β/2.
  //    Any start S0 (the same in all three), unit keys, β ∈ [0, 2], DeltaNet's scale 1.
  const Vec beta = uniform_vector(kT, 0, 2);
  const Vec theta = beta / 2;
  const DeltaNet<double> delta({.key_dim = kD, .value_dim = kD, .scale = 1.0});
  DeltaNet<double>::State ds{S0};
  const Mat delta_out =
      delta.forward(Form::recurrent, {.q = q, .k = unit_k, .v = v, .beta = beta}, ds);
  {
    const auto ttt = plain_ttt_linear(1, S0);
    auto ts = ttt.initial_state();
    const Mat left =
        ttt.forward(Form::chunkwise, {.q = q, .k = unit_k, .v = v, .learning_rate = beta}, ts);
    report("TTT-Linear, mini-batch 1, a = beta = DeltaNet", left, delta_out,
           ttt.current_weights(ts).W[0], ds.S);
  }
  {
    const auto titans = linear_titans(1, S0);
    auto ts = titans.initial_state();
    const Mat left = titans.forward(Form::chunkwise,
                                    {.q = q,
                                     .k = unit_k,
                                     .v = v,
                                     .learning_rate = theta,
                                     .forgetting = zeros,
                                     .momentum_decay = zeros},
                                    ts);
    report("Titans depth 1, b 1, theta = beta/2, no momentum/forgetting = DeltaNet", left,
           delta_out, ts.current.W[0], ds.S);
  }

  // 3. One machine, two optimizers (docs/math.md §5): Titans without momentum and forgetting
  //    is TTT with rates a = 2θ at any equal mini-batch size (here 16), depth 1 or 2, as long as
  //    the inner models match (no bias, no LayerNorm, no token-index scaling, same start).
  {
    const Vec rate = uniform_vector(kT, 0, 0.5);
    const Vec half_rate = rate / 2;
    const auto ttt = plain_ttt_linear(16, S0);
    auto ts = ttt.initial_state();
    const Mat left =
        ttt.forward(Form::chunkwise, {.q = q, .k = k, .v = v, .learning_rate = rate}, ts);
    const auto titans = linear_titans(16, S0);
    auto ms = titans.initial_state();
    const Mat right = titans.forward(Form::recurrent,
                                     {.q = q,
                                      .k = k,
                                      .v = v,
                                      .learning_rate = half_rate,
                                      .forgetting = zeros,
                                      .momentum_decay = zeros},
                                     ms);
    report("TTT-Linear, b 16, rates a = Titans depth 1, b 16, theta = a/2", left, right,
           ttt.current_weights(ts).W[0], ms.current.W[0]);

    // Depth 2: the same MLP (GELU-tanh, hidden 4·d, no biases) and the same start.
    const TTTMLP<double> ttt_mlp({.key_dim = kD,
                                  .mini_batch = 16,
                                  .token_index_scaling = false,
                                  .layer_norm = false,
                                  .bias = false});
    const TitansMemory<double> titans2(
        {.key_dim = kD, .value_dim = kD, .depth = 2, .mini_batch = 16},
        TitansMemory<double>::Parameters{ttt_mlp.parameters().initial, {}, {}});
    auto t2 = ttt_mlp.initial_state();
    const Mat left2 =
        ttt_mlp.forward(Form::chunkwise, {.q = q, .k = unit_k, .v = v, .learning_rate = rate}, t2);
    auto m2 = titans2.initial_state();
    const Mat right2 = titans2.forward(Form::recurrent,
                                       {.q = q,
                                        .k = unit_k,
                                        .v = v,
                                        .learning_rate = half_rate,
                                        .forgetting = zeros,
                                        .momentum_decay = zeros},
                                       m2);
    report("TTT-MLP, b 16, rates a = Titans depth 2, b 16, theta = a/2 (W2 shown)", left2, right2,
           ttt_mlp.current_weights(t2).W[1], m2.current.W[1]);
  }

  // 4. Per-channel decays with all channels equal are a scalar decay: GLA = linear attention
  //    with that decay, KDA = gated DeltaNet (both with a nonzero start S0).
  const Vec g = uniform_vector(kT, -0.5, 0);  // per-token log-decay
  const Mat G = g.replicate(1, kD);           // the same in every channel
  {
    const GatedLinearAttention<double> gla({.key_dim = kD, .value_dim = kD});
    GatedLinearAttention<double>::State gs{S0};
    const Mat left = gla.forward(Form::chunkwise, {.q = q, .k = k, .v = v, .log_decay = G}, gs);
    const LinearAttention<double> linear({.key_dim = kD, .value_dim = kD});
    auto ls = linear.initial_state();
    ls.S = S0;
    const Mat right = linear.forward(Form::recurrent, {.q = q, .k = k, .v = v, .log_decay = g}, ls);
    report("GLA, all channels' decay equal = linear attention with that decay", left, right, gs.S,
           ls.S);
  }
  {
    const KimiDeltaAttention<double> kda({.key_dim = kD, .value_dim = kD});
    KimiDeltaAttention<double>::State ks{S0};
    const Mat left = kda.forward(Form::chunkwise,
                                 {.q = q, .k = unit_k, .v = v, .beta = beta, .log_decay = G}, ks);
    const DeltaNet<double> gated({.key_dim = kD, .value_dim = kD});
    DeltaNet<double>::State gs{S0};
    const Mat right = gated.forward(
        Form::recurrent, {.q = q, .k = unit_k, .v = v, .beta = beta, .log_decay = g}, gs);
    report("KDA, all channels' decay equal = gated DeltaNet", left, right, ks.S, gs.S);
  }

  // 5. The generalized delta rule S ← (diag(exp g) + bᵀa) S + kᵀv contains the others: with
  //    a = b = 0 it is GLA; with a = −k ⊙ exp(g), b = β k and the written key β k it is KDA
  //    (exp(g) because this rule reads the state before the decay, KDA after it).
  const Mat Gc = uniform(kT, kD, -0.5, 0);  // per-channel log-decays
  {
    const GeneralizedDeltaRule<double> gdr({.key_dim = kD, .value_dim = kD});
    const Mat zero = Mat::Zero(kT, kD);
    GeneralizedDeltaRule<double>::State rs{S0};
    const Mat left = gdr.forward(
        Form::chunkwise, {.q = q, .k = k, .v = v, .a = zero, .b = zero, .log_decay = Gc}, rs);
    const GatedLinearAttention<double> gla({.key_dim = kD, .value_dim = kD});
    GatedLinearAttention<double>::State gs{S0};
    const Mat right = gla.forward(Form::recurrent, {.q = q, .k = k, .v = v, .log_decay = Gc}, gs);
    report("generalized delta rule, a = b = 0 = GLA", left, right, rs.S, gs.S);
  }
  {
    const GeneralizedDeltaRule<double> gdr({.key_dim = kD, .value_dim = kD});
    const Mat beta_k = beta.asDiagonal() * unit_k;
    const Mat a = -unit_k.cwiseProduct(Gc.array().exp().matrix());
    GeneralizedDeltaRule<double>::State rs{S0};
    const Mat left = gdr.forward(
        Form::chunkwise, {.q = q, .k = beta_k, .v = v, .a = a, .b = beta_k, .log_decay = Gc}, rs);
    const KimiDeltaAttention<double> kda({.key_dim = kD, .value_dim = kD});
    KimiDeltaAttention<double>::State ks{S0};
    const Mat right = kda.forward(Form::recurrent,
                                  {.q = q, .k = unit_k, .v = v, .beta = beta, .log_decay = Gc}, ks);
    report("generalized delta rule, a = -k*exp(g), b = beta k, key beta k = KDA", left, right, rs.S,
           ks.S);
  }

  // 6. When nothing needs correcting the delta rule is linear attention: orthonormal keys,
  //    β = 1, an empty memory (each write finds k S = 0 and adds exactly kᵀv).
  {
    const Index n = kD;  // at most d orthonormal keys
    const Eigen::HouseholderQR<Eigen::MatrixXd> qr(Eigen::MatrixXd(uniform(kD, kD)));
    const Mat keys = Eigen::MatrixXd(qr.householderQ()).transpose();
    const Mat qn = q.topRows(n), vn = v.topRows(n);
    const Vec one = Vec::Ones(n);
    DeltaNet<double>::State dn{zero_memory};
    const Mat left = delta.forward(Form::chunkwise, {.q = qn, .k = keys, .v = vn, .beta = one}, dn);
    const LinearAttention<double> linear({.key_dim = kD, .value_dim = kD, .scale = 1.0});
    auto ls = linear.initial_state();
    const Mat right = linear.forward(Form::recurrent, {.q = qn, .k = keys, .v = vn}, ls);
    report("DeltaNet, orthonormal keys, beta 1, empty start = linear attention", left, right, dn.S,
           ls.S);
  }

  // A control: the identities are not loose. Mini-batch 16 instead of 1 takes the gradients of
  // 16 tokens at the same weights, and TTT-Linear is no longer DeltaNet.
  {
    const auto ttt = plain_ttt_linear(16, S0);
    auto ts = ttt.initial_state();
    const Mat left =
        ttt.forward(Form::chunkwise, {.q = q, .k = unit_k, .v = v, .learning_rate = beta}, ts);
    const double outputs =
        (left - delta_out).cwiseAbs().maxCoeff() / (1.0 + delta_out.cwiseAbs().maxCoeff());
    const bool differs = outputs > 1e-3;
    all_ok = all_ok && differs;
    std::printf("%-72s %9.2g %9s  %s\n", "control: TTT-Linear, mini-batch 16 (not 1) vs DeltaNet",
                outputs, "", differs ? "differs, as it should" : "FAIL: should differ");
  }

  std::printf("%s\n",
              all_ok ? "every identity holds to rounding: OK" : "an identity does not hold: FAIL");
  return all_ok ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "unified: %s\n", e.what());
  return 1;
}
