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
/// Such a build also aligns Eigen's matrices to 16 bytes only. The passes therefore load S at
/// vector boundaries whatever its address, with one vector per row straddling two rows (RowSplit),
/// and give the same bits as for an aligned S.

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

/// The integers of the same width as Scalar, Bytes-wide (for exact lane selects).
template <class Scalar, int Bytes>
using Bits = Vec<std::conditional_t<sizeof(Scalar) == 8, std::int64_t, std::int32_t>, Bytes>;

/// Where the rows of S sit against Bytes-wide vectors. A build without -march aligns Eigen's
/// matrices to 16 bytes only, and a 64-byte load that splits a cache line costs ~1.5× (measured,
/// the passes at d = 128). When S is contiguous (ld = cols) with rows a whole number of vectors
/// long, and starts m lanes past a vector boundary (0 < m < L), every row starts m lanes late.
/// The passes then load S in aligned vectors from column p = L − m of each row; the last vector of
/// row c straddles two rows: its lanes < m hold row c's last m columns, its lanes ≥ m row c+1's
/// first p. Row 0's first p columns and the last row's last m are done one at a time, where the
/// plain loop does them in each sum, so every result is bit for bit the one of unaligned loads:
/// results do not depend on where the allocator put S. Otherwise m = 0 (the plain loop).
template <class Scalar, int Bytes>
struct RowSplit {
  using V = Vec<Scalar, Bytes>;
  using I = Bits<Scalar, Bytes>;
  static constexpr Index L = Bytes / Index(sizeof(Scalar));

  Index m = 0;  ///< lanes of the straddling vector that belong to the earlier row
  I low{};      ///< all ones in lanes < m

  RowSplit(const Scalar* S, Index rows, Index cols, Index ld) {
    const auto address = reinterpret_cast<std::uintptr_t>(S);
    if (ld != cols || cols % L != 0 || rows < 2 || address % sizeof(Scalar) != 0) return;
    m = Index(address % Bytes / sizeof(Scalar));
    for (Index i = 0; i < m; ++i)
      low[i] = -1;
  }
  // (Vectors are returned through a reference: GCC warns that returning one wider than the
  // build's changes the ABI.)

  /// v = `a` in lanes < m, `b` in the others (a − 0 is a exactly, also for a = −0).
  [[gnu::always_inline]] void select(V& v, Scalar a, Scalar b) const {
    v = low ? a - V{} : b - V{};
  }
  /// v = y[cols − m, cols) in lanes < m, y[0, p) in the others: the straddling vector's columns.
  [[gnu::always_inline]] void rotated(V& v, const Scalar* y, Index cols) const {
    v = V{};
    for (Index i = 0; i < L; ++i)
      v[i] = i < m ? y[cols - m + i] : y[i - m];
  }
};

/// `Block::run<Bytes, B, Straddle>(j, split, args...)` for B = count (0 ≤ count ≤ 4).
template <int Bytes, bool Straddle, class Block, class Scalar, class... Args>
[[gnu::always_inline]] inline void run_block(Index count, Index j,
                                             const RowSplit<Scalar, Bytes>& split,
                                             const Args&... args) {
  switch (count) {
    case 4: Block::template run<Bytes, 4, Straddle>(j, split, args...); break;
    case 3: Block::template run<Bytes, 3, Straddle>(j, split, args...); break;
    case 2: Block::template run<Bytes, 2, Straddle>(j, split, args...); break;
    case 1: Block::template run<Bytes, 1, Straddle>(j, split, args...); break;
    default: break;
  }
}

/// Calls `Block::run<Bytes, B, Straddle>(j, split, args...)` for the column blocks of a pass:
/// B vectors from column j, the last of them straddling rows when `Straddle` (RowSplit). Each
/// block is one walk over the rows of S: blocks of 4 vectors, then one block of the 1–4 vectors
/// left. Without a split they start at column 0, and `Block::scalar(j, cols, args...)` takes the
/// columns left (fewer than a vector); with one they start at column p, and the last block ends
/// in the straddling vector. (One walk per vector left made the read at d = 100 take longer than
/// at d = 128: each walk is a chain of dependent additions.)
template <int Bytes, class Block, class Scalar, class... Args>
[[gnu::always_inline]] inline void for_each_block(Index cols, const RowSplit<Scalar, Bytes>& split,
                                                  const Args&... args) {
  constexpr Index L = RowSplit<Scalar, Bytes>::L;
  const bool straddle = split.m != 0;
  Index j = straddle ? L - split.m : 0, left = cols / L;
  for (; left > 4; left -= 4, j += 4 * L)
    Block::template run<Bytes, 4, false>(j, split, args...);
  if (straddle) {
    run_block<Bytes, true, Block>(left, j, split, args...);
  } else {
    run_block<Bytes, false, Block>(left, j, split, args...);
    Block::scalar(j + left * L, cols, args...);
  }
}

