/// @file
/// A layer from x loaded from a checkpoint: flash-linear-attention's GatedDeltaNet.
///
///  1. open a safetensors file and take one layer out of it by its name prefix (in a whole
///     model this is e.g. "model.layers.3.attn."; the golden file used here keeps its layer
///     under "layer."), with the configuration the checkpoint was trained with,
///  2. prefill the first part of x with the chunkwise form,
///  3. save the state (every head's memory and the convolution caches) to a file, restore it
///     into a fresh state as a new process would, and decode the rest token by token,
///  4. check the result against one chunkwise call over the whole sequence and against the
///     reference output stored in the file (computed by fla's own PyTorch module).
///
/// Build and run:  cmake --build build --target checkpoint && build/examples/checkpoint [file]

#include <cstdio>
#include <exception>
#include <fstream>
#include <string>

#include <seqmem/checkpoint.hpp>
#include <seqmem/models/gated_deltanet.hpp>
#include <seqmem/state_io.hpp>

using seqmem::Form;
using seqmem::Index;
using Mat = seqmem::Matrix<float>;

int main(int argc, char** argv) try {
  const std::string path = argc > 1 ? argv[1]
                                    : SEQMEM_SOURCE_DIR
                               "/tests/data/golden-layers/"
                               "fla.GatedDeltaNet__gva_convbias__T37.safetensors";
  const seqmem::SafetensorsFile file(path);  // memory-mapped; tensors are read on demand

  // The configuration under fla's constructor argument names (this file: hidden 64, 2 q/k
  // heads of 16, 4 value heads of 32, short convolutions with bias).
  seqmem::models::GatedDeltaNetConfig config;
  config.hidden_size = 64;
  config.head_dim = 16;
  config.num_heads = 2;
  config.num_v_heads = 4;
  config.expand_v = 2;
  config.conv_bias = true;
  // Weights are converted once to the layer's scalar (the file holds float64). A missing,
  // extra, mis-shaped or non-finite tensor under the prefix throws, naming file and tensor.
  const seqmem::models::GatedDeltaNet<float> layer(config, file, "layer.");

  const Mat x = file.tensor<float>("input.x");  // T × hidden, one row per token
  const Index T = x.rows(), prefill = T - 8;

  // 2. Prefill.
  auto state = layer.initial_state();
  Mat y(T, config.hidden_size);
  layer.forward(Form::chunkwise, x.topRows(prefill), state, y.topRows(prefill));

  // 3. Save, restore into a fresh state, decode one token at a time.
  const std::string state_path = "checkpoint_example.state";
  {
    std::ofstream out(state_path, std::ios::binary);
    seqmem::save_state(layer, state, out);
  }
  std::ifstream in(state_path, std::ios::binary);
  auto restored = seqmem::load_state(layer, in);
  for (Index t = prefill; t < T; ++t)
    layer.forward(Form::recurrent, x.middleRows(t, 1), restored, y.middleRows(t, 1));

  // 4. Compare.
  auto fresh = layer.initial_state();
  const Mat one_call = layer.forward(Form::chunkwise, x, fresh);
  const Mat reference = file.tensor<float>("output.y");
  const double vs_one_call = (y - one_call).cwiseAbs().maxCoeff();
  const double vs_reference = (y - reference).cwiseAbs().maxCoeff();
  const double scale = 1.0 + reference.cwiseAbs().maxCoeff();
  std::printf(
      "GatedDeltaNet from %s: %ld tokens (%ld prefilled, state saved to %s and restored, "
      "%ld decoded)\n",
      path.c_str(), static_cast<long>(T), static_cast<long>(prefill), state_path.c_str(),
      static_cast<long>(T - prefill));
  std::printf("max |prefill + restore + decode - one call|  = %.3g\n", vs_one_call);
  std::printf("max |prefill + restore + decode - fla output| = %.3g (float; tolerance %.3g)\n",
              vs_reference, 1e-3 * scale);
  const bool ok = vs_one_call <= 1e-5 * scale && vs_reference <= 1e-3 * scale;
  std::printf("%s\n", ok ? "the continued outputs equal one call: OK" : "MISMATCH");
  return ok ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "checkpoint: %s\n", e.what());
  return 1;
}
