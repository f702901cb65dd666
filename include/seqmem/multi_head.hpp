#pragma once

/// @file
/// Runs any layer over H heads packed side by side and over a batch of sequences of
/// different lengths; every (sequence, head) pair has its own state. Threads come from
/// detail/parallel.hpp.

#include <span>
#include <string>
#include <vector>

#include "seqmem/core/concepts.hpp"
#include "seqmem/core/types.hpp"
#include "seqmem/detail/checks.hpp"
#include "seqmem/detail/parallel.hpp"

namespace seqmem {

/// Multi-head, multi-sequence executor. Inputs of one sequence are packed: q, k `T×(H·dk)`,
/// v `T×(H·dv)`, gates `T×H`; the output is `T×(H·output_dim)`. Head h is computed exactly
/// as `layer.forward` on the head's column slices, so results do not depend on the number
/// of threads (Eigen's own threading is not used inside). Each head is validated once
/// (`check`), then run through `forward_unchecked`.
template <MultiHeadLayer Layer>
class MultiHead {
 public:
  /// The layer's scalar type (float or double).
  using Scalar = typename Layer::Scalar;
  /// The layer's inputs; here packed: every member holds all H heads side by side.
  using Inputs = typename Layer::Inputs;
  /// One head's state.
  using State = typename Layer::State;
  /// One state per head.
  using States = std::vector<State>;

  /// All heads share `layer` (one parameter set). `num_threads` = 0 uses
  /// `std::thread::hardware_concurrency()`.
  MultiHead(Layer layer, Index num_heads, Index num_threads = 0)
      : layers_{std::move(layer)}, num_heads_(num_heads), num_threads_(num_threads) {
    detail::require_positive(kName, "num_heads", num_heads_);
    set_threads();
  }

  /// Head h runs `layers[h]`: one parameter set per head (e.g. TTT's per-head inner weights).
  /// The heads must agree on key_dim, value_dim and output_dim (they are packed side by side).
  explicit MultiHead(std::vector<Layer> layers, Index num_threads = 0)
      : layers_(std::move(layers)),
        num_heads_(static_cast<Index>(layers_.size())),
        num_threads_(num_threads) {
    if (layers_.empty()) detail::fail(kName, "layers must hold one layer per head, got none");
    for (Index h = 1; h < num_heads_; ++h) {
      const Layer& l = layer(h);
      const Layer& first = layer(0);
      if (l.key_dim() != first.key_dim() || l.value_dim() != first.value_dim() ||
          l.output_dim() != first.output_dim()) {
        detail::fail(kName, "head ", h, " has key_dim, value_dim, output_dim ", l.key_dim(), ", ",
                     l.value_dim(), ", ", l.output_dim(), "; head 0 has ", first.key_dim(), ", ",
                     first.value_dim(), ", ", first.output_dim());
      }
    }
    set_threads();
  }

  /// Head h's layer (the shared one when all heads share a parameter set).
  const Layer& layer(Index h = 0) const {
    return layers_[layers_.size() == 1 ? 0 : static_cast<std::size_t>(h)];
  }
  /// Number of heads H.
  Index num_heads() const { return num_heads_; }
  /// Threads a call may use (0 at construction has become the hardware concurrency).
  Index num_threads() const { return num_threads_; }

  /// Every head's initial state (from its own layer).
  States initial_state() const {
    States states;
    for (Index h = 0; h < num_heads_; ++h)
      states.push_back(layer(h).initial_state());
    return states;
  }

  /// One sequence, all heads; returns the `T×(H·output_dim)` output.
  Matrix<Scalar> forward(Form form, const Inputs& packed, States& states) const {
    Matrix<Scalar> out(Layer::tokens(packed), num_heads_ * layer().output_dim());
    forward(form, packed, states, out);
    return out;
  }

  /// One sequence, all heads, written into `out` (`T×(H·output_dim)`, any row stride).
  void forward(Form form, const Inputs& packed, States& states, MatrixRef<Scalar> out) const {
    States* state_list[] = {&states};
    forward_batch(form, std::span<const Inputs>(&packed, 1), state_list,
                  std::span<MatrixRef<Scalar>>(&out, 1));
  }

