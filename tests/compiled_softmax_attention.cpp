// Layer forward passes compiled once for all tests (tests/compiled_layers.hpp): SoftmaxAttention.

#include "compiled_layers_impl.hpp"

namespace {
using SoftmaxAttentionF = seqmem::SoftmaxAttention<float>;
using SoftmaxAttentionD = seqmem::SoftmaxAttention<double>;
}  // namespace

SEQMEM_TEST_COMPILE_LAYER(SoftmaxAttentionF);
SEQMEM_TEST_COMPILE_LAYER(SoftmaxAttentionD);

// Every member of the class compiles (and warns) here, not only the ones a test calls.
template class seqmem::SoftmaxAttention<float>;
