#pragma once

/// @file
/// The checks every public entry runs before it touches a state (strong guarantee: a call
/// that throws leaves the state as it was); each throws `seqmem::invalid_argument`.

#include <cmath>
#include <limits>
#include <numeric>
#include <sstream>
#include <string>
#include <string_view>

#include "seqmem/core/errors.hpp"
#include "seqmem/core/types.hpp"
#include "seqmem/detail/row_kernels.hpp"

namespace seqmem {

namespace detail {

template <class... Parts>
[[noreturn]] void fail(std::string_view where, const Parts&... parts) {
  std::ostringstream message;
  message << "seqmem::" << where << ": ";
  (message << ... << parts);
  throw invalid_argument(message.str());
}

/// Throws unless `value > 0` (option values such as dims and chunk sizes).
inline void require_positive(std::string_view where, std::string_view name, Index value) {
  if (value <= 0) fail(where, name, " must be > 0, got ", value);
}

/// a·b for option values a, b > 0 (a hidden width), or an error when it overflows Index.
inline Index checked_product(std::string_view where, std::string_view name, Index a, Index b) {
  if (a > std::numeric_limits<Index>::max() / b) {
    fail(where, name, " (the hidden width) overflows Index: ", a, "·", b);
  }
  return a * b;
}

/// The least common multiple of a, b > 0, or 0 when it does not fit an Index (std::lcm's
/// overflow is undefined).
inline Index lcm_or_zero(Index a, Index b) {
  const Index step = b / std::gcd(a, b);
  return a > std::numeric_limits<Index>::max() / step ? 0 : a * step;
}

/// Throws unless `x` is `rows × cols`.
template <class Derived>
void require_shape(std::string_view where, std::string_view name,
                   const Eigen::DenseBase<Derived>& x, Index rows, Index cols) {
  if (x.rows() != rows || x.cols() != cols) {
    fail(where, name, " must be ", rows, "x", cols, ", got ", x.rows(), "x", x.cols());
  }
}

/// Entries from which all_finite runs on row_kernels::FinitePass.
inline constexpr Index kFinitePassMinSize = 1024;

/// True when every value of `x` is finite. x − x is 0 for a finite x and NaN for ±Inf or NaN,
/// and a NaN survives the sum; Eigen's vectorized row sums make this about 10× faster than
/// `allFinite()` (a scalar loop), which matters when every call checks its inputs. Stored with
/// unit inner stride and large enough, it runs on the widest vectors the CPU has
/// (row_kernels::FinitePass); a decode step's rows stay on the inline Eigen sums, where the
/// kernel's call and final reduction cost more than they save (+0.03–0.05 µs per token, d = 64).
template <class Derived>
bool all_finite(const Eigen::DenseBase<Derived>& x) {
  using Scalar = typename Derived::Scalar;
#if defined(SEQMEM_ROW_KERNELS)
  if constexpr (bool(Derived::Flags & Eigen::DirectAccessBit)) {
    const Derived& d = x.derived();
    if (d.innerStride() == 1 && d.size() >= kFinitePassMinSize) {
      // a row-major matrix's rows (a column-major one's columns) are contiguous
      const bool by_rows = Derived::IsRowMajor;
      bool finite = false;
      row_kernels::with_widest_vectors<row_kernels::FinitePass>(
          d.data(), Index(by_rows ? d.rows() : d.cols()), Index(by_rows ? d.cols() : d.rows()),
          Index(d.outerStride()), &finite);
      return finite;
    }
  }
#endif
  Scalar sum(0);
  if constexpr (Derived::IsRowMajor) {
    for (Index i = 0; i < x.rows(); ++i)
      sum += (x.row(i).array() - x.row(i).array()).sum();
  } else {
    for (Index j = 0; j < x.cols(); ++j)
      sum += (x.col(j).array() - x.col(j).array()).sum();
  }
  return sum == Scalar(0);
}

/// Throws unless every value of `x` is finite, naming the first bad (row, column). The
/// inputs q, k, v are checked this way unless a layer's `check_finite` option is off.
template <class Derived>
void require_finite(std::string_view where, std::string_view name,
                    const Eigen::DenseBase<Derived>& x) {
  if (all_finite(x)) return;
  for (Index i = 0; i < x.rows(); ++i) {
    for (Index j = 0; j < x.cols(); ++j) {
      if (!std::isfinite(x(i, j))) {
        fail(where, name, "(", i, ", ", j, ") must be finite, got ", x(i, j),
             " (the check_finite option turns this check off)");
      }
    }
  }
}

/// Checks the shapes of one call's q (`T×dq`), k (`T×dk`) and v (`T×dv`), T being q's rows. dq
/// is dk except where several query heads share one k and v (softmax attention with
/// `query_heads`).
template <class Inputs>
void require_qkv_shapes(std::string_view where, const Inputs& in, Index dq, Index dk, Index dv) {
  const Index T = in.q.rows();
  require_shape(where, "q", in.q, T, dq);
  require_shape(where, "k", in.k, T, dk);
  require_shape(where, "v", in.v, T, dv);
}

}  // namespace detail
}  // namespace seqmem
