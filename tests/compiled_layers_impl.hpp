#pragma once

// Definitions of tests/compiled_layers.hpp and the macro that instantiates them for one layer
// type; only the tests/compiled_*.cpp files include this.

#include "compiled_layers.hpp"

namespace seqmem::test {

template <class Layer>
Matrix<typename Layer::Scalar> forward(const Layer& layer, Form form,
                                       const typename Layer::Inputs& in,
                                       typename Layer::State& state) {
  return layer.forward(form, in, state);
}

template <class Layer>
void forward(const Layer& layer, Form form, const typename Layer::Inputs& in,
             typename Layer::State& state, MatrixRef<typename Layer::Scalar> out) {
  layer.forward(form, in, state, out);
}

template <class Layer>
Matrix<typename Layer::Scalar> forward(const MultiHead<Layer>& executor, Form form,
                                       const typename Layer::Inputs& packed,
                                       StatesOf<Layer>& states) {
  return executor.forward(form, packed, states);
}

template <class Layer>
void forward(const MultiHead<Layer>& executor, Form form, const typename Layer::Inputs& packed,
             StatesOf<Layer>& states, MatrixRef<typename Layer::Scalar> out) {
  executor.forward(form, packed, states, out);
}

template <class Layer>
std::vector<Matrix<typename Layer::Scalar>> forward_batch(
    const MultiHead<Layer>& executor, Form form, std::span<const typename Layer::Inputs> sequences,
    std::span<StatesOf<Layer>> states) {
  return executor.forward_batch(form, sequences, states);
}

template <class Layer>
void forward_batch(const MultiHead<Layer>& executor, Form form,
                   std::span<const typename Layer::Inputs> sequences,
                   std::span<StatesOf<Layer>* const> states,
                   std::span<MatrixRef<typename Layer::Scalar>> outs) {
  executor.forward_batch(form, sequences, states, outs);
}

}  // namespace seqmem::test

// Every entry above for one layer type (a type name without commas: use an alias).
#define SEQMEM_TEST_COMPILE_LAYER(L)                                                            \
  template seqmem::Matrix<L::Scalar> seqmem::test::forward<L>(const L&, seqmem::Form,           \
                                                              const L::Inputs&, L::State&);     \
  template void seqmem::test::forward<L>(const L&, seqmem::Form, const L::Inputs&, L::State&,   \
                                         seqmem::MatrixRef<L::Scalar>);                         \
  template seqmem::Matrix<L::Scalar> seqmem::test::forward<L>(                                  \
      const seqmem::MultiHead<L>&, seqmem::Form, const L::Inputs&, seqmem::test::StatesOf<L>&); \
  template void seqmem::test::forward<L>(const seqmem::MultiHead<L>&, seqmem::Form,             \
                                         const L::Inputs&, seqmem::test::StatesOf<L>&,          \
                                         seqmem::MatrixRef<L::Scalar>);                         \
  template std::vector<seqmem::Matrix<L::Scalar>> seqmem::test::forward_batch<L>(               \
      const seqmem::MultiHead<L>&, seqmem::Form, std::span<const L::Inputs>,                    \
      std::span<seqmem::test::StatesOf<L>>);                                                    \
  template void seqmem::test::forward_batch<L>(                                                 \
      const seqmem::MultiHead<L>&, seqmem::Form, std::span<const L::Inputs>,                    \
      std::span<seqmem::test::StatesOf<L>* const>, std::span<seqmem::MatrixRef<L::Scalar>>)
