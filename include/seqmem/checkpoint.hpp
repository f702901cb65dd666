#pragma once

/// @file
/// Checkpoints: a reader for safetensors files (the format PyTorch models are shared in) and
/// the loading of one layer's weights from it.
///
/// A safetensors file is an 8-byte little-endian header length N, N bytes of JSON mapping
/// each tensor name to `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets into the
/// data block that follows, relative to its start) plus an optional `"__metadata__"` map of
/// strings, then the raw little-endian data. The header is parsed with nlohmann-json; the
/// data is memory-mapped (POSIX) or read once, and each tensor is converted from F64, F32,
/// F16 or BF16 to the caller's Scalar when it is read.
///
///     const seqmem::SafetensorsFile file("model.safetensors");
///     const auto weights = seqmem::load_tensors<float>(file, "model.layers.3.attn.",
///         {{"q_proj.weight", {1024, 1024}}, {"o_norm.weight", {128}}});
///     const seqmem::Matrix<float>& wq = weights.at("q_proj.weight");   // [out, in]
///
/// Every error is a `seqmem::invalid_argument` naming the file (and the tensor): a header
/// length past the end of the file, malformed JSON, a bad entry, offsets out of range or
/// overlapping, a dtype other than the four, and, at load, a missing, unexpected (under the
/// prefix), mis-shaped or non-finite tensor. `load_tensors` returns all tensors or throws:
/// nothing is half-loaded.

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "seqmem/core/errors.hpp"
#include "seqmem/core/types.hpp"
#include "seqmem/detail/checks.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define SEQMEM_HAS_MMAP 1
#endif

namespace seqmem {

/// Element types a checkpoint tensor may have.
/// safetensors' F64, F32, F16 and BF16; every one is converted to the caller's Scalar on read.
enum class Dtype { f64, f32, f16, bf16 };

/// One tensor of a safetensors file, as its header describes it.
struct TensorInfo {
  /// The element type.
  Dtype dtype;
  std::vector<Index> shape;  ///< empty for a scalar
  std::size_t begin = 0;     ///< byte offsets in the data block: [begin, end)
  /// End of the byte range (exclusive).
  std::size_t end = 0;

  /// Number of elements: the product of `shape` (1 for a scalar).
  Index elements() const {
    Index n = 1;
    for (const Index d : shape)
      n *= d;
    return n;
  }
};

namespace detail {

/// The bytes of a file: memory-mapped where the platform allows, else read into memory.
class FileBytes {
 public:
  FileBytes() = default;
  explicit FileBytes(std::string bytes) : owned_(std::move(bytes)) {
    data_ = reinterpret_cast<const unsigned char*>(owned_.data());
    size_ = owned_.size();
  }
  explicit FileBytes(const std::filesystem::path& path) {
#ifdef SEQMEM_HAS_MMAP
    const int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) fail("SafetensorsFile", path.string(), ": cannot open");
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      ::close(fd);
      fail("SafetensorsFile", path.string(), ": cannot stat");
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      void* map = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (map == MAP_FAILED) {
        ::close(fd);
        fail("SafetensorsFile", path.string(), ": cannot map");
      }
      mapped_ = true;
      data_ = static_cast<const unsigned char*>(map);
    }
    ::close(fd);
#else
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("SafetensorsFile", path.string(), ": cannot open");
    owned_.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    data_ = reinterpret_cast<const unsigned char*>(owned_.data());
    size_ = owned_.size();
#endif
  }
  FileBytes(const FileBytes&) = delete;
  FileBytes& operator=(const FileBytes&) = delete;
  ~FileBytes() {
#ifdef SEQMEM_HAS_MMAP
    if (mapped_) ::munmap(const_cast<unsigned char*>(data_), size_);
#endif
  }

  const unsigned char* data() const {
    return data_;
  }
  std::size_t size() const {
    return size_;
  }

 private:
  std::string owned_;
  const unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
  bool mapped_ = false;
};

inline std::uint64_t read_le(const unsigned char* p, int bytes) {
  std::uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i)
    v = (v << 8) | p[i];
  return v;
}

/// Element `i` of a little-endian tensor of `dtype`, as Scalar (F16 and BF16 through Eigen's
/// half and bfloat16 types).
template <class Scalar>
Scalar element(Dtype dtype, const unsigned char* data, Index i) {
  const auto at = static_cast<std::size_t>(i);
  switch (dtype) {
    case Dtype::f64: {
      return static_cast<Scalar>(std::bit_cast<double>(read_le(data + 8 * at, 8)));
    }
    case Dtype::f32: {
      const auto bits = static_cast<std::uint32_t>(read_le(data + 4 * at, 4));
      return static_cast<Scalar>(std::bit_cast<float>(bits));
    }
    case Dtype::f16: {
      const auto bits = static_cast<std::uint16_t>(read_le(data + 2 * at, 2));
      return static_cast<Scalar>(static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(bits)));
    }
    case Dtype::bf16: {
      const auto bits = static_cast<std::uint16_t>(read_le(data + 2 * at, 2));
      return static_cast<Scalar>(
          static_cast<float>(Eigen::numext::bit_cast<Eigen::bfloat16>(bits)));
    }
  }
  return Scalar(0);
}

