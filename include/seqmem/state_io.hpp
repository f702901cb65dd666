#pragma once

/// @file
/// State files: `save_state` writes any layer's `State` to a stream and `load_state` reads it
/// back, bit for bit, in a small versioned binary format with a checksum (byte layout,
/// versioning rule and error behaviour in docs/state_format.md).
///
///     std::ofstream file("session.state", std::ios::binary);
///     seqmem::save_state(layer, state, file);
///     ...
///     std::ifstream in("session.state", std::ios::binary);
///     auto restored = seqmem::load_state(layer, in);  // continues exactly where `state` was
///
/// Each layer describes its state once, in its nested `StateLayout` (core/state_layout.hpp):
/// its kind name, the options that shape its state and a `visit` that lists the state's
/// tensors and integers in file order. Saving, loading and the expected shapes all come from
/// that one description; `save_state` and `load_state` take any `PersistentLayer`.

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <ios>
#include <istream>
#include <limits>
#include <optional>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "seqmem/core/state_layout.hpp"
#include "seqmem/core/types.hpp"
#include "seqmem/detail/checks.hpp"

namespace seqmem {

/// Thrown by `save_state` and `load_state`: a state that does not fit its layer, or a file
/// that is empty, truncated, corrupted, of another format version, or saved by another
/// layer, scalar type or set of dims/options. The message says which and where.
class state_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The format version written by `save_state`. Version 2 added the layers from x (models/),
/// whose states are their heads' memory states and their caches; a memory's state is written
/// exactly as in version 1, so `load_state` reads versions 1 and 2.
inline constexpr std::uint32_t state_format_version = 2;
/// The oldest format version `load_state` reads.
inline constexpr std::uint32_t oldest_state_format_version = 1;

namespace detail {

// ---------------------------------------------------------------------------------------------
// Bytes: little-endian integers, FNV-1a 64, errors
// ---------------------------------------------------------------------------------------------

inline constexpr char kStateMagic[8] = {'S', 'E', 'Q', 'M', 'E', 'M', 'S', 'T'};
inline constexpr std::uint64_t kStateMaxString = 64;  // kind, scalar and field names
inline constexpr std::uint64_t kStateMaxValues = std::uint64_t{1} << 56;  // per tensor
inline constexpr std::uint8_t kFieldInteger = 1, kFieldTensor = 2;

template <class... Parts>
[[noreturn]] void state_fail(std::string_view where, const Parts&... parts) {
  std::ostringstream message;
  message << "seqmem::" << where << ": ";
  (message << ... << parts);
  throw state_error(message.str());
}

inline void put_le(unsigned char* dst, std::uint64_t value, std::size_t bytes) {
  for (std::size_t i = 0; i < bytes; ++i)
    dst[i] = static_cast<unsigned char>(value >> (8 * i));
}

inline std::uint64_t get_le(const unsigned char* src, std::size_t bytes) {
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < bytes; ++i)
    value |= std::uint64_t{src[i]} << (8 * i);
  return value;
}

struct Fnv1a64 {
  std::uint64_t value = 0xcbf29ce484222325ull;
  void update(const unsigned char* data, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i)
      value = (value ^ data[i]) * 0x100000001b3ull;
  }
};

template <class Scalar>
using ScalarBits = std::conditional_t<sizeof(Scalar) == 4, std::uint32_t, std::uint64_t>;

template <class Scalar>
constexpr std::string_view scalar_name() {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "state files hold float or double states");
  return sizeof(Scalar) == 4 ? "float32" : "float64";
}

inline std::string hex(std::uint64_t value) {
  std::ostringstream s;
  s << "0x" << std::hex << value;
  return s.str();
}

// ---------------------------------------------------------------------------------------------
// Visitors: expected slots, checks shared by save and load, the writer and the reader
// ---------------------------------------------------------------------------------------------

/// One part of a layer's state as its initial_state() has it.
struct StateSlot {
  std::string name;
  std::uint8_t type;
  Index rows = 0, cols = 0;
};

struct SlotCollector {
  std::vector<StateSlot> slots;
  template <class M>
  void tensor(const std::string& name, const M& m, std::optional<RowRange> = {}) {
    slots.push_back({name, kFieldTensor, m.rows(), m.cols()});
  }
  void integer(const std::string& name, Index, Index, Index) {
    slots.push_back({name, kFieldInteger});
  }
};

