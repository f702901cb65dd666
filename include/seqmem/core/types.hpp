#pragma once

/// @file
/// Matrix aliases, the `Form` enum and the view types every layer uses.

#include <Eigen/Core>
#include <memory>
#include <string_view>
#include <type_traits>
#include <utility>

/// The seqmem library: the sequence memories (layers/), their shared surface and types (core/),
/// `MultiHead`, state files (state_io.hpp) and checkpoints (checkpoint.hpp). The implementation
/// is in `seqmem::detail`, which is not part of the API.
namespace seqmem {

/// Signed size and index type of every shape in seqmem (`Eigen::Index`, i.e. `std::ptrdiff_t`).
using Index = Eigen::Index;

/// Dense row-major matrix: rows are tokens (docs/math.md §0).
template <class Scalar>
using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Dense column vector (per-token scalars inside the library).
template <class Scalar>
using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

/// Dense row vector (one token).
template <class Scalar>
using RowVector = Eigen::Matrix<Scalar, 1, Eigen::Dynamic>;

/// Read-only view of a row-major matrix with any row stride: binds without a copy to a
/// `Matrix`, to `middleCols` of a wider `Matrix` and to an `Eigen::Map`; other expressions are
/// copied into the view's own storage. Used for parameters inside the library; the members of
/// a layer's `Inputs` are `InputRef` and `GateRef`, which stay valid when copied.
template <class Scalar>
using MatrixCRef = Eigen::Ref<const Matrix<Scalar>, 0, Eigen::OuterStride<>>;

/// Writable view of a row-major matrix with any row stride (outputs).
template <class Scalar>
using MatrixRef = Eigen::Ref<Matrix<Scalar>, 0, Eigen::OuterStride<>>;

namespace detail {

/// A read-only `rows × cols` view with the strides `StrideType` allows, which is safe to copy.
///
/// It binds without a copy to every expression with direct access whose layout `StrideType`
/// can describe (a `Matrix`, a `Vector`, column or row ranges of them, an `Eigen::Map`, a
/// column-major matrix where any strides are allowed). Any other expression (a product, a
/// scaled matrix, a column-major matrix where rows must be contiguous) is evaluated once into
/// storage that the view shares with its copies, so a copied view (an `Inputs` pushed into a
/// `std::vector`, say) never points into a destroyed temporary. (An `Eigen::Ref` that had to
/// copy keeps the copy inside itself, and a copy of that `Ref` dangles once the original is
/// gone.) As with any view, data that was bound without a copy must outlive the view.
template <class Scalar, class StrideType>
class SharedView;

template <class Scalar>
struct SharedStorage {
  std::shared_ptr<const Matrix<Scalar>> owned;  ///< null when the view binds without a copy
};

template <class Scalar, class StrideType>
class SharedView : private SharedStorage<Scalar>,
                   public Eigen::Map<const Matrix<Scalar>, 0, StrideType> {
  using Storage = SharedStorage<Scalar>;
  using Map = Eigen::Map<const Matrix<Scalar>, 0, StrideType>;
  static constexpr bool kAnyColumnStride = StrideType::InnerStrideAtCompileTime == Eigen::Dynamic;

 public:
  template <class Derived>
  SharedView(const Eigen::DenseBase<Derived>& x)  // NOLINT(google-explicit-constructor)
      : SharedView(bind(x.derived())) {}

  SharedView(const SharedView&) = default;
  /// Views are bound once (like references); assigning one would write through it.
  SharedView& operator=(const SharedView&) = delete;

  /// True when the view holds its own copy of what it was bound to.
  bool owns_copy() const { return Storage::owned != nullptr; }

 private:
  struct Binding {
    std::shared_ptr<const Matrix<Scalar>> owned;
    const Scalar* data;
    Index rows, cols, row_stride, col_stride;
  };

  explicit SharedView(Binding b)
      : Storage{std::move(b.owned)}, Map(b.data, b.rows, b.cols, stride(b)) {}

  static StrideType stride(const Binding& b) {
    if constexpr (kAnyColumnStride) {
      return StrideType(b.row_stride, b.col_stride);
    } else {
      return StrideType(b.row_stride);
    }
  }

  template <class Derived>
  static Binding bind(const Derived& x) {
    static_assert(std::is_same_v<typename Derived::Scalar, Scalar>,
                  "seqmem: an input's scalar type must be the layer's Scalar");
    if constexpr ((Derived::Flags & Eigen::DirectAccessBit) != 0) {
      // Eigen's strides count along its storage order; turn them into row and column strides.
      Index row_stride = Derived::IsRowMajor ? x.outerStride() : x.innerStride();
      Index col_stride = Derived::IsRowMajor ? x.innerStride() : x.outerStride();
      if (x.cols() <= 1) col_stride = 1;  // a single column or row: that stride is unused
      if (x.rows() <= 1) row_stride = x.cols() * col_stride;
      if (kAnyColumnStride || col_stride == 1) {
        return {nullptr, x.data(), x.rows(), x.cols(), row_stride, col_stride};
      }
    }
    auto owned = std::make_shared<const Matrix<Scalar>>(x);
    const Scalar* data = owned->data();
    return {std::move(owned), data, x.rows(), x.cols(), x.cols(), 1};
  }
};

}  // namespace detail

/// Read-only view of one head's `T×d` input (q, k, v): rows are tokens, each row contiguous,
/// any row stride. Binds without a copy to a `Matrix`, to `middleCols` of a wider `Matrix` (one
/// head of `T×(H·d)`), to row ranges of those and to an `Eigen::Map` of a user buffer; other
/// expressions are evaluated once into storage the view shares with its copies.
template <class Scalar>
using InputRef = detail::SharedView<Scalar, Eigen::OuterStride<>>;

/// Read-only view of one per-token gate (`T×1`), or of `H` gates side by side (`T×H`) for the
/// multi-head executor. Binds without a copy to a `Vector`, to a `T×1` or `T×H` `Matrix` of
/// either storage order, to a column or row range of those and to an `Eigen::Map`; other
/// expressions are evaluated once into storage the view shares with its copies.
template <class Scalar>
using GateRef = detail::SharedView<Scalar, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>;

/// Feature map φ applied to q and k by linear attention (docs/math.md §2).
/// Values: `identity` (φ(x) = x, the default), `elu_plus_one` (φ(x) = elu(x) + 1: x + 1 for
/// x > 0, eˣ otherwise) and `relu` (φ(x) = max(x, 0)), applied element-wise.
enum class FeatureMap { identity, elu_plus_one, relu };

/// Activation between the inner model's layers.
/// Values: `gelu_tanh` (the tanh approximation of GELU; TTT always uses it) and `silu`
/// (x·sigmoid(x)); Titans chooses with `TitansMemory::Options::activation`.
enum class Activation { gelu_tanh, silu };

/// The three ways to run a layer over one call; all give the same numbers (docs/math.md §6).
enum class Form {
  recurrent,  ///< token by token: the definition
  parallel,   ///< the whole call at once
  chunkwise,  ///< parallel inside chunks, recurrent across them
};

/// The three forms in declaration order, for loops over every form (tests, benchmarks).
inline constexpr Form all_forms[] = {Form::recurrent, Form::parallel, Form::chunkwise};

/// The form's name as written in messages and benchmark names: "recurrent", "parallel" or
/// "chunkwise" ("unknown" for a value outside the enum).
constexpr std::string_view to_string(Form form) {
  switch (form) {
    case Form::recurrent: return "recurrent";
    case Form::parallel: return "parallel";
    case Form::chunkwise: return "chunkwise";
  }
  return "unknown";
}

}  // namespace seqmem
