// Layer forward passes compiled once for all tests (tests/compiled_layers.hpp): LinearAttention.

#include "compiled_layers_impl.hpp"

namespace {
using LinearAttentionF = seqmem::LinearAttention<float>;
using LinearAttentionD = seqmem::LinearAttention<double>;
}  // namespace

SEQMEM_TEST_COMPILE_LAYER(LinearAttentionF);
SEQMEM_TEST_COMPILE_LAYER(LinearAttentionD);

// Every member of the class compiles (and warns) here, not only the ones a test calls.
template class seqmem::LinearAttention<float>;
