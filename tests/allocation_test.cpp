// Heap allocations of a decode step: `forward(Form::recurrent, one token, state, out)` into a
// caller's output, on a layer directly and through a 4-head MultiHead (configured for 1 and 2
// threads), must allocate nothing once the first calls have grown the per-thread buffers. A
// 4-head MultiHead call long enough to use two threads must not allocate either once the
// process's worker pool has its threads.
//
// This executable replaces the global operator new and delete (every standard form) and, on
// glibc without a sanitizer, malloc and its relatives (Eigen allocates with malloc), with
// versions that count; both counts are checked.

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>
#include <type_traits>

#include "layer_cases.hpp"
#include "test_util.hpp"

// ---------------------------------------------------------------------------------------------
// Counting allocation functions.
// ---------------------------------------------------------------------------------------------

namespace {

std::atomic<long long> g_news{0};     // calls of any operator new
std::atomic<long long> g_mallocs{0};  // calls of malloc, calloc, realloc and the aligned forms

void* counted_new(std::size_t size) {
  g_news.fetch_add(1, std::memory_order_relaxed);
  if (size == 0) size = 1;
  return std::malloc(size);
}

void* counted_new(std::size_t size, std::align_val_t align) {
  g_news.fetch_add(1, std::memory_order_relaxed);
  auto alignment = static_cast<std::size_t>(align);
  if (alignment < sizeof(void*)) alignment = sizeof(void*);
  void* p = nullptr;
  if (posix_memalign(&p, alignment, size == 0 ? 1 : size) != 0) return nullptr;
  return p;
}

}  // namespace

