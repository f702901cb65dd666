#pragma once

// Golden-vector files (tests/data/golden/README.md): parser, file listing and the tolerance
// check of docs/math.md §6.

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <istream>
#include <limits>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "seqmem/core/types.hpp"

namespace seqmem::golden {

// One golden case: `<layer>__<case>.txt`.
struct GoldenCase {
  std::string name;    // `case` line, e.g. "linear_attn__plain_T16_d8"
  std::string layer;   // the part of `name` before "__"
  std::string source;  // rest of the `source` line (informational)
  std::string file;    // where it was read from (for messages)
  std::map<std::string, std::string> params;
  std::map<std::string, Matrix<double>> tensors;

  bool has(const std::string& tensor_name) const { return tensors.count(tensor_name) != 0; }
  bool has_param(const std::string& key) const { return params.count(key) != 0; }

  const Matrix<double>& tensor(const std::string& tensor_name) const {
    const auto it = tensors.find(tensor_name);
    if (it == tensors.end()) fail("no tensor '" + tensor_name + "'");
    return it->second;
  }

  const std::string& param(const std::string& key) const {
    const auto it = params.find(key);
    if (it == params.end()) fail("no param '" + key + "'");
    return it->second;
  }

  double param_double(const std::string& key) const {
    const std::string& text = param(key);
    char* end = nullptr;
    const double value = std::strtod(text.c_str(), &end);
    if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(value)) {
      fail("param '" + key + "' = '" + text + "' is not a finite number");
    }
    return value;
  }

  std::int64_t param_int(const std::string& key) const {
    const std::string& text = param(key);
    errno = 0;
    char* end = nullptr;
    const long long value = std::strtoll(text.c_str(), &end, 10);
    if (text.empty() || end != text.c_str() + text.size() || errno == ERANGE) {
      fail("param '" + key + "' = '" + text + "' is not an integer");
    }
    return static_cast<std::int64_t>(value);
  }

  [[noreturn]] void fail(const std::string& message) const {
    throw std::runtime_error((file.empty() ? name : file) + ": " + message);
  }
};

namespace detail {

inline std::vector<std::string> split_words(const std::string& line) {
  std::istringstream stream(line);
  std::vector<std::string> words;
  for (std::string word; stream >> word;)
    words.push_back(word);
  return words;
}

// Full-token strtod; false unless the whole token is one finite number.
inline bool parse_number(const std::string& token, double& value) {
  char* end = nullptr;
  value = std::strtod(token.c_str(), &end);
  return !token.empty() && end == token.c_str() + token.size() && std::isfinite(value);
}

// A positive tensor dimension (at most 1e6).
inline bool parse_dim(const std::string& token, Index& value) {
  char* end = nullptr;
  errno = 0;
  const long long parsed = std::strtoll(token.c_str(), &end, 10);
  if (token.empty() || end != token.c_str() + token.size() || errno == ERANGE) return false;
  if (parsed <= 0 || parsed > 1'000'000) return false;
  value = static_cast<Index>(parsed);
  return true;
}

// Lines of one file with their 1-based numbers; errors are "<file>:<line>: <message>".
class LineReader {
 public:
  LineReader(std::istream& in, std::string file) : in_(in), file_(std::move(file)) {}

  bool next(std::string& line) {
    if (!std::getline(in_, line)) return false;
    ++line_number_;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return true;
  }

  [[noreturn]] void fail(const std::string& message) const {
    throw std::runtime_error(file_ + ":" + std::to_string(line_number_) + ": " + message);
  }

 private:
  std::istream& in_;
  std::string file_;
  int line_number_ = 0;
};

}  // namespace detail

// Parses one golden file from `in`; `file` names it in error messages. Throws
// std::runtime_error("<file>:<line>: <what is wrong>") on any malformed input.
inline GoldenCase parse_golden(std::istream& in, const std::string& file) {
  detail::LineReader reader(in, file);
  GoldenCase golden;
  golden.file = file;
  std::string line;
  if (!reader.next(line)) reader.fail("empty file, expected 'seqmem-golden 1'");
  if (detail::split_words(line) != std::vector<std::string>{"seqmem-golden", "1"}) {
    reader.fail("expected header 'seqmem-golden 1', got '" + line + "'");
  }
  bool ended = false;
  while (!ended && reader.next(line)) {
    const std::vector<std::string> words = detail::split_words(line);
    if (words.empty()) reader.fail("blank line before 'end'");
    const std::string& keyword = words[0];
    if (golden.name.empty() && keyword != "case") {
      reader.fail("expected 'case <layer>__<case>' after the header, got '" + keyword + "'");
    }
    if (keyword == "case") {
      if (words.size() != 2) reader.fail("expected 'case <layer>__<case>'");
      if (!golden.name.empty()) reader.fail("second 'case' line");
      golden.name = words[1];
      const auto split = golden.name.find("__");
      if (split == std::string::npos || split == 0 || split + 2 == golden.name.size()) {
        reader.fail("case name '" + golden.name + "' is not '<layer>__<case>'");
      }
      golden.layer = golden.name.substr(0, split);
    } else if (keyword == "source") {
      if (words.size() < 2) reader.fail("expected 'source <text>'");
      golden.source = line.substr(line.find("source") + 7);
    } else if (keyword == "param") {
      if (words.size() != 3) reader.fail("expected 'param <key> <value>'");
      if (!golden.params.emplace(words[1], words[2]).second) {
        reader.fail("duplicate param '" + words[1] + "'");
      }
    } else if (keyword == "tensor") {
      Index rows = 0, cols = 0;
      if (words.size() != 4 || !detail::parse_dim(words[2], rows) ||
          !detail::parse_dim(words[3], cols)) {
        reader.fail("expected 'tensor <name> <rows> <cols>' with positive dims, got '" + line +
                    "'");
      }
      const std::string& tensor_name = words[1];
      if (golden.has(tensor_name)) reader.fail("duplicate tensor '" + tensor_name + "'");
      Matrix<double> values(rows, cols);
      for (Index r = 0; r < rows; ++r) {
        const std::string where = "tensor '" + tensor_name + "' row " + std::to_string(r);
        if (!reader.next(line)) {
          reader.fail("unexpected end of file in " + where + " of " + std::to_string(rows));
        }
        const std::vector<std::string> numbers = detail::split_words(line);
        if (static_cast<Index>(numbers.size()) != cols) {
          reader.fail(where + ": expected " + std::to_string(cols) + " numbers, got " +
                      std::to_string(numbers.size()));
        }
        for (Index c = 0; c < cols; ++c) {
          const std::string& token = numbers[static_cast<std::size_t>(c)];
          if (!detail::parse_number(token, values(r, c))) {
            reader.fail(where + " col " + std::to_string(c) + ": '" + token +
                        "' is not a finite number");
          }
        }
      }
      golden.tensors.emplace(tensor_name, std::move(values));
    } else if (keyword == "end") {
      if (words.size() != 1) reader.fail("expected 'end' alone on its line");
      ended = true;
    } else {
      reader.fail("unknown keyword '" + keyword + "'");
    }
  }
  if (!ended) reader.fail("missing 'end' (file truncated?)");
  while (reader.next(line)) {
    if (!detail::split_words(line).empty()) reader.fail("text after 'end'");
  }
  return golden;
}

