// Conformance of every layer from x, on the configurations and weights of the golden files
// (tests/data/golden-layers, or $SEQMEM_LAYER_GOLDEN_DIR) with inputs drawn here: the three
// forms agree, random splits into calls of mixed forms agree with one call, a single token
// is a decode step, a state saved and loaded mid-sequence continues bit-exactly, a batch of
// sequences on two threads equals the sequences one by one, and bad input (wrong x width,
// non-finite x, a state of another configuration, a bad sequence in a batch) throws and
// leaves every state as it was.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include <seqmem/checkpoint.hpp>
#include <seqmem/models/batch.hpp>
#include <seqmem/state_io.hpp>

#include "layer_models.hpp"
#include "test_util.hpp"

namespace seqmem::test {
namespace {

namespace fs = std::filesystem;

template <class Layer>
std::string saved(const Layer& layer, const typename Layer::State& state) {
  std::ostringstream out(std::ios::binary);
  save_state(layer, state, out);
  return out.str();
}

template <class Layer>
typename Layer::State loaded(const Layer& layer, const std::string& bytes) {
  std::istringstream in(bytes, std::ios::binary);
  return load_state(layer, in);
}

/// y for x in calls of `lengths` tokens each, the forms taking turns from `first_form`.
template <class Layer>
Matrix<double> in_calls(const Layer& layer, const Matrix<double>& x,
                        const std::vector<Index>& lengths, std::size_t first_form = 0) {
  auto state = layer.initial_state();
  Matrix<double> y(x.rows(), x.cols());
  Index begin = 0;
  for (std::size_t i = 0; i < lengths.size(); ++i) {
    y.middleRows(begin, lengths[i]) =
        layer.forward(all_forms[(first_form + i) % 3], x.middleRows(begin, lengths[i]), state);
    begin += lengths[i];
  }
  return y;
}

/// Random call lengths summing to T.
std::vector<Index> random_split(Rng& rng, Index T) {
  std::vector<Index> lengths;
  for (Index begin = 0; begin < T;) {
    const Index n = std::min(uniform_index(rng, 1, 11), T - begin);
    lengths.push_back(n);
    begin += n;
  }
  return lengths;
}

/// The conformance checks of the file comment for one layer; failures name `name`.
template <template <class> class LayerT, class Config>
void check_conformance(const std::string& name, const SafetensorsFile& file, const Config& config) {
  SCOPED_TRACE(name);
  using Layer = LayerT<double>;
  const Layer layer(config, file, "layer.");
  const Index D = file.tensor<double>("input.x").cols(), T = 29;
  Rng rng(std::hash<std::string>{}(name));
  const Matrix<double> x = uniform<double>(rng, T, D);
  const double tol = 1e-9;

  // Forms agree.
  auto state = layer.initial_state();
  const Matrix<double> want = layer.forward(Form::recurrent, x, state);
  for (const Form form : {Form::chunkwise, Form::parallel}) {
    auto s = layer.initial_state();
    EXPECT_TRUE(near(layer.forward(form, x, s), want, tol)) << to_string(form);
  }
  // Random splits of mixed forms; single tokens (T = 1 is a decode step).
  for (int trial = 0; trial < 3; ++trial) {
    const auto lengths = random_split(rng, T);
    EXPECT_TRUE(near(in_calls(layer, x, lengths, std::size_t(trial)), want, tol))
        << "split " << trial;
  }
  for (std::size_t form = 0; form < 3; ++form) {
    EXPECT_TRUE(near(in_calls(layer, x, std::vector<Index>(std::size_t(T), 1), form), want, tol))
        << "token by token, first form " << to_string(all_forms[form]);
  }

  // A state saved and loaded mid-sequence continues bit-exactly, in every form.
  const Index cut = 11;
  for (const Form form : all_forms) {
    auto a = layer.initial_state();
    (void)layer.forward(Form::chunkwise, x.topRows(cut), a);
    const std::string bytes = saved(layer, a);
    auto b = loaded(layer, bytes);
    EXPECT_TRUE(saved(layer, b) == bytes) << "a loaded state saves differently";
    const Index rest = T - cut;
    const Matrix<double> ya = layer.forward(form, x.middleRows(cut, rest), a);
    const Matrix<double> yb = layer.forward(form, x.middleRows(cut, rest), b);
    EXPECT_TRUE(ya == yb) << "continuation after load_state differs (" << to_string(form) << ")";
    EXPECT_TRUE(saved(layer, a) == saved(layer, b)) << "states differ after the continuation";
  }

  // A batch of sequences of different lengths on two threads = one by one.
  {
    const Matrix<double> x2 = uniform<double>(rng, 7, D), x3 = uniform<double>(rng, 1, D);
    std::vector<typename Layer::State> states(3, layer.initial_state());
    std::vector<Matrix<double>> ys = {Matrix<double>(T, D), Matrix<double>(7, D),
                                      Matrix<double>(1, D)};
    const std::vector<MatrixCRef<double>> xs = {x, x2, x3};
    const std::vector<typename Layer::State*> ptrs = {&states[0], &states[1], &states[2]};
    const std::vector<MatrixRef<double>> outs = {ys[0], ys[1], ys[2]};
    models::forward_batch(layer, Form::chunkwise, std::span(xs), std::span(ptrs), std::span(outs),
                          2);
    auto s1 = layer.initial_state(), s2 = layer.initial_state(), s3 = layer.initial_state();
    EXPECT_TRUE(ys[0] == layer.forward(Form::chunkwise, x, s1)) << "batch sequence 0";
    EXPECT_TRUE(ys[1] == layer.forward(Form::chunkwise, x2, s2)) << "batch sequence 1";
    EXPECT_TRUE(ys[2] == layer.forward(Form::chunkwise, x3, s3)) << "batch sequence 2";
    EXPECT_TRUE(saved(layer, states[0]) == saved(layer, s1)) << "batch state 0";

    // One bad sequence: the batch throws and no state moves.
    Matrix<double> bad = x2;
    bad(3, 1) = std::numeric_limits<double>::quiet_NaN();
    const std::vector<MatrixCRef<double>> bad_xs = {x, bad, x3};
    const std::string before = saved(layer, states[0]);
    EXPECT_THROW(models::forward_batch(layer, Form::chunkwise, std::span(bad_xs), std::span(ptrs),
                                       std::span(outs), 2),
                 invalid_argument);
    EXPECT_TRUE(saved(layer, states[0]) == before) << "a failed batch moved state 0";
  }

  // Bad input throws and leaves the state as it was.
  for (const Form form : all_forms) {
    auto s = layer.initial_state();
    (void)layer.forward(Form::chunkwise, x.topRows(cut), s);
    const std::string before = saved(layer, s);
    const Matrix<double> wide = uniform<double>(rng, 1, D + 1);
    EXPECT_THROW((void)layer.forward(form, wide, s), invalid_argument) << "x one column wider";
    Matrix<double> nan = x.topRows(1);
    nan(0, D / 2) = std::numeric_limits<double>::infinity();
    EXPECT_THROW((void)layer.forward(form, nan, s), invalid_argument) << "x not finite";
    EXPECT_TRUE(saved(layer, s) == before) << "a refused call changed the state";
    auto other = s;  // the state of a configuration with one more head
    other.heads.push_back(other.heads.front());
    EXPECT_THROW((void)layer.forward(form, x.topRows(1), other), invalid_argument)
        << "state with one head too many";
    EXPECT_EQ(other.heads.size(), s.heads.size() + 1) << "a refused call changed the state";
  }
}

TEST(LayerConformance, EveryLayerOnEveryGoldenConfiguration) {
  const fs::path dir = layer_golden_dir();
  std::vector<fs::path> files;
  if (fs::is_directory(dir)) {
    for (const auto& entry : fs::directory_iterator(dir))
      if (entry.path().extension() == ".safetensors") files.push_back(entry.path());
  }
  ASSERT_FALSE(files.empty()) << "no *.safetensors in " << dir;
  std::sort(files.begin(), files.end());
  std::set<std::string> checked;
  for (const fs::path& path : files) {
    const SafetensorsFile file(path);
    const std::string layer = file.metadata().at("layer");
    const auto result = with_layer(layer, nlohmann::json::parse(file.metadata().at("config")),
                                   [&]<template <class> class Layer>(const auto& config) {
                                     check_conformance<Layer>(path.stem().string(), file, config);
                                     return "";
                                   });
    if (result) checked.insert(layer);
  }
  for (const auto& layer : known_layers())
    EXPECT_EQ(checked.count(layer), 1u) << "no configuration checked for " << layer;
}

}  // namespace
}  // namespace seqmem::test