/// The read pass's column blocks: y_n[j, j + B·L) = x_n S[:, j, j + B·L) (n < N), every row of S
/// read once for all N products.
struct ReadBlock {
  template <int Bytes, int B, bool Straddle, class Scalar, int N>
  [[gnu::always_inline]] static void run(Index j, const RowSplit<Scalar, Bytes>& split,
                                         const Scalar* const& S, const Index& rows, const Index& ld,
                                         const Scalar* const (&x)[N], Scalar* const (&y)[N]) {
    using V = Vec<Scalar, Bytes>;
    constexpr Index L = RowSplit<Scalar, Bytes>::L;
    constexpr int Whole = Straddle ? B - 1 : B;  // the vectors that lie within one row
    const Index m = split.m;
    V acc[N][B] = {};
    if constexpr (Straddle) {  // row 0's first p columns: the first terms of their sums
      for (Index i = m; i < L; ++i)
#pragma GCC unroll 16
        for (int n = 0; n < N; ++n)
          acc[n][B - 1][i] += x[n][0] * S[i - m];
    }
    const Index straddled_rows = Straddle ? rows - 1 : rows;
    for (Index c = 0; c < straddled_rows; ++c) {
      const Scalar* row = S + c * ld + j;
#pragma GCC unroll 16
      for (int b = 0; b < B; ++b) {
        V s;
        __builtin_memcpy(&s, row + b * L, sizeof s);
#pragma GCC unroll 16
        for (int n = 0; n < N; ++n) {
          if (b < Whole) {
            acc[n][b] += x[n][c] * s;
          } else {
            V coef;
            split.select(coef, x[n][c], x[n][c + 1]);
            acc[n][b] += coef * s;
          }
        }
      }
    }
    if constexpr (Straddle) {  // the last row: its whole vectors, then its last m columns
      const Index c = rows - 1;
      const Scalar* row = S + c * ld + j;
#pragma GCC unroll 16
      for (int b = 0; b < Whole; ++b) {
        V s;
        __builtin_memcpy(&s, row + b * L, sizeof s);
#pragma GCC unroll 16
        for (int n = 0; n < N; ++n)
          acc[n][b] += x[n][c] * s;
      }
      for (Index i = 0; i < m; ++i)
#pragma GCC unroll 16
        for (int n = 0; n < N; ++n)
          acc[n][B - 1][i] += x[n][c] * row[Whole * L + i];
    }
#pragma GCC unroll 16
    for (int n = 0; n < N; ++n) {
#pragma GCC unroll 16
      for (int b = 0; b < Whole; ++b)
        __builtin_memcpy(y[n] + j + b * L, &acc[n][b], sizeof(V));
      if constexpr (Straddle)
        for (Index i = 0; i < L; ++i)
          (i < m ? y[n][j + Whole * L + i] : y[n][i - m]) = acc[n][B - 1][i];
    }
  }

  /// Columns [j, end) without vectors (the tail of a row, fewer than a vector).
  template <class Scalar, int N>
  [[gnu::always_inline]] static void scalar(Index j, Index end, const Scalar* const& S,
                                            const Index& rows, const Index& ld,
                                            const Scalar* const (&x)[N], Scalar* const (&y)[N]) {
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
};

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
  const RowSplit<Scalar, Bytes> split(S, rows, cols, ld);
  for_each_block<Bytes, ReadBlock>(cols, split, S, rows, ld, x, y);
}

/// One vector of a row in the write pass: s = d·s + Σ_n x_n·y_n, stored back, and with `Read`
/// acc += q·s. The factors are scalars, or vectors for the straddling vector (RowSplit).
template <bool Read, class Scalar, class V, class F, int N>
[[gnu::always_inline]] inline void update_vector(Scalar* at, const F& d, const F (&x)[N],
                                                 const V (&y)[N], const F& q, V& acc) {
  V s;
  __builtin_memcpy(&s, at, sizeof s);
  s *= d;
#pragma GCC unroll 16
  for (int n = 0; n < N; ++n)
    s += x[n] * y[n];
  __builtin_memcpy(at, &s, sizeof s);
  if constexpr (Read) acc += q * s;
}

