#pragma once

/// @file
/// The one place seqmem starts threads: `run_parallel` runs independent work items (heads,
/// sequences) on up to a given number of threads and rethrows the first exception. The threads
/// are a process-wide pool, started on first need and kept: waking a parked thread costs
/// microseconds where starting one costs tens.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
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

/// Parked threads that run one job at a time with the calling thread taking part. One per
/// process (`instance()`), created on first use; it grows to the most helpers a job has asked
/// for and keeps them until the process exits. A job is a function `loop(context)` that every
/// participating thread calls once (the callers' loops share their items through `context`)
/// and that must not throw.
class WorkerPool {
 public:
  using Loop = void (*)(void*);

  static WorkerPool& instance() {
    static WorkerPool pool;
    return pool;
  }

  WorkerPool() = default;
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  ~WorkerPool() {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    workers_.clear();  // joins
  }

  /// Runs `loop(context)` on `helpers` pool threads and on the calling thread, and returns when
  /// all have returned. Returns false without running anything when the pool is serving another
  /// job (another thread's call, or a call from inside a job): the caller then runs the job by
  /// other means.
  bool try_run(Index helpers, Loop loop, void* context) {
    if (busy_.exchange(true, std::memory_order_acquire)) return false;
    struct Release {
      std::atomic<bool>& busy;
      ~Release() { busy.store(false, std::memory_order_release); }
    } release{busy_};
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      while (static_cast<Index>(workers_.size()) < helpers) {
        const Index id = static_cast<Index>(workers_.size());
        // A new thread has "seen" every job before this one, so it joins this one.
        workers_.emplace_back([this, id, seen = generation_] { serve(id, seen); });
      }
      loop_ = loop;
      context_ = context;
      wanted_ = helpers;
      pending_ = helpers;
      ++generation_;
    }
    wake_.notify_all();
    loop(context);
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return pending_ == 0; });
    return true;
  }

 private:
  /// Thread `id`'s life: wait for a job it is wanted in, run it, report, repeat.
  void serve(Index id, std::uint64_t seen) {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      if (id >= wanted_) continue;
      const Loop loop = loop_;
      void* const context = context_;
      lock.unlock();
      loop(context);
      lock.lock();
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::atomic<bool> busy_{false};  ///< a job is being set up, run or waited for
  std::mutex mutex_;               ///< guards everything below
  std::condition_variable wake_, done_;
  std::uint64_t generation_ = 0;  ///< jobs started
  Loop loop_ = nullptr;
  void* context_ = nullptr;
  Index wanted_ = 0, pending_ = 0;  ///< helpers of the current job, and those still running
  bool stop_ = false;
  std::vector<std::jthread> workers_;  ///< last: joined before the rest is destroyed
};

/// Runs work(0) … work(items − 1) on up to `max_threads` threads (the calling thread is one of
/// them); every item runs even when another throws, then the first exception is rethrown. The
/// other threads come from the process's WorkerPool, or, when the pool is busy with another
/// call, are started for this call. Allocates nothing once the pool has its threads.
template <class Work>
void run_parallel(Index max_threads, Index items, const Work& work) {
  const Index threads = std::min(max_threads, items);
  if (threads <= 1) {
    for (Index i = 0; i < items; ++i)
      work(i);
    return;
  }
  struct Job {
    Job(const Work& w, Index n) : work(w), items(n) {}
    const Work& work;
    Index items;
    std::atomic<Index> next{0};
    std::exception_ptr error;
    std::mutex error_mutex;
  } job(work, items);
  const WorkerPool::Loop loop = [](void* context) {
    Job& shared = *static_cast<Job*>(context);
    for (Index i = shared.next++; i < shared.items; i = shared.next++) {
      try {
        shared.work(i);
      } catch (...) {
        const std::lock_guard<std::mutex> lock(shared.error_mutex);
        if (!shared.error) shared.error = std::current_exception();
      }
    }
  };
  if (!WorkerPool::instance().try_run(threads - 1, loop, &job)) {
    std::vector<std::jthread> helpers;
    for (Index t = 1; t < threads; ++t)
      helpers.emplace_back(loop, &job);
    loop(&job);
  }  // the helpers are joined here
  if (job.error) std::rethrow_exception(job.error);
}

}  // namespace seqmem::detail
