#pragma once

/// @file
/// Runs any layer over H heads packed side by side and over a batch of sequences of
/// different lengths; every (sequence, head) pair has its own state. Threads come from
/// detail/parallel.hpp.

#include <algorithm>
#include <atomic>
#include <concepts>
#include <span>
#include <string>
#include <utility>
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
/// (`check`; in a call cut into blocks, its values block by block, see `forward_batch`), then
/// run through `forward_unchecked`.
///
/// A long call runs in blocks of tokens: a thread takes a group of heads and runs each block
/// through all of them before the next block, so the block's packed rows are still in its
/// cache for the next head (one head after another over 4096 tokens streamed the packed
/// inputs from memory once per head: up to 2× the time of one head alone, issue 17). The
/// blocks end only where the layer says the call may be cut without changing a bit
/// (`exact_split`): the recurrent form anywhere, the chunkwise form of linear attention,
/// DeltaNet and the diagonal-gate layers at multiples of both the chunk size and 16 tokens;
/// other calls run whole (`set_block_tokens` chooses the block's length).
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

  /// Tokens of a block in a long call (see the class comment), rounded up to where the layer
  /// may be cut; 0 (the default) chooses them from the sizes: about kBlockBytes of a thread's
  /// heads' inputs and outputs, and at least kMinBlockTokens.
  void set_block_tokens(Index tokens) {
    if (tokens < 0) detail::fail(kName, "block_tokens must be >= 0, got ", tokens);
    block_tokens_ = tokens;
  }
  /// As set by set_block_tokens (0: chosen per call).
  Index block_tokens() const { return block_tokens_; }

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
  /// (`T_s×(H·output_dim)`). Everything is validated once, and a call that throws leaves every
  /// state as it was (strong guarantee): shapes and states before any state changes; in a call
  /// cut into blocks, the values (finiteness, gate ranges) of each block just before it runs,
  /// and when one fails every state is put back. Messages name the sequence and head, and
  /// packed widths the number of heads.
  void forward_batch(Form form, std::span<const Inputs> sequences, std::span<States* const> states,
                     std::span<MatrixRef<Scalar>> outs) const {
    const std::size_t count = sequences.size();
    if (states.size() != count || outs.size() != count) {
      detail::fail(kName, "states and outs must hold one entry per sequence (", count, "), got ",
                   states.size(), " and ", outs.size());
    }
    const Index dv = layer().output_dim();
    Index total_tokens = 0, longest = 0;
    for (std::size_t s = 0; s < count; ++s) {
      if (states[s] == nullptr) detail::fail(kName, "states[", s, "] is null");
      if (static_cast<Index>(states[s]->size()) != num_heads_) {
        detail::fail(kName, "states[", s, "] must hold ", num_heads_, " head states, got ",
                     states[s]->size());
      }
      const Index T = Layer::tokens(sequences[s]);
      detail::require_shape(kName, "out (heads packed side by side)", outs[s], T, num_heads_ * dv);
      total_tokens += T;
      longest = std::max(longest, T);
    }
    // Waking the pool's threads costs microseconds: a call with few tokens in all (a decode
    // step) runs on the calling thread, and allocates nothing once the layers' per-thread
    // buffers have grown.
    const Index threads = total_tokens * num_heads_ < kMinTokensPerThread * 2 ? 1 : num_threads_;
    // A work item is one sequence and a group of its heads: all heads unless the threads
    // outnumber the sequences. A group of several heads runs long calls in blocks of tokens.
    Index group = 1, block = 0;
    const Index split = exact_split(form);
    if (split > 0 && count > 0) {
      const auto sequence_count = static_cast<Index>(count);
      const Index per_sequence =
          std::clamp<Index>((threads + sequence_count - 1) / sequence_count, 1, num_heads_);
      group = (num_heads_ + per_sequence - 1) / per_sequence;
      block = group > 1 ? block_tokens(split, group, longest) : 0;
      if (block == 0) group = 1;
    }
    const Index groups = (num_heads_ + group - 1) / group;
    const auto run = [&](bool check_values) {
      detail::run_parallel(threads, static_cast<Index>(count) * groups, [&](Index item) {
        const auto s = static_cast<std::size_t>(item / groups);
        const Index first = item % groups * group, last = std::min(first + group, num_heads_);
        const Index T = Layer::tokens(sequences[s]);
        const Index step = block > 0 && T > block ? block : std::max<Index>(T, 1);
        for (Index begin = 0; begin == 0 || begin < T; begin += step) {
          for (Index h = first; h < last; ++h)
            run_head(form, sequences[s], h, begin, std::min(step, T - begin),
                     (*states[s])[static_cast<std::size_t>(h)], outs[s], check_values);
        }
      });
    };
    if (block == 0) {
      validate_on(threads, form, sequences, states);
      run(false);
      return;
    }
    // A call that runs in blocks has its values (finiteness, gate ranges) checked block by
    // block, just before each block runs, while its rows are in cache: a pass over all the
    // inputs first cost linear attention 15 % of its time at T = 4096 (issue 17). Everything
    // else is checked up front. When a block's values fail, every state is put back as it was
    // and the whole check runs, so the call throws what checking up front throws and changes
    // no state.
    try {
      validate(form, sequences, states, false);
    } catch (const invalid_argument&) {
      validate(form, sequences, states, true);  // the first error, values included
      throw;
    }
    std::vector<States> before;
    before.reserve(count);
    for (std::size_t s = 0; s < count; ++s)
      before.push_back(*states[s]);
    try {
      run(true);
    } catch (...) {
      for (std::size_t s = 0; s < count; ++s)
        *states[s] = std::move(before[s]);
      validate(form, sequences, states, true);
      throw;
    }
  }

 private:
  static constexpr const char* kName = "MultiHead";
  static constexpr Index kMinTokensPerThread = 64;
  /// Automatic blocks: a block's packed rows of the group's heads (q, k, v, out) take about
  /// kBlockBytes, a quarter of this core's 1 MiB L2, leaving room for the heads' states; and
  /// at least kMinBlockTokens, so that a call's fixed costs stay small. 4 heads of d = 64 or
  /// 128 on one thread: 64 tokens, the best of 32–512 measured.
  static constexpr Index kBlockBytes = 256 * 1024;
  static constexpr Index kMinBlockTokens = 64;

  /// Layers that say where their calls may be cut (`exact_split`, `token_slice`: LayerBase).
  static constexpr bool kCanSplit = requires(const Layer& l, const Inputs& in) {
    { l.exact_split(Form::recurrent) } -> std::same_as<Index>;
    { l.token_slice(in, Index{}, Index{}) } -> std::same_as<Inputs>;
    { l.check_shapes(Form::recurrent, in, std::declval<const State&>()) } -> std::same_as<void>;
    { l.check_values(in) } -> std::same_as<void>;
  };

  /// Checks every head of every sequence (`values`: all of `check`; otherwise `check_shapes`);
  /// a message names the sequence and head.
  void validate(Form form, std::span<const Inputs> sequences, std::span<States* const> states,
                bool values) const {
    for (std::size_t s = 0; s < sequences.size(); ++s) {
      for (Index h = 0; h < num_heads_; ++h) {
        try {
          validate_head(form, sequences[s], h, (*states[s])[static_cast<std::size_t>(h)], values);
        } catch (const invalid_argument& error) {
          throw invalid_argument(std::string(error.what()) + " [sequence " + std::to_string(s) +
                                 ", head " + std::to_string(h) + " of " +
                                 std::to_string(num_heads_) + "]");
        }
      }
    }
  }

  /// validate(…, true) with the heads' checks spread over `threads`: the value checks of a long
  /// call are a pass over all its inputs, which on the calling thread alone was the part of a
  /// 2-thread call that did not scale (TTT-Linear, 4 heads, T = 4096, d = 64: 1.65× against
  /// 1.93× for threads that share nothing, issue 17). When a head fails, the heads are checked
  /// again in order, so the call throws the same first error.
  void validate_on(Index threads, Form form, std::span<const Inputs> sequences,
                   std::span<States* const> states) const {
    if (threads <= 1) {
      validate(form, sequences, states, true);
      return;
    }
    std::atomic<bool> failed{false};
    detail::run_parallel(
        threads, static_cast<Index>(sequences.size()) * num_heads_, [&](Index item) {
          const auto s = static_cast<std::size_t>(item / num_heads_);
          const Index h = item % num_heads_;
          try {
            validate_head(form, sequences[s], h, (*states[s])[static_cast<std::size_t>(h)], true);
          } catch (const invalid_argument&) {
            failed = true;
          }
        });
    if (failed) validate(form, sequences, states, true);
  }

  /// One head's check (see validate).
  void validate_head(Form form, const Inputs& sequence, Index h, const State& state,
                     bool values) const {
    const Layer& l = layer(h);
    const Inputs head = l.head(sequence, h, num_heads_);
    if constexpr (kCanSplit) {
      if (!values) {
        l.check_shapes(form, head, state);
        return;
      }
    }
    l.check(form, head, state);
  }

  /// Where every head's calls in `form` may be cut (the least common multiple of the heads'
  /// exact_split), or 0 when some head's may not (or that multiple is not an Index).
  Index exact_split(Form form) const {
    if constexpr (kCanSplit) {
      Index split = 1;
      for (const Layer& l : layers_) {
        const Index s = l.exact_split(form);
        if (s <= 0) return 0;
        split = detail::lcm_or_zero(split, s);
        if (split == 0) return 0;
      }
      return split;
    } else {
      return 0;
    }
  }

  /// Tokens of a block: set_block_tokens's or the automatic choice for `group` heads per
  /// thread, rounded up to a multiple of `split`; 0 when a block would hold the `longest` call
  /// (nothing to cut).
  Index block_tokens(Index split, Index group, Index longest) const {
    Index tokens = block_tokens_;
    if (tokens == 0) {
      const Layer& l = layer();
      const Index head_bytes =
          (2 * l.key_dim() + l.value_dim() + l.output_dim()) * static_cast<Index>(sizeof(Scalar));
      tokens = std::max(kMinBlockTokens, kBlockBytes / (group * head_bytes));
    }
    if (tokens >= longest || split >= longest) return 0;
    const Index rounded = (tokens + split - 1) / split * split;  // both < longest: no overflow
    return rounded >= longest ? 0 : rounded;
  }

  /// Head h of a sequence, tokens begin … begin + n − 1 (the whole call when it is not cut),
  /// into the head's columns of those rows of `out`; `check_values` first when asked.
  void run_head(Form form, const Inputs& packed, Index h, Index begin, Index n, State& state,
                MatrixRef<Scalar>& out, bool check_values) const {
    const Index dv = layer().output_dim();
    // An empty output may have no storage to offset into: take column 0 then.
    const Index column = out.rows() > 0 ? h * dv : 0;
    // The head's views again (views into the caller's packed inputs, checked above): taking
    // them costs a few shape comparisons, keeping them would cost a vector per call.
    const Layer& l = layer(h);
    const Inputs head = l.head(packed, h, num_heads_);
    if constexpr (kCanSplit) {
      const auto run = [&](const Inputs& part) {
        if (check_values) l.check_values(part);
        l.forward_unchecked(form, part, state, out.block(begin, column, n, dv));
      };
      if (n < Layer::tokens(packed)) {
        run(l.token_slice(head, begin, n));
      } else {
        run(head);
      }
    } else {
      l.forward_unchecked(form, head, state, out.middleCols(column, dv));
    }
  }

  /// Throws unless num_threads >= 0; 0 becomes the hardware concurrency.
  void set_threads() {
    if (num_threads_ < 0) detail::fail(kName, "num_threads must be >= 0, got ", num_threads_);
    num_threads_ = detail::resolve_threads(num_threads_);
  }

  std::vector<Layer> layers_;  ///< one shared layer, or one per head
  Index num_heads_;
  Index num_threads_;
  Index block_tokens_ = 0;  ///< set_block_tokens; 0: automatic
};

}  // namespace seqmem