/// The same for one element (the columns no vector covers); returns the new value.
template <class Scalar, int N>
[[gnu::always_inline]] inline Scalar update_scalar(Scalar& at, Scalar d, const Scalar (&x)[N],
                                                   const Scalar (&y)[N]) {
  Scalar s = d * at;
#pragma GCC unroll 16
  for (int n = 0; n < N; ++n)
    s += x[n] * y[n];
  at = s;
  return s;
}

/// The write pass's column blocks, S_c[j, j + B·L) = decay(c)·S_c + Σ_n x_n[c]·y_n, with y_n's
/// vectors held in registers; with `Read`, also out[j, j + B·L) = q S of the new rows, in the same
/// pass (the write-then-read step).
template <bool Read>
struct UpdateBlock {
  template <int Bytes, int B, bool Straddle, class Scalar, int N, class Decay>
  [[gnu::always_inline]] static void run(Index j, const RowSplit<Scalar, Bytes>& split,
                                         Scalar* const& S, const Index& rows, const Index& ld,
                                         const Decay& decay, const Scalar* const (&x)[N],
                                         const Scalar* const (&y)[N], const Scalar* const& q,
                                         Scalar* const& out) {
    using V = Vec<Scalar, Bytes>;
    constexpr Index L = RowSplit<Scalar, Bytes>::L;
    constexpr int Whole = Straddle ? B - 1 : B;  // the vectors that lie within one row
    const Index m = split.m;
    V yv[B][N], acc[B] = {};
#pragma GCC unroll 16
    for (int n = 0; n < N; ++n) {
#pragma GCC unroll 16
      for (int b = 0; b < Whole; ++b)
        __builtin_memcpy(&yv[b][n], y[n] + j + b * L, sizeof(V));
      if constexpr (Straddle) split.rotated(yv[B - 1][n], y[n], j + Whole * L + m);
    }
    // The factors of row c (read before the row's stores: a memcpy store may alias them).
    const auto factors_of = [&](Index c, Scalar& d, Scalar(&xc)[N], Scalar& qc) {
      d = decay(c);
      qc = Read ? q[c] : Scalar(0);
#pragma GCC unroll 16
      for (int n = 0; n < N; ++n)
        xc[n] = x[n][c];
    };
    Scalar d, xc[N], qc;
    if constexpr (Straddle) {  // row 0's first p columns: the first terms of their sums
      factors_of(0, d, xc, qc);
      for (Index i = m; i < L; ++i) {
        Scalar yi[N];
#pragma GCC unroll 16
        for (int n = 0; n < N; ++n)
          yi[n] = y[n][i - m];
        const Scalar s = update_scalar(S[i - m], d, xc, yi);
        if constexpr (Read) acc[B - 1][i] += qc * s;
      }
    }
    const Index straddled_rows = Straddle ? rows - 1 : rows;
    for (Index c = 0; c < straddled_rows; ++c) {
      Scalar* row = S + c * ld + j;
      factors_of(c, d, xc, qc);
#pragma GCC unroll 16
      for (int b = 0; b < Whole; ++b)
        update_vector<Read>(row + b * L, d, xc, yv[b], qc, acc[b]);
      if constexpr (Straddle) {  // lanes < m: row c's factors, lanes ≥ m: row c+1's
        Scalar d_next, x_next[N], q_next;
        factors_of(c + 1, d_next, x_next, q_next);
        V d_straddled, x_straddled[N], q_straddled;
        split.select(d_straddled, d, d_next);
        split.select(q_straddled, qc, q_next);
#pragma GCC unroll 16
        for (int n = 0; n < N; ++n)
          split.select(x_straddled[n], xc[n], x_next[n]);
        update_vector<Read>(row + Whole * L, d_straddled, x_straddled, yv[B - 1], q_straddled,
                            acc[B - 1]);
      }
    }
    if constexpr (Straddle) {  // the last row: its whole vectors, then its last m columns
      const Index c = rows - 1;
      Scalar* row = S + c * ld + j;
      factors_of(c, d, xc, qc);
#pragma GCC unroll 16
      for (int b = 0; b < Whole; ++b)
        update_vector<Read>(row + b * L, d, xc, yv[b], qc, acc[b]);
      for (Index i = 0; i < m; ++i) {
        Scalar yi[N];
#pragma GCC unroll 16
        for (int n = 0; n < N; ++n)
          yi[n] = y[n][j + Whole * L + i];
        const Scalar s = update_scalar(row[Whole * L + i], d, xc, yi);
        if constexpr (Read) acc[B - 1][i] += qc * s;
      }
    }
    if constexpr (Read) {
#pragma GCC unroll 16
      for (int b = 0; b < Whole; ++b)
        __builtin_memcpy(out + j + b * L, &acc[b], sizeof(V));
      if constexpr (Straddle)
        for (Index i = 0; i < L; ++i)
          (i < m ? out[j + Whole * L + i] : out[i - m]) = acc[B - 1][i];
    }
  }