template <class Layer>
std::vector<StateSlot> state_slots(const Layer& layer) {
  SlotCollector collector;
  const typename Layer::State initial = layer.initial_state();
  Layer::StateLayout::visit(layer, initial, collector);
  return std::move(collector.slots);
}

/// Checks each visited part against the layer's slots; `subject` is "state" (save) or
/// "file" (load) in messages.
class SlotChecker {
 public:
  SlotChecker(std::string_view where, std::string_view subject, std::vector<StateSlot> slots)
      : where_(where), subject_(subject), slots_(std::move(slots)) {}

  std::size_t slot_count() const { return slots_.size(); }

  /// Throws unless the layer's state has `name` of `type` as its next part; returns that slot.
  const StateSlot& next(const std::string& name, std::uint8_t type) {
    if (next_ == slots_.size()) {
      state_fail(where_, "the ", subject_, " has more parts than the layer's state (",
                 slots_.size(), "): '", name, "' is one too many");
    }
    const StateSlot& slot = slots_[next_++];
    if (slot.name != name || slot.type != type) {
      state_fail(where_, "the ", subject_, "'s part ", next_ - 1, " is ", what(type), " '", name,
                 "', the layer's state has ", what(slot.type), " '", slot.name, "' there");
    }
    return slot;
  }

  void check_shape(const StateSlot& slot, Index rows, Index cols,
                   const std::optional<RowRange>& range) const {
    const bool rows_ok = range ? rows >= range->min && rows <= range->max : rows == slot.rows;
    if (rows_ok && cols == slot.cols) return;
    std::ostringstream want;
    if (!range) {
      want << slot.rows;
    } else if (range->min == range->max) {
      want << range->min;
    } else {
      want << range->min << "..";
      if (range->max < std::numeric_limits<Index>::max()) want << range->max;
    }
    state_fail(where_, subject_, " tensor '", slot.name, "' is ", rows, "x", cols,
               ", the layer expects ", want.str(), "x", slot.cols);
  }

  template <class Derived>
  void check_finite(const std::string& name, const Eigen::DenseBase<Derived>& m) const {
    if (detail::all_finite(m)) return;
    for (Index i = 0; i < m.rows(); ++i)
      for (Index j = 0; j < m.cols(); ++j)
        if (!std::isfinite(m(i, j))) {
          state_fail(where_, subject_, " tensor '", name, "' (", i, ", ", j,
                     ") is not finite: ", m(i, j));
        }
  }

  void check_integer(const std::string& name, Index value, Index lo, Index hi) const {
    if (value < lo || value > hi) {
      state_fail(where_, subject_, " integer '", name, "' = ", value, " is out of range [", lo,
                 ", ", hi, "]");
    }
  }

  void finish() const {
    if (next_ != slots_.size()) {
      state_fail(where_, "the ", subject_, " has ", next_, " parts, the layer's state has ",
                 slots_.size(), " (missing '", slots_[next_].name, "')");
    }
  }

 protected:
  static const char* what(std::uint8_t type) { return type == kFieldTensor ? "tensor" : "integer"; }
  std::string_view where_, subject_;
  std::vector<StateSlot> slots_;
  std::size_t next_ = 0;
};

/// Writes a state (or, without a stream, only checks it) and hashes every byte it writes.
template <class Scalar>
class StateWriter : public SlotChecker {
 public:
  StateWriter(std::vector<StateSlot> slots, std::ostream* out)
      : SlotChecker("save_state", "state", std::move(slots)), out_(out) {}

  void header(std::string_view kind, const std::vector<StateParam>& params) {
    bytes(reinterpret_cast<const unsigned char*>(kStateMagic), sizeof kStateMagic);
    uint(state_format_version, 4);
    string(kind);
    uint(sizeof(Scalar), 4);
    string(scalar_name<Scalar>());
    uint(params.size(), 4);
    for (const auto& p : params) {
      string(p.name);
      uint(static_cast<std::uint64_t>(p.value), 8);
    }
    uint(slot_count(), 4);
  }

