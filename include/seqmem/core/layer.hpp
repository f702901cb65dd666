#pragma once

/// @file
/// `LayerBase`: the surface every layer shares, written once. A layer derives from
/// `LayerBase<Layer>` and supplies only what is its own:
///
///     using Scalar; struct Options; struct Inputs; struct State;
///     static constexpr const char* kName;            its name in messages
///     const Options& options() const;                with key_dim, value_dim, check_finite
///     static constexpr auto gates();                 its gates (a GateSpec tuple): per token
///                                                    (T×1) or per key channel (T×key_dim)
///     void check_state(Form, Index T, const State&) const;   state shape and position
///     void run(Form, const Inputs&, State&, MatrixRef<Scalar>) const;   the math, T > 0
///
/// and, optionally, `Index query_heads() const` (default 1; more for a layer whose q carries
/// several query heads side by side that share one k and v: grouped-query softmax attention)
/// and `static constexpr bool kChunksCarryOnlyState` (see `exact_split`), and gets `tokens`,
/// `check`, `head` (slicing H packed heads), `exact_split` (where a call may be cut), `token_slice`
/// (slicing tokens), both `forward` overloads and `forward_unchecked` (what `MultiHead` calls after
/// validating once).

#include <cmath>
#include <limits>
#include <memory>
#include <numeric>
#include <optional>
#include <sstream>
#include <string_view>
#include <tuple>
#include <type_traits>

#include "seqmem/core/types.hpp"
#include "seqmem/detail/checks.hpp"
#include "seqmem/detail/flush_denormals.hpp"

namespace seqmem {
namespace detail {

/// What one gate holds for a call: one value per token (`T×1`, a `GateRef`; `T×H` for H packed
/// heads) or one per token and key channel (`T×key_dim`, an `InputRef` like k; `T×(H·key_dim)`
/// packed), as the diagonal-gate layers' log-decays and key-space vectors (docs/math.md §7–§9).
enum class GateShape { per_token, per_key_channel };

/// One gate of a layer's `Inputs`: the member (the view when required, `std::optional` of it
/// when optional), its name, its closed range [lo, hi] and its shape.
template <class Member>
struct GateSpec {
  Member member;
  std::string_view name;
  double lo = -std::numeric_limits<double>::infinity();
  double hi = std::numeric_limits<double>::infinity();
  GateShape shape = GateShape::per_token;

  /// " and <= 0", " and >= 0", " and in [0, 2]" or nothing (any finite value), as the
  /// messages say after "must be finite".
  void describe(std::ostream& out) const {
    constexpr double kInf = std::numeric_limits<double>::infinity();
    if (lo == -kInf && hi == kInf) return;
    out << " and ";
    if (lo == -kInf) {
      out << "<= " << hi;
    } else if (hi == kInf) {
      out << ">= " << lo;
    } else {
      out << "in [" << lo << ", " << hi << "]";
    }
  }
};

template <class Member>
GateSpec(Member, std::string_view, double, double) -> GateSpec<Member>;
template <class Member>
GateSpec(Member, std::string_view, double, double, GateShape) -> GateSpec<Member>;

template <class T>
inline constexpr bool is_optional_v = false;
template <class T>
inline constexpr bool is_optional_v<std::optional<T>> = true;

/// The view a gate member holds, or null when an optional gate is absent.
template <class Gate>
const auto* gate_of(const Gate& gate) {
  if constexpr (is_optional_v<Gate>) {
    return gate ? &*gate : nullptr;
  } else {
    return &gate;
  }
}

/// Rebinds a view member of an `Inputs` to another view (views cannot be assigned: they are
/// bound once, like references; the member is destroyed and constructed anew).
template <class View, class Source>
void rebind(View& view, const Source& source) {
  if constexpr (is_optional_v<View>) {
    view.emplace(source);
  } else {
    std::destroy_at(&view);
    std::construct_at(&view, source);
  }
}

/// `scale`, or 1/√key_dim when absent; throws unless finite.
template <class Scalar>
Scalar scale_or_default(std::string_view where, const std::optional<Scalar>& scale, Index key_dim) {
  const Scalar value = scale.value_or(Scalar(1) / std::sqrt(Scalar(key_dim)));
  if (!std::isfinite(value)) fail(where, "scale must be finite, got ", value);
  return value;
}

}  // namespace detail

/// The deduced surface of a layer (see the file comment for what `Layer` supplies). The
/// members are templates on `L = Layer` only so that they can name `Layer`'s types, which are
/// incomplete where the base is instantiated; `L` is never deduced, so braced inputs
/// (`layer.forward(form, {.q = q, ...}, state)`) work.
template <class Layer>
class LayerBase {
 public:
  /// Tokens in a call (the rows of q).
  template <class L = Layer>
  static Index tokens(const typename L::Inputs& in) {
    return in.q.rows();
  }

