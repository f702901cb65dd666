// State files (include/seqmem/state_io.hpp, docs/state_format.md): bit-exact round trips and
// continuation for every layer in float and double; every truncation and byte flip, wrong
// layer / dims / scalar files, hand-built files of the documented layout, empty streams,
// files back to back; save refuses states that do not fit their layer.

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <seqmem/state_io.hpp>

#include "layer_cases.hpp"
#include "test_util.hpp"

namespace seqmem::test {
namespace {

// Random calls and every part of a state per layer family: layer_cases.hpp (the parts are
// listed there independently of state_io's own description).

template <class Scalar>
using ScalarBits = std::conditional_t<sizeof(Scalar) == 4, std::uint32_t, std::uint64_t>;

template <class Scalar>
::testing::AssertionResult same_bits(const Matrix<Scalar>& a, const Matrix<Scalar>& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) {
    return ::testing::AssertionFailure()
           << "shape " << a.rows() << "x" << a.cols() << " vs " << b.rows() << "x" << b.cols();
  }
  if (a.size() == 0 ||
      std::memcmp(a.data(), b.data(), sizeof(Scalar) * std::size_t(a.size())) == 0) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "values differ";
}

template <class Layer>
::testing::AssertionResult same_state(const Layer&, const typename Layer::State& a,
                                      const typename Layer::State& b) {
  const auto pa = Case<Layer>::parts(a), pb = Case<Layer>::parts(b);
  if (pa.size() != pb.size()) return ::testing::AssertionFailure() << "part count";
  for (std::size_t i = 0; i < pa.size(); ++i) {
    if (auto r = same_bits(pa[i], pb[i]); !r) return r << " (part " << i << ")";
  }
  return ::testing::AssertionSuccess();
}

// ---------------------------------------------------------------------------------------------
// Streams, bytes and the layers under test
// ---------------------------------------------------------------------------------------------

template <class Layer>
std::string save(const Layer& layer, const typename Layer::State& state) {
  std::ostringstream out(std::ios::binary);
  save_state(layer, state, out);
  return out.str();
}

template <class Layer>
typename Layer::State load(const Layer& layer, const std::string& bytes) {
  std::istringstream in(bytes, std::ios::binary);
  return load_state(layer, in);
}

/// The message of the state_error that loading `bytes` throws ("" and a failure if none).
template <class Layer>
std::string load_error(const Layer& layer, const std::string& bytes) {
  try {
    (void)load(layer, bytes);
  } catch (const state_error& e) {
    return e.what();
  }
  ADD_FAILURE() << "load_state did not throw state_error";
  return "";
}

::testing::AssertionResult contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "message \"" << text << "\" lacks \"" << part << "\"";
}
#define EXPECT_CONTAINS(text, part) EXPECT_TRUE(contains(text, part))

/// FNV-1a 64, written again here so the hand-built files check the documented checksum.
std::uint64_t fnv1a64(const std::string& bytes) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (const char c : bytes)
    h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
  return h;
}

void append_le(std::string& s, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i)
    s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

/// A file with its checksum recomputed after an edit of its body.
std::string reseal(std::string bytes) {
  bytes.resize(bytes.size() - 8);
  append_le(bytes, fnv1a64(bytes), 8);
  return bytes;
}

/// Offset of the 8-byte value of the integer field `name` in a saved file.
std::size_t integer_offset(const std::string& bytes, const std::string& name) {
  std::string tag;
  append_le(tag, name.size(), 4);
  tag += name;
  tag.push_back('\x01');
  const auto at = bytes.find(tag);
  EXPECT_NE(at, std::string::npos) << "no integer field " << name;
  return at + tag.size();
}

template <class Layer>
constexpr bool kMiniBatched = requires(const Layer& l) {
  l.options().mini_batch;
};