// Reads and parses `path`; its case name must equal the file name without ".txt".
inline GoldenCase load_golden(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path.string() + ": cannot open");
  GoldenCase golden = parse_golden(in, path.string());
  if (golden.name != path.stem().string()) {
    golden.fail("case name '" + golden.name + "' does not match the file name");
  }
  return golden;
}

// Repository root: SEQMEM_SOURCE_DIR when the build defines it, else two levels above this
// header (tests/golden.hpp).
inline std::filesystem::path source_dir() {
#ifdef SEQMEM_SOURCE_DIR
  return std::filesystem::path(SEQMEM_SOURCE_DIR);
#else
  return std::filesystem::absolute(std::filesystem::path(__FILE__)).parent_path().parent_path();
#endif
}

// $SEQMEM_GOLDEN_DIR if set and non-empty, else the copy in the repository, tests/data/golden.
inline std::filesystem::path golden_dir() {
  if (const char* env = std::getenv("SEQMEM_GOLDEN_DIR"); env != nullptr && *env != '\0') {
    return std::filesystem::path(env);
  }
  return source_dir() / "tests" / "data" / "golden";
}

// Every *.txt in `dir`, sorted. Throws if `dir` is missing or holds no *.txt file.
inline std::vector<std::filesystem::path> golden_files(
    const std::filesystem::path& dir = golden_dir()) {
  std::error_code error;
  if (!std::filesystem::is_directory(dir, error)) {
    throw std::runtime_error("golden dir '" + dir.string() +
                             "' does not exist or is not a directory (set SEQMEM_GOLDEN_DIR)");
  }
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.is_regular_file() && entry.path().extension() == ".txt") {
      files.push_back(entry.path());
    }
  }
  if (files.empty()) {
    throw std::runtime_error("golden dir '" + dir.string() + "' holds no *.txt golden file");
  }
  std::sort(files.begin(), files.end());
  return files;
}

// docs/math.md §6: same shape and max|got − want| ≤ rel_tol·(1 + max|want|). A NaN or Inf in
// `got` always fails.
template <class Scalar>
::testing::AssertionResult near(const Matrix<Scalar>& got, const Matrix<double>& want,
                                double rel_tol) {
  if (got.rows() != want.rows() || got.cols() != want.cols()) {
    return ::testing::AssertionFailure() << "shape " << got.rows() << "x" << got.cols() << ", want "
                                         << want.rows() << "x" << want.cols();
  }
  double worst = 0.0, want_max = 0.0;
  Index worst_row = -1, worst_col = -1;
  for (Index r = 0; r < want.rows(); ++r) {
    for (Index c = 0; c < want.cols(); ++c) {
      const double value = static_cast<double>(got(r, c));
      const double diff = std::isfinite(value) ? std::abs(value - want(r, c))
                                               : std::numeric_limits<double>::infinity();
      if (worst_row < 0 || diff > worst) {
        worst = diff;
        worst_row = r;
        worst_col = c;
      }
      want_max = std::max(want_max, std::abs(want(r, c)));
    }
  }
  const double bound = rel_tol * (1.0 + want_max);
  if (worst <= bound) return ::testing::AssertionSuccess();
  std::ostringstream message;
  message.precision(3);
  message << std::scientific << "max |got - want| = " << worst << " at (" << worst_row << ", "
          << worst_col << ") > bound " << bound << " = " << rel_tol << " * (1 + " << want_max
          << ")";
  message.precision(17);
  message << std::defaultfloat << " [got " << static_cast<double>(got(worst_row, worst_col))
          << ", want " << want(worst_row, worst_col) << "]";
  return ::testing::AssertionFailure() << message.str();
}

}  // namespace seqmem::golden