  /// Width of q and k.
  Index key_dim() const { return self().options().key_dim; }
  /// Width of v and of one head's output.
  Index value_dim() const { return self().options().value_dim; }
  /// Query heads that share one k and v in a call (1 unless the layer says otherwise): q is
  /// `T×(query_heads·key_dim)` and the output `T×(query_heads·value_dim)`, heads side by side.
  Index query_heads() const { return 1; }
  /// Width of one head's output: query_heads·value_dim (value_dim for all but grouped
  /// softmax attention).
  Index output_dim() const { return self().query_heads() * value_dim(); }

  /// Where a call in `form` may be cut into consecutive calls without changing one bit of the
  /// outputs or of the final state: at every multiple of the returned number of tokens, counted
  /// from the call's start; 0 where it may not be cut. Here: the recurrent form at any token
  /// (it is token by token), and the chunkwise form at `chunk_split(chunk_size)` when the
  /// layer declares `static constexpr bool kChunksCarryOnlyState = true` (its chunkwise form
  /// carries nothing but the state from one chunk to the next); other forms nowhere. `MultiHead`
  /// runs long calls in blocks of tokens at these cuts; the conformance suite checks the claim.
  Index exact_split(Form form) const {
    if (form == Form::recurrent) return 1;
    if constexpr (requires { Layer::kChunksCarryOnlyState; }) {
      if (form == Form::chunkwise && Layer::kChunksCarryOnlyState) {
        return chunk_split(self().options().chunk_size);
      }
    }
    return 0;
  }

  /// `exact_split` of a chunkwise form that carries nothing but the state from one chunk to
  /// the next: the multiples of the chunk that are also multiples of 16 tokens. Cut there,
  /// every row of the copies a call makes (q scaled, …) sits as far from the boundary Eigen
  /// aligns its allocations to (at most 64 bytes) as in the whole call, and Eigen's small
  /// products, whose order of summation follows that distance, add in the same order. 0 (no
  /// cut) for a chunk too large for that multiple to be an Index: no call is that long.
  static Index chunk_split(Index chunk_size) { return detail::lcm_or_zero(chunk_size, 16); }

  /// Tokens `begin … begin + n − 1` of a call: views into `in` (q, k, v and every gate).
  /// Throws unless the range lies inside the call.
  template <class L = Layer>
  static typename L::Inputs token_slice(const typename L::Inputs& in, Index begin, Index n) {
    if (begin < 0 || n < 0 || begin + n > in.q.rows()) {
      detail::fail(Layer::kName, "token_slice(", begin, ", ", n, ") must lie inside the call's ",
                   in.q.rows(), " tokens");
    }
    typename L::Inputs part = in;
    detail::rebind(part.q, in.q.middleRows(begin, n));
    detail::rebind(part.k, in.k.middleRows(begin, n));
    detail::rebind(part.v, in.v.middleRows(begin, n));
    std::apply([&](const auto&... spec) { (slice_gate(spec, part, in, begin, n), ...); },
               Layer::gates());
    return part;
  }

