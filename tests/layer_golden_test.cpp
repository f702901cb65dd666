// Golden cases for layers from x (tests/data/golden-layers/README.md, or
// $SEQMEM_LAYER_GOLDEN_DIR): each *.safetensors file holds one layer's weights under `layer.`,
// its input `input.x` and the reference output `output.y`, and names the layer and its
// configuration in its metadata. In double, one chunkwise call, one recurrent call and a random
// split into calls of mixed forms ending with token-by-token decode must each give y within
// 1e-9·(1 + max|y|); in float, one chunkwise call within 1e-3·(1 + max|y|). One line per file,
// then a total. An unknown layer, a config key the layer does not take, a tensor under `layer.`
// it does not use, and a file the loader refuses fail (and the run goes on to the next file).

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include <seqmem/checkpoint.hpp>

#include "layer_models.hpp"
#include "test_util.hpp"

namespace seqmem::test {
namespace {

namespace fs = std::filesystem;

/// The double and float checks of the file comment for a layer type `Layer<Scalar>`.
template <template <class> class Layer, class Config>
std::string check_layer(const SafetensorsFile& file, const Config& config) {
  const Matrix<double> x = file.tensor<double>("input.x"), y = file.tensor<double>("output.y");
  const double scale = 1.0 + y.cwiseAbs().maxCoeff();
  std::string failures;
  const auto expect = [&](const std::string& what, const Matrix<double>& got, double tol) {
    const double diff = (got - y).cwiseAbs().maxCoeff();
    if (!(diff <= tol * scale)) {
      failures += (failures.empty() ? "" : "; ") + what + ", max diff " + std::to_string(diff);
    }
  };
  const Layer<double> layer(config, file, "layer.");
  for (const Form form : {Form::chunkwise, Form::recurrent}) {
    auto state = layer.initial_state();
    expect(std::string("double ") + std::string(to_string(form)), layer.forward(form, x, state),
           1e-9);
  }
  if constexpr (requires(Config c) { c.block_size = 1; }) {
    // Many row blocks in one call (block_size 1: one memory chunk per block).
    Config blocked = config;
    blocked.block_size = 1;
    const Layer<double> layer_b(blocked, file, "layer.");
    for (const Form form : {Form::chunkwise, Form::recurrent}) {
      auto state = layer_b.initial_state();
      expect(std::string("double blocked ") + std::string(to_string(form)),
             layer_b.forward(form, x, state), 1e-9);
    }
  }
  // A random split into calls of mixed forms, ending with single-token decode steps.
  Rng rng(static_cast<std::uint64_t>(x.rows()));
  auto state = layer.initial_state();
  Matrix<double> split(x.rows(), x.cols());
  const Index decode = std::min<Index>(3, x.rows());
  for (Index begin = 0, call = 0; begin < x.rows(); ++call) {
    const bool tail = begin >= x.rows() - decode;
    const Form form = tail ? Form::recurrent : all_forms[call % 3];
    const Index n = tail ? 1 : std::min(uniform_index(rng, 1, 9), x.rows() - decode - begin);
    split.middleRows(begin, n) = layer.forward(form, x.middleRows(begin, n), state);
    begin += n;
  }
  expect("double split", split, 1e-9);
  const Layer<float> layer_f(config, file, "layer.");
  auto state_f = layer_f.initial_state();
  const Matrix<float> xf = x.cast<float>();
  expect("float chunkwise", layer_f.forward(Form::chunkwise, xf, state_f).template cast<double>(),
         1e-3);
  return failures;
}

TEST(LayerGolden, AllCases) {
  const fs::path dir = layer_golden_dir();
  std::vector<fs::path> files;
  if (fs::is_directory(dir)) {
    for (const auto& entry : fs::directory_iterator(dir))
      if (entry.path().extension() == ".safetensors") files.push_back(entry.path());
  }
  ASSERT_FALSE(files.empty()) << "no *.safetensors in " << dir << " (SEQMEM_LAYER_GOLDEN_DIR)";
  std::sort(files.begin(), files.end());
  int ok = 0, failed = 0;
  std::set<std::string> run_layers;
  for (const fs::path& path : files) {
    const std::string name = path.stem().string();
    std::string failure, layer;
    try {
      const SafetensorsFile file(path);
      layer = file.metadata().at("layer");
      const auto result = with_layer(layer, nlohmann::json::parse(file.metadata().at("config")),
                                     [&file]<template <class> class Layer>(const auto& config) {
                                       return check_layer<Layer>(file, config);
                                     });
      failure = result ? *result : "unknown layer '" + layer + "'";
      if (result) run_layers.insert(layer);
    } catch (const std::exception& e) {
      failure = e.what();
    }
    if (failure.empty()) {
      std::cout << "layer-golden " << name << " ok\n";
      ++ok;
    } else {
      std::cout << "layer-golden " << name << " FAIL (" << failure << ")\n";
      ADD_FAILURE() << name << ": " << failure;
      ++failed;
    }
  }
  std::cout << "layer-golden: " << ok << " ok, " << failed << " failed\n";
  for (const auto& layer : known_layers())
    EXPECT_EQ(run_layers.count(layer), 1u) << "no golden case for " << layer;
}

}  // namespace
}  // namespace seqmem::test