  /// Columns [j, end) without vectors (the tail of a row, fewer than a vector).
  template <class Scalar, int N, class Decay>
  [[gnu::always_inline]] static void scalar(Index j, Index end, Scalar* const& S, const Index& rows,
                                            const Index& ld, const Decay& decay,
                                            const Scalar* const (&x)[N],
                                            const Scalar* const (&y)[N], const Scalar* const& q,
                                            Scalar* const& out) {
    for (; j < end; ++j) {
      Scalar acc(0);
      for (Index c = 0; c < rows; ++c) {
        Scalar xc[N], yj[N];
#pragma GCC unroll 16
        for (int n = 0; n < N; ++n) {
          xc[n] = x[n][c];
          yj[n] = y[n][j];
        }
        const Scalar s = update_scalar(S[c * ld + j], decay(c), xc, yj);
        if constexpr (Read) acc += q[c] * s;
      }
      if constexpr (Read) out[j] = acc;
    }
  }
};

/// S_c = decay(c)·S_c + Σ_n x_n[c]·y_n; with `Read`, then out = q S, in the same pass over S.
template <int Bytes, bool Read, class Scalar, int N, class Decay>
[[gnu::always_inline]] inline void update_impl(Scalar* S, Index rows, Index cols, Index ld,
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
  const RowSplit<Scalar, Bytes> split(S, rows, cols, ld);
  for_each_block<Bytes, UpdateBlock<Read>>(cols, split, S, rows, ld, decay, x, y, q, out);
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
    update_impl<Bytes, false, Scalar, N>(S, rows, cols, ld, decay, x, y, nullptr, nullptr);
  }
};
struct WriteReadPass {
  template <int Bytes, class Scalar, int N, class Decay>
  [[gnu::always_inline]] static void run(Scalar* S, Index rows, Index cols, Index ld,
                                         const Decay& decay, const Scalar* const (&x)[N],
                                         const Scalar* const (&y)[N], const Scalar* q,
                                         Scalar* out) {
    update_impl<Bytes, true, Scalar, N>(S, rows, cols, ld, decay, x, y, q, out);
  }
};

/// `*finite` = whether every x(i, j) is finite (i < rows, j < cols, row i at x + i·ld): x·0 is 0
/// for a finite x and NaN for ±Inf or NaN, and a NaN survives the sums. Four accumulators, so
/// the additions do not wait on each other (the inputs' check of every call: in a build without
/// -march it ran on SSE2 row sums, 11–14 % of a 4-head chunkwise call, issue 17).
struct FinitePass {
  template <int Bytes, class Scalar>
  [[gnu::always_inline]] static void run(const Scalar* x, Index rows, Index cols, Index ld,
                                         bool* finite) {
    using V = Vec<Scalar, Bytes>;
    constexpr Index L = Bytes / Index(sizeof(Scalar));
    V sum[4] = {};
    Scalar rest(0);
    for (Index i = 0; i < rows; ++i) {
      const Scalar* xi = x + i * ld;
      Index j = 0;
      for (; j + 4 * L <= cols; j += 4 * L) {
        for (int b = 0; b < 4; ++b) {
          V v;
          __builtin_memcpy(&v, xi + j + b * L, sizeof v);
          sum[b] += v * Scalar(0);
        }
      }
      for (; j + L <= cols; j += L) {
        V v;
        __builtin_memcpy(&v, xi + j, sizeof v);
        sum[0] += v * Scalar(0);
      }
      for (; j < cols; ++j)
        rest += xi[j] * Scalar(0);
    }
    const V all = (sum[0] + sum[1]) + (sum[2] + sum[3]);
    for (Index l = 0; l < L; ++l)
      rest += all[l];
    *finite = rest == Scalar(0);
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
