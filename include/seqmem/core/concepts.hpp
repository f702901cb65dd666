#pragma once

/// @file
/// The memory-state contract every layer satisfies (the shared surface is in core/layer.hpp).

#include <concepts>

#include "seqmem/core/types.hpp"

namespace seqmem {

/// A sequence-memory layer: options in, a `State` value type that carries everything the
/// layer remembers between calls, and one `forward` per call in any `Form`.
template <class L>
concept SequenceMemory = std::floating_point<typename L::Scalar> &&
    requires(const L& layer, Form form, const typename L::Inputs& in, typename L::State& state,
             MatrixRef<typename L::Scalar> out) {
  typename L::Options;
  { layer.options() } -> std::same_as<const typename L::Options&>;
  { layer.initial_state() } -> std::same_as<typename L::State>;
  { layer.forward(form, in, state) } -> std::same_as<Matrix<typename L::Scalar>>;
  { layer.forward(form, in, state, out) } -> std::same_as<void>;
  requires std::copyable<typename L::State>;
};

/// A layer that the multi-head executor can drive: it validates a call without running it,
/// runs a validated call without checking again, slices one head out of packed `T×(H·d)`
/// inputs (`T×H` gates) and knows its output width.
template <class L>
concept MultiHeadLayer = SequenceMemory<L> &&
    requires(const L& layer, Form form, const typename L::Inputs& in,
             const typename L::State& state, typename L::State& mutable_state,
             MatrixRef<typename L::Scalar> out, Index index) {
  { layer.check(form, in, state) } -> std::same_as<void>;
  { layer.forward_unchecked(form, in, mutable_state, out) } -> std::same_as<void>;
  { layer.head(in, index, index) } -> std::same_as<typename L::Inputs>;
  { layer.output_dim() } -> std::same_as<Index>;
  { L::tokens(in) } -> std::same_as<Index>;
};

}  // namespace seqmem
