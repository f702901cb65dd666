#pragma once

// Shared by the fuzz targets: a reader of the fuzz input, value palettes and a crash helper.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include <seqmem/seqmem.hpp>

namespace seqmem_fuzz {

using seqmem::Index;
template <class S>
using Matrix = seqmem::Matrix<S>;

/// A property of the library does not hold: report and abort (libFuzzer saves the input).
[[noreturn]] inline void violated(const char* what, const char* file, int line) {
  std::fprintf(stderr, "fuzz property violated at %s:%d: %s\n", file, line, what);
  std::abort();
}
#define FUZZ_REQUIRE(cond) ((cond) ? (void)0 : ::seqmem_fuzz::violated(#cond, __FILE__, __LINE__))

/// Reads the fuzz input front to back; past its end every byte reads as 0, so that a short
/// input decodes to the defaults (byte 0 always means "the ordinary choice").
class Bytes {
 public:
  Bytes(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  std::uint8_t u8() { return pos_ < size_ ? data_[pos_++] : 0; }
  bool empty() const { return pos_ >= size_; }
  bool one_in(int n) { return u8() % n == n - 1; }
  std::uint64_t u64() {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i)
      v |= std::uint64_t{u8()} << (8 * i);
    return v;
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

/// Special scalars: zeros of both signs, the ends of the gate ranges and just past them,
/// tiny, huge, subnormal, NaN, ±Inf, and raw bits.
template <class S>
S special(Bytes& in) {
  using L = std::numeric_limits<S>;
  switch (in.u8() % 24) {
    case 0: return S(0);
    case 1: return -S(0);
    case 2: return S(1);
    case 3: return S(2);
    case 4: return S(-1);
    case 5: return S(0.5);
    case 6: return S(-30);
    case 7: return std::nextafter(S(2), S(3));
    case 8: return std::nextafter(S(1), S(2));
    case 9: return std::nextafter(S(0), S(-1));  // −subnormal
    case 10: return L::denorm_min();
    case 11: return L::quiet_NaN();
    case 12: return -L::quiet_NaN();
    case 13: return L::infinity();
    case 14: return -L::infinity();
    case 15: return L::max();
    case 16: return L::lowest();
    case 17: return S(1e30);
    case 18: return S(-1e30);
    case 19: return L::epsilon();
    case 20: return S(1e-30);
    case 21: return std::nextafter(S(-30), S(0));
    case 22: return S(-1e-300);  // float: −0
    default: {
      const std::uint64_t bits = in.u64();
      S v;
      if constexpr (sizeof(S) == 4) {
        const auto b = static_cast<std::uint32_t>(bits);
        std::memcpy(&v, &b, 4);
      } else {
        std::memcpy(&v, &bits, 8);
      }
      return v;
    }
  }
}

/// A value: mostly uniform in [lo, hi] (byte < 200), otherwise special.
template <class S>
S value(Bytes& in, double lo, double hi) {
  const std::uint8_t b = in.u8();
  if (b < 200) return static_cast<S>(lo + (hi - lo) * b / 199.0);
  return special<S>(in);
}

/// A small signed size change: 0 mostly, ±1 sometimes, and "none at all" (−n).
inline Index delta(Bytes& in, Index n) {
  switch (in.u8() % 16) {
    case 13: return -1;
    case 14: return 1;
    case 15: return -n;
    default: return 0;
  }
}

inline Index clamp0(Index n) {
  return n < 0 ? 0 : n;
}

/// Uniform(lo, hi) fill from the generator, then 0–3 special values at fuzz-chosen places.
template <class S>
Matrix<S> tensor(Bytes& in, Index rows, Index cols, double lo, double hi, std::mt19937& gen) {
  Matrix<S> m(rows, cols);
  std::uniform_real_distribution<double> dist(lo, hi);
  for (Index i = 0; i < rows; ++i)
    for (Index j = 0; j < cols; ++j)
      m(i, j) = static_cast<S>(dist(gen));
  const int specials = in.u8() % 4;
  for (int s = 0; s < specials && rows > 0 && cols > 0; ++s) {
    const Index i = in.u8() % rows, j = in.u8() % cols;
    m(i, j) = special<S>(in);
  }
  return m;
}

/// Exactly the same bytes (so NaN equals NaN and −0 differs from +0).
template <class S>
bool identical(const Matrix<S>& a, const Matrix<S>& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         (a.size() == 0 ||
          std::memcmp(a.data(), b.data(), sizeof(S) * static_cast<std::size_t>(a.size())) == 0);
}

template <class S>
bool identical(const std::vector<Matrix<S>>& a, const std::vector<Matrix<S>>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!identical(a[i], b[i])) return false;
  return true;
}

template <class S>
void append(std::vector<Matrix<S>>& out, const seqmem::Weights<S>& w) {
  out.insert(out.end(), w.W.begin(), w.W.end());
  out.insert(out.end(), w.b.begin(), w.b.end());
}

}  // namespace seqmem_fuzz
