// Smallest program a user writes against an installed / vendored seqmem.
#include <seqmem/seqmem.hpp>

#ifndef SEQMEM_VERSION_MAJOR
#error "<seqmem/seqmem.hpp> does not define SEQMEM_VERSION_MAJOR"
#endif
static_assert(SEQMEM_VERSION_MAJOR >= 0);

// The package passes its product backend on: libxsmm when seqmem was configured with it.
#ifdef SEQMEM_CONSUMER_EXPECT_LIBXSMM
static_assert(seqmem::product_backend() == (SEQMEM_CONSUMER_EXPECT_LIBXSMM ? "libxsmm" : "eigen"),
              "seqmem's package did not give this consumer the expected product backend");
#endif

int main() {
  seqmem::LinearAttention<double> layer({.key_dim = 4, .value_dim = 4});
  auto state = layer.initial_state();
  const seqmem::Matrix<double> q = seqmem::Matrix<double>::Ones(3, 4);
  const seqmem::Matrix<double> o =
      layer.forward(seqmem::Form::chunkwise, {.q = q, .k = q, .v = q}, state);
  return o.rows() == 3 ? 0 : 1;
}
