// Checkpoints (include/seqmem/checkpoint.hpp): safetensors files built here byte by byte are
// read back in every dtype, one layer's tensors are selected by prefix, and every kind of bad
// file or tensor is refused with a message naming the file and tensor; the public layer
// golden files (tests/data/golden-layers) all open and read.

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <seqmem/checkpoint.hpp>

#include "test_util.hpp"

namespace seqmem::test {
namespace {

/// One tensor to write: dtype name, shape and values (encoded in that dtype).
struct Entry {
  std::string dtype;
  std::vector<Index> shape;
  std::vector<double> values;
};

std::string encode(const std::string& dtype, const std::vector<double>& values) {
  std::string out;
  auto put = [&out](const void* p, std::size_t n) {
    out.append(static_cast<const char*>(p), n);  // the test machine is little-endian
  };
  for (const double v : values) {
    if (dtype == "F64") {
      put(&v, 8);
    } else if (dtype == "F32") {
      const auto f = static_cast<float>(v);
      put(&f, 4);
    } else if (dtype == "F16") {
      const auto bits = Eigen::numext::bit_cast<std::uint16_t>(Eigen::half(static_cast<float>(v)));
      put(&bits, 2);
    } else if (dtype == "BF16") {
      const auto bits =
          Eigen::numext::bit_cast<std::uint16_t>(Eigen::bfloat16(static_cast<float>(v)));
      put(&bits, 2);
    } else {  // any other dtype: 4 bytes per value
      const auto i = static_cast<std::int32_t>(v);
      put(&i, 4);
    }
  }
  return out;
}

std::string with_length(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const std::uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + data;
}

/// A safetensors file of `entries` stored back to back in name order, with `metadata`.
std::string safetensors(const std::map<std::string, Entry>& entries,
                        const std::map<std::string, std::string>& metadata = {}) {
  nlohmann::json header = nlohmann::json::object();
  std::string data;
  for (const auto& [name, e] : entries) {
    const std::string bytes = encode(e.dtype, e.values);
    header[name] = {{"dtype", e.dtype},
                    {"shape", e.shape},
                    {"data_offsets", {data.size(), data.size() + bytes.size()}}};
    data += bytes;
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  return with_length(header.dump(), data);
}

/// The message of the invalid_argument `f` throws ("" and a failure if none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const seqmem::invalid_argument& e) {
    return e.what();
  }
  ADD_FAILURE() << "no seqmem::invalid_argument";
  return "";
}

::testing::AssertionResult contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << text << "\" lacks \"" << part << "\"";
}

const std::map<std::string, Entry> kEntries = {
    {"a", {"F64", {2, 3}, {1.0, -2.5, 3.25, 1e-300, -7.0, 0.1}}},
    {"b", {"F32", {3}, {0.5, -1.25, 65504.0}}},
    {"c", {"F16", {2, 2}, {1.0, -0.5, 65504.0, 6.103515625e-05}}},
    {"d", {"BF16", {1, 1, 2}, {-3.0, 1.5}}},
};

TEST(Checkpoint, ReadsEveryDtypeAndShape) {
  const auto file = SafetensorsFile::from_bytes(safetensors(kEntries, {{"layer", "toy"}}), "toy");
  EXPECT_EQ(file.metadata().at("layer"), "toy");
  ASSERT_EQ(file.tensors().size(), 4u);
  for (const auto& [name, e] : kEntries) {
    SCOPED_TRACE(name);
    const Matrix<double> got = file.tensor<double>(name);
    const Index rows = e.shape.size() >= 2 ? e.shape[0] : 1;
    ASSERT_EQ(got.rows(), rows);
    ASSERT_EQ(got.size(), Index(e.values.size()));
    for (Index i = 0; i < got.size(); ++i) {
      const double want = e.dtype == "F64" ? e.values[std::size_t(i)]
                                           : double(static_cast<float>(e.values[std::size_t(i)]));
      EXPECT_EQ(got(i / got.cols(), i % got.cols()), want) << "element " << i;
    }
    EXPECT_EQ(file.tensor<float>(name), got.cast<float>());
  }
  EXPECT_EQ(file.info("d").shape, (std::vector<Index>{1, 1, 2}));
}

TEST(Checkpoint, PathAndBytesReadAlike) {
  const std::string bytes = safetensors(kEntries);
  const auto path = std::filesystem::temp_directory_path() / "seqmem_checkpoint_test.safetensors";
  std::ofstream(path, std::ios::binary) << bytes;
  {
    const SafetensorsFile mapped(path);
    const auto held = SafetensorsFile::from_bytes(bytes);
    for (const auto& [name, e] : kEntries)
      EXPECT_EQ(mapped.tensor<double>(name), held.tensor<double>(name)) << name;
  }
  std::filesystem::remove(path);
  EXPECT_TRUE(contains(error_of([&] { SafetensorsFile{path}; }), "cannot open"));
}

