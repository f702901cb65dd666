// libFuzzer target over the safetensors reader (include/seqmem/checkpoint.hpp). The input is
// the file's bytes.
//
// Properties (a violation aborts, so libFuzzer saves the input):
//   - opening either throws seqmem::invalid_argument or gives a file whose every tensor lies
//     inside the data block, never anything else;
//   - reading any tensor of an opened file, in float and in double, either throws
//     seqmem::invalid_argument (a non-finite value) or gives a matrix of its element count;
//   - load_tensors of the tensors under the first name's first dot-prefix, with their own
//     shapes, either throws seqmem::invalid_argument or returns all of them;
//   - no crash, no sanitizer report.

#include <cstdint>
#include <cstdio>
#include <exception>
#include <optional>
#include <string>
#include <vector>

#include <seqmem/checkpoint.hpp>

#include "fuzz_common.hpp"

namespace seqmem_fuzz {
namespace {

template <class Scalar>
void read_all(const seqmem::SafetensorsFile& file) {
  for (const auto& [name, info] : file.tensors()) {
    try {
      const seqmem::Matrix<Scalar> m = file.tensor<Scalar>(name);
      FUZZ_REQUIRE(m.size() == info.elements());
    } catch (const seqmem::invalid_argument&) {
      // a non-finite value: refused
    }
  }
}

void check(const std::string& bytes) {
  std::optional<seqmem::SafetensorsFile> file;
  try {
    file.emplace(seqmem::SafetensorsFile::from_bytes(bytes, "fuzz"));
  } catch (const seqmem::invalid_argument&) {
    return;  // refused: fine
  }
  for (const auto& [name, info] : file->tensors())
    FUZZ_REQUIRE(info.begin <= info.end && info.end <= bytes.size());
  read_all<float>(*file);
  read_all<double>(*file);
  if (file->tensors().empty()) return;
  const std::string& first = file->tensors().begin()->first;
  const std::string prefix = first.substr(0, first.find('.') + 1);
  std::vector<seqmem::TensorSpec> specs;
  for (const auto& [name, info] : file->tensors())
    if (name.compare(0, prefix.size(), prefix) == 0)
      specs.push_back({name.substr(prefix.size()), info.shape});
  try {
    const auto loaded = seqmem::load_tensors<float>(*file, prefix, specs);
    FUZZ_REQUIRE(loaded.size() == specs.size());
  } catch (const seqmem::invalid_argument&) {
    // a non-finite value: refused
  }
}

}  // namespace
}  // namespace seqmem_fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    seqmem_fuzz::check(std::string(reinterpret_cast<const char*>(data), size));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "unexpected exception: %s\n", e.what());
    std::abort();
  }
  return 0;
}
