#pragma once

/// @file
/// Matrix aliases, the `Form` enum and the view types every layer uses.

#include <Eigen/Core>
#include <string_view>

namespace seqmem {

using Index = Eigen::Index;

/// Dense row-major matrix: rows are tokens (MATH.md §0).
template <class Scalar>
using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Dense column vector (per-token scalars inside the library).
template <class Scalar>
using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

/// Dense row vector (one token).
template <class Scalar>
using RowVector = Eigen::Matrix<Scalar, 1, Eigen::Dynamic>;

/// Read-only view of a row-major matrix with any row stride: binds without a copy to a
/// `Matrix`, to `middleCols` of a wider `Matrix` (one head of `T×(H·d)`), to a column of a
/// `T×H` gate matrix and to an `Eigen::Map` of a user buffer. Other expressions are copied
/// into the view's own storage.
template <class Scalar>
using MatrixCRef = Eigen::Ref<const Matrix<Scalar>, 0, Eigen::OuterStride<>>;

/// Writable view of a row-major matrix with any row stride (outputs).
template <class Scalar>
using MatrixRef = Eigen::Ref<Matrix<Scalar>, 0, Eigen::OuterStride<>>;

/// Read-only view of one per-token gate (`T×1`), or of `H` gates side by side (`T×H`) for the
/// multi-head executor. Binds without a copy to a `Vector`, to a `T×1` or `T×H` row-major
/// `Matrix`, to a column or row range of those and to an `Eigen::Map`; a column-major `T×H`
/// matrix is copied into the view.
///
/// Views in an `Inputs` struct do not own data when they bind without a copy; a view that
/// had to copy owns that copy, and a copied `Inputs` would point into the original's. Build
/// `Inputs` where they are used (designated initializers) rather than copying them around.
template <class Scalar>
using GateRef = Eigen::Ref<const Matrix<Scalar>, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>;

/// The three ways to run a layer over one call; all give the same numbers (MATH.md §6).
enum class Form {
  recurrent,  ///< token by token: the definition
  parallel,   ///< the whole call at once
  chunkwise,  ///< parallel inside chunks, recurrent across them
};

inline constexpr Form all_forms[] = {Form::recurrent, Form::parallel, Form::chunkwise};

constexpr std::string_view to_string(Form form) {
  switch (form) {
    case Form::recurrent: return "recurrent";
    case Form::parallel: return "parallel";
    case Form::chunkwise: return "chunkwise";
  }
  return "unknown";
}

}  // namespace seqmem