inline std::size_t dtype_size(Dtype dtype) {
  switch (dtype) {
    case Dtype::f64: return 8;
    case Dtype::f32: return 4;
    case Dtype::f16:
    case Dtype::bf16: return 2;
  }
  return 0;
}

}  // namespace detail

/// A safetensors file: its header, parsed and checked when it is opened, and its tensors,
/// converted on request. The file stays mapped while the object lives.
class SafetensorsFile {
 public:
  /// Opens and maps `path`, then checks the header (see the file comment).
  explicit SafetensorsFile(const std::filesystem::path& path)
      : name_(path.string()), bytes_(std::make_unique<detail::FileBytes>(path)) {
    parse();
  }

  /// A file held in memory (`name` is used in messages).
  static SafetensorsFile from_bytes(std::string bytes, std::string name = "<memory>") {
    return SafetensorsFile(std::move(name), std::make_unique<detail::FileBytes>(std::move(bytes)));
  }

  /// The path (or name) given, for messages.
  const std::string& name() const { return name_; }
  /// The `__metadata__` strings (empty when the file has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  /// Every tensor, by name (sorted).
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  /// True when the file has a tensor named `tensor` (the full name, prefix included).
  bool contains(const std::string& tensor) const { return tensors_.count(tensor) != 0; }

  /// The header entry of `tensor`; throws when the file has none.
  const TensorInfo& info(const std::string& tensor) const {
    const auto it = tensors_.find(tensor);
    if (it == tensors_.end()) fail_at(tensor, "missing");
    return it->second;
  }

  /// `tensor` as a matrix of Scalar: shape [n0, n1, ...] as n0 × (n1·...) rows (so an
  /// `nn.Linear.weight` [out, in] is out × in), a vector [n] as one row (1 × n), a scalar as
  /// 1 × 1. Throws unless every value is finite.
  template <class Scalar>
  Matrix<Scalar> tensor(const std::string& tensor) const {
    const TensorInfo& t = info(tensor);
    const Index rows = t.shape.size() >= 2 ? t.shape.front() : 1;
    const Index cols = rows == 0 ? 0 : t.elements() / std::max<Index>(rows, 1);
    Matrix<Scalar> m(rows, cols);
    const unsigned char* data = data_block() + t.begin;
    for (Index i = 0; i < t.elements(); ++i) {
      const Scalar value = detail::element<Scalar>(t.dtype, data, i);
      if (!std::isfinite(value)) {
        fail_at(tensor, "element ", i, " must be finite, got ", value);
      }
      m(i / std::max<Index>(cols, 1), i % std::max<Index>(cols, 1)) = value;
    }
    return m;
  }

  /// Throws `seqmem::invalid_argument` naming this file and `tensor`.
  template <class... Parts>
  [[noreturn]] void fail_at(const std::string& tensor, const Parts&... parts) const {
    detail::fail("SafetensorsFile", name_, ": tensor '", tensor, "': ", parts...);
  }

 private:
  SafetensorsFile(std::string name, std::unique_ptr<detail::FileBytes> bytes)
      : name_(std::move(name)), bytes_(std::move(bytes)) {
    parse();
  }

  static constexpr std::uint64_t kMaxHeader = std::uint64_t{100} << 20;  // as the format's own

  template <class... Parts>
  [[noreturn]] void fail_file(const Parts&... parts) const {
    detail::fail("SafetensorsFile", name_, ": ", parts...);
  }

  const unsigned char* data_block() const { return bytes_->data() + 8 + header_size_; }

  void parse() {
    const std::size_t size = bytes_->size();
    if (size < 8) fail_file("too short for a safetensors file (", size, " bytes)");
    const std::uint64_t n = detail::read_le(bytes_->data(), 8);
    if (n > kMaxHeader || n > size - 8) {
      fail_file("header length ", n, " runs past the end of the file (", size, " bytes)");
    }
    header_size_ = static_cast<std::size_t>(n);
    const std::size_t data_size = size - 8 - header_size_;
    const auto* text = reinterpret_cast<const char*>(bytes_->data() + 8);
    nlohmann::json header;
    try {
      header = nlohmann::json::parse(text, text + header_size_);
    } catch (const nlohmann::json::exception& e) {
      fail_file("malformed JSON header: ", e.what());
    }
    if (!header.is_object()) fail_file("the JSON header must be an object");
    for (const auto& [key, entry] : header.items()) {
      if (key == "__metadata__") {
        read_metadata(entry);
      } else {
        tensors_.emplace(key, read_entry(key, entry, data_size));
      }
    }
    // Offsets must not overlap (in order of their begin).
    std::vector<std::pair<std::size_t, const std::string*>> spans;
    for (const auto& [key, t] : tensors_)
      if (t.end > t.begin) spans.emplace_back(t.begin, &key);
    std::sort(spans.begin(), spans.end());
    for (std::size_t i = 1; i < spans.size(); ++i) {
      const TensorInfo& previous = tensors_.at(*spans[i - 1].second);
      if (spans[i].first < previous.end) {
        fail_at(*spans[i].second, "data_offsets overlap those of '", *spans[i - 1].second, "'");
      }
    }
  }

