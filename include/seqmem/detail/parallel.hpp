#pragma once

/// @file
/// The one place seqmem starts threads: `run_parallel` runs independent work items (heads,
/// sequences) on up to a given number of threads and rethrows the first exception.

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "seqmem/core/types.hpp"

namespace seqmem::detail {

/// `num_threads` as given, or the hardware's concurrency for 0 (at least 1).
inline Index resolve_threads(Index num_threads) {
  if (num_threads > 0) return num_threads;
  return std::max<Index>(1, static_cast<Index>(std::thread::hardware_concurrency()));
}

/// Runs work(0) … work(items − 1) on up to `max_threads` threads (the calling thread is one of
/// them); every item runs even when another throws, then the first exception is rethrown.
template <class Work>
void run_parallel(Index max_threads, Index items, const Work& work) {
  const Index threads = std::min(max_threads, items);
  if (threads <= 1) {
    for (Index i = 0; i < items; ++i)
      work(i);
    return;
  }
  std::atomic<Index> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto worker = [&] {
    for (Index i = next++; i < items; i = next++) {
      try {
        work(i);
      } catch (...) {
        const std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
      }
    }
  };
  {
    std::vector<std::jthread> pool;
    for (Index t = 1; t < threads; ++t)
      pool.emplace_back(worker);
    worker();
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace seqmem::detail
