#pragma once

/// @file
/// A scoped flush-to-zero / denormals-are-zero mode for seqmem's own compute.
///
/// A memory that decays (Titans' forgetting, a strong log-decay) drives its state toward zero,
/// and on x86 every operation on a subnormal number (below 1.2e-38 in float, 2.2e-308 in
/// double) takes a slow path: a Titans L = 2 memory with forgetting ran its recurrent form 33×
/// slower once its weights reached 1e-33…1e-44. Inside a layer's forward the guard makes the
/// CPU treat subnormal inputs as 0 and round subnormal results to 0; the caller's mode is
/// restored on exit (also when the call throws). Results that would have been subnormal become
/// 0: their size is below 1e-38 relative to a value of order 1, far inside every tolerance of
/// docs/math.md §6.
///
/// Define `SEQMEM_KEEP_DENORMALS` to compile the guard out (IEEE gradual underflow everywhere,
/// at the slow path's price). On targets other than x86 SSE and AArch64 it does nothing.

#if !defined(SEQMEM_KEEP_DENORMALS) && \
    (defined(__SSE__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 1))
#include <xmmintrin.h>
#define SEQMEM_FLUSH_DENORMALS_X86 1
#elif !defined(SEQMEM_KEEP_DENORMALS) && defined(__aarch64__) && \
    (defined(__GNUC__) || defined(__clang__))
#include <cstdint>
#define SEQMEM_FLUSH_DENORMALS_ARM64 1
#endif

namespace seqmem::detail {

/// Sets flush-to-zero and denormals-are-zero for the current thread while it lives.
class FlushDenormals {
 public:
#if defined(SEQMEM_FLUSH_DENORMALS_X86)
  // MXCSR bit 15 (FTZ: subnormal results become 0) and bit 6 (DAZ: subnormal inputs read as 0).
  static constexpr unsigned kBits = 0x8040u;
  FlushDenormals() noexcept : saved_(_mm_getcsr()) {
    if ((saved_ & kBits) != kBits) _mm_setcsr(saved_ | kBits);
  }
  ~FlushDenormals() {
    if ((saved_ & kBits) != kBits) _mm_setcsr(saved_);
  }

 private:
  unsigned saved_;
#elif defined(SEQMEM_FLUSH_DENORMALS_ARM64)
  // FPCR bit 24 (FZ): flush subnormal inputs and results to zero.
  static constexpr std::uint64_t kBits = std::uint64_t(1) << 24;
  FlushDenormals() noexcept {
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(saved_));
    if ((saved_ & kBits) == 0) set(saved_ | kBits);
  }
  ~FlushDenormals() {
    if ((saved_ & kBits) == 0) set(saved_);
  }

 private:
  static void set(std::uint64_t value) noexcept {
    __asm__ __volatile__("msr fpcr, %0" : : "r"(value));
  }
  std::uint64_t saved_ = 0;
#else
  FlushDenormals() noexcept = default;
#endif

 public:
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;
};

}  // namespace seqmem::detail
