#pragma once

// The layers' forward passes as the tests call them: `test::forward(layer, form, in, state)`
// where a user writes `layer.forward(form, in, state)`, and likewise for MultiHead. They call
// exactly those members, but are compiled once for every layer type the tests use (the
// explicit instantiations in tests/compiled_*.cpp, linked into every test executable) instead
// of in each test executable: compiling every layer's three forms, in float and double, in
// every test file was most of the test build's time. The direct calls are compiled by the
// consumer tests, the examples, the benchmarks and the fuzz targets.

#include <span>
#include <vector>

#include <seqmem/seqmem.hpp>

namespace seqmem::test {

template <class Layer>
using StatesOf = typename MultiHead<Layer>::States;

template <class Layer>
Matrix<typename Layer::Scalar> forward(const Layer& layer, Form form,
                                       const typename Layer::Inputs& in,
                                       typename Layer::State& state);

template <class Layer>
void forward(const Layer& layer, Form form, const typename Layer::Inputs& in,
             typename Layer::State& state, MatrixRef<typename Layer::Scalar> out);

template <class Layer>
Matrix<typename Layer::Scalar> forward(const MultiHead<Layer>& executor, Form form,
                                       const typename Layer::Inputs& packed,
                                       StatesOf<Layer>& states);

template <class Layer>
void forward(const MultiHead<Layer>& executor, Form form, const typename Layer::Inputs& packed,
             StatesOf<Layer>& states, MatrixRef<typename Layer::Scalar> out);

template <class Layer>
std::vector<Matrix<typename Layer::Scalar>> forward_batch(
    const MultiHead<Layer>& executor, Form form, std::span<const typename Layer::Inputs> sequences,
    std::span<StatesOf<Layer>> states);

template <class Layer>
void forward_batch(const MultiHead<Layer>& executor, Form form,
                   std::span<const typename Layer::Inputs> sequences,
                   std::span<StatesOf<Layer>* const> states,
                   std::span<MatrixRef<typename Layer::Scalar>> outs);

}  // namespace seqmem::test
