#pragma once

/// @file
/// The matrix products of the TTT/Titans engine (core/inner_model.hpp), all on row-major
/// operands:
///
///     multiply(C, A, B)             C = A·B        (accumulate: C += A·B)
///     multiply_transposed(C, X, B)  C = Xᵀ·B       (accumulate: C += Xᵀ·B)
///
/// By default these are Eigen products. Defining SEQMEM_USE_LIBXSMM (and linking libxsmm,
/// Debian package libxsmm-dev; the CMake option of the same name does both) runs them on
/// libxsmm's just-in-time small-matrix kernels instead: the engine's products are skinny (one
/// side is a mini-batch of 16 rows), where Eigen's blocked GEMM reaches about half of an
/// AVX-512 core's peak and libxsmm close to it (docs/benchmarks.md). Shapes libxsmm declines
/// fall back to Eigen, so results never depend on whether a kernel was available — only the
/// rounding of the sums may differ (within MATH.md §6's tolerances).

#include <climits>
#include <type_traits>

#include "seqmem/core/types.hpp"

#if defined(SEQMEM_USE_LIBXSMM)
#include <libxsmm.h>
#endif

namespace seqmem::detail {

#if defined(SEQMEM_USE_LIBXSMM)
/// libxsmm computes column-major C(m×n) = A(m×k)·op(B) + β·C (op: transposed with
/// `transpose_b`). A row-major matrix is its transpose in column-major, so row-major
/// C = A·B is passed as Cᵀ = Bᵀ·Aᵀ. Returns false when libxsmm has no kernel for the shape.
template <class Scalar>
bool libxsmm_multiply(Scalar* c, Index ldc, const Scalar* a, Index lda, const Scalar* b, Index ldb,
                      Index m, Index n, Index k, bool transpose_b, bool accumulate) {
  constexpr Index kMax = INT_MAX;
  if (m > kMax || n > kMax || k > kMax || lda > kMax || ldb > kMax || ldc > kMax) return false;
  const libxsmm_blasint mm = libxsmm_blasint(m), nn = libxsmm_blasint(n), kk = libxsmm_blasint(k),
                        la = libxsmm_blasint(lda), lb = libxsmm_blasint(ldb),
                        lc = libxsmm_blasint(ldc);
  const int flags = transpose_b ? LIBXSMM_GEMM_FLAG_TRANS_B : 0;
  const Scalar alpha = 1, beta = accumulate ? 1 : 0;
  if constexpr (std::is_same_v<Scalar, float>) {
    const libxsmm_smmfunction kernel =
        libxsmm_smmdispatch(mm, nn, kk, &la, &lb, &lc, &alpha, &beta, &flags, nullptr);
    if (kernel == nullptr) return false;
    kernel(a, b, c);
  } else {
    const libxsmm_dmmfunction kernel =
        libxsmm_dmmdispatch(mm, nn, kk, &la, &lb, &lc, &alpha, &beta, &flags, nullptr);
    if (kernel == nullptr) return false;
    kernel(a, b, c);
  }
  return true;
}
#endif

/// C = A·B, or C += A·B when `accumulate`; C is resized when not accumulating.
template <class Scalar>
void multiply(Matrix<Scalar>& C, std::type_identity_t<MatrixCRef<Scalar>> A,
              std::type_identity_t<MatrixCRef<Scalar>> B, bool accumulate = false) {
  if (!accumulate) C.resize(A.rows(), B.cols());
#if defined(SEQMEM_USE_LIBXSMM)
  // A single row is a matrix-vector product, where Eigen is as fast (and skips the dispatch).
  if (A.rows() > 1 && B.cols() > 0 && A.cols() > 0 &&
      libxsmm_multiply(C.data(), C.cols(), B.data(), B.outerStride(), A.data(), A.outerStride(),
                       B.cols(), A.rows(), A.cols(), false, accumulate)) {
    return;
  }
#endif
  if (accumulate) {
    C.noalias() += A * B;
  } else {
    C.noalias() = A * B;
  }
}

/// C = Xᵀ·B, or C += Xᵀ·B when `accumulate`; C is resized when not accumulating.
template <class Scalar>
void multiply_transposed(Matrix<Scalar>& C, std::type_identity_t<MatrixCRef<Scalar>> X,
                         std::type_identity_t<MatrixCRef<Scalar>> B, bool accumulate = false) {
  if (!accumulate) C.resize(X.cols(), B.cols());
#if defined(SEQMEM_USE_LIBXSMM)
  if (X.cols() > 0 && B.cols() > 0 && X.rows() > 0 &&
      libxsmm_multiply(C.data(), C.cols(), B.data(), B.outerStride(), X.data(), X.outerStride(),
                       B.cols(), X.cols(), X.rows(), true, accumulate)) {
    return;
  }
#endif
  if (accumulate) {
    C.noalias() += X.transpose() * B;
  } else {
    C.noalias() = X.transpose() * B;
  }
}

}  // namespace seqmem::detail
