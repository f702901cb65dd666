#pragma once

/// @file
/// A batch of independent sequences of different lengths through one layer from x, the
/// sequences spread over threads (detail/parallel.hpp). Each sequence is computed exactly as
/// `layer.forward(form, x, state, out)`, so results do not depend on the number of threads.

#include <cstddef>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "seqmem/core/errors.hpp"
#include "seqmem/core/types.hpp"
#include "seqmem/detail/checks.hpp"
#include "seqmem/detail/parallel.hpp"

namespace seqmem::models {

/// Runs `layer` over the sequences `xs[s]` (`T_s × hidden`), continuing each from
/// `*states[s]` and writing `outs[s]` (`T_s × hidden`), on up to `num_threads` threads
/// (0: all cores). All or nothing: when any sequence is refused, the exception (its message
/// ending in `[sequence s of n]`) leaves every state as it was.
template <class Layer>
void forward_batch(const Layer& layer, Form form,
                   std::span<const MatrixCRef<typename Layer::Scalar>> xs,
                   std::span<typename Layer::State* const> states,
                   std::span<const MatrixRef<typename Layer::Scalar>> outs, Index num_threads = 0) {
  constexpr const char* kName = "models::forward_batch";
  if (states.size() != xs.size() || outs.size() != xs.size()) {
    detail::fail(kName, "xs, states and outs must have the same length, got ", xs.size(), ", ",
                 states.size(), " and ", outs.size());
  }
  if (num_threads < 0) detail::fail(kName, "num_threads must be >= 0, got ", num_threads);
  for (std::size_t s = 0; s < states.size(); ++s)
    if (states[s] == nullptr) detail::fail(kName, "states[", s, "] is null");
  // Every sequence continues from a copy; the copies replace the states only when all succeed.
  std::vector<typename Layer::State> next;
  next.reserve(states.size());
  for (const auto* state : states)
    next.push_back(*state);
  const auto n = static_cast<Index>(xs.size());
  detail::run_parallel(detail::resolve_threads(num_threads), n, [&](Index i) {
    const auto s = static_cast<std::size_t>(i);
    try {
      layer.forward(form, xs[s], next[s], outs[s]);
    } catch (const invalid_argument& error) {
      throw invalid_argument(std::string(error.what()) + " [sequence " + std::to_string(s) +
                             " of " + std::to_string(n) + "]");
    }
  });
  for (std::size_t s = 0; s < states.size(); ++s)
    *states[s] = std::move(next[s]);
}

}  // namespace seqmem::models
