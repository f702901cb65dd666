// The pieces of the layers from x (include/seqmem/pieces/), each against its definition
// written out as plain loops here: linear maps in [out, in] orientation, the short convolution
// (and that any split of a sequence, single tokens included, equals one call), the norms, the
// activations and both rotary layouts.

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include <seqmem/pieces/activation.hpp>
#include <seqmem/pieces/linear.hpp>
#include <seqmem/pieces/norm.hpp>
#include <seqmem/pieces/rotary.hpp>
#include <seqmem/pieces/short_conv.hpp>

#include "test_util.hpp"

namespace seqmem::test {
namespace {

using pieces::Linear;
using pieces::Rotary;
using pieces::RotaryLayout;
using pieces::ShortConv;

TEST(Pieces, LinearIsXTimesWeightTransposedPlusBias) {
  Rng rng(1);
  const Matrix<double> x = uniform<double>(rng, 5, 3), w = uniform<double>(rng, 4, 3),
                       b = uniform<double>(rng, 1, 4);
  const Linear<double> with_bias(w, b), without(w);
  const Matrix<double> y = with_bias(x), y0 = without(x);
  for (Index t = 0; t < 5; ++t) {
    for (Index o = 0; o < 4; ++o) {
      double sum = 0;
      for (Index i = 0; i < 3; ++i)
        sum += x(t, i) * w(o, i);
      EXPECT_NEAR(y0(t, o), sum, 1e-15);
      EXPECT_NEAR(y(t, o), sum + b(0, o), 1e-15);
    }
  }
  EXPECT_THROW(Linear<double>(w, Matrix<double>(1, 3)), seqmem::invalid_argument);
}

/// The definition: out[t, c] = Σ_i w[c, i] · z[t − K + 1 + i, c] + b[c], zero before t = 0.
Matrix<double> conv_definition(const Matrix<double>& z, const Matrix<double>& w,
                               const Matrix<double>& b) {
  const Index T = z.rows(), C = z.cols(), K = w.cols();
  Matrix<double> out(T, C);
  for (Index t = 0; t < T; ++t) {
    for (Index c = 0; c < C; ++c) {
      double sum = b.size() ? b(0, c) : 0.0;
      for (Index i = 0; i < K; ++i) {
        const Index s = t - K + 1 + i;
        if (s >= 0) sum += w(c, i) * z(s, c);
      }
      out(t, c) = sum;
    }
  }
  return out;
}

TEST(Pieces, ShortConvMatchesItsDefinitionForAnySplit) {
  Rng rng(2);
  for (const Index K : {1, 2, 4}) {
    for (const bool bias : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "K " << K << ", bias " << bias);
      const Index T = 23, C = 5;
      const Matrix<double> z = uniform<double>(rng, T, C), w = uniform<double>(rng, C, K);
      const Matrix<double> b = bias ? uniform<double>(rng, 1, C) : Matrix<double>();
      const ShortConv<double> conv(w, b);
      const Matrix<double> want = conv_definition(z, w, b);

      Matrix<double> cache = conv.initial_cache(), one(T, C);
      conv.apply(z, cache, one);
      EXPECT_TRUE(near(one, want, 1e-15));
      // The cache is the last K − 1 rows of the sequence.
      EXPECT_EQ(cache, z.bottomRows(K - 1));

      // Calls of 1, 2, 7, 1, ... tokens (decode steps among them) from the carried cache.
      Matrix<double> split(T, C);
      cache = conv.initial_cache();
      const std::vector<Index> lengths{1, 2, 7, 1, 1, 3, 8};
      for (Index begin = 0, i = 0; begin < T; ++i) {
        const Index n = std::min(lengths[std::size_t(i) % lengths.size()], T - begin);
        conv.apply(z.middleRows(begin, n), cache, split.middleRows(begin, n));
        begin += n;
      }
      EXPECT_EQ(split, one);
    }
  }
  const ShortConv<double> conv(Matrix<double>::Ones(3, 4));
  Matrix<double> bad_cache = Matrix<double>::Zero(2, 3), out(2, 3);
  EXPECT_THROW(conv.apply(Matrix<double>::Ones(2, 3), bad_cache, out), seqmem::invalid_argument);
  EXPECT_THROW(ShortConv<double>(Matrix<double>(3, 0)), seqmem::invalid_argument);
}

TEST(Pieces, NormsMatchTheirDefinitions) {
  Rng rng(3);
  const Index T = 4, d = 6, heads = 3;
  const Matrix<double> z = uniform<double>(rng, T, heads * d),
                       gate = uniform<double>(rng, T, heads * d);
  const Matrix<double> w = uniform<double>(rng, 1, d, 0.5, 1.5), b = uniform<double>(rng, 1, d);
  const double eps = 1e-5;
  // RMSNorm also takes one weight per channel (Mamba2's groups of an I-wide weight).
  const Matrix<double> wide = uniform<double>(rng, 1, heads * d, 0.5, 1.5);
  Matrix<double> rms = z, gated = z, ln = z, l2 = z, rms_wide = z;
  pieces::rms_norm<double>(rms, w, eps, d);
  pieces::rms_norm<double>(rms_wide, wide, eps, d);
  EXPECT_THROW(pieces::rms_norm<double>(rms_wide, Matrix<double>::Ones(1, d + 1), eps, d),
               seqmem::invalid_argument);
  pieces::gated_rms_norm<double>(gated, gate, w, eps, d);
  pieces::layer_norm<double>(ln, w, b, eps, d);
  pieces::l2_normalize<double>(l2, 1e-6, d);
  for (Index t = 0; t < T; ++t) {
    for (Index h = 0; h < heads; ++h) {
      double sq = 0, mean = 0;
      for (Index j = 0; j < d; ++j) {
        sq += z(t, h * d + j) * z(t, h * d + j);
        mean += z(t, h * d + j) / double(d);
      }
      double var = 0;
      for (Index j = 0; j < d; ++j)
        var += (z(t, h * d + j) - mean) * (z(t, h * d + j) - mean) / double(d);
      for (Index j = 0; j < d; ++j) {
        const Index c = h * d + j;
        const double r = z(t, c) / std::sqrt(sq / double(d) + eps) * w(0, j);
        const double g = gate(t, c) / (1.0 + std::exp(-gate(t, c)));
        EXPECT_NEAR(rms(t, c), r, 1e-14);
        EXPECT_NEAR(rms_wide(t, c), r / w(0, j) * wide(0, c), 1e-14);
        EXPECT_NEAR(gated(t, c), r * g, 1e-14);
        EXPECT_NEAR(ln(t, c), (z(t, c) - mean) / std::sqrt(var + eps) * w(0, j) + b(0, j), 1e-14);
        EXPECT_NEAR(l2(t, c), z(t, c) / std::sqrt(sq + 1e-6), 1e-15);
      }
    }
  }
}

TEST(Pieces, Activations) {
  Eigen::ArrayXd z(6);
  z << -30, -1, 0, 0.5, 20, 25;
  const Eigen::ArrayXd sig = pieces::sigmoid(z), si = pieces::silu(z), sp = pieces::softplus(z);
  for (Index i = 0; i < z.size(); ++i) {
    EXPECT_NEAR(sig(i), 1 / (1 + std::exp(-z(i))), 1e-16);
    EXPECT_NEAR(si(i), z(i) / (1 + std::exp(-z(i))), 1e-15);
    // softplus is z itself above 20 (as PyTorch), log(1 + e^z) otherwise.
    EXPECT_DOUBLE_EQ(sp(i), z(i) > 20 ? z(i) : std::log1p(std::exp(z(i))));
  }
}

TEST(Pieces, RotaryLayoutsMatchTheirDefinitionsAndKeepRelativePositions) {
  Rng rng(4);
  const Index T = 7, d = 8, heads = 2;
  const Matrix<double> x = uniform<double>(rng, T, heads * d);
  for (const RotaryLayout layout : {RotaryLayout::half, RotaryLayout::interleaved}) {
    for (const Index period : {0, 4}) {
      SCOPED_TRACE(::testing::Message() << "interleaved " << (layout == RotaryLayout::interleaved)
                                        << ", period " << period);
      const Rotary rope{.base = 10000.0, .layout = layout, .period = period};
      const Index first = 5;
      Matrix<double> got = x;
      rope.apply<double>(got, d, first);
      for (Index t = 0; t < T; ++t) {
        const Index p = period ? (first + t) % period : first + t;
        for (Index h = 0; h < heads; ++h) {
          for (Index i = 0; i < d / 2; ++i) {
            const Index a = h * d + (layout == RotaryLayout::half ? i : 2 * i);
            const Index b = h * d + (layout == RotaryLayout::half ? i + d / 2 : 2 * i + 1);
            const double th = double(p) * std::pow(10000.0, -2.0 * double(i) / double(d));
            EXPECT_NEAR(got(t, a), x(t, a) * std::cos(th) - x(t, b) * std::sin(th), 1e-15);
            EXPECT_NEAR(got(t, b), x(t, b) * std::cos(th) + x(t, a) * std::sin(th), 1e-15);
          }
        }
        EXPECT_NEAR(got.row(t).norm(), x.row(t).norm(), 1e-14);  // a rotation
      }
    }
    // q at position m and k at n: the score depends on m − n only.
    const Rotary rope{.layout = layout};
    Matrix<double> q1 = x.topRows(1), k1 = x.bottomRows(1), q2 = q1, k2 = k1;
    rope.apply<double>(q1, d, 9);
    rope.apply<double>(k1, d, 4);
    rope.apply<double>(q2, d, 105);
    rope.apply<double>(k2, d, 100);
    EXPECT_NEAR(q1.row(0).dot(k1.row(0)), q2.row(0).dot(k2.row(0)), 1e-12);
  }
}

}  // namespace
}  // namespace seqmem::test
