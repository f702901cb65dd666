#pragma once

/// @file
/// The passes over a recurrent state S (row-major, one row per key channel) that every decode
/// step makes (docs/math.md §2, §3, §7–§9):
///
///     read_rows        y_n = x_n S for one or two row vectors x_n, in one read pass over S;
///     write_rows       S_c = decay(c)·S_c + Σ_n x_n(c)·y_n, in one read-write pass;
///     write_read_rows  the write, then out = q S of the new S, in the same pass (the linear-
///                      attention families: their whole step is this one pass).
///
/// They are written once, on GCC/Clang vector extensions, and compiled for 16-, 32- and 64-byte
/// vectors; each call takes the widest the running CPU has (AVX-512, AVX2 + FMA, or the build's
/// own). A build without -march — what a consumer's Release build of the installed package is —
/// thus makes its decode steps with AVX-512 where the CPU has it, instead of SSE2 (issue 17:
/// gated DeltaNet decode at d = 128 took 2× its -march=native time before). Other compilers and
/// other CPUs use the vectors the build targets.
///
/// What is left of the gap is alignment: such a build aligns Eigen's matrices to 16 bytes, so the
/// state's 64-byte loads and stores mostly split cache lines (measured at d = 128: the passes run
/// at -march=native speed when the state is 64-byte aligned, 1.5× slower when it is not; peeling
/// to alignment cost more than it saved, as the read pass then walks S once per narrow block).

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "seqmem/core/types.hpp"

#if (defined(__GNUC__) || defined(__clang__)) && !defined(SEQMEM_NO_ROW_KERNELS)
#define SEQMEM_ROW_KERNELS 1
#if defined(__x86_64__) || defined(__i386__)
#define SEQMEM_ROW_KERNELS_DISPATCH 1
#endif
#endif

