/// @file
/// Streaming: prefill, decode, save the state, restore it elsewhere, continue.
///
/// A serving process keeps one state per conversation. This example runs one conversation
/// through the life of such a state, for any seqmem memory (run over 4 heads by
/// seqmem::MultiHead) or any layer from x loaded from a checkpoint:
///
///  1. prefill a prompt with one chunkwise call,
///  2. decode tokens one at a time with the recurrent form, carrying the state,
///  3. halfway through the decode, save the state to a file (state_io.hpp) and end "process 1":
///     its layer objects and state are destroyed,
///  4. "process 2" builds fresh layer objects (for a layer from x: opens and reads the
///     checkpoint again), loads the state from the file and decodes the remaining tokens,
///  5. compare every decoded output with an uninterrupted run of the same calls (own objects
///     and state, never saved or restored): a restored state continues exactly, so the
///     outputs must be equal bit for bit. Prints the max |difference| and OK, or FAIL (exit
///     code 1). For comparison it also prints how far the decoded tokens are from chunkwise
///     calls over them (the same math in another form: equal within float rounding).
///
/// Build and run:
///     cmake --build build --target streaming && build/examples/streaming
///     build/examples/streaming --layer=kda --tokens=100000      (a long run shows progress)
///     build/examples/streaming --layer=fla.GatedDeltaNet        (a layer from x)
///     build/examples/streaming --help                           (every flag and layer)

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <seqmem/checkpoint.hpp>  // safetensors files (and nlohmann::json, for their metadata)
#include <seqmem/models/attention.hpp>
#include <seqmem/models/deltanet.hpp>
#include <seqmem/models/gated_deltanet.hpp>
#include <seqmem/models/mamba2.hpp>
#include <seqmem/models/titans.hpp>
#include <seqmem/models/ttt.hpp>
#include <seqmem/seqmem.hpp>