  void tensor(const std::string& name, MatrixCRef<Scalar> m, std::optional<RowRange> range = {}) {
    check_shape(next(name, kFieldTensor), m.rows(), m.cols(), range);
    check_finite(name, m);
    if (!out_) return;
    field(name, kFieldTensor);
    uint(static_cast<std::uint64_t>(m.rows()), 8);
    uint(static_cast<std::uint64_t>(m.cols()), 8);
    std::vector<unsigned char> row(static_cast<std::size_t>(m.cols()) * sizeof(Scalar));
    for (Index i = 0; i < m.rows(); ++i) {
      for (Index j = 0; j < m.cols(); ++j) {
        put_le(row.data() + static_cast<std::size_t>(j) * sizeof(Scalar),
               std::bit_cast<ScalarBits<Scalar>>(m(i, j)), sizeof(Scalar));
      }
      bytes(row.data(), row.size());
    }
  }

  void integer(const std::string& name, Index value, Index lo, Index hi) {
    next(name, kFieldInteger);
    check_integer(name, value, lo, hi);
    if (!out_) return;
    field(name, kFieldInteger);
    uint(static_cast<std::uint64_t>(value), 8);
  }

  /// Checks that every part was visited; with a stream, writes the checksum.
  void finish() {
    SlotChecker::finish();
    if (out_) uint(hash_.value, 8);
  }

 private:
  void bytes(const unsigned char* data, std::size_t n) {
    hash_.update(data, n);
    try {
      out_->write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(n));
    } catch (const std::ios_base::failure& e) {
      state_fail("save_state", "writing to the stream failed: ", e.what());
    }
  }
  void uint(std::uint64_t value, std::size_t n) {
    unsigned char buffer[8];
    put_le(buffer, value, n);
    bytes(buffer, n);
  }
  void string(std::string_view s) {
    uint(s.size(), 4);
    bytes(reinterpret_cast<const unsigned char*>(s.data()), s.size());
  }
  void field(const std::string& name, std::uint8_t type) {
    string(name);
    bytes(&type, 1);
  }

  std::ostream* out_;
  Fnv1a64 hash_;
};

/// One field of a file as read, before it is matched against a layer.
struct StateField {
  std::string name;
  std::uint8_t type = 0;
  std::int64_t value = 0;  // integer
  Index rows = 0, cols = 0;
  std::vector<unsigned char> bytes;  // tensor: rows·cols little-endian scalars
};

/// A whole file as read: structure checked, checksum verified, nothing matched yet.
struct StateRecord {
  std::string kind, scalar_name;
  std::uint32_t scalar_size = 0;
  std::vector<std::pair<std::string, std::int64_t>> params;
  std::vector<StateField> fields;
};

/// Reads bytes from a stream, hashing them and naming what a short read cut off.
class StateSource {
 public:
  explicit StateSource(std::istream& in) : in_(in) {}

  void read(unsigned char* dst, std::size_t n, std::string_view what) {
    if (n == 0) return;
    try {  // a stream with an exception mask reports a short read as a state_error too
      in_.read(reinterpret_cast<char*>(dst), static_cast<std::streamsize>(n));
    } catch (const std::ios_base::failure&) {
    }
    const auto got = static_cast<std::size_t>(in_.gcount());
    if (got != n) {
      if (offset_ == 0 && got == 0) state_fail(kWhere, "empty stream: no state file to read");
      state_fail(kWhere, "truncated file: the stream ends inside ", what, " after ", offset_ + got,
                 " bytes");
    }
    hash_.update(dst, n);
    offset_ += n;
  }

  std::uint64_t uint(std::size_t n, std::string_view what) {
    unsigned char buffer[8];
    read(buffer, n, what);
    return get_le(buffer, n);
  }

  /// A name: 1 to 64 printable ASCII characters without spaces.
  std::string string(const std::string& what) {
    const std::uint64_t n = uint(4, what);
    if (n == 0 || n > kStateMaxString) {
      state_fail(kWhere, "corrupted file: ", what, " has length ", n, " (1..", kStateMaxString,
                 " expected)");
    }
    std::string s(static_cast<std::size_t>(n), '\0');
    read(reinterpret_cast<unsigned char*>(s.data()), s.size(), what);
    for (const char c : s) {
      if (c <= ' ' || c > '~') state_fail(kWhere, "corrupted file: ", what, " is not printable");
    }
    return s;
  }

  std::uint64_t hash() const { return hash_.value; }

 private:
  static constexpr std::string_view kWhere = "load_state";
  std::istream& in_;
  Fnv1a64 hash_;
  std::uint64_t offset_ = 0;
};

