// Layer forward passes compiled once for all tests (tests/compiled_layers.hpp): TTTLinear, TTTMLP.

#include "compiled_layers_impl.hpp"

namespace {
using TTTLinearF = seqmem::TTTLinear<float>;
using TTTLinearD = seqmem::TTTLinear<double>;
using TTTMLPF = seqmem::TTTMLP<float>;
using TTTMLPD = seqmem::TTTMLP<double>;
}  // namespace

SEQMEM_TEST_COMPILE_LAYER(TTTLinearF);
SEQMEM_TEST_COMPILE_LAYER(TTTLinearD);
SEQMEM_TEST_COMPILE_LAYER(TTTMLPF);
SEQMEM_TEST_COMPILE_LAYER(TTTMLPD);

// Every member of the class compiles (and warns) here, not only the ones a test calls.
template class seqmem::TTT<float, seqmem::TTTModel::linear>;
template class seqmem::TTT<double, seqmem::TTTModel::mlp>;
