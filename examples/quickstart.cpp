/// @file
/// seqmem quickstart: 4-head gated linear attention.
///
///  1. prefill a 4096-token prompt with the fast chunkwise form,
///  2. decode 64 more tokens one at a time with the recurrent form, carrying the state,
///  3. check the decoded outputs against one recurrent pass over all 4160 tokens.
///
/// Build and run:  cmake --build build --target quickstart && build/examples/quickstart

#include <chrono>
#include <cstdio>

#include <seqmem/seqmem.hpp>

using seqmem::Form;
using seqmem::Index;
using Layer = seqmem::LinearAttention<float>;
using Mat = seqmem::Matrix<float>;  // row-major: one row per token

constexpr Index kHeads = 4, kHeadDim = 64;
constexpr Index kPrompt = 4096, kDecode = 64, kTotal = kPrompt + kDecode;

/// Seconds taken by f().
template <class F>
double seconds(F&& f) {
  const auto start = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

int main() {
  // Inputs of every token, heads packed side by side: q, k, v are T×(H·d), one gate column
  // per head. Eigen's Random is uniform in [-1, 1] (fixed seed).
  const Mat q = Mat::Random(kTotal, kHeads * kHeadDim);
  const Mat k = Mat::Random(kTotal, kHeads * kHeadDim);
  const Mat v = Mat::Random(kTotal, kHeads * kHeadDim);
  // log_decay g ≤ 0, here in [-0.1, -0.001]: each token multiplies the memory by exp(g).
  // Row ranges of it and per-head columns are views, not copies.
  const Mat log_decay = Mat::Random(kTotal, kHeads).array() * 0.0495f - 0.0505f;

  // Tokens [begin, begin + n) as layer inputs: views into the matrices above, no copies.
  const auto tokens = [&](Index begin, Index n) -> Layer::Inputs {
    return {.q = q.middleRows(begin, n),
            .k = k.middleRows(begin, n),
            .v = v.middleRows(begin, n),
            .log_decay = log_decay.middleRows(begin, n)};
  };

  // One layer (shared options), run over 4 heads by the multi-head executor; every head has
  // its own state. The default scale is 1/sqrt(key_dim).
  const seqmem::MultiHead<Layer> attention(Layer({.key_dim = kHeadDim, .value_dim = kHeadDim}),
                                           kHeads);

  // 1. Prefill: the whole prompt in one chunkwise call (output kPrompt × H·d). A first call
  //    also pays one-time costs (fresh memory being paged in, threads starting);
  //    bench/layers_bench measures the steady state.
  seqmem::MultiHead<Layer>::States states = attention.initial_state();
  Mat prompt_out;
  const double prefill_s =
      seconds([&] { prompt_out = attention.forward(Form::chunkwise, tokens(0, kPrompt), states); });

  // 2. Decode: one token per call, recurrent form, continuing from the prefill state (calls
  //    this small run on the calling thread).
  Mat decoded(kDecode, kHeads * kHeadDim);
  const double decode_s = seconds([&] {
    for (Index t = 0; t < kDecode; ++t) {
      decoded.row(t) = attention.forward(Form::recurrent, tokens(kPrompt + t, 1), states);
    }
  });

  // 3. Check: one recurrent pass over all tokens from a fresh state must give the same last
  //    kDecode rows (float tolerance 1e-3 · (1 + max |value|)).
  seqmem::MultiHead<Layer>::States fresh = attention.initial_state();
  const Mat reference = attention.forward(Form::recurrent, tokens(0, kTotal), fresh);
  const auto expected = reference.bottomRows(kDecode);
  const float max_diff = (decoded - expected).cwiseAbs().maxCoeff();
  const float tolerance = 1e-3f * (1.0f + expected.cwiseAbs().maxCoeff());

  std::printf("prefill  %5lld tokens  chunkwise  %12.0f tokens/s\n",
              static_cast<long long>(kPrompt), static_cast<double>(kPrompt) / prefill_s);
  std::printf("decode   %5lld tokens  recurrent  %12.0f tokens/s\n",
              static_cast<long long>(kDecode), static_cast<double>(kDecode) / decode_s);
  std::printf("decode vs one-shot recurrent: max |diff| = %.3g (tolerance %.3g): %s\n",
              static_cast<double>(max_diff), static_cast<double>(tolerance),
              max_diff <= tolerance ? "OK" : "MISMATCH");
  return max_diff <= tolerance ? 0 : 1;
}