/// Calls every layer configuration the tests cover with (name, layer).
template <class Scalar, class F>
void for_each_layer(F&& f) {
  f("linear attention, gated",
    LinearAttention<Scalar>({.key_dim = 4, .value_dim = 3, .chunk_size = 4}));
  f("linear attention, normalized elu+1",
    LinearAttention<Scalar>({.key_dim = 4,
                             .value_dim = 3,
                             .feature_map = FeatureMap::elu_plus_one,
                             .normalize = true,
                             .chunk_size = 4}));
  f("softmax, unbounded",
    SoftmaxAttention<Scalar>({.key_dim = 4, .value_dim = 3, .chunk_size = 4}));
  f("softmax, window 5",
    SoftmaxAttention<Scalar>({.key_dim = 4, .value_dim = 3, .window = 5, .chunk_size = 4}));
  f("gated DeltaNet, qk l2norm",
    DeltaNet<Scalar>({.key_dim = 4, .value_dim = 3, .chunk_size = 4, .qk_l2norm = true}));
  f("GatedLinearAttention",
    GatedLinearAttention<Scalar>({.key_dim = 4, .value_dim = 3, .chunk_size = 4}));
  f("KimiDeltaAttention, qk l2norm",
    KimiDeltaAttention<Scalar>({.key_dim = 4, .value_dim = 3, .chunk_size = 4, .qk_l2norm = true}));
  f("GeneralizedDeltaRule",
    GeneralizedDeltaRule<Scalar>({.key_dim = 4, .value_dim = 3, .chunk_size = 4}));
  f("TTT-Linear", TTTLinear<Scalar>({.key_dim = 4, .mini_batch = 8}));
  f("TTT-MLP", TTTMLP<Scalar>({.key_dim = 4, .mini_batch = 8, .expansion = 2}));
  f("Titans depth 1", TitansMemory<Scalar>({.key_dim = 4, .value_dim = 3, .mini_batch = 8}));
  f("Titans depth 2, bias",
    TitansMemory<Scalar>(
        {.key_dim = 4, .value_dim = 3, .depth = 2, .expansion = 2, .bias = true, .mini_batch = 8}));
}

/// The state after a first call of 13 tokens (TTT/Titans: mid-mini-batch, position 5).
template <class Layer>
typename Layer::State after_first_call(const Layer& layer) {
  Rng rng(7);
  const auto data = Case<Layer>::data(layer, 13, 1, rng);
  auto state = layer.initial_state();
  (void)forward(layer, Form::chunkwise, data.all(), state);
  return state;
}

template <class Scalar>
class StateIo : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(StateIo, Scalars);

}  // namespace

// Save → load gives the same state bit for bit (initial and after a call), and saving the
// loaded state gives the same bytes.
TYPED_TEST(StateIo, RoundTripIsBitExact) {
  for_each_layer<TypeParam>([](const char* name, const auto& layer) {
    SCOPED_TRACE(name);
    for (const auto& state : {layer.initial_state(), after_first_call(layer)}) {
      const std::string bytes = save(layer, state);
      const auto restored = load(layer, bytes);
      EXPECT_TRUE(same_state(layer, restored, state));
      EXPECT_EQ(save(layer, restored), bytes);
    }
    if constexpr (kMiniBatched<std::decay_t<decltype(layer)>>) {
      EXPECT_EQ(load(layer, save(layer, after_first_call(layer))).position, 5);
    }
  });
}

// A session saved after one call and restored into a fresh state continues exactly: the next
// call in each form (short, and long enough to cross TTT/Titans mini-batches) gives the same
// outputs and state, bit for bit, as the uninterrupted run.
TYPED_TEST(StateIo, RestoredSessionContinuesExactly) {
  for_each_layer<TypeParam>([](const char* name, const auto& layer) {
    using Layer = std::decay_t<decltype(layer)>;
    const auto state = after_first_call(layer);
    const std::string bytes = save(layer, state);
    Rng rng(11);
    for (Index T : {3, 11}) {
      const auto next = Case<Layer>::data(layer, T, 1, rng);
      for (Form form : all_forms) {
        if constexpr (kMiniBatched<Layer>) {
          if (form == Form::parallel && state.position + T > layer.options().mini_batch) continue;
        }
        SCOPED_TRACE(::testing::Message()
                     << name << ", next call " << to_string(form) << "(" << T << ")");
        auto uninterrupted = state;
        auto resumed = load(layer, bytes);
        const Matrix<TypeParam> want = forward(layer, form, next.all(), uninterrupted);
        const Matrix<TypeParam> got = forward(layer, form, next.all(), resumed);
        EXPECT_TRUE(same_bits(got, want)) << "outputs";
        EXPECT_TRUE(same_state(layer, resumed, uninterrupted)) << "state";
      }
    }
  });
}