TEST(Checkpoint, LoadTensorsSelectsOneLayerByPrefix) {
  const std::map<std::string, Entry> model = {
      {"model.layers.0.attn.q_proj.weight", {"F32", {2, 3}, {1, 2, 3, 4, 5, 6}}},
      {"model.layers.1.attn.q_proj.weight", {"F32", {2, 3}, {6, 5, 4, 3, 2, 1}}},
      {"model.layers.1.attn.o_norm.weight", {"BF16", {2}, {0.5, 2}}},
      {"model.layers.1.mlp.up.weight", {"F32", {1}, {9}}},
  };
  const auto file = SafetensorsFile::from_bytes(safetensors(model), "model.safetensors");
  const std::vector<TensorSpec> specs = {{"q_proj.weight", {2, 3}}, {"o_norm.weight", {2}}};
  const auto w = load_tensors<double>(file, "model.layers.1.attn.", specs);
  ASSERT_EQ(w.size(), 2u);
  EXPECT_EQ(w.at("q_proj.weight"), (Matrix<double>(2, 3) << 6, 5, 4, 3, 2, 1).finished());
  EXPECT_EQ(w.at("o_norm.weight"), (Matrix<double>(1, 2) << 0.5, 2).finished());

  // Missing, unexpected under the prefix and mis-shaped tensors are refused by name.
  EXPECT_TRUE(
      contains(error_of([&] { load_tensors<double>(file, "model.layers.1.attn.", {specs[0]}); }),
               "model.safetensors: tensor 'model.layers.1.attn.o_norm.weight': unexpected"));
  EXPECT_TRUE(contains(error_of([&] { load_tensors<double>(file, "model.layers.0.attn.", specs); }),
                       "tensor 'model.layers.0.attn.o_norm.weight': missing"));
  EXPECT_TRUE(contains(
      error_of([&] {
        load_tensors<float>(file, "model.layers.1.attn.", {{"q_proj.weight", {3, 2}}, specs[1]});
      }),
      "tensor 'model.layers.1.attn.q_proj.weight': shape must be [3, 2], got "
      "[2, 3]"));
}

TEST(Checkpoint, NonFiniteValuesAreRefused) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  const auto file = SafetensorsFile::from_bytes(
      safetensors({{"x", {"F32", {3}, {1, nan, 2}}}, {"y", {"F16", {2}, {inf, 1}}}}), "f");
  EXPECT_TRUE(contains(error_of([&] { (void)file.tensor<double>("x"); }),
                       "f: tensor 'x': element 1 must be finite"));
  EXPECT_TRUE(contains(error_of([&] { (void)file.tensor<float>("y"); }),
                       "f: tensor 'y': element 0 must be finite"));
  EXPECT_TRUE(contains(error_of([&] {
                         load_tensors<double>(file, "", {{"x", {3}}, {"y", {2}}});
                       }),
                       "tensor 'x': element 1 must be finite"));
}

TEST(Checkpoint, BadFilesAreRefusedWithTheirName) {
  const std::string good = safetensors(kEntries);
  std::uint64_t n = 0;
  std::memcpy(&n, good.data(), 8);
  const std::string header = good.substr(8, n), data = good.substr(8 + n);
  const auto error = [](const std::string& bytes) {
    return error_of([&] { (void)SafetensorsFile::from_bytes(bytes, "bad.safetensors"); });
  };
  const auto edited = [&](const std::string& from, const std::string& to) {
    std::string h = header;
    const auto at = h.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    h.replace(at, from.size(), to);
    return with_length(h, data);
  };

  EXPECT_TRUE(contains(error(""), "bad.safetensors: too short"));
  EXPECT_TRUE(contains(error(good.substr(0, 8 + n - 1)), "header length"));
  EXPECT_TRUE(contains(error(with_length("{\"a\": ", data)), "malformed JSON header"));
  EXPECT_TRUE(contains(error(with_length("[1, 2]", data)), "must be an object"));
  EXPECT_TRUE(
      contains(error(edited("\"BF16\"", "\"I32\"")), "tensor 'd': dtype I32 is not supported"));
  EXPECT_TRUE(contains(error(edited("\"shape\":[3]", "\"shape\":[-3]")),
                       "tensor 'b': shape must hold non-negative integers"));
  EXPECT_TRUE(contains(error(edited("\"shape\":[3]", "\"shape\":[4]")),
                       "tensor 'b': data_offsets [48, 60] hold 12 bytes"));
  EXPECT_TRUE(contains(error(good.substr(0, good.size() - 1)), "tensor 'd': data_offsets"));
  EXPECT_TRUE(contains(error(good.substr(0, good.size() - 1)), "out of range"));
  EXPECT_TRUE(contains(error(edited("[48,60]", "[40,52]")), "overlap"));
  EXPECT_TRUE(contains(error(edited("\"data_offsets\":[48,60]", "\"data_offsets\":[48]")),
                       "tensor 'b': data_offsets must be two non-negative integers"));
  EXPECT_TRUE(contains(error(with_length("{\"__metadata__\": {\"k\": 1}}", "")),
                       "__metadata__ 'k' must be a string"));
}

// Every public layer golden file opens, and each of its tensors reads as finite doubles.
TEST(Checkpoint, EveryLayerGoldenFileReads) {
  const auto dir = std::filesystem::path(SEQMEM_SOURCE_DIR) / "tests" / "data" / "golden-layers";
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".safetensors") continue;
    SCOPED_TRACE(entry.path().filename().string());
    const SafetensorsFile file(entry.path());
    EXPECT_EQ(file.metadata().at("format"), "seqmem-layer-golden/1");
    EXPECT_TRUE(file.contains("input.x"));
    EXPECT_TRUE(file.contains("output.y"));
    for (const auto& [name, info] : file.tensors())
      EXPECT_NO_THROW((void)file.tensor<double>(name)) << name;
    ++files;
  }
  EXPECT_GE(files, 21);
}

}  // namespace
}  // namespace seqmem::test