void* operator new(std::size_t size) {
  if (void* p = counted_new(size)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) {
  if (void* p = counted_new(size)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  return counted_new(size);
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  return counted_new(size);
}
void* operator new(std::size_t size, std::align_val_t align) {
  if (void* p = counted_new(size, align)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size, std::align_val_t align) {
  if (void* p = counted_new(size, align)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t size, std::align_val_t align, const std::nothrow_t&) noexcept {
  return counted_new(size, align);
}
void* operator new[](std::size_t size, std::align_val_t align, const std::nothrow_t&) noexcept {
  return counted_new(size, align);
}

void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete[](void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}
void operator delete(void* p, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  std::free(p);
}

// malloc and relatives, forwarded to glibc's own (exported as __libc_*). Not under a sanitizer:
// the sanitizers bring their own allocator.
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define SEQMEM_TEST_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SEQMEM_TEST_SANITIZED 1
#endif
#if defined(__GLIBC__) && !defined(SEQMEM_TEST_SANITIZED)
#define SEQMEM_TEST_COUNTS_MALLOC 1
extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void __libc_free(void*);

void* malloc(std::size_t size) {
  g_mallocs.fetch_add(1, std::memory_order_relaxed);
  return __libc_malloc(size);
}
void* calloc(std::size_t n, std::size_t size) {
  g_mallocs.fetch_add(1, std::memory_order_relaxed);
  return __libc_calloc(n, size);
}
void* realloc(void* p, std::size_t size) {
  g_mallocs.fetch_add(1, std::memory_order_relaxed);
  return __libc_realloc(p, size);
}
void free(void* p) {
  __libc_free(p);
}
void* memalign(std::size_t alignment, std::size_t size) {
  g_mallocs.fetch_add(1, std::memory_order_relaxed);
  return __libc_memalign(alignment, size);
}
void* aligned_alloc(std::size_t alignment, std::size_t size) {
  g_mallocs.fetch_add(1, std::memory_order_relaxed);
  return __libc_memalign(alignment, size);
}
int posix_memalign(void** out, std::size_t alignment, std::size_t size) {
  g_mallocs.fetch_add(1, std::memory_order_relaxed);
  void* p = __libc_memalign(alignment, size);
  if (p == nullptr) return ENOMEM;
  *out = p;
  return 0;
}
}
#endif

namespace seqmem::test {
namespace {

/// Allocations counted so far: operator new calls and, where counted, malloc-family calls
/// (operator new above allocates with malloc, so one new is counted twice: the checks are
/// for zero).
struct Count {
  long long news, mallocs;
  static Count now() {
    return {g_news.load(std::memory_order_relaxed), g_mallocs.load(std::memory_order_relaxed)};
  }
  Count operator-(const Count& o) const { return {news - o.news, mallocs - o.mallocs}; }
};

constexpr Index kDim = 32;
constexpr Index kHeads = 4;
constexpr Index kWarmup = 40;  // more than a TTT/Titans mini-batch: every kind of step warms up
constexpr Index kSteps = 64;

/// Decodes kSteps tokens after kWarmup, one recurrent call each; returns the allocations of the
/// last kSteps (H = 1: the layer directly; H > 1: a MultiHead on `threads` threads).
template <class Layer>
Count decode_allocations(const Layer& layer, Index heads, Index threads) {
  using Scalar = typename Layer::Scalar;
  Rng rng(17);
  const auto data = Case<Layer>::data(layer, kWarmup + kSteps, heads, rng);
  Matrix<Scalar> out(1, heads * layer.output_dim());
  Count start{};
  if (heads == 1) {
    auto state = layer.initial_state();
    for (Index t = 0; t < kWarmup + kSteps; ++t) {
      if (t == kWarmup) start = Count::now();
      layer.forward(Form::recurrent, data.slice(t, 1), state, out);
    }
  } else {
    const MultiHead<Layer> multi(layer, heads, threads);
    auto states = multi.initial_state();
    for (Index t = 0; t < kWarmup + kSteps; ++t) {
      if (t == kWarmup) start = Count::now();
      multi.forward(Form::recurrent, data.slice(t, 1), states, out);
    }
  }
  return Count::now() - start;
}

/// Allocations of a 4-head MultiHead call of T tokens on 2 threads (the worker pool), after
/// a few warm-up calls.
template <class Layer>
Count parallel_allocations(const Layer& layer, Form form, Index T) {
  using Scalar = typename Layer::Scalar;
  Rng rng(18);
  const auto data = Case<Layer>::data(layer, T, kHeads, rng);
  Matrix<Scalar> out(T, kHeads * layer.output_dim());
  const MultiHead<Layer> multi(layer, kHeads, 2);
  auto states = multi.initial_state();
  // Either thread may get any head, and which one does is up to the pool: warm up both, long
  // enough that each has run every head (8 calls once left a thread cold under load).
  for (int i = 0; i < 64; ++i) {
    states = multi.initial_state();
    multi.forward(form, data.all(), states, out);
  }
  states = multi.initial_state();
  const Count start = Count::now();
  multi.forward(form, data.all(), states, out);
  return Count::now() - start;
}

template <class Layer>
void expect_no_decode_allocations(const Layer& layer, const std::string& name) {
  for (const auto& [heads, threads] : {std::pair<Index, Index>{1, 1}, {kHeads, 1}, {kHeads, 2}}) {
    const Count c = decode_allocations(layer, heads, threads);
    std::printf("%-34s heads %lld threads %lld: %lld new, %lld malloc in %lld steps\n",
                name.c_str(), static_cast<long long>(heads), static_cast<long long>(threads),
                c.news, c.mallocs, static_cast<long long>(kSteps));
    EXPECT_EQ(c.news, 0) << name << ", " << heads << " heads, " << threads << " threads";
    EXPECT_EQ(c.mallocs, 0) << name << ", " << heads << " heads, " << threads << " threads";
  }
}

TEST(Allocation, CountersSeeAllocations) {
  const Count start = Count::now();
  auto* boxed = new int(3);
  delete boxed;
  const Count one = Count::now() - start;
  EXPECT_EQ(one.news, 1);
#ifdef SEQMEM_TEST_COUNTS_MALLOC
  const Matrix<float> m = Matrix<float>::Zero(8, 8);  // Eigen allocates with malloc
  EXPECT_GE((Count::now() - start).mallocs, 2) << m.sum();
#endif
}

TEST(Allocation, LinearAttentionDecode) {
  for (const bool normalize : {false, true}) {
    const LinearAttention<float> layer(
        {.key_dim = kDim,
         .value_dim = kDim,
         .feature_map = normalize ? FeatureMap::elu_plus_one : FeatureMap::identity,
         .normalize = normalize});
    // Case<LinearAttention> always passes a log_decay: gated. Ungated: the same without it.
    expect_no_decode_allocations(
        layer, normalize ? "LinearAttention gated normalized elu" : "LinearAttention gated");
  }
}

TEST(Allocation, UngatedLinearAttentionAndDeltaNetDecode) {
  Rng rng(3);
  const LinearAttention<float> la({.key_dim = kDim, .value_dim = kDim});
  const DeltaNet<float> dn({.key_dim = kDim, .value_dim = kDim});
  const auto la_data = Case<LinearAttention<float>>::data(la, kWarmup + kSteps, kHeads, rng);
  const auto dn_data = Case<DeltaNet<float>>::data(dn, kWarmup + kSteps, kHeads, rng);
  const MultiHead<LinearAttention<float>> la_multi(la, kHeads, 1);
  const MultiHead<DeltaNet<float>> dn_multi(dn, kHeads, 1);
  auto la_states = la_multi.initial_state();
  auto dn_states = dn_multi.initial_state();
  auto la_state = la.initial_state();
  auto dn_state = dn.initial_state();
  Matrix<float> out(1, kHeads * kDim);
  Count start{};
  for (Index t = 0; t < kWarmup + kSteps; ++t) {
    if (t == kWarmup) start = Count::now();
    const auto l = la_data.slice(t, 1);
    const auto d = dn_data.slice(t, 1);
    la_multi.forward(Form::recurrent, {.q = l.q, .k = l.k, .v = l.v}, la_states, out);
    dn_multi.forward(Form::recurrent, {.q = d.q, .k = d.k, .v = d.v, .beta = d.beta}, dn_states,
                     out);
    const auto l0 = la.head(l, 0, kHeads);
    const auto d0 = dn.head(d, 0, kHeads);
    la.forward(Form::recurrent, {.q = l0.q, .k = l0.k, .v = l0.v}, la_state, out.leftCols(kDim));
    dn.forward(Form::recurrent, {.q = d0.q, .k = d0.k, .v = d0.v, .beta = d0.beta}, dn_state,
               out.leftCols(kDim));
  }
  const Count c = Count::now() - start;
  EXPECT_EQ(c.news, 0);
  EXPECT_EQ(c.mallocs, 0);
}

TEST(Allocation, DeltaNetDecode) {
  for (const bool l2 : {false, true}) {
    const DeltaNet<float> layer({.key_dim = kDim, .value_dim = kDim, .qk_l2norm = l2});
    expect_no_decode_allocations(layer, l2 ? "DeltaNet gated qk_l2norm" : "DeltaNet gated");
  }
  const DeltaNet<double> layer({.key_dim = kDim, .value_dim = kDim});
  expect_no_decode_allocations(layer, "DeltaNet gated, double");
}

TEST(Allocation, GatedLinearAttentionDecode) {
  expect_no_decode_allocations(GatedLinearAttention<float>({.key_dim = kDim, .value_dim = kDim}),
                               "GatedLinearAttention");
}

TEST(Allocation, KimiDeltaAttentionDecode) {
  for (const bool l2 : {false, true}) {
    const KimiDeltaAttention<float> layer({.key_dim = kDim, .value_dim = kDim, .qk_l2norm = l2});
    expect_no_decode_allocations(layer, l2 ? "KimiDeltaAttention qk_l2norm" : "KimiDeltaAttention");
  }
}

TEST(Allocation, GeneralizedDeltaRuleDecode) {
  expect_no_decode_allocations(GeneralizedDeltaRule<float>({.key_dim = kDim, .value_dim = kDim}),
                               "GeneralizedDeltaRule");
}

TEST(Allocation, WindowedSoftmaxAttentionDecode) {
  // A window keeps the cache's size fixed, so the cache is compacted in place. (Without a
  // window the cache grows: its buffer doubles now and then, an amortized O(1/T) per step.)
  expect_no_decode_allocations(
      SoftmaxAttention<float>({.key_dim = kDim, .value_dim = kDim, .window = 24}),
      "SoftmaxAttention window 24");
}

TEST(Allocation, TTTDecode) {
  // More steps than a mini-batch: the warm-up and the counted steps both cross roll-overs.
  expect_no_decode_allocations(TTTLinear<float>({.key_dim = kDim, .mini_batch = 16}), "TTTLinear");
  expect_no_decode_allocations(TTTMLP<float>({.key_dim = kDim, .mini_batch = 16, .expansion = 2}),
                               "TTTMLP");
}

TEST(Allocation, TitansDecode) {
  expect_no_decode_allocations(
      TitansMemory<float>({.key_dim = kDim, .value_dim = kDim, .depth = 1, .mini_batch = 16}),
      "TitansMemory L=1");
  expect_no_decode_allocations(TitansMemory<float>({.key_dim = kDim,
                                                    .value_dim = kDim,
                                                    .depth = 2,
                                                    .expansion = 2,
                                                    .bias = true,
                                                    .mini_batch = 16}),
                               "TitansMemory L=2");
}

/// Printed, not checked: an unwindowed KV cache must grow (its buffer doubles now and then).
TEST(Allocation, ReportUnwindowedSoftmaxAttention) {
  for (const auto& [heads, threads] : {std::pair<Index, Index>{1, 1}, {kHeads, 1}}) {
    const Count c = decode_allocations(
        SoftmaxAttention<float>({.key_dim = kDim, .value_dim = kDim}), heads, threads);
    std::printf(
        "SoftmaxAttention (no window)       heads %lld threads %lld: %lld new, %lld "
        "malloc in %lld steps (not checked)\n",
        static_cast<long long>(heads), static_cast<long long>(threads), c.news, c.mallocs,
        static_cast<long long>(kSteps));
  }
}

TEST(Allocation, ParallelMultiHeadCall) {
  // Recurrent calls of 256 tokens: 4 heads on 2 threads (the worker pool's thread and this one).
  const DeltaNet<float> delta({.key_dim = kDim, .value_dim = kDim});
  const Count c = parallel_allocations(delta, Form::recurrent, 256);
  EXPECT_EQ(c.news, 0);
  EXPECT_EQ(c.mallocs, 0);
  const GatedLinearAttention<float> gla({.key_dim = kDim, .value_dim = kDim});
  const Count g = parallel_allocations(gla, Form::recurrent, 256);
  EXPECT_EQ(g.news, 0);
  EXPECT_EQ(g.mallocs, 0);
}

}  // namespace
}  // namespace seqmem::test
