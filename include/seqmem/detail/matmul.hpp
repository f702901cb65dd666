#pragma once

/// @file
/// The matrix products of the chunkwise forms (linear attention, DeltaNet, softmax attention,
/// the diagonal-gate layers) and of the TTT/Titans engine (detail/inner_model.hpp), all on
/// row-major operands:
///
///     multiply(C, A, B)             C = A·B        (accumulate: C += A·B)
///     multiply_transposed(C, X, B)  C = Xᵀ·B       (accumulate: C += Xᵀ·B)
///     multiply_by_transpose(C, A, W) C = A·Wᵀ
///     transpose(out, A)             out = Aᵀ
///
/// (each with an `_into` variant writing into a sized block instead of resizing a matrix).
///
/// By default these are Eigen products. Defining SEQMEM_USE_LIBXSMM (and linking libxsmm,
/// Debian package libxsmm-dev; the CMake option of the same name does both, and the installed
/// package records it) runs them on libxsmm's just-in-time small-matrix kernels instead: the
/// products are small (a chunk of 16–64 rows against d = 64–128), where Eigen's blocked GEMM
/// pays its packing and libxsmm runs about 2× faster on this AVX-512 core (docs/benchmarks.md).
/// Shapes libxsmm declines fall back to Eigen, so results never depend on whether a kernel was
/// available — only the rounding of the sums may differ (within docs/math.md §6's tolerances).

#include <algorithm>
#include <array>
#include <climits>
#include <cstddef>
#include <string_view>
#include <type_traits>

#include "seqmem/core/types.hpp"

#if defined(SEQMEM_USE_LIBXSMM)
#include <libxsmm.h>
#include <libxsmm_generator.h>
#if !defined(__AVX__) && (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#include <immintrin.h>
#endif
#endif

namespace seqmem {

/// The backend of the library's matrix products: "libxsmm" when compiled with
/// SEQMEM_USE_LIBXSMM (what find_package(seqmem) and pkg-config give when seqmem was installed
/// with libxsmm found), "eigen" otherwise.
constexpr std::string_view product_backend() {
#if defined(SEQMEM_USE_LIBXSMM)
  return "libxsmm";
#else
  return "eigen";
#endif
}

}  // namespace seqmem