// Every proper prefix of a file is refused as empty or truncated.
TYPED_TEST(StateIo, EveryTruncationThrows) {
  for_each_layer<TypeParam>([](const char* name, const auto& layer) {
    SCOPED_TRACE(name);
    const std::string bytes = save(layer, after_first_call(layer));
    EXPECT_CONTAINS(load_error(layer, ""), "empty stream");
    for (std::size_t n = 1; n < bytes.size(); ++n) {
      const std::string message = load_error(layer, bytes.substr(0, n));
      EXPECT_CONTAINS(message, "truncated") << " (prefix of " << n << " bytes)";
    }
  });
}

// Flipping any byte (all its bits, or only the lowest) is caught; in the checksum and in the
// values of the first tensor it is reported as a checksum mismatch.
TYPED_TEST(StateIo, EveryByteFlipThrows) {
  for_each_layer<TypeParam>([](const char* name, const auto& layer) {
    SCOPED_TRACE(name);
    const auto state = after_first_call(layer);
    const std::string bytes = save(layer, state);
    std::string values;  // the first tensor's values as the file stores them
    const Matrix<TypeParam> first =
        Case<std::remove_cvref_t<decltype(layer)>>::parts(state).front();  // row-major
    for (Index k = 0; k < first.size(); ++k) {
      append_le(values, std::bit_cast<ScalarBits<TypeParam>>(first.data()[k]),
                int{sizeof(TypeParam)});
    }
    const std::size_t values_at = bytes.find(values);
    ASSERT_NE(values_at, std::string::npos);
    for (std::size_t i = 0; i < bytes.size(); ++i) {
      for (const char mask : {'\xff', '\x01'}) {
        std::string flipped = bytes;
        flipped[i] = static_cast<char>(flipped[i] ^ mask);
        const std::string message = load_error(layer, flipped);
        if (i >= bytes.size() - 8 || (i >= values_at && i < values_at + values.size())) {
          EXPECT_CONTAINS(message, "checksum mismatch") << " (byte " << i << ")";
        }
      }
    }
  });
}

TYPED_TEST(StateIo, WrongLayerThrows) {
  using S = TypeParam;
  const DeltaNet<S> delta({.key_dim = 4, .value_dim = 3});
  const LinearAttention<S> linear({.key_dim = 4, .value_dim = 3});
  const std::string message = load_error(linear, save(delta, delta.initial_state()));
  EXPECT_CONTAINS(message, "wrong layer");
  EXPECT_CONTAINS(message, "DeltaNet");
  EXPECT_CONTAINS(message, "LinearAttention");
  const TTTLinear<S> ttt_linear({.key_dim = 4});
  const TTTMLP<S> ttt_mlp({.key_dim = 4});
  EXPECT_CONTAINS(load_error(ttt_mlp, save(ttt_linear, ttt_linear.initial_state())), "TTTLinear");
  const SoftmaxAttention<S> softmax({.key_dim = 4, .value_dim = 3});
  const TitansMemory<S> titans({.key_dim = 4, .value_dim = 3});
  EXPECT_CONTAINS(load_error(titans, save(softmax, softmax.initial_state())), "wrong layer");
}