namespace seqmem::detail {

#if defined(SEQMEM_ROW_KERNELS)
namespace row_kernels {

// The loops over n < N and b < B have constant trip counts: unrolled, their accumulators live in
// registers (GCC -O2 does not unroll them by itself; the decode passes ran 1.4× slower).

/// `Bytes / sizeof(Scalar)` lanes of Scalar (loads and stores go through memcpy: unaligned).
template <class Scalar, int Bytes>
using Vec [[gnu::vector_size(Bytes)]] = Scalar;

/// The vector width the build itself targets.
#if defined(__AVX512F__)
inline constexpr int kBuildBytes = 64;
#elif defined(__AVX__)
inline constexpr int kBuildBytes = 32;
#else
inline constexpr int kBuildBytes = 16;
#endif

/// y_n[j, end) = x_n S[:, j, end) (n < N), Bytes-wide vectors, B of them per column block (every
/// row of S read once for all N products); returns where it stopped (fewer than B vectors left).
template <int Bytes, int B, class Scalar, int N>
[[gnu::always_inline]] inline Index read_columns(const Scalar* S, Index rows, Index ld,
                                                 const Scalar* const (&x)[N], Scalar* const (&y)[N],
                                                 Index j, Index end) {
  using V = Vec<Scalar, Bytes>;
  constexpr Index L = Bytes / Index(sizeof(Scalar));
  for (; j + B * L <= end; j += B * L) {
    V acc[N][B] = {};
    for (Index c = 0; c < rows; ++c) {
      const Scalar* row = S + c * ld + j;
#pragma GCC unroll 16
      for (int b = 0; b < B; ++b) {
        V s;
        __builtin_memcpy(&s, row + b * L, sizeof s);
#pragma GCC unroll 16
        for (int n = 0; n < N; ++n)
          acc[n][b] += x[n][c] * s;
      }
    }
#pragma GCC unroll 16
    for (int n = 0; n < N; ++n)
#pragma GCC unroll 16
      for (int b = 0; b < B; ++b)
        __builtin_memcpy(y[n] + j + b * L, &acc[n][b], sizeof(V));
  }
  return j;
}

/// The same, one column at a time.
template <class Scalar, int N>
[[gnu::always_inline]] inline void read_columns_scalar(const Scalar* S, Index rows, Index ld,
                                                       const Scalar* const (&x)[N],
                                                       Scalar* const (&y)[N], Index j, Index end) {
  for (; j < end; ++j) {
    Scalar acc[N] = {};
    for (Index c = 0; c < rows; ++c)
#pragma GCC unroll 16
      for (int n = 0; n < N; ++n)
        acc[n] += x[n][c] * S[c * ld + j];
#pragma GCC unroll 16
    for (int n = 0; n < N; ++n)
      y[n][j] = acc[n];
  }
}

/// y_n = x_n S (n < N) over all columns of S.
template <int Bytes, class Scalar, int N>
[[gnu::always_inline]] inline void read_impl(const Scalar* S, Index rows, Index cols, Index ld,
                                             const Scalar* const* x_in, Scalar* const* y_in) {
  // Local copies of the pointers: a memcpy store may alias anything, also the arrays passed in.
  const Scalar* x[N];
  Scalar* y[N];
#pragma GCC unroll 16
  for (int n = 0; n < N; ++n) {
    x[n] = x_in[n];
    y[n] = y_in[n];
  }
  Index j = read_columns<Bytes, 4>(S, rows, ld, x, y, 0, cols);
  j = read_columns<Bytes, 1>(S, rows, ld, x, y, j, cols);
  read_columns_scalar(S, rows, ld, x, y, j, cols);
}

/// row[j, end) = d·row + Σ_n xc[n]·y_n with Bytes-wide vectors; returns where it stopped.
template <int Bytes, class Scalar, int N>
[[gnu::always_inline]] inline Index write_columns(Scalar* row, Scalar d, const Scalar (&xc)[N],
                                                  const Scalar* const (&y)[N], Index j, Index end) {
  using V = Vec<Scalar, Bytes>;
  constexpr Index L = Bytes / Index(sizeof(Scalar));
  for (; j + L <= end; j += L) {
    V s;
    __builtin_memcpy(&s, row + j, sizeof s);
    s *= d;
#pragma GCC unroll 16
    for (int n = 0; n < N; ++n) {
      V yv;
      __builtin_memcpy(&yv, y[n] + j, sizeof yv);
      s += xc[n] * yv;
    }
    __builtin_memcpy(row + j, &s, sizeof s);
  }
  return j;
}

/// The same, one column at a time.
template <class Scalar, int N>
[[gnu::always_inline]] inline void write_columns_scalar(Scalar* row, Scalar d,
                                                        const Scalar (&xc)[N],
                                                        const Scalar* const (&y)[N], Index j,
                                                        Index end) {
  for (; j < end; ++j) {
    Scalar s = d * row[j];
#pragma GCC unroll 16
    for (int n = 0; n < N; ++n)
      s += xc[n] * y[n][j];
    row[j] = s;
  }
}

/// S_c = decay(c)·S_c + Σ_n x_n[c]·y_n, row by row.
template <int Bytes, class Scalar, int N, class Decay>
[[gnu::always_inline]] inline void write_impl(Scalar* S, Index rows, Index cols, Index ld,
                                              const Decay& decay, const Scalar* const* x,
                                              const Scalar* const* y_in) {
  const Scalar* y[N];  // local copies (see read_impl)
#pragma GCC unroll 16
  for (int n = 0; n < N; ++n)
    y[n] = y_in[n];
  for (Index c = 0; c < rows; ++c) {
    Scalar* row = S + c * ld;
    const Scalar d = decay(c);
    Scalar xc[N];
#pragma GCC unroll 16
    for (int n = 0; n < N; ++n)
      xc[n] = x[n][c];
    const Index j = write_columns<Bytes>(row, d, xc, y, 0, cols);
    write_columns_scalar(row, d, xc, y, j, cols);
  }
}

/// The write followed by a read of the new rows, in the read's column blocks: S_c = decay(c)·S_c
/// + Σ_n x_n[c]·y_n, then out[j, end) = q S[:, j, end), Bytes-wide vectors, B of them per
/// block; returns where it stopped (fewer than B vectors left).
template <int Bytes, int B, class Scalar, int N, class Decay>
[[gnu::always_inline]] inline Index write_read_columns(Scalar* S, Index rows, Index ld,
                                                       const Decay& decay,
                                                       const Scalar* const (&x)[N],
                                                       const Scalar* const (&y)[N], const Scalar* q,
                                                       Scalar* out, Index j, Index end) {
  using V = Vec<Scalar, Bytes>;
  constexpr Index L = Bytes / Index(sizeof(Scalar));
  for (; j + B * L <= end; j += B * L) {
    V yv[N][B], acc[B] = {};
#pragma GCC unroll 16
    for (int n = 0; n < N; ++n)
#pragma GCC unroll 16
      for (int b = 0; b < B; ++b)
        __builtin_memcpy(&yv[n][b], y[n] + j + b * L, sizeof(V));
    for (Index c = 0; c < rows; ++c) {
      Scalar* row = S + c * ld + j;
      const Scalar d = decay(c), qc = q[c];
      Scalar xc[N];
#pragma GCC unroll 16
      for (int n = 0; n < N; ++n)
        xc[n] = x[n][c];
#pragma GCC unroll 16
      for (int b = 0; b < B; ++b) {
        V s;
        __builtin_memcpy(&s, row + b * L, sizeof s);
        s *= d;
#pragma GCC unroll 16
        for (int n = 0; n < N; ++n)
          s += xc[n] * yv[n][b];
        __builtin_memcpy(row + b * L, &s, sizeof s);
        acc[b] += qc * s;
      }
    }
#pragma GCC unroll 16
    for (int b = 0; b < B; ++b)
      __builtin_memcpy(out + j + b * L, &acc[b], sizeof(V));
  }
  return j;
}

/// The same, one column at a time.
template <class Scalar, int N, class Decay>
[[gnu::always_inline]] inline void write_read_columns_scalar(
    Scalar* S, Index rows, Index ld, const Decay& decay, const Scalar* const (&x)[N],
    const Scalar* const (&y)[N], const Scalar* q, Scalar* out, Index j, Index end) {
  for (; j < end; ++j) {
    Scalar acc(0);
    for (Index c = 0; c < rows; ++c) {
      Scalar s = decay(c) * S[c * ld + j];
#pragma GCC unroll 16
      for (int n = 0; n < N; ++n)
        s += x[n][c] * y[n][j];
      S[c * ld + j] = s;
      acc += q[c] * s;
    }
    out[j] = acc;
  }
}

/// S_c = decay(c)·S_c + Σ_n x_n[c]·y_n, then out = q S, in one pass over S.
template <int Bytes, class Scalar, int N, class Decay>
[[gnu::always_inline]] inline void write_read_impl(Scalar* S, Index rows, Index cols, Index ld,
                                                   const Decay& decay, const Scalar* const* x_in,
                                                   const Scalar* const* y_in, const Scalar* q,
                                                   Scalar* out) {
  const Scalar* x[N];  // local copies (see read_impl)
  const Scalar* y[N];
#pragma GCC unroll 16
  for (int n = 0; n < N; ++n) {
    x[n] = x_in[n];
    y[n] = y_in[n];
  }
  Index j = write_read_columns<Bytes, 4>(S, rows, ld, decay, x, y, q, out, 0, cols);
  j = write_read_columns<Bytes, 1>(S, rows, ld, decay, x, y, q, out, j, cols);
  write_read_columns_scalar(S, rows, ld, decay, x, y, q, out, j, cols);
}

/// The passes as types, so that one dispatch serves them all: `Pass::run<Bytes>(args...)`.
struct ReadPass {
  template <int Bytes, class Scalar, int N>
  [[gnu::always_inline]] static void run(const Scalar* S, Index rows, Index cols, Index ld,
                                         const Scalar* const (&x)[N], Scalar* const (&y)[N]) {
    read_impl<Bytes, Scalar, N>(S, rows, cols, ld, x, y);
  }
};
struct WritePass {
  template <int Bytes, class Scalar, int N, class Decay>
  [[gnu::always_inline]] static void run(Scalar* S, Index rows, Index cols, Index ld,
                                         const Decay& decay, const Scalar* const (&x)[N],
                                         const Scalar* const (&y)[N]) {
    write_impl<Bytes, Scalar, N>(S, rows, cols, ld, decay, x, y);
  }
};
struct WriteReadPass {
  template <int Bytes, class Scalar, int N, class Decay>
  [[gnu::always_inline]] static void run(Scalar* S, Index rows, Index cols, Index ld,
                                         const Decay& decay, const Scalar* const (&x)[N],
                                         const Scalar* const (&y)[N], const Scalar* q,
                                         Scalar* out) {
    write_read_impl<Bytes, Scalar, N>(S, rows, cols, ld, decay, x, y, q, out);
  }
};

/// `Pass` with the build's own vectors.
template <class Pass, class... Args>
void with_build_vectors(const Args&... args) {
  Pass::template run<kBuildBytes>(args...);
}

#if defined(SEQMEM_ROW_KERNELS_DISPATCH)
/// `Pass` compiled for AVX2 + FMA, and for AVX-512 (call only where the CPU has them).
template <class Pass, class... Args>
[[gnu::target("avx2,fma")]] void with_avx2(const Args&... args) {
  Pass::template run<32>(args...);
}
template <class Pass, class... Args>
[[gnu::target("avx512f")]] void with_avx512(const Args&... args) {
  Pass::template run<64>(args...);
}

/// The widest vectors (bytes) the running CPU supports, when wider than the build's.
inline int runtime_bytes() {
  static const int bytes = __builtin_cpu_supports("avx512f")                                 ? 64
                           : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 32
                                                                                             : 16;
  return bytes > kBuildBytes ? bytes : kBuildBytes;
}
#endif

/// `Pass` with the widest vectors the running CPU has.
template <class Pass, class... Args>
void with_widest_vectors(const Args&... args) {
#if defined(SEQMEM_ROW_KERNELS_DISPATCH)
  switch (runtime_bytes()) {
    case 64: with_avx512<Pass>(args...); return;
    case 32: with_avx2<Pass>(args...); return;
    default: break;
  }
#endif
  with_build_vectors<Pass>(args...);
}

}  // namespace row_kernels
#endif

/// The first coefficient of `v` when it is stored contiguously (Eigen direct access, unit inner
/// stride), otherwise nullptr (then the callers below fall back to Eigen expressions).
template <class V>
auto contiguous_data(V&& v) {
  using Plain = std::remove_cvref_t<V>;
  if constexpr (bool(Plain::Flags & Eigen::DirectAccessBit)) {
    auto* data = v.data();
    return v.innerStride() == 1 || v.size() <= 1 ? data : decltype(data)(nullptr);
  } else {
    return static_cast<const typename Plain::Scalar*>(nullptr);
  }
}

/// y_n = x_n S (n < N) in one pass over S; false when a vector is not contiguous.
template <class Scalar, int N>
bool read_rows_with_kernels(const Matrix<Scalar>& S, const Scalar* const (&x)[N],
                            Scalar* const (&y)[N]) {
#if defined(SEQMEM_ROW_KERNELS)
  for (int n = 0; n < N; ++n)
    if (x[n] == nullptr || y[n] == nullptr) return false;
  row_kernels::with_widest_vectors<row_kernels::ReadPass>(S.data(), S.rows(), S.cols(), S.cols(), x,
                                                          y);
  return true;
#else
  return false;
#endif
}

/// S_c = decay(c)·S_c + Σ_n x_n[c]·y_n (n < N) in one pass; false when a vector is not contiguous.
template <class Scalar, int N, class Decay>
bool write_rows_with_kernels(Matrix<Scalar>& S, const Decay& decay, const Scalar* const (&x)[N],
                             const Scalar* const (&y)[N]) {
#if defined(SEQMEM_ROW_KERNELS)
  for (int n = 0; n < N; ++n)
    if (x[n] == nullptr || y[n] == nullptr) return false;
  row_kernels::with_widest_vectors<row_kernels::WritePass>(S.data(), S.rows(), S.cols(), S.cols(),
                                                           decay, x, y);
  return true;
#else
  return false;
#endif
}

/// S_c = decay(c)·S_c + Σ_n x_n[c]·y_n (n < N), then out = q S, in one pass; false when a vector
/// is not contiguous.
template <class Scalar, int N, class Decay>
bool write_read_rows_with_kernels(Matrix<Scalar>& S, const Decay& decay,
                                  const Scalar* const (&x)[N], const Scalar* const (&y)[N],
                                  const Scalar* q, Scalar* out) {
#if defined(SEQMEM_ROW_KERNELS)
  for (int n = 0; n < N; ++n)
    if (x[n] == nullptr || y[n] == nullptr) return false;
  if (q == nullptr || out == nullptr) return false;
  row_kernels::with_widest_vectors<row_kernels::WriteReadPass>(S.data(), S.rows(), S.cols(),
                                                               S.cols(), decay, x, y, q, out);
  return true;
#else
  return false;
#endif
}

/// y1 = x1 S: the read of the old state in a recurrent step.
template <class Scalar, class X1, class Y1>
void read_rows(const Matrix<Scalar>& S, const X1& x1, Y1&& y1) {
  if (!read_rows_with_kernels<Scalar, 1>(S, {contiguous_data(x1)}, {contiguous_data(y1)}))
    y1.noalias() = x1 * S;
}

/// y1 = x1 S and y2 = x2 S in one pass over S.
template <class Scalar, class X1, class Y1, class X2, class Y2>
void read_rows(const Matrix<Scalar>& S, const X1& x1, Y1&& y1, const X2& x2, Y2&& y2) {
  if (!read_rows_with_kernels<Scalar, 2>(S, {contiguous_data(x1), contiguous_data(x2)},
                                         {contiguous_data(y1), contiguous_data(y2)})) {
    y1.noalias() = x1 * S;
    y2.noalias() = x2 * S;
  }
}

}  // namespace seqmem::detail
