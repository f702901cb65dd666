#pragma once

/// @file
/// What a layer declares about its state for state files (state_io.hpp): each layer has a
/// nested `StateLayout` beside its `State`, with
///
///     static constexpr std::string_view kind;                 the layer kind in the file
///     static std::vector<StateParam> params(const Layer&);    options that shape the state
///     template <class S, class V> static void visit(const Layer&, S& state, V& v);
///         calls v.tensor(name, matrix[, RowRange]) and v.integer(name, value, lo, hi) for
///         every part of the state, in file order (S is `State` or `const State`)
///
/// and, when the State has private parts, `template <class V> static State restore(layer, v)`
/// (otherwise a load visits a fresh `initial_state()` in place). Saving, loading and the
/// expected shapes all come from that one description (docs/state_format.md).

#include <concepts>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "seqmem/core/types.hpp"

namespace seqmem {

/// One option that shapes a state, recorded in the file header (bools as 0/1).
struct StateParam {
  /// The option's name in the file header (e.g. "key_dim").
  std::string_view name;
  /// Its value; bools are stored as 0 or 1.
  std::int64_t value;
};

/// Rows a tensor may have when they are not fixed by the layer (the softmax KV cache).
struct RowRange {
  /// Fewest rows allowed.
  Index min, max;
  /// @var max
  /// Most rows allowed.
};

/// A layer whose states can be saved and loaded (state_io.hpp).
template <class L>
concept PersistentLayer = requires(const L& layer) {
  typename L::State;
  typename L::StateLayout;
  { L::StateLayout::kind } -> std::convertible_to<std::string_view>;
  { L::StateLayout::params(layer) } -> std::same_as<std::vector<StateParam>>;
};

namespace detail {

/// A visitor that prefixes every name it passes on: the parts of a composite state (a layer
/// from x: its heads' memory states, its caches) are named `heads[2].S`, `q_cache`, ….
template <class V>
struct PrefixedVisitor {
  V& v;
  std::string prefix;
  template <class M>
  void tensor(const std::string& name, M& m, std::optional<RowRange> range = {}) {
    v.tensor(prefix + name, m, range);
  }
  template <class I>
  void integer(const std::string& name, I& value, Index lo, Index hi) {
    v.integer(prefix + name, value, lo, hi);
  }
};

/// The prefix of head h's part of a composite state.
inline std::string head_prefix(std::size_t h) {
  return "heads[" + std::to_string(h) + "].";
}

/// Visits the memory state of every head as `heads[h].<field>`; `memory(h)` is the memory
/// layer of head h.
template <class MemoryOf, class States, class V>
void visit_heads(const MemoryOf& memory, States& heads, V& v) {
  for (std::size_t h = 0; h < heads.size(); ++h) {
    PrefixedVisitor<V> part{v, head_prefix(h)};
    const auto& layer = memory(h);
    std::remove_cvref_t<decltype(layer)>::StateLayout::visit(layer, heads[h], part);
  }
}

/// Visits every matrix of a set of inner-model weights as `<name>.W[l]`, then `<name>.b[l]`.
template <class W, class V>
void visit_weights(const std::string& name, W& w, V& v) {
  for (std::size_t l = 0; l < w.W.size(); ++l)
    v.tensor(name + ".W[" + std::to_string(l) + "]", w.W[l]);
  for (std::size_t l = 0; l < w.b.size(); ++l)
    v.tensor(name + ".b[" + std::to_string(l) + "]", w.b[l]);
}

}  // namespace detail
}  // namespace seqmem