// The diagonal-gate layers have DeltaNet's state (one key_dim×value_dim S) under kinds of their
// own: a file of one is refused by each of the others, both ways, and by DeltaNet.
TYPED_TEST(StateIo, WrongDiagonalGateLayerThrows) {
  using S = TypeParam;
  const DeltaNet<S> delta({.key_dim = 4, .value_dim = 3});
  const GatedLinearAttention<S> gla({.key_dim = 4, .value_dim = 3});
  const KimiDeltaAttention<S> kda({.key_dim = 4, .value_dim = 3});
  const GeneralizedDeltaRule<S> gdr({.key_dim = 4, .value_dim = 3});
  const auto refused = [](const auto& saver, const auto& loader, const std::string& saved,
                          const std::string& loading) {
    SCOPED_TRACE(saved + " file loaded by " + loading);
    const std::string message = load_error(loader, save(saver, saver.initial_state()));
    EXPECT_CONTAINS(message, "wrong layer");
    EXPECT_CONTAINS(message, "the file holds a " + saved + " state, the layer is " + loading);
  };
  refused(gla, kda, "GatedLinearAttention", "KimiDeltaAttention");
  refused(kda, gla, "KimiDeltaAttention", "GatedLinearAttention");
  refused(kda, gdr, "KimiDeltaAttention", "GeneralizedDeltaRule");
  refused(gdr, kda, "GeneralizedDeltaRule", "KimiDeltaAttention");
  refused(gdr, gla, "GeneralizedDeltaRule", "GatedLinearAttention");
  refused(gla, gdr, "GatedLinearAttention", "GeneralizedDeltaRule");
  refused(delta, kda, "DeltaNet", "KimiDeltaAttention");
  refused(kda, delta, "KimiDeltaAttention", "DeltaNet");
  refused(gla, delta, "GatedLinearAttention", "DeltaNet");
  refused(gdr, delta, "GeneralizedDeltaRule", "DeltaNet");
}

// A file saved by the same layer kind with other dims/options that shape the state.
TYPED_TEST(StateIo, WrongDimsThrows) {
  using S = TypeParam;
  const auto expect = [](const auto& saver, const auto& loader, const char* option) {
    SCOPED_TRACE(option);
    const std::string message = load_error(loader, save(saver, saver.initial_state()));
    EXPECT_CONTAINS(message, "wrong dims/options");
    EXPECT_CONTAINS(message, option);
  };
  using LA = LinearAttention<S>;
  expect(LA({.key_dim = 4, .value_dim = 3}), LA({.key_dim = 5, .value_dim = 3}), "key_dim = 4");
  expect(LA({.key_dim = 4, .value_dim = 3}), LA({.key_dim = 4, .value_dim = 3, .normalize = true}),
         "normalize = 0");
  using SA = SoftmaxAttention<S>;
  expect(SA({.key_dim = 4, .value_dim = 3, .window = 5}), SA({.key_dim = 4, .value_dim = 3}),
         "window = 5");
  expect(DeltaNet<S>({.key_dim = 4, .value_dim = 3}), DeltaNet<S>({.key_dim = 4, .value_dim = 2}),
         "value_dim = 3");
  using GLA = GatedLinearAttention<S>;
  expect(GLA({.key_dim = 4, .value_dim = 3}), GLA({.key_dim = 5, .value_dim = 3}), "key_dim = 4");
  using KDA = KimiDeltaAttention<S>;
  expect(KDA({.key_dim = 4, .value_dim = 3}), KDA({.key_dim = 4, .value_dim = 2}), "value_dim = 3");
  using GDR = GeneralizedDeltaRule<S>;
  expect(GDR({.key_dim = 4, .value_dim = 3}), GDR({.key_dim = 3, .value_dim = 4}), "key_dim = 4");
  expect(TTTLinear<S>({.key_dim = 4, .mini_batch = 8}), TTTLinear<S>({.key_dim = 4}),
         "mini_batch = 8");
  expect(TTTLinear<S>({.key_dim = 4, .bias = false}), TTTLinear<S>({.key_dim = 4}), "bias = 0");
  expect(TTTMLP<S>({.key_dim = 4, .expansion = 2}), TTTMLP<S>({.key_dim = 4}), "expansion = 2");
  using TM = TitansMemory<S>;
  expect(TM({.key_dim = 4, .value_dim = 3, .depth = 2}),
         TM({.key_dim = 4, .value_dim = 3, .depth = 3}), "depth = 2");
  expect(TM({.key_dim = 4, .value_dim = 3}), TM({.key_dim = 4, .value_dim = 3, .depth = 2}),
         "depth");  // another parameter list: expansion only shapes depth >= 2
  expect(TM({.key_dim = 4, .value_dim = 3, .depth = 2, .bias = true}),
         TM({.key_dim = 4, .value_dim = 3, .depth = 2}), "bias = 1");
  // Options that do not shape the state do not matter.
  const TM a({.key_dim = 4, .value_dim = 3, .mini_batch = 8});
  const TM b({.key_dim = 4,
              .value_dim = 3,
              .activation = Activation::silu,
              .mini_batch = 8,
              .check_finite = false});
  EXPECT_NO_THROW((void)load(b, save(a, after_first_call(a))));
}

