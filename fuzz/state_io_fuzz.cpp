// libFuzzer target over seqmem::load_state (include/seqmem/state_io.hpp). The first input byte
// picks one of the layers of state_configs.hpp; the rest is the stream. Unless bit 0 of the
// second byte is set, the last 8 bytes are overwritten with the FNV-1a checksum of the bytes
// before them, so that mutations of a valid file (the seed corpus) get past the checksum to
// the checks behind it; with the bit set the stream is read as it is.
//
// Properties (a violation aborts, so libFuzzer saves the input):
//   - load_state either throws seqmem::state_error or returns a state, never anything else;
//   - a state it returns saves without error, and saving → loading → saving reproduces the
//     same bytes;
//   - a state it returns is one forward accepts (a valid call of 1..3 tokens runs on it);
//   - no crash, no sanitizer report.

#include <cstdint>
#include <exception>
#include <sstream>
#include <string>

#include <seqmem/state_io.hpp>

#include "fuzz_common.hpp"
#include "state_configs.hpp"

namespace seqmem_fuzz {
namespace {

std::uint64_t fnv1a(const unsigned char* data, std::size_t n) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (std::size_t i = 0; i < n; ++i)
    h = (h ^ data[i]) * 0x100000001b3ull;
  return h;
}

template <class Layer>
void check_load(const Layer& layer, const std::string& bytes, std::mt19937& gen) {
  typename Layer::State state;
  {
    std::istringstream in(bytes);
    try {
      state = seqmem::load_state(layer, in);
    } catch (const seqmem::state_error&) {
      return;  // refused: fine
    }
  }
  std::ostringstream saved;
  try {
    seqmem::save_state(layer, state, saved);
  } catch (const seqmem::state_error& e) {
    std::fprintf(stderr, "a loaded state does not save: %s\n", e.what());
    std::abort();
  }
  std::istringstream again(saved.str());
  const auto reloaded = seqmem::load_state(layer, again);
  std::ostringstream resaved;
  seqmem::save_state(layer, reloaded, resaved);
  FUZZ_REQUIRE(resaved.str() == saved.str());
  try {
    valid_call(layer, state, 1 + static_cast<Index>(gen() % 3), gen);
  } catch (const seqmem::invalid_argument& e) {
    std::fprintf(stderr, "forward refuses a loaded state: %s\n", e.what());
    std::abort();
  }
}

}  // namespace
}  // namespace seqmem_fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const int config = data[0] % seqmem_fuzz::kStateConfigs;
  const bool keep_checksum = data[1] & 1;
  std::string bytes(reinterpret_cast<const char*>(data + 2), size - 2);
  if (!keep_checksum && bytes.size() >= 8) {
    auto* b = reinterpret_cast<unsigned char*>(bytes.data());
    const std::uint64_t h = seqmem_fuzz::fnv1a(b, bytes.size() - 8);
    for (int i = 0; i < 8; ++i)
      b[bytes.size() - 8 + std::size_t(i)] = static_cast<unsigned char>(h >> (8 * i));
  }
  std::mt19937 gen(static_cast<unsigned>(size));
  try {
    seqmem_fuzz::with_state_config(
        config, [&](const auto& layer) { seqmem_fuzz::check_load(layer, bytes, gen); });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "unexpected exception: %s\n", e.what());
    std::abort();
  }
  return 0;
}
