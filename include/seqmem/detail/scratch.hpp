#pragma once

/// @file
/// Per-thread scratch buffers for the recurrent forms, so that a decode step (one token) makes
/// no heap allocation once the buffers have grown: layers are const and may be shared by
/// threads, so the buffers belong to the thread, not to the layer.

#include <algorithm>

#include "seqmem/core/types.hpp"

namespace seqmem::detail {

/// One grow-only buffer handing out views of the size asked for. Its memory only grows, so a
/// thread that runs layers of several sizes in turn stops allocating once it has seen the
/// largest. A view is valid until the next request to the same buffer.
template <class Scalar>
class Scratch {
 public:
  /// A `1×n` row view (contents unspecified).
  Eigen::Map<RowVector<Scalar>, Eigen::AlignedMax> row(Index n) { return {grow(n), n}; }

  /// An `n×1` column view (contents unspecified).
  Eigen::Map<Vector<Scalar>, Eigen::AlignedMax> column(Index n) { return {grow(n), n}; }

  /// A `rows×cols` row-major view (contents unspecified).
  Eigen::Map<Matrix<Scalar>, Eigen::AlignedMax> matrix(Index rows, Index cols) {
    return {grow(rows * cols), rows, cols};
  }

 private:
  /// Room for n values; a buffer that has to grow at least doubles, so a size that creeps up
  /// (a KV cache's scores) reallocates O(log n) times.
  Scalar* grow(Index n) {
    if (buffer_.size() < n) buffer_.resize(std::max(n, 2 * buffer_.size()));
    return buffer_.data();
  }

  Vector<Scalar> buffer_;  // Eigen's allocation: aligned to EIGEN_MAX_ALIGN_BYTES
};

/// The calling thread's instance of `Workspace` (one per type: a layer names its own struct of
/// `Scratch` buffers). Not for re-entrant use: a layer takes it once per call.
template <class Workspace>
Workspace& thread_workspace() {
  thread_local Workspace workspace;
  return workspace;
}

}  // namespace seqmem::detail
