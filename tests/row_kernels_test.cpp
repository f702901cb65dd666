// The decode passes of detail/row_kernels.hpp (read, write, and write-then-read) against plain
// Eigen products, for every vector width this CPU can run (the build's own, AVX2, AVX-512), sizes
// with and without tails, float and double, and the Eigen fallback for strided vectors.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include <seqmem/detail/math.hpp>
#include <seqmem/detail/row_kernels.hpp>
#include <seqmem/detail/vector_exp.hpp>

namespace {

using seqmem::Index;
template <class Scalar>
using Matrix = seqmem::Matrix<Scalar>;
template <class Scalar>
using Row = Eigen::Matrix<Scalar, 1, Eigen::Dynamic>;

template <class Scalar>
class RowKernels : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(RowKernels, Scalars);

namespace k = seqmem::detail::row_kernels;

/// Runs `check(label, run)` once per vector width the CPU supports, `run(args...)` being `Pass`
/// at that width: 16 bytes (a build without -march), the build's own, AVX2 + FMA, AVX-512.
template <class Pass, class Check>
void for_each_width(Check check) {
  check("16 bytes", [](const auto&... args) { Pass::template run<16>(args...); });
  check("build", [](const auto&... args) { k::with_build_vectors<Pass>(args...); });
#if defined(SEQMEM_ROW_KERNELS_DISPATCH)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    check("avx2", [](const auto&... args) { k::with_avx2<Pass>(args...); });
  if (__builtin_cpu_supports("avx512f"))
    check("avx512", [](const auto&... args) { k::with_avx512<Pass>(args...); });
#endif
}

const Index kSizes[][2] = {{1, 1}, {3, 5}, {16, 16}, {17, 33}, {64, 64}, {128, 128}, {37, 131}};

TYPED_TEST(RowKernels, ReadMatchesEigen) {
  using Scalar = TypeParam;
  const Scalar tol = std::is_same_v<Scalar, float> ? Scalar(2e-5) : Scalar(1e-12);
  for (const auto& size : kSizes) {
    const Matrix<Scalar> S = Matrix<Scalar>::Random(size[0], size[1]);
    const Row<Scalar> x1 = Row<Scalar>::Random(size[0]), x2 = Row<Scalar>::Random(size[0]);
    const Row<Scalar> want1 = x1 * S, want2 = x2 * S;
    for_each_width<k::ReadPass>([&](const char* label, auto read) {
      Row<Scalar> y1 = Row<Scalar>::Constant(size[1], Scalar(7)), y2 = y1;
      const Scalar* x[2] = {x1.data(), x2.data()};
      Scalar* y[2] = {y1.data(), y2.data()};
      read(S.data(), S.rows(), S.cols(), S.cols(), x, y);
      EXPECT_LE((y1 - want1).cwiseAbs().maxCoeff(), tol * Scalar(size[0])) << label;
      EXPECT_LE((y2 - want2).cwiseAbs().maxCoeff(), tol * Scalar(size[0])) << label;
    });
    // The dispatching entry point, and a strided x (the Eigen fallback).
    Row<Scalar> y1(size[1]), y2(size[1]);
    seqmem::detail::read_rows(S, x1, y1, x2, y2);
    EXPECT_LE((y1 - want1).cwiseAbs().maxCoeff(), tol * Scalar(size[0]));
    const Matrix<Scalar> X = Matrix<Scalar>::Random(size[0], 2);
    seqmem::detail::read_rows(S, X.col(1).transpose(), y1);
    const Row<Scalar> want = X.col(1).transpose() * S;
    EXPECT_LE((y1 - want).cwiseAbs().maxCoeff(), tol * Scalar(size[0]));
  }
}

TYPED_TEST(RowKernels, WriteMatchesEigen) {
  using Scalar = TypeParam;
  const Scalar tol = std::is_same_v<Scalar, float> ? Scalar(1e-6) : Scalar(1e-14);
  for (const auto& size : kSizes) {
    const Matrix<Scalar> S0 = Matrix<Scalar>::Random(size[0], size[1]);
    const Row<Scalar> decay = (Row<Scalar>::Random(size[0]).array() * Scalar(0.5) + Scalar(0.5));
    const Row<Scalar> x1 = Row<Scalar>::Random(size[0]), x2 = Row<Scalar>::Random(size[0]);
    const Row<Scalar> y1 = Row<Scalar>::Random(size[1]), y2 = Row<Scalar>::Random(size[1]);
    const Matrix<Scalar> want =
        decay.transpose().asDiagonal() * S0 + x1.transpose() * y1 + x2.transpose() * y2;
    const auto per_row = [&decay](Index c) { return decay(c); };
    for_each_width<k::WritePass>([&](const char* label, auto write) {
      Matrix<Scalar> S = S0;
      const Scalar* x[2] = {x1.data(), x2.data()};
      const Scalar* y[2] = {y1.data(), y2.data()};
      write(S.data(), S.rows(), S.cols(), S.cols(), per_row, x, y);
      EXPECT_LE((S - want).cwiseAbs().maxCoeff(), tol * 4) << label;
    });
    // The entry point the layers use, with a strided term (the Eigen fallback) and without.
    Matrix<Scalar> S = S0;
    seqmem::detail::decay_and_write_rows(S, per_row, seqmem::detail::RankOne{x1, y1},
                                         seqmem::detail::RankOne{x2, y2});
    EXPECT_LE((S - want).cwiseAbs().maxCoeff(), tol * 4);
    const Matrix<Scalar> Y = Matrix<Scalar>::Random(size[1], 1);
    const auto y_strided = Y.col(0).transpose();
    S = S0;
    seqmem::detail::decay_and_write_rows(S, per_row, seqmem::detail::RankOne{x1, y_strided});
    const Matrix<Scalar> want_one =
        decay.transpose().asDiagonal() * S0 + x1.transpose() * y_strided;
    EXPECT_LE((S - want_one).cwiseAbs().maxCoeff(), tol * 4);
  }
}

TYPED_TEST(RowKernels, WriteReadMatchesEigen) {
  using Scalar = TypeParam;
  const Scalar tol = std::is_same_v<Scalar, float> ? Scalar(2e-5) : Scalar(1e-12);
  for (const auto& size : kSizes) {
    const Matrix<Scalar> S0 = Matrix<Scalar>::Random(size[0], size[1]);
    const Row<Scalar> decay = (Row<Scalar>::Random(size[0]).array() * Scalar(0.5) + Scalar(0.5));
    const Row<Scalar> x1 = Row<Scalar>::Random(size[0]), q = Row<Scalar>::Random(size[0]);
    const Row<Scalar> y1 = Row<Scalar>::Random(size[1]);
    const Matrix<Scalar> want_S = decay.transpose().asDiagonal() * S0 + x1.transpose() * y1;
    const Row<Scalar> want_out = q * want_S;
    const auto per_row = [&decay](Index c) { return decay(c); };
    for_each_width<k::WriteReadPass>([&](const char* label, auto write_read) {
      Matrix<Scalar> S = S0;
      Row<Scalar> out = Row<Scalar>::Constant(size[1], Scalar(7));
      const Scalar* x[1] = {x1.data()};
      const Scalar* y[1] = {y1.data()};
      write_read(S.data(), S.rows(), S.cols(), S.cols(), per_row, x, y, q.data(), out.data());
      EXPECT_LE((S - want_S).cwiseAbs().maxCoeff(), tol) << label;
      EXPECT_LE((out - want_out).cwiseAbs().maxCoeff(), tol * Scalar(size[0])) << label;
    });
    // The entry point the layers use, and with a strided q (the two-pass fallback).
    Matrix<Scalar> S = S0;
    Row<Scalar> out(size[1]);
    seqmem::detail::decay_write_and_read_rows(S, per_row, q, out, seqmem::detail::RankOne{x1, y1});
    EXPECT_LE((S - want_S).cwiseAbs().maxCoeff(), tol);
    EXPECT_LE((out - want_out).cwiseAbs().maxCoeff(), tol * Scalar(size[0]));
    Matrix<Scalar> Q = Matrix<Scalar>::Zero(size[0], 2);
    Q.col(1) = q.transpose();
    S = S0;
    out.setZero();
    seqmem::detail::decay_write_and_read_rows(S, per_row, Q.col(1).transpose(), out,
                                              seqmem::detail::RankOne{x1, y1});
    EXPECT_LE((S - want_S).cwiseAbs().maxCoeff(), tol);
    EXPECT_LE((out - want_out).cwiseAbs().maxCoeff(), tol * Scalar(size[0]));
  }
}

/// A copy of `S0` that starts `offset` scalars past a 64-byte boundary (RowSplit's case: a build
/// without -march aligns Eigen's matrices to 16 bytes only).
template <class Scalar>
struct PlacedState {
  std::vector<Scalar> buffer;
  Scalar* data;
  PlacedState(const Matrix<Scalar>& S0, Index offset) : buffer(std::size_t(S0.size() + 64)) {
    const auto address = reinterpret_cast<std::uintptr_t>(buffer.data());
    data = buffer.data() + (64 - address % 64) % 64 / sizeof(Scalar) + offset;
    std::copy(S0.data(), S0.data() + S0.size(), data);
  }
  Matrix<Scalar> matrix(Index rows, Index cols) const {
    return Eigen::Map<const Matrix<Scalar>>(data, rows, cols);
  }
};

/// Every pass gives the same bits wherever S starts, and the right numbers: sizes whose rows are
/// whole vectors (the straddling loads), at every offset from a 64-byte boundary.
TYPED_TEST(RowKernels, SameBitsAtEveryAlignment) {
  using Scalar = TypeParam;
  const Scalar tol = std::is_same_v<Scalar, float> ? Scalar(2e-5) : Scalar(1e-12);
  const Index sizes[][2] = {{2, 16}, {5, 32}, {16, 16}, {37, 48}, {64, 64}, {128, 128}, {3, 80}};
  const auto same_bits = [](const Scalar* a, const Scalar* b, Index n) {
    return std::memcmp(a, b, std::size_t(n) * sizeof(Scalar)) == 0;
  };
  for (const auto& size : sizes) {
    const Index rows = size[0], cols = size[1];
    const Matrix<Scalar> S0 = Matrix<Scalar>::Random(rows, cols);
    const Row<Scalar> decay = (Row<Scalar>::Random(rows).array() * Scalar(0.5) + Scalar(0.5));
    const Row<Scalar> x1 = Row<Scalar>::Random(rows), x2 = Row<Scalar>::Random(rows);
    const Row<Scalar> y1 = Row<Scalar>::Random(cols), y2 = Row<Scalar>::Random(cols);
    const auto per_row = [&decay](Index c) { return decay(c); };
    const Row<Scalar> want_read1 = x1 * S0, want_read2 = x2 * S0;
    const Matrix<Scalar> want_S =
        decay.transpose().asDiagonal() * S0 + x1.transpose() * y1 + x2.transpose() * y2;
    const Row<Scalar> want_out = x2 * want_S;
    const Scalar* x[2] = {x1.data(), x2.data()};
    const Scalar* y[2] = {y1.data(), y2.data()};
    const Scalar* q = x2.data();
    for_each_width<k::ReadPass>([&](const char* label, auto read) {
      Row<Scalar> first1, first2;
      for (Index offset = 0; offset < Index(64 / sizeof(Scalar)); ++offset) {
        const PlacedState<Scalar> S(S0, offset);
        Row<Scalar> r1(cols), r2(cols);
        Scalar* r[2] = {r1.data(), r2.data()};
        read(static_cast<const Scalar*>(S.data), rows, cols, cols, x, r);
        EXPECT_LE((r1 - want_read1).cwiseAbs().maxCoeff(), tol * Scalar(rows)) << label;
        EXPECT_LE((r2 - want_read2).cwiseAbs().maxCoeff(), tol * Scalar(rows)) << label;
        if (offset == 0) {
          first1 = r1;
          first2 = r2;
        }
        EXPECT_TRUE(same_bits(r1.data(), first1.data(), cols) &&
                    same_bits(r2.data(), first2.data(), cols))
            << label << ", read " << rows << "x" << cols << " at offset " << offset;
      }
    });
    for_each_width<k::WritePass>([&](const char* label, auto write) {
      Matrix<Scalar> first;
      for (Index offset = 0; offset < Index(64 / sizeof(Scalar)); ++offset) {
        const PlacedState<Scalar> S(S0, offset);
        write(S.data, rows, cols, cols, per_row, x, y);
        const Matrix<Scalar> got = S.matrix(rows, cols);
        EXPECT_LE((got - want_S).cwiseAbs().maxCoeff(), tol) << label;
        if (offset == 0) first = got;
        EXPECT_TRUE(same_bits(got.data(), first.data(), got.size()))
            << label << ", write " << rows << "x" << cols << " at offset " << offset;
      }
    });
    for_each_width<k::WriteReadPass>([&](const char* label, auto write_read) {
      Matrix<Scalar> first_S;
      Row<Scalar> first_out;
      for (Index offset = 0; offset < Index(64 / sizeof(Scalar)); ++offset) {
        const PlacedState<Scalar> S(S0, offset);
        Row<Scalar> out(cols);
        write_read(S.data, rows, cols, cols, per_row, x, y, q, out.data());
        const Matrix<Scalar> got = S.matrix(rows, cols);
        EXPECT_LE((got - want_S).cwiseAbs().maxCoeff(), tol) << label;
        EXPECT_LE((out - want_out).cwiseAbs().maxCoeff(), tol * Scalar(rows)) << label;
        if (offset == 0) {
          first_S = got;
          first_out = out;
        }
        EXPECT_TRUE(same_bits(got.data(), first_S.data(), got.size()) &&
                    same_bits(out.data(), first_out.data(), cols))
            << label << ", write-read " << rows << "x" << cols << " at offset " << offset;
      }
    });
  }
}

// The input check's pass (FinitePass) at every width: one non-finite value anywhere in the
// matrix, in the whole vectors and in the tails, and none in the columns beyond the rows' length.
TYPED_TEST(RowKernels, FiniteFindsEveryBadValue) {
  using Scalar = TypeParam;
  using Lim = std::numeric_limits<Scalar>;
  for (const auto& size : kSizes) {
    const Index rows = size[0], cols = size[1], ld = cols + 2;
    Matrix<Scalar> x = Matrix<Scalar>::Constant(rows, ld, Lim::quiet_NaN());
    x.leftCols(cols) = Matrix<Scalar>::Random(rows, cols) * Lim::max();
    for_each_width<k::FinitePass>([&](const char* label, auto finite) {
      bool ok = false;
      finite(x.data(), rows, cols, ld, &ok);
      EXPECT_TRUE(ok) << label << " " << rows << "x" << cols;
      for (Scalar bad : {Lim::quiet_NaN(), Lim::infinity(), -Lim::infinity()}) {
        for (Index i : {Index(0), rows / 2, rows - 1}) {
          for (Index j = 0; j < cols; ++j) {
            Matrix<Scalar> b = x;
            b(i, j) = bad;
            ok = true;
            finite(b.data(), rows, cols, ld, &ok);
            ASSERT_FALSE(ok) << label << " at " << i << ", " << j << " = " << bad;
          }
        }
      }
    });
  }
}

#if defined(SEQMEM_VECTOR_EXP)
// libmvec's exp (vector_exp.hpp) at every width against std::exp: within a few ulp from the
// floor kExpFloor up to where exp overflows, exactly 0 below the floor (−Inf included), Inf
// above the top, NaN kept; every length of tail.
TYPED_TEST(RowKernels, ExpMatchesStdExp) {
  using Scalar = TypeParam;
  using Lim = std::numeric_limits<Scalar>;
  const Scalar floor = k::kExpFloor<Scalar>, top = std::log(Lim::max());
  for (Index n = 1; n <= 40; ++n) {
    Row<Scalar> x = Row<Scalar>::LinSpaced(n, floor, top + Scalar(1));
    if (n > 5) {
      x(1) = Scalar(0);
      x(2) = -Lim::infinity();
      x(3) = floor - Scalar(0.25);
      x(4) = Scalar(-1e4);
      x(n - 1) = Lim::quiet_NaN();
    }
    for_each_width<k::ExpPass>([&](const char* label, auto exp) {
      Row<Scalar> y = x;
      exp(y.data(), n);
      for (Index i = 0; i < n; ++i) {
        const Scalar want = x(i) < floor ? Scalar(0) : std::exp(x(i));
        if (std::isnan(want)) {
          EXPECT_TRUE(std::isnan(y(i))) << label << " exp(" << x(i) << ")";
        } else if (want == Scalar(0) || std::isinf(want)) {
          EXPECT_EQ(y(i), want) << label << " exp(" << x(i) << ")";
        } else {
          EXPECT_LE(std::abs(y(i) - want), Scalar(4) * Lim::epsilon() * want)
              << label << " exp(" << x(i) << ")";
        }
      }
    });
  }
}
#endif

// exp_in_place: the flat run (a matrix, a row of one) and Eigen's exp (a block whose rows are
// not back to back) give exp within a few ulp.
TYPED_TEST(RowKernels, ExpInPlaceMatchesEigen) {
  using Scalar = TypeParam;
  const Matrix<Scalar> x = Scalar(20) * Matrix<Scalar>::Random(37, 19);
  const Matrix<Scalar> want = x.array().exp();
  const Scalar tol = Scalar(8) * std::numeric_limits<Scalar>::epsilon();
  Matrix<Scalar> all = x;
  seqmem::detail::exp_in_place(all);
  EXPECT_LE(((all - want).array() / want.array()).abs().maxCoeff(), tol);
  Matrix<Scalar> part = x;
  seqmem::detail::exp_in_place(part.block(3, 2, 30, 11));
  seqmem::detail::exp_in_place(part.row(0).head(7));
  EXPECT_LE(((part.block(3, 2, 30, 11) - want.block(3, 2, 30, 11)).array() /
             want.block(3, 2, 30, 11).array())
                .abs()
                .maxCoeff(),
            tol);
  EXPECT_LE(((part.row(0).head(7) - want.row(0).head(7)).array() / want.row(0).head(7).array())
                .abs()
                .maxCoeff(),
            tol);
  EXPECT_EQ(part.row(0).tail(12), x.row(0).tail(12));  // nothing outside the block
  EXPECT_EQ(part.row(1), x.row(1));
}

}  // namespace
