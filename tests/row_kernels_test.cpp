// The decode passes of detail/row_kernels.hpp against plain Eigen products, for every vector
// width this CPU can run (the build's own, AVX2, AVX-512), sizes with and without tails, float
// and double, and the Eigen fallback for strided vectors.

#include <gtest/gtest.h>

#include <seqmem/detail/math.hpp>
#include <seqmem/detail/row_kernels.hpp>

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

/// The 16-byte kernels (the width of a build without -march), whatever this build targets.
template <class Scalar, int N>
void read_16(const Scalar* S, Index rows, Index cols, Index ld, const Scalar* const* x,
             Scalar* const* y) {
  k::read_impl<16, Scalar, N>(S, rows, cols, ld, x, y);
}
template <class Scalar, int N, class Decay>
void write_16(Scalar* S, Index rows, Index cols, Index ld, const Decay& decay,
              const Scalar* const* x, const Scalar* const* y) {
  k::write_impl<16, Scalar, N>(S, rows, cols, ld, decay, x, y);
}

/// Runs `check(label, read)` once per kernel width the CPU supports.
template <class Scalar, int N, class Check>
void for_each_width(Check check) {
  check("16 bytes", &read_16<Scalar, N>);
  check("build", &k::read_build<Scalar, N>);
#if defined(SEQMEM_ROW_KERNELS_DISPATCH)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    check("avx2", &k::read_avx2<Scalar, N>);
  if (__builtin_cpu_supports("avx512f")) check("avx512", &k::read_avx512<Scalar, N>);
#endif
}

template <class Scalar, int N, class Decay, class Check>
void for_each_write_width(Check check) {
  check("16 bytes", &write_16<Scalar, N, Decay>);
  check("build", &k::write_build<Scalar, N, Decay>);
#if defined(SEQMEM_ROW_KERNELS_DISPATCH)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    check("avx2", &k::write_avx2<Scalar, N, Decay>);
  if (__builtin_cpu_supports("avx512f")) check("avx512", &k::write_avx512<Scalar, N, Decay>);
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
    for_each_width<Scalar, 2>([&](const char* label, auto read) {
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
    using Decay = decltype(per_row);
    for_each_write_width<Scalar, 2, Decay>([&](const char* label, auto write) {
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

}  // namespace