namespace {

using seqmem::Form;
using seqmem::Index;
using Scalar = float;
using Mat = seqmem::Matrix<Scalar>;
using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

struct Args {
  std::string layer = "gated-deltanet";
  std::string checkpoint;  ///< a layer-from-x safetensors file (default: the golden file)
  Index heads = 4;         ///< memories only (a layer from x has its checkpoint's heads)
  Index dim = 64;          ///< key and value width of one head (memories only)
  Index prompt = 2048;     ///< tokens prefilled in one chunkwise call
  Index tokens = 256;      ///< tokens decoded one at a time; the state is saved halfway
  Index threads = 0;       ///< MultiHead threads (0: all cores)
  std::string state_path = "streaming.state";
};

const char* const kMemoryNames[] = {"softmax", "linear", "deltanet",   "gated-deltanet", "gla",
                                    "kda",     "gdr",    "ttt-linear", "ttt-mlp",        "titans"};
const char* const kModelNames[] = {"fla.GatedDeltaNet", "fla.DeltaNet",  "fla.Mamba2",
                                   "fla.Attention",     "ttt.TTTLinear", "ttt.TTTMLP",
                                   "seqmem.Titans"};

const std::filesystem::path kGoldenDir =
    std::filesystem::path(SEQMEM_SOURCE_DIR) / "tests" / "data" / "golden-layers";

void usage(std::FILE* out) {
  std::fprintf(out,
               "usage: streaming [--layer=NAME] [--tokens=N] [--prompt=N] [--heads=H] [--dim=d]\n"
               "                 [--threads=N] [--state=FILE] [--checkpoint=FILE.safetensors]\n"
               "  --layer    a memory, run over --heads heads of width --dim:\n"
               "               ");
  for (const char* name : kMemoryNames)
    std::fprintf(out, "%s ", name);
  std::fprintf(out,
               "\n"
               "             or a layer from x, loaded from a checkpoint in\n"
               "             tests/data/golden-layers/ (a layer name picks its first file; a file\n"
               "             name without .safetensors picks that one):\n"
               "               ");
  for (const char* name : kModelNames)
    std::fprintf(out, "%s ", name);
  std::fprintf(out,
               "\n"
               "  --tokens   tokens decoded one at a time (default 256); the state is saved\n"
               "             after half of them and restored into fresh objects\n"
               "  --prompt   tokens prefilled with one chunkwise call (default 2048)\n"
               "  --checkpoint  a file in the golden-layer format (metadata 'layer' and 'config',\n"
               "             weights under 'layer.'); its metadata names the layer\n"
               "  --state    where the state is saved (default streaming.state)\n");
}

/// Parses `--name=value` flags; returns false (after a message) on a bad one.
bool parse_args(int argc, char** argv, Args& args) {
  const auto number = [](std::string_view value, Index& field, Index min) {
    try {
      std::size_t used = 0;
      const long long parsed = std::stoll(std::string(value), &used);
      if (used != value.size() || parsed < min) return false;
      field = static_cast<Index>(parsed);
      return true;
    } catch (const std::exception&) {
      return false;
    }
  };
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const auto eq = arg.find('=');
    const std::string_view key = arg.substr(0, eq);
    const std::string_view value = eq == std::string_view::npos ? "" : arg.substr(eq + 1);
    bool ok = eq != std::string_view::npos;
    if (key == "--help" || key == "-h") {
      usage(stdout);
      std::exit(0);
    } else if (key == "--layer") {
      args.layer = value;
    } else if (key == "--checkpoint") {
      args.checkpoint = value;
    } else if (key == "--state") {
      args.state_path = value;
    } else if (key == "--heads") {
      ok = ok && number(value, args.heads, 1);
    } else if (key == "--dim") {
      ok = ok && number(value, args.dim, 1);
    } else if (key == "--prompt") {
      ok = ok && number(value, args.prompt, 0);
    } else if (key == "--tokens") {
      ok = ok && number(value, args.tokens, 0);
    } else if (key == "--threads") {
      ok = ok && number(value, args.threads, 0);
    } else {
      ok = false;
    }
    if (!ok) {
      std::fprintf(stderr, "streaming: bad argument '%s'\n", argv[i]);
      usage(stderr);
      return false;
    }
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------

/// A uniform number in [-1, 1) addressed by (stream, token, column): a token's inputs do not
/// depend on how the sequence is cut into calls, so the streaming run and the reference run
/// can make any range of tokens when they need it (nothing of length prompt + tokens is kept,
/// so --tokens may be large).
Scalar uniform(std::uint64_t stream, Index token, Index column) {
  std::uint64_t x = stream * 0x9E3779B97F4A7C15ull +
                    static_cast<std::uint64_t>(token) * 0xD1B54A32D192ED03ull +
                    static_cast<std::uint64_t>(column) * 0x8CB92BA72F3D8DD7ull;
  // splitmix64's finalizer
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  x ^= x >> 31;
  return static_cast<Scalar>(static_cast<double>(x >> 11) * 0x1.0p-52 - 1.0);
}

/// Rows [begin, begin + n) of the `cols`-wide input stream `stream`.
Mat uniform_rows(std::uint64_t stream, Index begin, Index n, Index cols) {
  Mat m(n, cols);
  for (Index r = 0; r < n; ++r)
    for (Index c = 0; c < cols; ++c)
      m(r, c) = uniform(stream, begin + r, c);
  return m;
}

Mat sigmoid(const Mat& x) {
  return (Scalar(1) / (Scalar(1) + (-x.array()).exp())).matrix();
}

/// Every row divided by its norm.
Mat unit_rows(Mat x) {
  x.rowwise().normalize();
  return x;
}

/// A per-token log-decay g ≤ 0 with exp(g) ∈ [0.95, 0.999]: a memory that forgets old tokens
/// over tens to hundreds of tokens, and stays bounded however long the stream.
Mat token_log_decay(const Mat& u) {
  return (Scalar(0.9745) + Scalar(0.0245) * u.array()).log().matrix();
}

/// A per-key-channel log-decay as gated linear attention models make it, logsigmoid(·)/16
/// (each channel in [-0.13, -0.008] here).
Mat channel_log_decay(const Mat& u) {
  return (sigmoid(Scalar(2) * u).array().log() / Scalar(16)).matrix();
}

/// One call's raw inputs for H heads of width d: q, k, v (n × H·d), three per-token gate
/// streams (n × H each) and two per-channel gate streams (n × H·d), all uniform in [-1, 1).
/// Each memory turns the gate streams into its own gates and keeps them here.
struct Block {
  Mat q, k, v, u1, u2, u3, uc, uc2;
  Block(Index begin, Index n, Index H, Index d)
      : q(uniform_rows(1, begin, n, H * d)),
        k(uniform_rows(2, begin, n, H * d)),
        v(uniform_rows(3, begin, n, H * d)),
        u1(uniform_rows(4, begin, n, H)),
        u2(uniform_rows(5, begin, n, H)),
        u3(uniform_rows(6, begin, n, H)),
        uc(uniform_rows(7, begin, n, H * d)),
        uc2(uniform_rows(8, begin, n, H * d)) {}

  /// Keeps `m` alive as long as the block and returns it. A layer's Inputs are views: a
  /// Matrix binds without a copy, so a view of a temporary Matrix would dangle once the
  /// statement ends. (Expressions, like `2 * m`, are evaluated into storage the view owns.)
  const Mat& keep(Mat m) { return kept_.emplace_back(std::move(m)); }

 private:
  std::deque<Mat> kept_;  // a deque: its elements never move
};

/// Row-wise unit norm within each head of width d (a packed T × H·d matrix).
Mat unit_heads(const Mat& x, Index d) {
  Mat out(x.rows(), x.cols());
  for (Index h = 0; h < x.cols() / d; ++h)
    out.middleCols(h * d, d) = unit_rows(x.middleCols(h * d, d));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Sessions: what the streaming run needs from a layer, for memories and for layers from x
// ---------------------------------------------------------------------------------------------

/// A memory over H heads (seqmem::MultiHead). `Build` makes the layer; `Bind` turns a Block
/// into the layer's packed Inputs (the gates the layer wants, computed from the raw streams).
template <class Layer, class Build, class Bind>
class MemorySession {
 public:
  using Object = seqmem::MultiHead<Layer>;
  using State = typename Object::States;  // one state per head

  MemorySession(std::string description, const Args& args, Build build, Bind bind)
      : description_(std::move(description)),
        heads_(args.heads),
        dim_(args.dim),
        threads_(args.threads),
        build_(std::move(build)),
        bind_(std::move(bind)) {}

  std::string description() const {
    return description_ + ", " + std::to_string(heads_) + " heads of width " +
           std::to_string(dim_) + " (seqmem::MultiHead), float";
  }

  /// The layer objects a process builds at startup.
  Object make() const { return Object(build_(dim_), heads_, threads_); }
  static State initial_state(const Object& object) { return object.initial_state(); }
  Index width() const { return heads_ * dim_; }

  /// Tokens [begin, begin + n) in `form`, continuing `state`, outputs into `out`.
  void forward(const Object& object, Form form, Index begin, Index n, State& state,
               seqmem::MatrixRef<Scalar> out) const {
    Block block(begin, n, heads_, dim_);
    object.forward(form, bind_(block, dim_), state, out);
  }

  /// MultiHead's state is one state per head: state_io writes them one after another into
  /// the same stream (load_state stops right after each file's checksum).
  static void save(const Object& object, const State& state, std::ostream& out) {
    for (Index h = 0; h < object.num_heads(); ++h)
      seqmem::save_state(object.layer(h), state[static_cast<std::size_t>(h)], out);
  }
  static State load(const Object& object, std::istream& in) {
    State state;
    for (Index h = 0; h < object.num_heads(); ++h)
      state.push_back(seqmem::load_state(object.layer(h), in));
    return state;
  }

 private:
  std::string description_;
  Index heads_, dim_, threads_;
  Build build_;
  Bind bind_;
};

/// Reads a golden-layer file's JSON `config` into a configuration struct, one key at a time;
/// a key the example does not know is an error (rather than a silently different layer).
class ConfigReader {
 public:
  explicit ConfigReader(const std::string& json) : config_(nlohmann::json::parse(json)) {}

  template <class T>
  void operator()(const char* key, T& field) {
    if (!config_.contains(key)) return;
    used_.insert(key);
    const auto& value = config_.at(key);
    if constexpr (std::is_same_v<T, Index>) {
      field = value.is_null() ? 0 : value.get<Index>();  // Python None: 0 in seqmem's configs
    } else {
      field = value.get<T>();
    }
  }

  void finish() const {
    for (const auto& [key, value] : config_.items()) {
      if (used_.count(key) == 0) throw std::runtime_error("config key not supported: " + key);
    }
  }

 private:
  nlohmann::json config_;
  std::set<std::string> used_;
};

void read(ConfigReader& c, seqmem::models::GatedDeltaNetConfig& config) {
  c("hidden_size", config.hidden_size);
  c("expand_v", config.expand_v);
  c("head_dim", config.head_dim);
  c("num_heads", config.num_heads);
  c("num_v_heads", config.num_v_heads);
  c("use_gate", config.use_gate);
  c("use_short_conv", config.use_short_conv);
  c("allow_neg_eigval", config.allow_neg_eigval);
  c("conv_size", config.conv_size);
  c("conv_bias", config.conv_bias);
  c("norm_eps", config.norm_eps);
}

void read(ConfigReader& c, seqmem::models::DeltaNetConfig& config) {
  c("hidden_size", config.hidden_size);
  c("expand_k", config.expand_k);
  c("expand_v", config.expand_v);
  c("num_heads", config.num_heads);
  c("use_beta", config.use_beta);
  c("use_gate", config.use_gate);
  c("use_short_conv", config.use_short_conv);
  c("conv_size", config.conv_size);
  c("conv_bias", config.conv_bias);
  c("allow_neg_eigval", config.allow_neg_eigval);
  c("qk_activation", config.qk_activation);
  c("qk_norm", config.qk_norm);
  c("norm_eps", config.norm_eps);
}

void read(ConfigReader& c, seqmem::models::Mamba2Config& config) {
  c("num_heads", config.num_heads);
  c("head_dim", config.head_dim);
  c("hidden_size", config.hidden_size);
  c("state_size", config.state_size);
  c("expand", config.expand);
  c("n_groups", config.n_groups);
  c("conv_kernel", config.conv_kernel);
  c("use_conv_bias", config.use_conv_bias);
  c("hidden_act", config.hidden_act);
  c("D_has_hdim", config.D_has_hdim);
  c("rmsnorm", config.rmsnorm);
  c("norm_before_gate", config.norm_before_gate);
  c("dt_limit", config.dt_limit);
  c("use_bias", config.use_bias);
  c("norm_eps", config.norm_eps);
  c("chunk_size", config.chunk_size);
}

void read(ConfigReader& c, seqmem::models::AttentionConfig& config) {
  c("hidden_size", config.hidden_size);
  c("num_heads", config.num_heads);
  c("num_kv_heads", config.num_kv_heads);
  c("qkv_bias", config.qkv_bias);
  c("qk_norm", config.qk_norm);
  c("window_size", config.window_size);
  c("rope_theta", config.rope_theta);
  c("max_position_embeddings", config.max_position_embeddings);
}

void read(ConfigReader& c, seqmem::models::TTTConfig& config) {
  c("hidden_size", config.hidden_size);
  c("num_attention_heads", config.num_attention_heads);
  c("mini_batch_size", config.mini_batch_size);
  c("rope_theta", config.rope_theta);
  c("ttt_base_lr", config.ttt_base_lr);
  c("use_gate", config.use_gate);
  c("share_qk", config.share_qk);
  c("conv_kernel", config.conv_kernel);
  c("ttt_layer_type", config.ttt_layer_type);
}

void read(ConfigReader& c, seqmem::models::TitansConfig& config) {
  c("hidden_size", config.hidden_size);
  c("num_heads", config.num_heads);
  c("head_dim", config.head_dim);
  c("depth", config.depth);
  c("expansion", config.expansion);
  c("mini_batch", config.mini_batch);
  c("conv_size", config.conv_size);
  c("theta_max", config.theta_max);
  c("norm_eps", config.norm_eps);
  c("use_gate", config.use_gate);
}

/// A layer from x, built from a checkpoint (weights under "layer.", configuration in the
/// file's metadata). Its input is the hidden state x (T × hidden_size); its state holds every
/// head's memory and the layer's caches, and state_io saves it in one go.
template <class Model, class Config>
class ModelSession {
 public:
  using Object = Model;
  using State = typename Model::State;

  explicit ModelSession(std::filesystem::path path) : path_(std::move(path)) {
    const seqmem::SafetensorsFile file(path_);
    const auto& metadata = file.metadata();
    const auto layer = metadata.find("layer");
    const auto config = metadata.find("config");
    if (layer == metadata.end() || config == metadata.end()) {
      throw std::runtime_error(path_.string() + ": no 'layer' and 'config' in the metadata");
    }
    layer_ = layer->second;
    ConfigReader reader(config->second);
    read(reader, config_);
    reader.finish();
    width_ = config_.hidden_size;
  }

  std::string description() const {
    return layer_ + " from " + path_.filename().string() + ", hidden size " +
           std::to_string(width_) + ", float";
  }

  /// Opens the checkpoint and builds the layer, as a process does at startup.
  Model make() const {
    const seqmem::SafetensorsFile file(path_);  // memory-mapped; the layer copies what it reads
    return Model(config_, file, "layer.");
  }
  static State initial_state(const Model& model) { return model.initial_state(); }
  Index width() const { return width_; }

  void forward(const Model& model, Form form, Index begin, Index n, State& state,
               seqmem::MatrixRef<Scalar> out) const {
    // x with unit variance per entry (uniform in [-√3, √3)).
    const Mat x = uniform_rows(9, begin, n, width_) * std::sqrt(Scalar(3));
    model.forward(form, x, state, out);
  }

  static void save(const Model& model, const State& state, std::ostream& out) {
    seqmem::save_state(model, state, out);
  }
  static State load(const Model& model, std::istream& in) { return seqmem::load_state(model, in); }

 private:
  std::filesystem::path path_;
  std::string layer_;
  Config config_;
  Index width_ = 0;
};

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

/// Decodes tokens [begin, end) one at a time (recurrent form), handing each block of at most
/// `kBlock` outputs to `check`; returns the seconds spent decoding (checks not included). On
/// long runs it prints a progress line about once a second.
template <class Session>
double decode(const Session& session, const typename Session::Object& object,
              typename Session::State& state, Index begin, Index end, Index total,
              const std::function<void(Index, const Mat&)>& check) {
  constexpr Index kBlock = 1024;
  double decoding = 0;
  auto last_report = Clock::now();
  bool reported = false;
  Mat out(kBlock, session.width());
  for (Index block = begin; block < end; block += kBlock) {
    const Index n = std::min(kBlock, end - block);
    const auto start = Clock::now();
    for (Index t = 0; t < n; ++t)
      session.forward(object, Form::recurrent, block + t, 1, state, out.middleRows(t, 1));
    decoding += seconds_since(start);
    check(block, out.topRows(n));
    if (seconds_since(last_report) >= 1.0 || (reported && block + n == end)) {
      last_report = Clock::now();
      reported = true;
      std::fprintf(stderr, "  ... token %lld of %lld, decoding at %.0f tokens/s\n",
                   static_cast<long long>(block + n), static_cast<long long>(total),
                   static_cast<double>(block + n - begin) / decoding);
    }
  }
  return decoding;
}

/// The runs the streamed outputs are checked against, each with its own layer objects and
/// state, never saved or restored, and advanced over exactly the tokens streamed so far:
///  - `same`: the same calls in one process (prefill in one chunkwise call, then one recurrent
///    call per token). A restored state continues exactly, so this must match bit for bit.
///  - `chunkwise`: the decoded tokens in chunkwise calls (up to 1024 tokens each) instead. Other
///    forms compute the same math with other roundings, so this agrees within float rounding.
template <class Session>
class Checker {
 public:
  Checker(const Session& session, Index prompt)
      : session_(session),
        same_(session.make()),
        chunkwise_(session.make()),
        same_state_(Session::initial_state(same_)),
        chunkwise_state_(Session::initial_state(chunkwise_)),
        prompt_(prompt) {}

  /// Checks the streamed outputs of tokens [begin, begin + streamed.rows()).
  void operator()(Index begin, const Mat& streamed) {
    if (!prefilled_) {
      Mat prompt_out(prompt_, session_.width());
      session_.forward(same_, Form::chunkwise, 0, prompt_, same_state_, prompt_out);
      session_.forward(chunkwise_, Form::chunkwise, 0, prompt_, chunkwise_state_, prompt_out);
      prefilled_ = true;
    }
    const Index n = streamed.rows();
    Mat out(n, session_.width());
    for (Index t = 0; t < n; ++t)
      session_.forward(same_, Form::recurrent, begin + t, 1, same_state_, out.middleRows(t, 1));
    same_diff_ = std::max<double>(same_diff_, (streamed - out).cwiseAbs().maxCoeff());
    session_.forward(chunkwise_, Form::chunkwise, begin, n, chunkwise_state_, out);
    chunkwise_diff_ = std::max<double>(chunkwise_diff_, (streamed - out).cwiseAbs().maxCoeff());
    max_value_ = std::max<double>(max_value_, out.cwiseAbs().maxCoeff());
  }

  double same_diff() const { return same_diff_; }
  double chunkwise_diff() const { return chunkwise_diff_; }
  double max_value() const { return max_value_; }

 private:
  const Session& session_;
  typename Session::Object same_, chunkwise_;
  typename Session::State same_state_, chunkwise_state_;
  Index prompt_;
  bool prefilled_ = false;
  double same_diff_ = 0, chunkwise_diff_ = 0, max_value_ = 0;
};

/// The whole streaming run of the header comment for one session; returns the exit code.
template <class Session>
int run(const Session& session, const Args& args) {
  const Index prompt = args.prompt, total = args.prompt + args.tokens;
  const Index save_at = prompt + args.tokens / 2;
  std::printf("%s\n", session.description().c_str());
  Checker<Session> checker(session, prompt);
  const auto check = [&checker](Index begin, const Mat& streamed) { checker(begin, streamed); };

  // ---- Process 1: prefill, decode up to the save point, save. --------------------------------
  {
    const auto object = session.make();
    auto state = Session::initial_state(object);

    const auto start = Clock::now();
    Mat prompt_out(prompt, session.width());
    session.forward(object, Form::chunkwise, 0, prompt, state, prompt_out);
    const double prefill_s = seconds_since(start);
    std::printf("prefill  %7lld tokens  chunkwise  %8.3f s  %10.0f tokens/s\n",
                static_cast<long long>(prompt), prefill_s,
                static_cast<double>(prompt) / std::max(prefill_s, 1e-9));

    const double decode_s = decode(session, object, state, prompt, save_at, total, check);
    std::printf("decode   %7lld tokens  recurrent  %8.3f s  %10.0f tokens/s\n",
                static_cast<long long>(save_at - prompt), decode_s,
                static_cast<double>(save_at - prompt) / std::max(decode_s, 1e-9));

    std::ofstream file(args.state_path, std::ios::binary);
    Session::save(object, state, file);
    file.close();
    if (!file) throw std::runtime_error("could not write " + args.state_path);
    std::printf("saved the state after %lld tokens to %s (%lld bytes); process 1 ends\n",
                static_cast<long long>(save_at), args.state_path.c_str(),
                static_cast<long long>(std::filesystem::file_size(args.state_path)));
  }  // the layer objects and the state of process 1 are gone

  // ---- Process 2: fresh objects, load the state, continue. -----------------------------------
  const auto object = session.make();
  std::ifstream file(args.state_path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  if (!file) throw std::runtime_error("could not read " + args.state_path);
  std::istringstream in(bytes);
  auto state = Session::load(object, in);
  // A loaded state equals the saved one bit for bit: saving it again gives the same bytes.
  std::ostringstream again;
  Session::save(object, state, again);
  const bool same_bytes = again.str() == bytes;
  std::printf("process 2 built fresh objects and loaded the state; saved again it is %s\n",
              same_bytes ? "byte-identical" : "DIFFERENT");

  const double decode_s = decode(session, object, state, save_at, total, total, check);
  std::printf("decode   %7lld tokens  recurrent  %8.3f s  %10.0f tokens/s\n",
              static_cast<long long>(total - save_at), decode_s,
              static_cast<double>(total - save_at) / std::max(decode_s, 1e-9));

  // The claim of this example: bit for bit the outputs of the uninterrupted run.
  const bool ok = same_bytes && checker.same_diff() == 0;
  std::printf(
      "decoded outputs (%lld tokens) vs the same run uninterrupted: max |diff| = %.3g: %s\n",
      static_cast<long long>(args.tokens), checker.same_diff(), ok ? "OK" : "FAIL");
  // For comparison, the decoded tokens in chunkwise calls: the same math, other roundings
  // (docs/math.md §6 allows 2e-4 · (1 + max |value|) between forms in float). Rounding
  // differences can grow along a stream when the memory's update expands them, as a deep
  // memory trained with a large step may: then this line says so (it does not fail the run).
  const double tolerance = 2e-4 * (1.0 + checker.max_value());
  std::printf("  (in chunkwise calls instead: max |diff| = %.3g, %s the float tolerance %.3g)\n",
              checker.chunkwise_diff(), checker.chunkwise_diff() <= tolerance ? "within" : "ABOVE",
              tolerance);
  return ok ? 0 : 1;
}

// ---------------------------------------------------------------------------------------------
// Layers
// ---------------------------------------------------------------------------------------------

template <class Layer, class Build, class Bind>
int run_memory(const Args& args, std::string description, Build build, Bind bind) {
  return run(MemorySession<Layer, Build, Bind>(std::move(description), args, std::move(build),
                                               std::move(bind)),
             args);
}

/// The memories, each with gates in a typical range (comments say which).
int run_memory_named(const Args& args) {
  using namespace seqmem;
  const std::string& name = args.layer;
  if (name == "softmax") {
    // The KV cache grows with the stream: a decode step costs O(tokens so far).
    return run_memory<SoftmaxAttention<Scalar>>(
        args, "softmax attention (KV cache)",
        [](Index d) { return SoftmaxAttention<Scalar>({.key_dim = d, .value_dim = d}); },
        [](Block& b, Index) {
          return SoftmaxAttention<Scalar>::Inputs{.q = b.q, .k = b.k, .v = b.v};
        });
  }
  if (name == "linear") {
    return run_memory<LinearAttention<Scalar>>(
        args, "linear attention with a per-token decay exp(g) in [0.95, 0.999]",
        [](Index d) { return LinearAttention<Scalar>({.key_dim = d, .value_dim = d}); },
        [](Block& b, Index) {
          return LinearAttention<Scalar>::Inputs{
              .q = b.q, .k = b.k, .v = b.v, .log_decay = b.keep(token_log_decay(b.u1))};
        });
  }
  if (name == "deltanet" || name == "gated-deltanet") {
    // β = sigmoid(·) in (0.27, 0.73); q and k l2-normalized inside the layer (qk_l2norm), so
    // every write is a contraction; gated: a per-token decay as in linear attention.
    const bool gated = name == "gated-deltanet";
    return run_memory<DeltaNet<Scalar>>(
        args,
        gated ? "gated DeltaNet (beta = sigmoid, decay exp(g) in [0.95, 0.999], qk_l2norm)"
              : "DeltaNet (beta = sigmoid, qk_l2norm)",
        [](Index d) { return DeltaNet<Scalar>({.key_dim = d, .value_dim = d, .qk_l2norm = true}); },
        [gated](Block& b, Index) {
          DeltaNet<Scalar>::Inputs in{.q = b.q, .k = b.k, .v = b.v, .beta = b.keep(sigmoid(b.u1))};
          if (gated) in.log_decay.emplace(b.keep(token_log_decay(b.u2)));
          return in;
        });
  }
  if (name == "gla") {
    return run_memory<GatedLinearAttention<Scalar>>(
        args, "gated linear attention (per-channel decay logsigmoid(.)/16)",
        [](Index d) { return GatedLinearAttention<Scalar>({.key_dim = d, .value_dim = d}); },
        [](Block& b, Index) {
          return GatedLinearAttention<Scalar>::Inputs{
              .q = b.q, .k = b.k, .v = b.v, .log_decay = b.keep(channel_log_decay(b.uc))};
        });
  }
  if (name == "kda") {
    return run_memory<KimiDeltaAttention<Scalar>>(
        args, "Kimi delta attention (beta = sigmoid, per-channel decay, qk_l2norm)",
        [](Index d) {
          return KimiDeltaAttention<Scalar>({.key_dim = d, .value_dim = d, .qk_l2norm = true});
        },
        [](Block& b, Index) {
          return KimiDeltaAttention<Scalar>::Inputs{.q = b.q,
                                                    .k = b.k,
                                                    .v = b.v,
                                                    .beta = b.keep(sigmoid(b.u1)),
                                                    .log_decay = b.keep(channel_log_decay(b.uc))};
        });
  }
  if (name == "gdr") {
    // RWKV-7's choice (docs/math.md §9): a unit direction κ (here the normalized key), an
    // in-context learning rate α in (0, 1) per channel, a = −κ, b = κ ⊙ α: the memory's
    // component along κ is partly erased before k v is written.
    return run_memory<GeneralizedDeltaRule<Scalar>>(
        args, "generalized delta rule (RWKV-7 style a = -kappa, b = kappa * alpha)",
        [](Index d) { return GeneralizedDeltaRule<Scalar>({.key_dim = d, .value_dim = d}); },
        [](Block& b, Index d) {
          const Mat& kappa = b.keep(unit_heads(b.k, d));
          const Mat& alpha = b.keep(sigmoid(b.uc));
          return GeneralizedDeltaRule<Scalar>::Inputs{
              .q = b.q,
              .k = kappa,
              .v = b.v,
              .a = -kappa,
              .b = kappa.cwiseProduct(alpha),
              .log_decay = b.keep(channel_log_decay(b.uc2))};
        });
  }
  if (name == "ttt-linear" || name == "ttt-mlp") {
    // TTT's defaults (residual + LayerNorm, biases, mini-batch 16, token-index scaling) and
    // the learning rate ttt-lm-pytorch computes, base_lr · sigmoid(·) / head_dim.
    const auto rate = [](Block& b, Index d) -> const Mat& {
      return b.keep(sigmoid(b.u1) / static_cast<Scalar>(d));
    };
    if (name == "ttt-linear") {
      return run_memory<TTTLinear<Scalar>>(
          args, "TTT-Linear (LayerNorm, mini-batch 16, rate sigmoid(.)/d)",
          [](Index d) { return TTTLinear<Scalar>({.key_dim = d}); },
          [rate](Block& b, Index d) {
            return TTTLinear<Scalar>::Inputs{
                .q = b.q, .k = b.k, .v = b.v, .learning_rate = rate(b, d)};
          });
    }
    return run_memory<TTTMLP<Scalar>>(
        args, "TTT-MLP (LayerNorm, mini-batch 16, rate sigmoid(.)/d)",
        [](Index d) { return TTTMLP<Scalar>({.key_dim = d}); },
        [rate](Block& b, Index d) {
          return TTTMLP<Scalar>::Inputs{.q = b.q, .k = b.k, .v = b.v, .learning_rate = rate(b, d)};
        });
  }
  if (name == "titans") {
    // Depth 2, mini-batch 16 (the Titans layer's defaults), unit q and k (the layer
    // l2-normalizes them) and θ = 0.1·sigmoid(·) (its theta_max). Momentum and forgetting are
    // kept mild, η ∈ [0.4, 0.6] and α ∈ [0, 0.001]: in a mini-batch every gradient is taken at
    // the same weights and momentum adds them up again, so a mini-batch's step grows like
    // θ/(1 − η) (with η ≈ 0.7 this memory diverges on these inputs), while forgetting much
    // above 0.001 per token shrinks both weight matrices until the MLP's output is ~0.
    return run_memory<TitansMemory<Scalar>>(
        args, "Titans memory (depth 2, mini-batch 16, momentum, forgetting)",
        [](Index d) {
          return TitansMemory<Scalar>({.key_dim = d, .value_dim = d, .depth = 2, .mini_batch = 16});
        },
        [](Block& b, Index d) {
          return TitansMemory<Scalar>::Inputs{
              .q = b.keep(unit_heads(b.q, d)),
              .k = b.keep(unit_heads(b.k, d)),
              .v = b.v,
              .learning_rate = b.keep(Scalar(0.1) * sigmoid(b.u1)),
              .forgetting = (Scalar(0.0005) + Scalar(0.0005) * b.u2.array()).matrix(),
              .momentum_decay = (Scalar(0.5) + Scalar(0.1) * b.u3.array()).matrix()};
        });
  }
  return -1;
}

/// The golden-layer file `--layer` / `--checkpoint` name.
std::filesystem::path model_path(const Args& args) {
  if (!args.checkpoint.empty()) return args.checkpoint;
  const std::filesystem::path exact = kGoldenDir / (args.layer + ".safetensors");
  if (std::filesystem::exists(exact)) return exact;
  std::vector<std::filesystem::path> matches;
  for (const auto& entry : std::filesystem::directory_iterator(kGoldenDir)) {
    if (entry.path().filename().string().starts_with(args.layer + "__")) {
      matches.push_back(entry.path());
    }
  }
  if (matches.empty()) return {};
  std::sort(matches.begin(), matches.end());
  return matches.front();
}

int run_model_named(const Args& args) {
  using namespace seqmem::models;
  const std::filesystem::path path = model_path(args);
  if (path.empty()) return -1;
  std::string name;  // the layer the file holds, from its metadata
  {
    const seqmem::SafetensorsFile file(path);
    const auto it = file.metadata().find("layer");
    if (it != file.metadata().end()) name = it->second;
  }
  if (name == "fla.GatedDeltaNet") {
    return run(ModelSession<GatedDeltaNet<Scalar>, GatedDeltaNetConfig>(path), args);
  }
  if (name == "fla.DeltaNet") {
    return run(ModelSession<DeltaNetLayer<Scalar>, DeltaNetConfig>(path), args);
  }
  if (name == "fla.Mamba2") return run(ModelSession<Mamba2<Scalar>, Mamba2Config>(path), args);
  if (name == "fla.Attention") {
    return run(ModelSession<Attention<Scalar>, AttentionConfig>(path), args);
  }
  if (name == "ttt.TTTLinear") {
    return run(ModelSession<TTTLinearLayer<Scalar>, TTTConfig>(path), args);
  }
  if (name == "ttt.TTTMLP") return run(ModelSession<TTTMLPLayer<Scalar>, TTTConfig>(path), args);
  if (name == "seqmem.Titans") return run(ModelSession<Titans<Scalar>, TitansConfig>(path), args);
  throw std::runtime_error(path.string() + ": unknown layer '" + name + "' in its metadata");
}

}  // namespace

int main(int argc, char** argv) try {
  Args args;
  if (!parse_args(argc, argv, args)) return 2;
  int code = args.checkpoint.empty() ? run_memory_named(args) : -1;
  if (code < 0) code = run_model_named(args);
  if (code < 0) {
    std::fprintf(stderr, "streaming: unknown layer '%s'\n", args.layer.c_str());
    usage(stderr);
    return 2;
  }
  return code;
} catch (const std::exception& e) {
  std::fprintf(stderr, "streaming: %s\n", e.what());
  return 1;
}