/// Reads one file up to and including its checksum (nothing after it), checking its
/// structure and checksum but not whether it fits any layer.
inline StateRecord read_state_record(std::istream& in) {
  constexpr std::string_view where = "load_state";
  StateSource src(in);
  unsigned char magic[sizeof kStateMagic];
  src.read(magic, sizeof magic, "the magic");
  if (std::memcmp(magic, kStateMagic, sizeof magic) != 0) {
    state_fail(where, "not a seqmem state file (the first 8 bytes are not \"SEQMEMST\")");
  }
  const std::uint64_t version = src.uint(4, "the format version");
  if (version < oldest_state_format_version || version > state_format_version) {
    state_fail(where, "format version ", version, " is not supported (this library reads versions ",
               oldest_state_format_version, " to ", state_format_version, ")");
  }
  StateRecord r;
  r.kind = src.string("the layer kind");
  r.scalar_size = static_cast<std::uint32_t>(src.uint(4, "the scalar size"));
  if (r.scalar_size != 4 && r.scalar_size != 8) {
    state_fail(where, "corrupted file: scalar size ", r.scalar_size, " (4 or 8 expected)");
  }
  r.scalar_name = src.string("the scalar name");
  const std::uint64_t param_count = src.uint(4, "the parameter count");
  for (std::uint64_t i = 0; i < param_count; ++i) {
    std::string name = src.string("a parameter name");
    const auto value = static_cast<std::int64_t>(src.uint(8, "parameter '" + name + "'"));
    r.params.emplace_back(std::move(name), value);
  }
  const std::uint64_t field_count = src.uint(4, "the field count");
  for (std::uint64_t i = 0; i < field_count; ++i) {
    StateField f;
    f.name = src.string("a field name");
    const std::string what = "field '" + f.name + "'";
    src.read(&f.type, 1, what);
    if (f.type == kFieldInteger) {
      f.value = static_cast<std::int64_t>(src.uint(8, what));
    } else if (f.type == kFieldTensor) {
      const std::uint64_t rows = src.uint(8, what), cols = src.uint(8, what);
      if (rows > kStateMaxValues || cols > kStateMaxValues ||
          (cols != 0 && rows > kStateMaxValues / cols)) {
        state_fail(where, "corrupted file: ", what, " claims ", rows, "x", cols, " values");
      }
      f.rows = static_cast<Index>(rows);
      f.cols = static_cast<Index>(cols);
      // Read in pieces so a corrupted size fails at the end of the stream, not in malloc.
      const std::uint64_t total = rows * cols * r.scalar_size;
      for (std::uint64_t done = 0; done < total;) {
        const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(total - done, 1 << 20));
        f.bytes.resize(static_cast<std::size_t>(done) + n);
        src.read(f.bytes.data() + done, n, what);
        done += n;
      }
    } else {
      state_fail(where, "corrupted file: ", what, " has unknown type ", int{f.type});
    }
    r.fields.push_back(std::move(f));
  }
  const std::uint64_t computed = src.hash();
  const std::uint64_t stored = src.uint(8, "the checksum");
  if (stored != computed) {
    state_fail(where, "checksum mismatch, the file is corrupted (stored ", hex(stored),
               ", computed ", hex(computed), ")");
  }
  return r;
}

/// Hands a record's fields to a layer's visit, checking each against the layer's slots.
template <class Scalar>
class StateReader : public SlotChecker {
 public:
  StateReader(const std::vector<StateField>& fields, std::vector<StateSlot> slots)
      : SlotChecker("load_state", "file", std::move(slots)), fields_(fields) {
    if (fields_.size() != slot_count()) {
      state_fail(where_, "the file holds ", fields_.size(), " fields, the layer's state has ",
                 slot_count());
    }
  }

  void tensor(const std::string& name, Matrix<Scalar>& m, std::optional<RowRange> range = {}) {
    const StateField& f = field(name, kFieldTensor);
    check_shape(slots_[next_ - 1], f.rows, f.cols, range);
    Matrix<Scalar> x(f.rows, f.cols);
    const unsigned char* p = f.bytes.data();
    for (Index i = 0; i < x.size(); ++i, p += sizeof(Scalar)) {
      x.data()[i] =
          std::bit_cast<Scalar>(static_cast<ScalarBits<Scalar>>(get_le(p, sizeof(Scalar))));
    }
    check_finite(name, x);
    m = std::move(x);
  }