  /// A batch of sequences (any lengths), all heads; `states[s]` belongs to sequence s and
  /// lives wherever the model keeps it. Returns one output per sequence.
  std::vector<Matrix<Scalar>> forward_batch(Form form, std::span<const Inputs> sequences,
                                            std::span<States* const> states) const {
    std::vector<Matrix<Scalar>> outs;
    outs.reserve(sequences.size());
    for (const Inputs& seq : sequences)
      outs.emplace_back(Layer::tokens(seq), num_heads_ * layer().output_dim());
    std::vector<MatrixRef<Scalar>> views(outs.begin(), outs.end());
    forward_batch(form, sequences, states, views);
    return outs;
  }

  /// As above, for states kept side by side (`states[s]` for sequence s).
  std::vector<Matrix<Scalar>> forward_batch(Form form, std::span<const Inputs> sequences,
                                            std::span<States> states) const {
    std::vector<States*> pointers;
    for (States& state : states)
      pointers.push_back(&state);
    return forward_batch(form, sequences, pointers);
  }

  /// A batch of sequences, all heads, written into the caller's `outs[s]`
  /// (`T_s×(H·output_dim)`). Everything is validated once, before any state changes (strong
  /// guarantee); messages name the sequence and head, and packed widths the number of heads.
  void forward_batch(Form form, std::span<const Inputs> sequences, std::span<States* const> states,
                     std::span<MatrixRef<Scalar>> outs) const {
    const std::size_t count = sequences.size();
    if (states.size() != count || outs.size() != count) {
      detail::fail(kName, "states and outs must hold one entry per sequence (", count, "), got ",
                   states.size(), " and ", outs.size());
    }
    const Index dv = layer().output_dim();
    Index total_tokens = 0;
    for (std::size_t s = 0; s < count; ++s) {
      if (states[s] == nullptr) detail::fail(kName, "states[", s, "] is null");
      if (static_cast<Index>(states[s]->size()) != num_heads_) {
        detail::fail(kName, "states[", s, "] must hold ", num_heads_, " head states, got ",
                     states[s]->size());
      }
      const Index T = Layer::tokens(sequences[s]);
      detail::require_shape(kName, "out (heads packed side by side)", outs[s], T, num_heads_ * dv);
      total_tokens += T;
      for (Index h = 0; h < num_heads_; ++h) {
        try {
          layer(h).check(form, layer(h).head(sequences[s], h, num_heads_),
                         (*states[s])[static_cast<std::size_t>(h)]);
        } catch (const invalid_argument& error) {
          throw invalid_argument(std::string(error.what()) + " [sequence " + std::to_string(s) +
                                 ", head " + std::to_string(h) + " of " +
                                 std::to_string(num_heads_) + "]");
        }
      }
    }
    // Waking the pool's threads costs microseconds: a call with few tokens in all (a decode
    // step) runs on the calling thread, and allocates nothing once the layers' per-thread
    // buffers have grown.
    const Index threads = total_tokens * num_heads_ < kMinTokensPerThread * 2 ? 1 : num_threads_;
    const Index items = static_cast<Index>(count) * num_heads_;
    detail::run_parallel(threads, items, [&](Index item) {
      const auto s = static_cast<std::size_t>(item / num_heads_);
      const Index h = item % num_heads_;
      // An empty output may have no storage to offset into: take column 0 then.
      const Index column = outs[s].rows() > 0 ? h * dv : 0;
      // The head's views again (views into the caller's packed inputs, checked above): taking
      // them costs a few shape comparisons, keeping them would cost a vector per call.
      layer(h).forward_unchecked(form, layer(h).head(sequences[s], h, num_heads_),
                                 (*states[s])[static_cast<std::size_t>(h)],
                                 outs[s].middleCols(column, dv));
    });
  }

 private:
  static constexpr const char* kName = "MultiHead";
  static constexpr Index kMinTokensPerThread = 64;

  /// Throws unless num_threads >= 0; 0 becomes the hardware concurrency.
  void set_threads() {
    if (num_threads_ < 0) detail::fail(kName, "num_threads must be >= 0, got ", num_threads_);
    num_threads_ = detail::resolve_threads(num_threads_);
  }

  std::vector<Layer> layers_;  ///< one shared layer, or one per head
  Index num_heads_;
  Index num_threads_;
};

}  // namespace seqmem