  /// Throws `seqmem::invalid_argument` unless `forward(form, in, state)` is valid: q, k, v
  /// shapes (and finiteness unless `check_finite` is off), every gate's presence, shape,
  /// finiteness and range, and the state.
  template <class L = Layer>
  void check(Form form, const typename L::Inputs& in, const typename L::State& state) const {
    const Index T = in.q.rows();
    check_qkv_shapes(in);
    check_qkv_values(in);
    std::apply(
        [&](const auto&... spec) {
          ((this->check_gate_shape(spec, in, T), check_gate_values(spec, in)), ...);
        },
        Layer::gates());
    self().check_state(form, T, state);
  }

  /// The part of `check` that reads no value of the inputs: q, k, v shapes, every gate's
  /// presence and shape, and the state. (`MultiHead` checks this up front for a long call and
  /// the values block by block, while the block is in cache.)
  template <class L = Layer>
  void check_shapes(Form form, const typename L::Inputs& in, const typename L::State& state) const {
    const Index T = in.q.rows();
    check_qkv_shapes(in);
    std::apply([&](const auto&... spec) { (this->check_gate_shape(spec, in, T), ...); },
               Layer::gates());
    self().check_state(form, T, state);
  }

  /// The rest of `check`, for inputs `check_shapes` has accepted: q, k, v finite (unless
  /// `check_finite` is off), every gate finite and in its range.
  template <class L = Layer>
  void check_values(const typename L::Inputs& in) const {
    check_qkv_values(in);
    std::apply([&](const auto&... spec) { (check_gate_values(spec, in), ...); }, Layer::gates());
  }

  /// Head `h` of `H` heads packed side by side: q, k `T×(H·key_dim)`, v `T×(H·value_dim)`,
  /// per-token gates `T×H`, per-channel gates `T×(H·key_dim)`; views into `packed`. Throws when a
  /// packed width does not fit H heads. (With `query_heads` G > 1, a head is one k/v head and its G
  /// query heads: q `T×(H·G·key_dim)`.)
  template <class L = Layer>
  typename L::Inputs head(const typename L::Inputs& packed, Index h, Index H) const {
    const Index T = packed.q.rows(), dk = key_dim(), dv = value_dim();
    const Index G = self().query_heads(), dq = G * dk;
    require_packed(packed.q, "q", T, H, dq, G > 1 ? "query_heads·key_dim" : "key_dim");
    require_packed(packed.k, "k", T, H, dk, "key_dim");
    require_packed(packed.v, "v", T, H, dv, "value_dim");
    // An empty matrix may have no storage (null data), and Eigen offsets data() for a slice:
    // null + offset is UB, so an empty call takes every head's (empty) slice at column 0.
    const Index first = T > 0 ? h : 0;
    typename L::Inputs in = packed;
    detail::rebind(in.q, packed.q.middleCols(first * dq, dq));
    detail::rebind(in.k, packed.k.middleCols(first * dk, dk));
    detail::rebind(in.v, packed.v.middleCols(first * dv, dv));
    std::apply([&](const auto&... spec) { (head_gate(spec, in, packed, first, H, dk), ...); },
               Layer::gates());
    return in;
  }

  /// Runs one call in `form`, after `check`; returns the `T×output_dim` output.
  template <class L = Layer>
  Matrix<typename L::Scalar> forward(Form form, const typename L::Inputs& in,
                                     typename L::State& state) const {
    Matrix<typename L::Scalar> out(in.q.rows(), output_dim());
    forward(form, in, state, out);
    return out;
  }

  /// Runs one call in `form`, after `check`, writing the `T×output_dim` output into `out`. A
  /// call that throws leaves `state` as it was.
  template <class L = Layer>
  void forward(Form form, const typename L::Inputs& in, typename L::State& state,
               MatrixRef<typename L::Scalar> out) const {
    check(form, in, state);
    forward_unchecked(form, in, state, out);
  }

  /// `forward` for inputs that `check` has already accepted (MultiHead validates once).
  template <class L = Layer>
  void forward_unchecked(Form form, const typename L::Inputs& in, typename L::State& state,
                         MatrixRef<typename L::Scalar> out) const {
    detail::require_shape(Layer::kName, "out", out, in.q.rows(), output_dim());
    if (in.q.rows() == 0) return;
    const detail::FlushDenormals no_subnormals;  // no slow path when a state decays to zero
    self().run(form, in, state, out);
  }