TYPED_TEST(StateIo, WrongScalarThrows) {
  using Other = std::conditional_t<std::is_same_v<TypeParam, float>, double, float>;
  const TTTMLP<TypeParam> saver({.key_dim = 4, .expansion = 2});
  const TTTMLP<Other> loader({.key_dim = 4, .expansion = 2});
  const std::string message = load_error(loader, save(saver, saver.initial_state()));
  EXPECT_CONTAINS(message, "wrong scalar type");
  EXPECT_CONTAINS(message, sizeof(TypeParam) == 4 ? "float32 values" : "float64 values");
}

// Loading stops right after a file's checksum: files can follow each other in one stream and
// trailing bytes are left unread, for the caller.
TEST(StateIoStream, FilesBackToBackAndTrailingBytes) {
  const TitansMemory<double> layer({.key_dim = 4, .value_dim = 3, .depth = 2, .mini_batch = 8});
  const auto a = after_first_call(layer), b = layer.initial_state();
  std::stringstream stream(std::ios::in | std::ios::out | std::ios::binary);
  save_state(layer, a, stream);
  save_state(layer, b, stream);
  stream << "trailing garbage";
  EXPECT_TRUE(same_state(layer, load_state(layer, stream), a));
  EXPECT_TRUE(same_state(layer, load_state(layer, stream), b));
  std::string rest;
  std::getline(stream, rest);
  EXPECT_EQ(rest, "trailing garbage");
  EXPECT_CONTAINS(load_error(layer, ""), "empty stream");
  EXPECT_CONTAINS(load_error(layer, "SEQMEMSX and more"), "not a seqmem state file");

  // Failed reads and writes are state_errors, with or without stream exception masks.
  std::istringstream short_stream(save(layer, a).substr(0, 50), std::ios::binary);
  short_stream.exceptions(std::ios::failbit | std::ios::badbit | std::ios::eofbit);
  EXPECT_THROW((void)load_state(layer, short_stream), state_error);
  struct FullBuffer : std::streambuf {  // refuses every byte
    int_type overflow(int_type) override { return traits_type::eof(); }
  } full;
  std::ostream bad_out(&full);
  EXPECT_THROW(save_state(layer, a, bad_out), state_error);
  bad_out.clear();
  bad_out.exceptions(std::ios::badbit);
  EXPECT_THROW(save_state(layer, a, bad_out), state_error);
}

// save_state refuses a state that does not fit its layer and writes nothing.
TEST(StateIoSave, StateThatDoesNotFitThrowsAndWritesNothing) {
  const auto expect = [](const auto& layer, const auto& state, const char* part) {
    SCOPED_TRACE(part);
    std::ostringstream out(std::ios::binary);
    try {
      save_state(layer, state, out);
      ADD_FAILURE() << "no exception";
    } catch (const state_error& e) {
      EXPECT_CONTAINS(e.what(), "seqmem::save_state");
      EXPECT_CONTAINS(e.what(), part);
    }
    EXPECT_TRUE(out.str().empty());
  };
  const DeltaNet<float> delta({.key_dim = 4, .value_dim = 3});
  auto s = delta.initial_state();
  s.S.resize(3, 4);
  expect(delta, s, "'S' is 3x4, the layer expects 4x3");
  s = delta.initial_state();
  s.S(1, 2) = std::numeric_limits<float>::quiet_NaN();
  expect(delta, s, "'S' (1, 2) is not finite");
  const TTTLinear<double> ttt({.key_dim = 4, .mini_batch = 8});
  auto t = ttt.initial_state();
  t.position = 8;
  expect(ttt, t, "'position' = 8 is out of range [0, 7]");
  t = ttt.initial_state();
  t.gradient.b.clear();
  expect(ttt, t, "gradient.b[0]");
  const LinearAttention<double> linear({.key_dim = 4, .value_dim = 3, .normalize = true});
  expect(linear, LinearAttention<double>({.key_dim = 4, .value_dim = 3}).initial_state(), "'z'");
}