namespace seqmem::detail {

#if defined(SEQMEM_USE_LIBXSMM)
#if !defined(__AVX__) && (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
/// libxsmm's kernels are generated for the running CPU (AVX-512 here) and return with the
/// upper halves of the vector registers in use. Code compiled without AVX (a consumer's default
/// x86-64 flags) then pays a state transition on every SSE instruction: measured 4–6× slower
/// for everything that follows, decode steps included (issue 17). vzeroupper clears that state.
[[gnu::target("avx")]] inline void clear_upper_vector_state_avx() {
  _mm256_zeroupper();
}
inline void clear_upper_vector_state() {
  static const bool has_avx = __builtin_cpu_supports("avx");
  if (has_avx) clear_upper_vector_state_avx();
}
#else
/// Compiled with AVX the compiler emits vzeroupper itself where it is needed: nothing to do.
inline void clear_upper_vector_state() {}
#endif

/// The libxsmm kernel for one product or transpose shape; each thread remembers the last few
/// it used (per kernel type), which saves libxsmm's registry lookup (about 2 % of a Titans
/// mini-batch, and half the time of a 16×64 transpose).
template <class Kernel>
Kernel cached_libxsmm_kernel(const std::array<libxsmm_blasint, 6>& shape, int flags,
                             bool accumulate,
                             Kernel (*dispatch)(const std::array<libxsmm_blasint, 6>&, int, bool)) {
  struct Entry {
    std::array<libxsmm_blasint, 6> shape;
    int flags;
    bool accumulate;
    Kernel kernel;
  };
  thread_local std::array<Entry, 16> cache{};
  thread_local std::size_t next = 0;
  for (const Entry& e : cache) {
    if (e.kernel != nullptr && e.flags == flags && e.accumulate == accumulate &&
        std::equal(shape.begin(), shape.end(), e.shape.begin()))
      return e.kernel;
  }
  const Kernel kernel = dispatch(shape, flags, accumulate);
  if (kernel != nullptr) {
    cache[next] = Entry{shape, flags, accumulate, kernel};
    next = (next + 1) % cache.size();
  }
  return kernel;
}

/// libxsmm computes column-major C(m×n) = A(m×k)·op(B) (+ C when `accumulate`), op(B) = B
/// (k×n) or, with `transpose_b`, Bᵀ for B stored n×k. Returns false when it has no kernel
/// for the shape.
template <class Scalar>
bool libxsmm_multiply(Scalar* c, Index ldc, const Scalar* a, Index lda, const Scalar* b, Index ldb,
                      Index m, Index n, Index k, bool transpose_b, bool accumulate) {
  constexpr Index kMax = INT_MAX;
  if (m > kMax || n > kMax || k > kMax || lda > kMax || ldb > kMax || ldc > kMax) return false;
  using Kernel =
      std::conditional_t<std::is_same_v<Scalar, float>, libxsmm_smmfunction, libxsmm_dmmfunction>;
  const std::array<libxsmm_blasint, 6> shape{libxsmm_blasint(m),   libxsmm_blasint(n),
                                             libxsmm_blasint(k),   libxsmm_blasint(lda),
                                             libxsmm_blasint(ldb), libxsmm_blasint(ldc)};
  const int flags = transpose_b ? LIBXSMM_GEMM_FLAG_TRANS_B : LIBXSMM_GEMM_FLAG_NONE;
  const Kernel kernel = cached_libxsmm_kernel<Kernel>(
      shape, flags, accumulate,
      [](const std::array<libxsmm_blasint, 6>& s, int f, bool acc) -> Kernel {
        const Scalar alpha = 1, beta = acc ? 1 : 0;
        if constexpr (std::is_same_v<Scalar, float>) {
          return libxsmm_smmdispatch(s[0], s[1], s[2], &s[3], &s[4], &s[5], &alpha, &beta, &f,
                                     nullptr);
        } else {
          return libxsmm_dmmdispatch(s[0], s[1], s[2], &s[3], &s[4], &s[5], &alpha, &beta, &f,
                                     nullptr);
        }
      });
  if (kernel == nullptr) return false;
  kernel(a, b, c);
  clear_upper_vector_state();
  return true;
}
#endif

/// C = A·B, or C += A·B when `accumulate`, into C of A.rows() × B.cols() (a matrix or a block
/// of one: any row-major storage with unit inner stride).
template <class Scalar>
void multiply_into(std::type_identity_t<MatrixRef<Scalar>> C,
                   std::type_identity_t<MatrixCRef<Scalar>> A,
                   std::type_identity_t<MatrixCRef<Scalar>> B, bool accumulate = false) {
#if defined(SEQMEM_USE_LIBXSMM)
  // A single row is a matrix-vector product, where Eigen is as fast (and skips the dispatch).
  if (A.rows() > 1 && B.cols() > 0 && A.cols() > 0 &&
      libxsmm_multiply(C.data(), C.outerStride(), B.data(), B.outerStride(), A.data(),
                       A.outerStride(), B.cols(), A.rows(), A.cols(), false, accumulate)) {
    return;
  }
#endif
  if (accumulate) {
    C.noalias() += A * B;
  } else {
    C.noalias() = A * B;
  }
}

/// C = A·B, or C += A·B when `accumulate`; C is resized when not accumulating.
template <class Scalar>
void multiply(Matrix<Scalar>& C, std::type_identity_t<MatrixCRef<Scalar>> A,
              std::type_identity_t<MatrixCRef<Scalar>> B, bool accumulate = false) {
  if (!accumulate) C.resize(A.rows(), B.cols());
  multiply_into<Scalar>(C, A, B, accumulate);
}

/// C = Xᵀ·B, or C += Xᵀ·B when `accumulate`, into C of X.cols() × B.cols() (as multiply_into).
template <class Scalar>
void multiply_transposed_into(std::type_identity_t<MatrixRef<Scalar>> C,
                              std::type_identity_t<MatrixCRef<Scalar>> X,
                              std::type_identity_t<MatrixCRef<Scalar>> B, bool accumulate = false) {
#if defined(SEQMEM_USE_LIBXSMM)
  // Row-major C = Xᵀ·B is column-major Cᵀ = Bᵀ·X, and row-major X is column-major Xᵀ.
  if (X.rows() > 1 && X.cols() > 0 && B.cols() > 0 &&
      libxsmm_multiply(C.data(), C.outerStride(), B.data(), B.outerStride(), X.data(),
                       X.outerStride(), B.cols(), X.cols(), X.rows(), true, accumulate)) {
    return;
  }
#endif
  if (accumulate) {
    C.noalias() += X.transpose() * B;
  } else {
    C.noalias() = X.transpose() * B;
  }
}

/// C = Xᵀ·B, or C += Xᵀ·B when `accumulate`; C is resized when not accumulating.
template <class Scalar>
void multiply_transposed(Matrix<Scalar>& C, std::type_identity_t<MatrixCRef<Scalar>> X,
                         std::type_identity_t<MatrixCRef<Scalar>> B, bool accumulate = false) {
  if (!accumulate) C.resize(X.cols(), B.cols());
  multiply_transposed_into<Scalar>(C, X, B, accumulate);
}

/// out = Aᵀ into out of A.cols() × A.rows() (as multiply_into). libxsmm's transpose kernels
/// are 4–6× faster than Eigen's strided copy for the engine's 16-row blocks.
template <class Scalar>
void transpose_into(std::type_identity_t<MatrixRef<Scalar>> out,
                    std::type_identity_t<MatrixCRef<Scalar>> A) {
#if defined(SEQMEM_USE_LIBXSMM)
  if (A.rows() > 1 && A.cols() > 1 && A.rows() <= INT_MAX && A.cols() <= INT_MAX &&
      A.outerStride() <= INT_MAX && out.outerStride() <= INT_MAX) {
    // Row-major A is column-major Aᵀ (m = A.cols() × n = A.rows(), leading dimension
    // outerStride); the column-major result n × m, leading dimension ldo, is row-major Aᵀ.
    const auto m = static_cast<unsigned int>(A.cols()), n = static_cast<unsigned int>(A.rows());
    unsigned int ldi = static_cast<unsigned int>(A.outerStride()),
                 ldo = static_cast<unsigned int>(out.outerStride());
    const libxsmm_xtransfunction kernel = cached_libxsmm_kernel<libxsmm_xtransfunction>(
        {libxsmm_blasint(m), libxsmm_blasint(n), libxsmm_blasint(ldo), sizeof(Scalar), 0, 0}, 0,
        false, [](const std::array<libxsmm_blasint, 6>& s, int, bool) -> libxsmm_xtransfunction {
          // s = {m, n, ldo, element size}: float and double kernels share the cache.
          libxsmm_descriptor_blob blob;
          const libxsmm_trans_descriptor* desc = libxsmm_trans_descriptor_init(
              &blob, unsigned(s[3]), unsigned(s[0]), unsigned(s[1]), unsigned(s[2]));
          return desc != nullptr ? libxsmm_dispatch_trans(desc) : nullptr;
        });
    if (kernel != nullptr) {
      kernel(A.data(), &ldi, out.data(), &ldo);
    } else {  // libxsmm's own blocking (or its fallback) for shapes it has no kernel for
      libxsmm_otrans(out.data(), A.data(), sizeof(Scalar), libxsmm_blasint(m), libxsmm_blasint(n),
                     libxsmm_blasint(ldi), libxsmm_blasint(ldo));
    }
    clear_upper_vector_state();
    return;
  }
#endif
  out = A.transpose();
}

/// out = Aᵀ (resized), as transpose_into.
template <class Scalar>
void transpose(Matrix<Scalar>& out, std::type_identity_t<MatrixCRef<Scalar>> A) {
  out.resize(A.cols(), A.rows());
  transpose_into<Scalar>(out, A);
}

/// C = A·Wᵀ into C of A.rows() × W.rows() (as multiply_into). libxsmm has no kernel with a
/// transposed first factor, so the backend transposes copies held in `scratch`, whichever is
/// less to copy: W (then column-major Cᵀ = W·Aᵀ is row-major C, as for a chunk's Q Kᵀ), or A
/// and C (for the engine's skinny A against a square W).
template <class Scalar>
void multiply_by_transpose_into(std::type_identity_t<MatrixRef<Scalar>> C,
                                std::type_identity_t<MatrixCRef<Scalar>> A,
                                std::type_identity_t<MatrixCRef<Scalar>> W,
                                [[maybe_unused]] std::array<Matrix<Scalar>, 2>& scratch) {
#if defined(SEQMEM_USE_LIBXSMM)
  const Index m = A.rows(), n = W.rows(), k = A.cols();
  if (m > 1 && n > 1 && k > 0) {
    auto& [first, second] = scratch;
    if (n * k <= m * k + m * n) {
      transpose(first, W);  // row-major Wᵀ is column-major W (n × k, leading dimension n)
      if (libxsmm_multiply(C.data(), C.outerStride(), first.data(), n, A.data(), A.outerStride(), n,
                           m, k, false, false)) {
        return;
      }
    } else {
      transpose(first, A);  // column-major A
      second.resize(n, m);  // column-major C
      if (libxsmm_multiply(second.data(), m, first.data(), m, W.data(), W.outerStride(), m, n, k,
                           false, false)) {
        transpose_into<Scalar>(C, second);
        return;
      }
    }
  }
#endif
  C.noalias() = A * W.transpose();
}

/// C = A·Wᵀ (C resized), as multiply_by_transpose_into.
template <class Scalar>
void multiply_by_transpose(Matrix<Scalar>& C, std::type_identity_t<MatrixCRef<Scalar>> A,
                           std::type_identity_t<MatrixCRef<Scalar>> W,
                           std::array<Matrix<Scalar>, 2>& scratch) {
  C.resize(A.rows(), W.rows());
  multiply_by_transpose_into<Scalar>(C, A, W, scratch);
}

}  // namespace seqmem::detail