 private:
  const Layer& self() const { return static_cast<const Layer&>(*this); }

  template <class Packed>
  static void require_packed(const Packed& x, std::string_view name, Index T, Index H, Index width,
                             std::string_view width_name) {
    if (x.rows() != T || x.cols() != H * width) {
      detail::fail(Layer::kName, name, " (", H, " heads packed side by side) must be ", T, "x",
                   H * width, " (T x heads·", width_name, " = ", H, "·", width, "), got ", x.rows(),
                   "x", x.cols());
    }
  }

  template <class Inputs>
  void check_qkv_shapes(const Inputs& in) const {
    detail::require_qkv_shapes(Layer::kName, in, self().query_heads() * key_dim(), key_dim(),
                               value_dim());
  }

  template <class Inputs>
  void check_qkv_values(const Inputs& in) const {
    if (!self().options().check_finite) return;
    detail::require_finite(Layer::kName, "q", in.q);
    detail::require_finite(Layer::kName, "k", in.k);
    detail::require_finite(Layer::kName, "v", in.v);
  }

  template <class Spec, class Inputs>
  void check_gate_shape(const Spec& spec, const Inputs& in, Index T) const {
    const auto* gate = detail::gate_of(in.*spec.member);
    if (gate == nullptr) return;
    const bool per_token = spec.shape == detail::GateShape::per_token;
    detail::require_shape(Layer::kName, spec.name, *gate, T, per_token ? 1 : key_dim());
  }

  template <class Spec, class Inputs>
  static void check_gate_values(const Spec& spec, const Inputs& in) {
    const auto* gate = detail::gate_of(in.*spec.member);
    if (gate == nullptr) return;
    const bool per_token = spec.shape == detail::GateShape::per_token;
    const Index T = gate->rows();
    // One vectorized pass decides; the scalar search below only runs to name a bad value.
    if (detail::all_finite(*gate) &&
        (T == 0 || (double(gate->minCoeff()) >= spec.lo && double(gate->maxCoeff()) <= spec.hi))) {
      return;
    }
    for (Index t = 0; t < T; ++t) {
      for (Index c = 0; c < gate->cols(); ++c) {
        const auto value = (*gate)(t, c);
        if (!std::isfinite(value) || !(double(value) >= spec.lo && double(value) <= spec.hi)) {
          std::ostringstream range;
          spec.describe(range);
          std::ostringstream where;
          where << "[" << t;
          if (!per_token) where << ", " << c;
          detail::fail(Layer::kName, spec.name, where.str(), "] must be finite", range.str(),
                       ", got ", value);
        }
      }
    }
  }

  template <class Spec, class Inputs>
  static void slice_gate(const Spec& spec, Inputs& part, const Inputs& in, Index begin, Index n) {
    if (const auto* gate = detail::gate_of(in.*spec.member)) {
      detail::rebind(part.*spec.member, gate->middleRows(begin, n));
    }
  }

  template <class Spec, class Inputs>
  static void head_gate(const Spec& spec, Inputs& in, const Inputs& packed, Index h, Index H,
                        Index dk) {
    const auto* gate = detail::gate_of(packed.*spec.member);
    if (gate == nullptr) return;
    if (spec.shape == detail::GateShape::per_key_channel) {
      require_packed(*gate, spec.name, packed.q.rows(), H, dk, "key_dim");
      detail::rebind(in.*spec.member, gate->middleCols(h * dk, dk));
      return;
    }
    if (gate->rows() != packed.q.rows() || gate->cols() != H) {
      detail::fail(Layer::kName, spec.name, " (", H, " heads packed side by side) must be ",
                   packed.q.rows(), "x", H, " (T x heads), got ", gate->rows(), "x", gate->cols());
    }
    detail::rebind(in.*spec.member, gate->col(h));
  }
};

}  // namespace seqmem