  void read_metadata(const nlohmann::json& entry) {
    if (!entry.is_object()) fail_file("__metadata__ must be an object of strings");
    for (const auto& [key, value] : entry.items()) {
      if (!value.is_string()) fail_file("__metadata__ '", key, "' must be a string");
      metadata_.emplace(key, value.get<std::string>());
    }
  }

  TensorInfo read_entry(const std::string& key, const nlohmann::json& entry,
                        std::size_t data_size) const {
    if (!entry.is_object()) fail_at(key, "the header entry must be an object");
    const auto dtype = entry.find("dtype");
    const auto shape = entry.find("shape");
    const auto offsets = entry.find("data_offsets");
    if (dtype == entry.end() || !dtype->is_string()) fail_at(key, "dtype must be a string");
    if (shape == entry.end() || !shape->is_array()) fail_at(key, "shape must be an array");
    if (offsets == entry.end() || !offsets->is_array() || offsets->size() != 2 ||
        !(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned()) {
      fail_at(key, "data_offsets must be two non-negative integers");
    }
    TensorInfo t{};
    const std::string name = dtype->get<std::string>();
    if (name == "F64") {
      t.dtype = Dtype::f64;
    } else if (name == "F32") {
      t.dtype = Dtype::f32;
    } else if (name == "F16") {
      t.dtype = Dtype::f16;
    } else if (name == "BF16") {
      t.dtype = Dtype::bf16;
    } else {
      fail_at(key, "dtype ", name, " is not supported (F64, F32, F16 or BF16)");
    }
    std::uint64_t elements = 1;
    for (const auto& d : *shape) {
      if (!d.is_number_unsigned()) fail_at(key, "shape must hold non-negative integers");
      const auto extent = d.get<std::uint64_t>();
      if (extent > std::uint64_t(std::numeric_limits<Index>::max()) ||
          (extent != 0 && elements > std::uint64_t(data_size) / extent)) {
        fail_at(key, "shape is larger than the file");
      }
      elements *= extent;
      t.shape.push_back(static_cast<Index>(extent));
    }
    const auto begin = (*offsets)[0].get<std::uint64_t>();
    const auto end = (*offsets)[1].get<std::uint64_t>();
    if (begin > end || end > data_size) {
      fail_at(key, "data_offsets [", begin, ", ", end, "] out of range of the ", data_size,
              "-byte data block");
    }
    if (end - begin != elements * detail::dtype_size(t.dtype)) {
      fail_at(key, "data_offsets [", begin, ", ", end, "] hold ", end - begin, " bytes, its shape ",
              "of ", name, " needs ", elements * detail::dtype_size(t.dtype));
    }
    t.begin = static_cast<std::size_t>(begin);
    t.end = static_cast<std::size_t>(end);
    return t;
  }

  std::string name_;
  std::unique_ptr<detail::FileBytes> bytes_;
  std::size_t header_size_ = 0;
  std::map<std::string, std::string> metadata_;
  std::map<std::string, TensorInfo> tensors_;
};

/// A tensor a layer expects: its name under the layer's prefix and its shape.
struct TensorSpec {
  /// The name after the layer's prefix (e.g. `q_proj.weight`).
  std::string name;
  /// The shape as the checkpoint stores it (`[out, in]` for an `nn.Linear.weight`, `[n]` for a
  /// vector).
  std::vector<Index> shape;
};

/// Loads the tensors `expected` of one layer, `prefix` + name each, converted to Scalar
/// (shapes as `SafetensorsFile::tensor` maps them). Throws, naming the file and tensor, when
/// one is missing or mis-shaped or holds a non-finite value, or when the file has a tensor
/// under `prefix` that is not expected; returns all of them or nothing.
template <class Scalar>
std::map<std::string, Matrix<Scalar>> load_tensors(const SafetensorsFile& file,
                                                   const std::string& prefix,
                                                   const std::vector<TensorSpec>& expected) {
  std::map<std::string, Matrix<Scalar>> out;
  for (const TensorSpec& spec : expected) {
    const std::string full = prefix + spec.name;
    const TensorInfo& t = file.info(full);
    if (t.shape != spec.shape) {
      std::string want = "[", got = "[";
      for (std::size_t i = 0; i < spec.shape.size(); ++i)
        want += (i ? ", " : "") + std::to_string(spec.shape[i]);
      for (std::size_t i = 0; i < t.shape.size(); ++i)
        got += (i ? ", " : "") + std::to_string(t.shape[i]);
      file.fail_at(full, "shape must be ", want, "], got ", got, "]");
    }
    out.emplace(spec.name, file.tensor<Scalar>(full));
  }
  for (const auto& [name, info] : file.tensors()) {
    if (name.compare(0, prefix.size(), prefix) == 0 && out.count(name.substr(prefix.size())) == 0) {
      file.fail_at(name, "unexpected: the layer has no parameter of that name");
    }
  }
  return out;
}

}  // namespace seqmem
