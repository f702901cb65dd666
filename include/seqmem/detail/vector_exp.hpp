#pragma once

/// @file
/// `exp_in_place`: the element-wise exponential of the decay factors (docs/math.md §0, §7–§9)
/// on the widest vectors the running CPU has. On x86-64 with glibc it calls glibc's vector
/// math library (libmvec, part of libm: the vector-function ABI's `_ZGV{b,d,e}N*v_exp{f,}`,
/// ≤ 4 ulp) through the dispatch of row_kernels.hpp, so a build without -march — a consumer's
/// Release build of the installed package — takes its exponentials with AVX-512 or AVX2 where
/// the CPU has them. Elsewhere it is Eigen's vectorized exp for the build's own vectors.
///
/// Issue 17: in such a build the per-channel decays of GLA, KDA and the generalized delta rule
/// ran on Eigen's SSE2 exp, which took a third of their chunkwise time (4 heads, d = 64: 17 ms
/// against 6 ms for the -march=native build).

#include <cstddef>
#include <type_traits>

#include "seqmem/core/types.hpp"
#include "seqmem/detail/row_kernels.hpp"

#if defined(SEQMEM_ROW_KERNELS_DISPATCH) && defined(__GLIBC__) && defined(__x86_64__)
#if __GLIBC_PREREQ(2, 22)
#define SEQMEM_VECTOR_EXP 1
#endif
#endif

namespace seqmem::detail {

#if defined(SEQMEM_VECTOR_EXP)
namespace row_kernels {
namespace libmvec {
// glibc's vector variants of expf and exp (x86-64 vector-function ABI: b = SSE, d = AVX2,
// e = AVX-512). Declared with their targets, so that a build without them may call them.
using F4 = Vec<float, 16>;
using F8 = Vec<float, 32>;
using F16 = Vec<float, 64>;
using D2 = Vec<double, 16>;
using D4 = Vec<double, 32>;
using D8 = Vec<double, 64>;
extern "C" {
F4 _ZGVbN4v_expf(F4);
[[gnu::target("avx2")]] F8 _ZGVdN8v_expf(F8);
[[gnu::target("avx512f")]] F16 _ZGVeN16v_expf(F16);
D2 _ZGVbN2v_exp(D2);
[[gnu::target("avx2")]] D4 _ZGVdN4v_exp(D4);
[[gnu::target("avx512f")]] D8 _ZGVeN8v_exp(D8);
}
}  // namespace libmvec

/// v = exp(v), one function per vector type, compiled for the vector's target: the vectors
/// pass by reference, so the build's own code (which may lack the target) never passes one in
/// a register.
[[gnu::target("avx512f")]] inline void exp_vector(libmvec::F16& v) {
  v = libmvec::_ZGVeN16v_expf(v);
}
[[gnu::target("avx2")]] inline void exp_vector(libmvec::F8& v) {
  v = libmvec::_ZGVdN8v_expf(v);
}
inline void exp_vector(libmvec::F4& v) {
  v = libmvec::_ZGVbN4v_expf(v);
}
[[gnu::target("avx512f")]] inline void exp_vector(libmvec::D8& v) {
  v = libmvec::_ZGVeN8v_exp(v);
}
[[gnu::target("avx2")]] inline void exp_vector(libmvec::D4& v) {
  v = libmvec::_ZGVdN4v_exp(v);
}
inline void exp_vector(libmvec::D2& v) {
  v = libmvec::_ZGVbN2v_exp(v);
}

/// Below this argument exp is 0 here: libmvec computes exp at full vector speed only where the
/// result is a normal number, and calls the scalar exp for every other lane (measured: 0.25 →
/// 4 ns per float entry, x ≤ −87.5). Strong decays give many such arguments, so they are
/// flushed before the call: exp(x) < 1.7·10⁻³⁸ (float) or 3.3·10⁻³⁰⁸ (double) becomes 0, as the
/// library's flush-to-zero guard makes of results below the smallest normal number anyway.
template <class Scalar>
inline constexpr Scalar kExpFloor = std::is_same_v<Scalar, float> ? Scalar(-87) : Scalar(-708);

/// x[i] = exp(x[i]) for i < n. The last partial vector is padded with zeros, so every entry
/// goes through the same vector function.
struct ExpPass {
  template <int Bytes, class Scalar>
  [[gnu::always_inline]] static void exp_or_zero(Vec<Scalar, Bytes>& v) {
    using V = Vec<Scalar, Bytes>;
    const auto under = v < kExpFloor<Scalar>;
    v = under ? V{} + kExpFloor<Scalar> : v;
    exp_vector(v);
    v = under ? V{} : v;
  }
  template <int Bytes, class Scalar>
  [[gnu::always_inline]] static void run(Scalar* x, Index n) {
    using V = Vec<Scalar, Bytes>;
    constexpr Index L = Bytes / Index(sizeof(Scalar));
    Index i = 0;
    for (; i + L <= n; i += L) {
      V v;
      __builtin_memcpy(&v, x + i, sizeof v);
      exp_or_zero<Bytes, Scalar>(v);
      __builtin_memcpy(x + i, &v, sizeof v);
    }
    if (i < n) {
      V v{};
      __builtin_memcpy(&v, x + i, std::size_t(n - i) * sizeof(Scalar));
      exp_or_zero<Bytes, Scalar>(v);
      __builtin_memcpy(x + i, &v, std::size_t(n - i) * sizeof(Scalar));
    }
  }
};
}  // namespace row_kernels
#endif

/// x ← exp(x) element-wise, for a float or double matrix or vector (or a block of one).
template <class X>
void exp_in_place(X&& x) {
  using Plain = std::remove_cvref_t<X>;
  using Scalar = typename Plain::Scalar;
#if defined(SEQMEM_VECTOR_EXP)
  constexpr bool kernel_type = std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>;
  if constexpr (kernel_type && bool(Plain::Flags & Eigen::DirectAccessBit)) {
    // one run over the entries when they lie back to back in memory
    const bool flat = x.innerStride() == 1 &&
                      (x.outerStride() == x.innerSize() || x.rows() == 1 || x.cols() == 1);
    if (flat && x.size() > 0) {
      row_kernels::with_widest_vectors<row_kernels::ExpPass>(x.data(), Index(x.size()));
      return;
    }
  }
#endif
  x = x.array().exp();
}

}  // namespace seqmem::detail
