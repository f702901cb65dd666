// Layer forward passes compiled once for all tests (tests/compiled_layers.hpp): the
// diagonal-gate layers (GLA, KDA, the generalized delta rule).

#include "compiled_layers_impl.hpp"

namespace {
using GlaF = seqmem::GatedLinearAttention<float>;
using GlaD = seqmem::GatedLinearAttention<double>;
using KdaF = seqmem::KimiDeltaAttention<float>;
using KdaD = seqmem::KimiDeltaAttention<double>;
using DplrF = seqmem::GeneralizedDeltaRule<float>;
using DplrD = seqmem::GeneralizedDeltaRule<double>;
}  // namespace

SEQMEM_TEST_COMPILE_LAYER(GlaF);
SEQMEM_TEST_COMPILE_LAYER(GlaD);
SEQMEM_TEST_COMPILE_LAYER(KdaF);
SEQMEM_TEST_COMPILE_LAYER(KdaD);
SEQMEM_TEST_COMPILE_LAYER(DplrF);
SEQMEM_TEST_COMPILE_LAYER(DplrD);

// Every member of the classes compiles (and warns) here, not only the ones a test calls.
template class seqmem::GatedLinearAttention<float>;
template class seqmem::GatedLinearAttention<double>;
template class seqmem::KimiDeltaAttention<float>;
template class seqmem::KimiDeltaAttention<double>;
template class seqmem::GeneralizedDeltaRule<float>;
template class seqmem::GeneralizedDeltaRule<double>;