  void integer(const std::string& name, Index& value, Index lo, Index hi) {
    const StateField& f = field(name, kFieldInteger);
    check_integer(name, f.value, lo, hi);
    value = f.value;
  }

 private:
  const StateField& field(const std::string& name, std::uint8_t type) {
    const std::size_t i = next_;
    next(name, type);  // the layer's own slot: same name and type by construction
    const StateField& f = fields_[i];
    if (f.name != name || f.type != type) {
      state_fail(where_, "the file's field ", i, " is ", what(f.type), " '", f.name,
                 "', the layer's state has ", what(type), " '", name, "' there");
    }
    return f;
  }

  const std::vector<StateField>& fields_;
};

template <class Layer>
void check_state_header(const Layer& layer, const StateRecord& r) {
  using Scalar = typename Layer::Scalar;
  constexpr std::string_view where = "load_state";
  const std::string_view kind = Layer::StateLayout::kind;
  if (r.kind != kind) {
    state_fail(where, "wrong layer: the file holds a ", r.kind, " state, the layer is ", kind);
  }
  if (r.scalar_size != sizeof(Scalar) || r.scalar_name != scalar_name<Scalar>()) {
    state_fail(where, "wrong scalar type: the file holds ", r.scalar_name, " values (",
               r.scalar_size, " bytes), the layer uses ", scalar_name<Scalar>());
  }
  const auto params = Layer::StateLayout::params(layer);
  const auto list = [](const auto& ps) {
    std::string s;
    for (const auto& [name, value] : ps) {
      s += (s.empty() ? "" : ", ") + std::string(name) + " = " + std::to_string(value);
    }
    return s;
  };
  bool same_names = params.size() == r.params.size();
  for (std::size_t i = 0; same_names && i < params.size(); ++i) {
    same_names = params[i].name == r.params[i].first;
  }
  if (!same_names) {
    state_fail(where, "wrong dims/options: the file lists (", list(r.params), "), the layer has (",
               list(params), ")");
  }
  for (std::size_t i = 0; i < params.size(); ++i) {
    if (params[i].value != r.params[i].second) {
      state_fail(where, "wrong dims/options: the file was saved by a ", kind, " with ",
                 params[i].name, " = ", r.params[i].second, ", this layer has ", params[i].name,
                 " = ", params[i].value, " (file: ", list(r.params), ")");
    }
  }
}

}  // namespace detail

/// Writes `state` of `layer` to `out` (open it in binary mode). Throws `state_error`,
/// writing nothing, unless the state fits the layer (shapes, position range, finite values).
template <PersistentLayer Layer>
void save_state(const Layer& layer, const typename Layer::State& state, std::ostream& out) {
  using Layout = typename Layer::StateLayout;
  using Scalar = typename Layer::Scalar;
  const auto slots = detail::state_slots(layer);
  detail::StateWriter<Scalar> check(slots, nullptr);  // check everything before writing
  Layout::visit(layer, state, check);
  check.finish();
  detail::StateWriter<Scalar> writer(slots, &out);
  writer.header(Layout::kind, Layout::params(layer));
  Layout::visit(layer, state, writer);
  writer.finish();
  if (!out) detail::state_fail("save_state", "writing to the stream failed");
}

/// Reads one state file from `in` for `layer` and returns the state; reading stops right
/// after the file's checksum, so files can follow each other in one stream. Throws
/// `state_error` for an empty, truncated or corrupted stream, another format version, or a
/// file of another layer kind, scalar type or dims/options; no state is returned then.
template <PersistentLayer Layer>
typename Layer::State load_state(const Layer& layer, std::istream& in) {
  using Layout = typename Layer::StateLayout;
  using Scalar = typename Layer::Scalar;
  const detail::StateRecord record = detail::read_state_record(in);
  detail::check_state_header(layer, record);
  detail::StateReader<Scalar> reader(record.fields, detail::state_slots(layer));
  typename Layer::State state;
  if constexpr (requires { Layout::restore(layer, reader); }) {
    try {
      state = Layout::restore(layer, reader);
    } catch (const invalid_argument& e) {
      detail::state_fail("load_state", "the file's state is not valid for the layer: ", e.what());
    }
  } else {
    state = layer.initial_state();
    Layout::visit(layer, state, reader);
  }
  reader.finish();
  return state;
}

}  // namespace seqmem
