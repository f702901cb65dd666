// Layer forward passes compiled once for all tests (tests/compiled_layers.hpp): TitansMemory.

#include "compiled_layers_impl.hpp"

namespace {
using TitansMemoryF = seqmem::TitansMemory<float>;
using TitansMemoryD = seqmem::TitansMemory<double>;
}  // namespace

SEQMEM_TEST_COMPILE_LAYER(TitansMemoryF);
SEQMEM_TEST_COMPILE_LAYER(TitansMemoryD);

// Every member of the class compiles (and warns) here, not only the ones a test calls.
template class seqmem::TitansMemory<double>;
