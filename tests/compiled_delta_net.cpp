// Layer forward passes compiled once for all tests (tests/compiled_layers.hpp): DeltaNet.

#include "compiled_layers_impl.hpp"

namespace {
using DeltaNetF = seqmem::DeltaNet<float>;
using DeltaNetD = seqmem::DeltaNet<double>;
}  // namespace

SEQMEM_TEST_COMPILE_LAYER(DeltaNetF);
SEQMEM_TEST_COMPILE_LAYER(DeltaNetD);

// Every member of the class compiles (and warns) here, not only the ones a test calls.
template class seqmem::DeltaNet<float>;