// A file built byte by byte from docs/state_format.md loads; the same file with one field made
// invalid (and its checksum recomputed) is refused with a message naming the problem.
TEST(StateIoFormat, HandBuiltFilesOfTheDocumentedLayout) {
  const auto str = [](std::string& f, const std::string& s) {
    append_le(f, s.size(), 4);
    f += s;
  };
  const auto build = [&](std::uint32_t version, const std::string& tensor, std::uint64_t rows,
                         std::uint64_t cols, const std::vector<double>& values, bool extra) {
    std::string f = "SEQMEMST";
    append_le(f, version, 4);
    str(f, "DeltaNet");
    append_le(f, 8, 4);
    str(f, "float64");
    append_le(f, 2, 4);  // parameters
    str(f, "key_dim");
    append_le(f, 2, 8);
    str(f, "value_dim");
    append_le(f, 3, 8);
    append_le(f, extra ? 2 : 1, 4);  // fields
    str(f, tensor);
    f.push_back('\x02');
    append_le(f, rows, 8);
    append_le(f, cols, 8);
    for (const double v : values)
      append_le(f, std::bit_cast<std::uint64_t>(v), 8);
    if (extra) {
      str(f, "extra");
      f.push_back('\x01');
      append_le(f, 0, 8);
    }
    append_le(f, fnv1a64(f), 8);
    return f;
  };
  const DeltaNet<double> layer({.key_dim = 2, .value_dim = 3});
  const std::vector<double> values{1.5, -2.0, 0.25, -0.0, 3e-300, 7.0};
  const std::string good = build(state_format_version, "S", 2, 3, values, false);
  const auto state = load(layer, good);
  ASSERT_EQ(state.S.rows(), 2);
  for (Index i = 0; i < 6; ++i) {
    EXPECT_EQ(std::bit_cast<std::uint64_t>(state.S.data()[i]),
              std::bit_cast<std::uint64_t>(values[std::size_t(i)]));
  }
  EXPECT_EQ(save(layer, state), good);

  // Version 1 wrote a memory's state with the same bytes: it still loads.
  EXPECT_EQ(load(layer, build(1, "S", 2, 3, values, false)).S, state.S);
  EXPECT_CONTAINS(load_error(layer, build(0, "S", 2, 3, values, false)), "format version 0");
  EXPECT_CONTAINS(load_error(layer, build(3, "S", 2, 3, values, false)),
                  "format version 3 is not supported (this library reads versions 1 to 2)");
  EXPECT_CONTAINS(load_error(layer, build(1, "S", 3, 2, values, false)),
                  "'S' is 3x2, the layer expects 2x3");
  EXPECT_CONTAINS(load_error(layer, build(1, "T", 2, 3, values, false)), "'T'");
  EXPECT_CONTAINS(load_error(layer, build(1, "S", 2, 3, values, true)), "2 fields");
  auto inf = values;
  inf[4] = std::numeric_limits<double>::infinity();
  EXPECT_CONTAINS(load_error(layer, build(1, "S", 2, 3, inf, false)), "'S' (1, 1) is not finite");
  std::string corrupt = good;
  corrupt[corrupt.size() - 20] ^= 0x10;
  EXPECT_CONTAINS(load_error(layer, corrupt), "checksum mismatch");
}

