// Writes seed inputs for state_io_fuzz: for every layer of state_configs.hpp, the state file
// of an initial state and of a state after a few calls, each prefixed by the two bytes the
// target reads first (layer index, flags = 0: fix the checksum). Usage: make_state_corpus DIR

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include <seqmem/state_io.hpp>

#include "state_configs.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  int written = 0;
  for (int i = 0; i < seqmem_fuzz::kStateConfigs; ++i) {
    seqmem_fuzz::with_state_config(i, [&](const auto& layer) {
      std::mt19937 gen(static_cast<unsigned>(i));
      auto state = layer.initial_state();
      for (int calls = 0; calls < 2; ++calls) {
        std::ostringstream file;
        file.put(static_cast<char>(i));
        file.put(0);
        seqmem::save_state(layer, state, file);
        std::ofstream out(
            std::string(argv[1]) + "/state_" + std::to_string(i) + "_" + std::to_string(calls),
            std::ios::binary);
        out << file.str();
        ++written;
        seqmem_fuzz::valid_call(layer, state, 5, gen);  // the next seed: a nonzero state
      }
    });
  }
  std::printf("make_state_corpus: wrote %d seeds to %s\n", written, argv[1]);
  return 0;
}