// Files written by the previous release (format version 1, commit 394399f; the program that
// wrote them is tests/data/state_v1/README.md): they load, and hold the state the current
// library computes from the same inputs.
TEST(StateIoFormat, ReadsVersion1FilesOfThePreviousRelease) {
  const auto read = [](const char* name) {
    std::ifstream in(std::string(SEQMEM_SOURCE_DIR) + "/tests/data/state_v1/" + name,
                     std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const std::string dn_file = read("deltanet_f64_v1.state");
  ASSERT_EQ(dn_file.substr(8, 4), std::string("\x01\0\0\0", 4)) << "not a version 1 file";
  Matrix<double> q(5, 3), k(5, 3), v(5, 2), beta(5, 1);
  for (int i = 0; i < 15; ++i) {
    q.data()[i] = std::sin(i + 1.0);
    k.data()[i] = std::cos(i * 0.7);
  }
  for (int i = 0; i < 10; ++i)
    v.data()[i] = std::sin(0.3 * i);
  for (int i = 0; i < 5; ++i)
    beta(i, 0) = 0.1 * (i + 1);
  const DeltaNet<double> dn({.key_dim = 3, .value_dim = 2});
  auto dn_state = dn.initial_state();
  (void)test::forward(dn, Form::recurrent, {.q = q, .k = k, .v = v, .beta = beta}, dn_state);
  EXPECT_LT((load(dn, dn_file).S - dn_state.S).cwiseAbs().maxCoeff(), 1e-14);

  const TTTLinear<float> ttt({.key_dim = 3, .mini_batch = 4});
  auto ttt_state = ttt.initial_state();
  Matrix<float> vf(5, 3), lr = Matrix<float>::Constant(5, 1, 0.5f);
  for (int i = 0; i < 15; ++i)
    vf.data()[i] = std::sin(0.2f * float(i));
  const Matrix<float> qf = q.cast<float>(), kf = k.cast<float>();
  (void)test::forward(ttt, Form::chunkwise, {.q = qf, .k = kf, .v = vf, .learning_rate = lr},
                      ttt_state);
  const auto loaded = load(ttt, read("tttlinear_f32_v1.state"));
  EXPECT_EQ(loaded.position, ttt_state.position);
  for (std::size_t l = 0; l < loaded.reference.W.size(); ++l) {
    EXPECT_LT((loaded.reference.W[l] - ttt_state.reference.W[l]).cwiseAbs().maxCoeff(), 1e-5f);
    EXPECT_LT((loaded.gradient.W[l] - ttt_state.gradient.W[l]).cwiseAbs().maxCoeff(), 1e-5f);
  }
}

// Files with a valid checksum but an impossible state: position outside the mini-batch, a
// softmax cache longer than the window allows, fewer tokens than cached rows.
TEST(StateIoFormat, ImpossibleStatesAreRefused) {
  const TTTMLP<float> ttt({.key_dim = 4, .mini_batch = 8, .expansion = 2});
  std::string bytes = save(ttt, after_first_call(ttt));
  for (const std::int64_t position : {std::int64_t{8}, std::int64_t{-1}}) {
    std::string edited = bytes, value;
    append_le(value, static_cast<std::uint64_t>(position), 8);
    edited.replace(integer_offset(edited, "position"), 8, value);
    EXPECT_CONTAINS(load_error(ttt, reseal(edited)), "'position' = " + std::to_string(position));
  }

  const SoftmaxAttention<double> unbounded({.key_dim = 4, .value_dim = 3});
  const SoftmaxAttention<double> window({.key_dim = 4, .value_dim = 3, .window = 5});
  bytes = save(unbounded, after_first_call(unbounded));  // 13 cached rows
  std::string as_window = bytes;
  const std::size_t at = as_window.find("window");
  ASSERT_NE(at, std::string::npos);
  as_window[at + 6] = 5;  // the parameter value that follows the name
  EXPECT_CONTAINS(load_error(window, reseal(as_window)),
                  "'keys' is 13x4, the layer expects 0..4x4");
  std::string few_tokens = bytes;
  few_tokens[integer_offset(few_tokens, "tokens")] = 12;
  EXPECT_CONTAINS(load_error(unbounded, reseal(few_tokens)), "'tokens' = 12 is out of range [13,");
}

}  // namespace seqmem::test
