// Golden vectors (tests/data/golden/README.md): every case, every form, in double (tolerance
// 1e-9) and in float (1e-3), docs/math.md §6.
//
// Adding a layer: write one runner template `template <class Scalar> void run_x(Run<Scalar>&)`
// (see run_linear_attn below) and add one line to registry(). A layer with a runner is run
// even if it is still listed in pending_layers().

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <ostream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "compiled_layers.hpp"
#include "golden.hpp"
#include "seqmem/seqmem.hpp"

namespace seqmem::golden {
namespace {

namespace fs = std::filesystem;
using test::forward;

template <class Scalar>
constexpr double kTolerance = std::is_same_v<Scalar, double> ? 1e-9 : 1e-3;

template <class Scalar>
constexpr std::string_view kPrecision = std::is_same_v<Scalar, double> ? "double" : "float";

// Chunk size for every form; it divides none of the golden T, so the chunkwise form runs
// several chunks and a partial last one.
constexpr Index kChunkSize = 5;

// ---------------------------------------------------------------------------------------------
// Run: what a runner sees for one (case, form, precision). It hands out inputs and params
// (cast to Scalar), compares outputs, and records what was read, so the driver can flag a
// tensor or param that the runner ignored.
// ---------------------------------------------------------------------------------------------
template <class Scalar>
class Run {
 public:
  Run(const GoldenCase& golden, Form form) : golden_(golden), form_(form) {}

  const GoldenCase& golden() const { return golden_; }
  Form form() const { return form_; }
  Index chunk_size() const { return kChunkSize; }
  bool has(const std::string& tensor) const { return golden_.has(tensor); }
  bool has_param(const std::string& key) const { return golden_.has_param(key); }

  Scalar param_scalar(const std::string& key) {
    used_params_.insert(key);
    return static_cast<Scalar>(golden_.param_double(key));
  }
  Index param_index(const std::string& key) {
    used_params_.insert(key);
    return static_cast<Index>(golden_.param_int(key));
  }
  bool param_flag(const std::string& key) {
    const Index value = param_index(key);
    if (value != 0 && value != 1) golden_.fail("param '" + key + "' must be 0 or 1");
    return value == 1;
  }
  const std::string& param_word(const std::string& key) {
    used_params_.insert(key);
    return golden_.param(key);
  }

  // A required input tensor, cast to Scalar.
  Matrix<Scalar> input(const std::string& name) {
    used_tensors_.insert(name);
    return golden_.tensor(name).template cast<Scalar>();
  }

  // An optional input (`initial_*`): the tensor, which must be rows×cols, or zeros.
  Matrix<Scalar> input_or_zero(const std::string& name, Index rows, Index cols) {
    if (!has(name)) return Matrix<Scalar>::Zero(rows, cols);
    Matrix<Scalar> value = input(name);
    if (value.rows() != rows || value.cols() != cols) {
      golden_.fail("tensor '" + name + "' is " + std::to_string(value.rows()) + "x" +
                   std::to_string(value.cols()) + ", want " + std::to_string(rows) + "x" +
                   std::to_string(cols));
    }
    return value;
  }

  // A per-token gate: a `tokens×1` tensor as a column vector.
  Vector<Scalar> gate(const std::string& name, Index tokens) {
    const Matrix<Scalar> value = input(name);
    if (value.rows() != tokens || value.cols() != 1) {
      golden_.fail("gate '" + name + "' must be " + std::to_string(tokens) + "x1");
    }
    return value.col(0);
  }

  // Compares an output with the expected tensor of the same name.
  void expect(const std::string& name, const Matrix<Scalar>& got) {
    used_tensors_.insert(name);
    if (!has(name)) return fail(name + ": no such expected tensor in the file");
    if (auto result = near(got, golden_.tensor(name), kTolerance<Scalar>); !result) {
      fail(name + ": " + result.message());
    }
  }

  void fail(std::string message) { failures_.push_back(std::move(message)); }

  // Declares this form undefined for the case (reported, not a failure). Call it before
  // reading anything.
  void undefined(std::string reason) { undefined_ = std::move(reason); }

  const std::vector<std::string>& failures() const { return failures_; }
  const std::optional<std::string>& undefined_reason() const { return undefined_; }
  bool used_tensor(const std::string& name) const { return used_tensors_.count(name) != 0; }
  bool used_param(const std::string& key) const { return used_params_.count(key) != 0; }

 private:
  const GoldenCase& golden_;
  Form form_;
  std::set<std::string> used_tensors_, used_params_;
  std::vector<std::string> failures_;
  std::optional<std::string> undefined_;
};

// One layer's runner in both precisions.
struct Runner {
  void (*run_double)(Run<double>&);
  void (*run_float)(Run<float>&);
};
using Registry = std::map<std::string, Runner>;

// ---------------------------------------------------------------------------------------------
// Runners
// ---------------------------------------------------------------------------------------------

// LinearAttention (docs/math.md §2): linear_attn (plain or normalized) and, with `gated`,
// simple_gla.
template <class Scalar>
void run_linear_attention(Run<Scalar>& run, bool gated) {
  using Layer = LinearAttention<Scalar>;
  const Matrix<Scalar> q = run.input("q"), k = run.input("k"), v = run.input("v");
  const Index tokens = q.rows(), dk = q.cols(), dv = v.cols();
  typename Layer::Options options{
      .key_dim = dk,
      .value_dim = dv,
      .scale = run.param_scalar("scale"),
      .normalize = run.has_param("normalize") && run.param_flag("normalize"),
      .chunk_size = run.chunk_size()};
  if (run.has_param("norm_eps")) options.norm_eps = run.param_scalar("norm_eps");
  const Layer layer(options);
  typename Layer::State state = layer.initial_state();
  state.S = run.input_or_zero("initial_state", dk, dv);
  if (options.normalize) state.z = run.input_or_zero("initial_normalizer", 1, dk);
  Vector<Scalar> log_decay;
  if (gated) log_decay = run.gate("log_decay", tokens);
  typename Layer::Inputs in{.q = q, .k = k, .v = v};
  if (gated) in.log_decay.emplace(log_decay);
  run.expect("o", forward(layer, run.form(), in, state));
  run.expect("final_state", state.S);
  if (options.normalize) run.expect("final_normalizer", state.z);
}

template <class Scalar>
void run_linear_attn(Run<Scalar>& run) {
  run_linear_attention(run, /*gated=*/false);
}

template <class Scalar>
void run_simple_gla(Run<Scalar>& run) {
  run_linear_attention(run, /*gated=*/true);
}

// SoftmaxAttention (docs/math.md §1), from an empty KV cache.
template <class Scalar>
void run_softmax_attn(Run<Scalar>& run) {
  using Layer = SoftmaxAttention<Scalar>;
  if (!run.param_flag("causal")) run.golden().fail("only causal softmax attention exists");
  const Matrix<Scalar> q = run.input("q"), k = run.input("k"), v = run.input("v");
  const Index tokens = q.rows(), window = run.param_index("window");
  const Layer layer({.key_dim = q.cols(),
                     .value_dim = v.cols(),
                     .scale = run.param_scalar("scale"),
                     .window = window,
                     .chunk_size = run.chunk_size()});
  typename Layer::State state = layer.initial_state();
  const typename Layer::Inputs in{.q = q, .k = k, .v = v};
  run.expect("o", forward(layer, run.form(), in, state));
  const Index cached = window > 0 ? std::min(tokens, window - 1) : tokens;
  if (state.tokens() != tokens) {
    run.fail("state.tokens() = " + std::to_string(state.tokens()) + ", want " +
             std::to_string(tokens));
  }
  if (state.cached() != cached) {
    run.fail("state.cached() = " + std::to_string(state.cached()) + ", want " +
             std::to_string(cached));
  } else if (state.keys() != k.bottomRows(cached) || state.values() != v.bottomRows(cached)) {
    run.fail("KV cache does not hold the last " + std::to_string(cached) + " keys/values");
  }
}

// DeltaNet (docs/math.md §3): delta_rule and, with `gated`, gated_delta_rule.
template <class Scalar>
void run_delta_net(Run<Scalar>& run, bool gated) {
  using Layer = DeltaNet<Scalar>;
  const Matrix<Scalar> q = run.input("q"), k = run.input("k"), v = run.input("v");
  const Index tokens = q.rows(), dk = q.cols(), dv = v.cols();
  const Layer layer({.key_dim = dk,
                     .value_dim = dv,
                     .scale = run.param_scalar("scale"),
                     .chunk_size = run.chunk_size()});
  typename Layer::State state{run.input_or_zero("initial_state", dk, dv)};
  const Vector<Scalar> beta = run.gate("beta", tokens);
  Vector<Scalar> log_decay;
  if (gated) log_decay = run.gate("log_decay", tokens);
  typename Layer::Inputs in{.q = q, .k = k, .v = v, .beta = GateRef<Scalar>(beta)};
  if (gated) in.log_decay.emplace(log_decay);
  run.expect("o", forward(layer, run.form(), in, state));
  run.expect("final_state", state.S);
}

template <class Scalar>
void run_delta_rule(Run<Scalar>& run) {
  run_delta_net(run, /*gated=*/false);
}

template <class Scalar>
void run_gated_delta_rule(Run<Scalar>& run) {
  run_delta_net(run, /*gated=*/true);
}

// The diagonal-gate layers (docs/math.md §7–§9): gla, kda and dplr_delta_rule, whose
// log_decay (and a, b) are T×dk.
template <class Layer, class Scalar>
typename Layer::State start_state(Run<Scalar>& run, Index dk, Index dv) {
  return {run.input_or_zero("initial_state", dk, dv)};
}

template <class Scalar>
void run_gla(Run<Scalar>& run) {
  using Layer = GatedLinearAttention<Scalar>;
  const Matrix<Scalar> q = run.input("q"), k = run.input("k"), v = run.input("v");
  const Matrix<Scalar> log_decay = run.input("log_decay");
  const Layer layer({.key_dim = q.cols(),
                     .value_dim = v.cols(),
                     .scale = run.param_scalar("scale"),
                     .chunk_size = run.chunk_size()});
  auto state = start_state<Layer>(run, q.cols(), v.cols());
  run.expect("o",
             forward(layer, run.form(), {.q = q, .k = k, .v = v, .log_decay = log_decay}, state));
  run.expect("final_state", state.S);
}

template <class Scalar>
void run_kda(Run<Scalar>& run) {
  using Layer = KimiDeltaAttention<Scalar>;
  const Matrix<Scalar> q = run.input("q"), k = run.input("k"), v = run.input("v");
  const Matrix<Scalar> log_decay = run.input("log_decay");
  const bool l2norm = run.param_flag("qk_l2norm");
  if (l2norm && run.param_scalar("l2norm_eps") != Scalar(1e-6)) {
    run.fail("l2norm_eps must be 1e-6 (the layer's qk_l2norm eps)");
  }
  const Layer layer({.key_dim = q.cols(),
                     .value_dim = v.cols(),
                     .scale = run.param_scalar("scale"),
                     .chunk_size = run.chunk_size(),
                     .qk_l2norm = l2norm});
  auto state = start_state<Layer>(run, q.cols(), v.cols());
  const Vector<Scalar> beta = run.gate("beta", q.rows());
  run.expect("o", forward(layer, run.form(),
                          {.q = q, .k = k, .v = v, .beta = beta, .log_decay = log_decay}, state));
  run.expect("final_state", state.S);
}

template <class Scalar>
void run_dplr_delta_rule(Run<Scalar>& run) {
  using Layer = GeneralizedDeltaRule<Scalar>;
  const Matrix<Scalar> q = run.input("q"), k = run.input("k"), v = run.input("v");
  const Matrix<Scalar> a = run.input("a"), b = run.input("b"), log_decay = run.input("log_decay");
  const Layer layer({.key_dim = q.cols(),
                     .value_dim = v.cols(),
                     .scale = run.param_scalar("scale"),
                     .chunk_size = run.chunk_size()});
  auto state = start_state<Layer>(run, q.cols(), v.cols());
  run.expect("o", forward(layer, run.form(),
                          {.q = q, .k = k, .v = v, .a = a, .b = b, .log_decay = log_decay}, state));
  run.expect("final_state", state.S);
}

// The golden TTT and Titans files fix q's scale and the loss factor; the layers have them
// built in (scale 1; TTT's ½ loss, Titans' full sum).
template <class Scalar>
void expect_param(Run<Scalar>& run, const std::string& key, double want) {
  if (run.param_scalar(key) != static_cast<Scalar>(want)) {
    run.fail("param " + key + " must be " + std::to_string(want) + " for this layer");
  }
}

// TTT-Linear and TTT-MLP (docs/math.md §4), from the file's initial weights.
template <class Scalar, TTTModel Model>
void run_ttt(Run<Scalar>& run) {
  using Layer = TTT<Scalar, Model>;
  const Index b = run.param_index("mini_batch");
  if (run.form() == Form::parallel && run.golden().tensor("q").rows() > b) {
    return run.undefined("T > mini_batch");
  }
  expect_param(run, "scale", 1.0);
  expect_param(run, "loss_grad_factor", 1.0);
  const Matrix<Scalar> q = run.input("q"), k = run.input("k"), v = run.input("v");
  const Index d = q.cols();
  typename Layer::Parameters parameters;
  const std::vector<std::string> names = Model == TTTModel::linear
                                             ? std::vector<std::string>{"W0", "b0"}
                                             : std::vector<std::string>{"W1", "b1", "W2", "b2"};
  for (std::size_t i = 0; i < names.size(); i += 2) {
    parameters.initial.W.push_back(run.input(names[i]));
    parameters.initial.b.push_back(run.input(names[i + 1]));
  }
  parameters.ln_weight = run.input("ln_weight");
  parameters.ln_bias = run.input("ln_bias");
  typename Layer::Options options{
      .key_dim = d, .mini_batch = b, .ln_eps = run.param_scalar("ln_eps")};
  if constexpr (Model == TTTModel::mlp) {
    if (run.param_word("activation") != "gelu_tanh") run.fail("activation must be gelu_tanh");
    options.expansion = run.param_index("hidden") / d;
    if (options.expansion * d != run.param_index("hidden"))
      run.fail("hidden is not a multiple of d");
  }
  const Layer layer(options, parameters);
  typename Layer::State state = layer.initial_state();
  const Vector<Scalar> eta = run.gate("eta", q.rows());
  run.expect("o", forward(layer, run.form(),
                          {.q = q, .k = k, .v = v, .learning_rate = GateRef<Scalar>(eta)}, state));
  const Weights<Scalar> final_weights = layer.current_weights(state);
  for (std::size_t i = 0; i < names.size(); i += 2) {
    const std::string suffix = Model == TTTModel::linear ? "" : std::to_string(i / 2 + 1);
    run.expect("final_W" + suffix, final_weights.W[i / 2]);
    run.expect("final_b" + suffix, final_weights.b[i / 2]);
  }
}

template <class Scalar>
void run_ttt_linear(Run<Scalar>& run) {
  run_ttt<Scalar, TTTModel::linear>(run);
}

template <class Scalar>
void run_ttt_mlp(Run<Scalar>& run) {
  run_ttt<Scalar, TTTModel::mlp>(run);
}

// TitansMemory (docs/math.md §5): titans_linear (depth 1, W_0 = initial_state or 0) and
// titans_mlp (depth 2, W1, W2, no biases).
template <class Scalar>
void run_titans(Run<Scalar>& run, bool mlp) {
  using Layer = TitansMemory<Scalar>;
  const Index b = run.param_index("mini_batch");
  if (run.form() == Form::parallel && run.golden().tensor("q").rows() > b) {
    return run.undefined("T > mini_batch");
  }
  expect_param(run, "scale", 1.0);
  expect_param(run, "loss_grad_factor", 2.0);
  const Matrix<Scalar> q = run.input("q"), k = run.input("k"), v = run.input("v");
  const Index tokens = q.rows(), dk = q.cols(), dv = v.cols();
  typename Layer::Options options{
      .key_dim = dk, .value_dim = dv, .depth = run.param_index("depth"), .mini_batch = b};
  typename Layer::Parameters parameters{
      {}, Matrix<Scalar>::Ones(1, dv), Matrix<Scalar>::Zero(1, dv)};
  std::vector<std::string> names{""};
  if (mlp) {
    if (run.param_word("activation") != "gelu_tanh") run.fail("activation must be gelu_tanh");
    const Index hidden = run.param_index("hidden");
    options.expansion = hidden / dk;
    if (options.expansion * dk != hidden) run.fail("hidden is not a multiple of dk");
    names.clear();
    for (Index l = 1; l <= options.depth; ++l) {
      names.push_back("_W" + std::to_string(l));
      parameters.initial.W.push_back(run.input("W" + std::to_string(l)));
    }
  } else {
    parameters.initial.W.push_back(run.input_or_zero("initial_state", dk, dv));
  }
  const Layer layer(options, parameters);
  typename Layer::State state = layer.initial_state();
  for (std::size_t l = 0; l < names.size(); ++l) {
    const Matrix<Scalar>& W = state.momentum.W[l];
    state.momentum.W[l] = run.input_or_zero("initial_momentum" + names[l], W.rows(), W.cols());
  }
  const Vector<Scalar> theta = run.gate("theta", tokens), alpha = run.gate("alpha", tokens),
                       eta = run.gate("eta", tokens);
  run.expect("o", forward(layer, run.form(),
                          {.q = q,
                           .k = k,
                           .v = v,
                           .learning_rate = GateRef<Scalar>(theta),
                           .forgetting = GateRef<Scalar>(alpha),
                           .momentum_decay = GateRef<Scalar>(eta)},
                          state));
  for (std::size_t l = 0; l < names.size(); ++l) {
    run.expect(mlp ? "final" + names[l] : "final_state", state.current.W[l]);
    run.expect("final_momentum" + names[l], state.momentum.W[l]);
  }
}

template <class Scalar>
void run_titans_linear(Run<Scalar>& run) {
  run_titans(run, /*mlp=*/false);
}

template <class Scalar>
void run_titans_mlp(Run<Scalar>& run) {
  run_titans(run, /*mlp=*/true);
}

// Layer name → runner. Add new layers here (one line each).
const Registry& registry() {
  static const auto* const kRegistry = new Registry{
      {"linear_attn", {run_linear_attn<double>, run_linear_attn<float>}},
      {"simple_gla", {run_simple_gla<double>, run_simple_gla<float>}},
      {"softmax_attn", {run_softmax_attn<double>, run_softmax_attn<float>}},
      {"delta_rule", {run_delta_rule<double>, run_delta_rule<float>}},
      {"gated_delta_rule", {run_gated_delta_rule<double>, run_gated_delta_rule<float>}},
      {"ttt_linear", {run_ttt_linear<double>, run_ttt_linear<float>}},
      {"ttt_mlp", {run_ttt_mlp<double>, run_ttt_mlp<float>}},
      {"titans_linear", {run_titans_linear<double>, run_titans_linear<float>}},
      {"titans_mlp", {run_titans_mlp<double>, run_titans_mlp<float>}},
      {"gla", {run_gla<double>, run_gla<float>}},
      {"kda", {run_kda<double>, run_kda<float>}},
      {"dplr_delta_rule", {run_dplr_delta_rule<double>, run_dplr_delta_rule<float>}},
  };
  return *kRegistry;
}

// Layers with golden files but no runner yet: reported as skip. Any other layer name fails.
const std::set<std::string>& pending_layers() {
  static const auto* const kPending = new std::set<std::string>{};
  return *kPending;
}

// ---------------------------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------------------------

enum class Status { ok, failed, skipped };

struct CaseOutcome {
  std::string name;  // case name, or the file stem if the file did not parse
  Status status = Status::ok;
  std::vector<std::string> failures;  // "<precision> <form>: <what>" or a parse error
  std::set<std::string> notes;        // forms declared undefined
  std::string line;                   // the one stdout line
};

struct Tally {
  std::size_t ok = 0, failed = 0, skipped = 0;
  std::vector<CaseOutcome> cases;

  std::string total_line() const {
    return "golden: " + std::to_string(ok) + " ok, " + std::to_string(failed) + " failed, " +
           std::to_string(skipped) + " skipped";
  }
};

// Runs one (case, form, precision) and appends to `outcome`; returns true if the form ran.
template <class Scalar>
bool run_form(const GoldenCase& golden, void (*runner)(Run<Scalar>&), Form form,
              CaseOutcome& outcome) {
  const std::string where = std::string(kPrecision<Scalar>) + " " + std::string(to_string(form));
  Run<Scalar> run(golden, form);
  try {
    runner(run);
  } catch (const std::exception& error) {
    outcome.failures.push_back(where + ": threw: " + error.what());
    return true;
  }
  if (run.undefined_reason()) {
    outcome.notes.insert(std::string(to_string(form)) + " undefined: " + *run.undefined_reason());
    return false;
  }
  for (const std::string& failure : run.failures())
    outcome.failures.push_back(where + ": " + failure);
  for (const auto& [name, value] : golden.tensors) {
    if (!run.used_tensor(name)) {
      outcome.failures.push_back(where + ": tensor '" + name + "' not used by the runner");
    }
  }
  for (const auto& [key, value] : golden.params) {
    if (!run.used_param(key)) {
      outcome.failures.push_back(where + ": param '" + key + "' not used by the runner");
    }
  }
  return true;
}

std::string format_line(const CaseOutcome& outcome, const std::string& layer) {
  std::string line = "golden " + outcome.name;
  switch (outcome.status) {
    case Status::skipped: return line + " skip (" + layer + " not implemented yet)";
    case Status::failed: {
      constexpr std::size_t kShown = 3;
      line += " FAIL: ";
      for (std::size_t i = 0; i < std::min(kShown, outcome.failures.size()); ++i) {
        line += (i > 0 ? "; " : "") + outcome.failures[i];
      }
      if (outcome.failures.size() > kShown) {
        line += "; (+" + std::to_string(outcome.failures.size() - kShown) + " more)";
      }
      return line;
    }
    case Status::ok: break;
  }
  line += " ok";
  if (!outcome.notes.empty()) {
    line += " (";
    for (auto it = outcome.notes.begin(); it != outcome.notes.end(); ++it) {
      line += (it != outcome.notes.begin() ? "; " : "") + *it;
    }
    line += ")";
  }
  return line;
}

// One case: every form, both precisions.
CaseOutcome run_case(const GoldenCase& golden, const Registry& runners,
                     const std::set<std::string>& pending) {
  CaseOutcome outcome;
  outcome.name = golden.name;
  const auto runner = runners.find(golden.layer);
  if (runner == runners.end()) {
    if (pending.count(golden.layer) != 0) {
      outcome.status = Status::skipped;
    } else {
      outcome.failures.push_back("unknown layer '" + golden.layer +
                                 "' (no runner and not listed as pending)");
    }
  } else {
    int defined = 0;
    for (const Form form : all_forms) {
      defined += run_form(golden, runner->second.run_double, form, outcome) ? 1 : 0;
      defined += run_form(golden, runner->second.run_float, form, outcome) ? 1 : 0;
    }
    if (defined == 0) outcome.failures.push_back("no form is defined for this case");
  }
  if (!outcome.failures.empty()) outcome.status = Status::failed;
  outcome.line = format_line(outcome, golden.layer);
  return outcome;
}

// Every file: one line per case to `out`, then the total line.
Tally run_golden_files(const std::vector<fs::path>& files, const Registry& runners,
                       const std::set<std::string>& pending, std::ostream& out) {
  Tally tally;
  for (const fs::path& file : files) {
    CaseOutcome outcome;
    try {
      outcome = run_case(load_golden(file), runners, pending);
    } catch (const std::exception& error) {  // the file did not parse
      outcome.name = file.stem().string();
      outcome.status = Status::failed;
      outcome.failures = {error.what()};
      outcome.line = format_line(outcome, "");
    }
    out << outcome.line << "\n";
    switch (outcome.status) {
      case Status::ok: ++tally.ok; break;
      case Status::failed: ++tally.failed; break;
      case Status::skipped: ++tally.skipped; break;
    }
    tally.cases.push_back(std::move(outcome));
  }
  out << tally.total_line() << std::endl;
  return tally;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A fresh directory under the system temp dir, removed on destruction.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
    path_ = fs::temp_directory_path() /
            ("seqmem_golden_test_" + std::to_string(stamp) + "_" + std::to_string(counter++));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const fs::path& path() const { return path_; }
  void write(const std::string& file, const std::string& text) const {
    std::ofstream(path_ / file) << text;
  }

 private:
  fs::path path_;
};

// A small valid file of layer `layer` (tensors x and o = x, final_y = 2x).
std::string toy_file(const std::string& name) {
  const std::string body =
      "source nobody/nothing@000000000000 none\n"
      "param scale 1.0\n"
      "tensor x 2 3\n"
      "0.5 -1 2\n"
      "1e-3 0 -7.25\n"
      "tensor o 2 3\n"
      "0.5 -1 2\n"
      "1e-3 0 -7.25\n"
      "tensor final_y 2 3\n"
      "1 -2 4\n"
      "2e-3 0 -14.5\n"
      "end\n";
  return "seqmem-golden 1\ncase " + name + "\n" + body;
}

// Toy runners for the driver tests: the full one, one that forgets final_y, and one that
// declares the parallel form undefined.
template <class Scalar>
void run_toy(Run<Scalar>& run) {
  const Matrix<Scalar> x = run.input("x") * run.param_scalar("scale");
  run.expect("o", x);
  run.expect("final_y", Matrix<Scalar>(Scalar(2) * x));
}

template <class Scalar>
void run_toy_forgets_final(Run<Scalar>& run) {
  run.param_scalar("scale");
  run.expect("o", run.input("x"));
}

template <class Scalar>
void run_toy_no_parallel(Run<Scalar>& run) {
  if (run.form() == Form::parallel) return run.undefined("toy has no parallel form");
  run_toy(run);
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

TEST(Golden, AllCases) {
  std::vector<fs::path> files;
  try {
    files = golden_files();
  } catch (const std::exception& error) {
    FAIL() << error.what();
  }
  const Tally tally = run_golden_files(files, registry(), pending_layers(), std::cout);
  EXPECT_EQ(tally.ok + tally.failed + tally.skipped, files.size());
  std::map<std::string, int> cases_per_layer;
  for (const CaseOutcome& outcome : tally.cases) {
    ++cases_per_layer[outcome.name.substr(0, outcome.name.find("__"))];
    if (outcome.status != Status::failed) continue;
    std::string all;
    for (const std::string& failure : outcome.failures)
      all += "\n  " + failure;
    ADD_FAILURE() << "golden " << outcome.name << " failed:" << all;
  }
  for (const auto& [layer, runner] : registry()) {
    EXPECT_GT(cases_per_layer[layer], 0) << "no golden case for layer " << layer;
  }
}

// The comparison can fail, for one case of every layer with a runner (the first by name in
// the golden directory, whichever files it holds): an `o` value moved by 1e-6·(1 + max|o|), far
// outside the double bound but inside the float one, fails exactly the defined double forms;
// a final tensor moved likewise fails them too.
TEST(Golden, PerturbedExpectationFails) {
  std::map<std::string, fs::path> first_case;
  for (const fs::path& file : golden_files()) {
    const std::string layer = file.stem().string().substr(0, file.stem().string().find("__"));
    if (registry().count(layer) != 0) first_case.emplace(layer, file);
  }
  ASSERT_FALSE(first_case.empty()) << "no golden case with a runner in " << golden_dir();
  int with_final_state = 0;
  for (const auto& [layer, file] : first_case) {
    SCOPED_TRACE(file.string());
    GoldenCase golden = load_golden(file);
    const CaseOutcome clean = run_case(golden, registry(), pending_layers());
    ASSERT_EQ(clean.status, Status::ok) << clean.line;
    const std::size_t defined_forms = std::size(all_forms) - clean.notes.size();

    Matrix<double>& o = golden.tensors.at("o");
    const Index row = o.rows() / 2, col = o.cols() / 2;
    o(row, col) += 1e-6 * (1.0 + o.cwiseAbs().maxCoeff());
    const CaseOutcome outcome = run_case(golden, registry(), pending_layers());
    EXPECT_EQ(outcome.status, Status::failed);
    ASSERT_EQ(outcome.failures.size(), defined_forms) << outcome.line;
    const std::string where = "at (" + std::to_string(row) + ", " + std::to_string(col) + ")";
    for (const std::string& failure : outcome.failures) {
      EXPECT_TRUE(contains(failure, "double ")) << failure;
      EXPECT_TRUE(contains(failure, ": o: max |got - want|")) << failure;
      EXPECT_TRUE(contains(failure, where)) << failure;
    }
    EXPECT_TRUE(contains(outcome.line, "golden " + golden.name + " FAIL: ")) << outcome.line;

    // The final state is compared too (softmax attention's cases have none).
    o = load_golden(file).tensor("o");
    const auto final_tensor =
        std::find_if(golden.tensors.begin(), golden.tensors.end(),
                     [](const auto& tensor) { return tensor.first.rfind("final_", 0) == 0; });
    if (final_tensor == golden.tensors.end()) continue;
    ++with_final_state;
    Matrix<double>& state = final_tensor->second;
    state(state.rows() / 2, state.cols() / 2) += 1e-6 * (1.0 + state.cwiseAbs().maxCoeff());
    const CaseOutcome state_outcome = run_case(golden, registry(), pending_layers());
    ASSERT_EQ(state_outcome.failures.size(), defined_forms) << state_outcome.line;
    for (const std::string& failure : state_outcome.failures) {
      EXPECT_TRUE(contains(failure, "double ")) << failure;
      EXPECT_TRUE(contains(failure, final_tensor->first + ": ")) << failure;
    }
  }
  EXPECT_GT(with_final_state, 0) << "no case with a final_* tensor";
}

TEST(Golden, UnknownLayerFailsPendingLayerSkips) {
  const TempDir dir;
  dir.write("foo__x.txt", toy_file("foo__x"));
  dir.write("later__y.txt", toy_file("later__y"));
  dir.write("README.md", "not a golden file\n");
  std::ostringstream out;
  const Tally tally = run_golden_files(golden_files(dir.path()), registry(), {"later"}, out);
  EXPECT_EQ(tally.ok, 0u);
  EXPECT_EQ(tally.failed, 1u);
  EXPECT_EQ(tally.skipped, 1u);
  EXPECT_TRUE(contains(out.str(), "golden later__y skip (later not implemented yet)\n"))
      << out.str();
  EXPECT_TRUE(contains(out.str(), "golden foo__x FAIL: unknown layer 'foo'")) << out.str();
  EXPECT_TRUE(contains(out.str(), "golden: 0 ok, 1 failed, 1 skipped\n")) << out.str();
}

TEST(Golden, MalformedFileFailsWithItsName) {
  const TempDir dir;
  std::string text = toy_file("linear_attn__broken");
  text.replace(text.find("-1 2"), 4, "-1 zwei");  // line 6
  dir.write("linear_attn__broken.txt", text);
  dir.write("toy__fine.txt", toy_file("toy__fine"));
  const Registry toy = {{"toy", {run_toy<double>, run_toy<float>}}};
  std::ostringstream out;
  const Tally tally = run_golden_files(golden_files(dir.path()), toy, {}, out);
  EXPECT_EQ(tally.ok, 1u) << out.str();
  EXPECT_EQ(tally.failed, 1u) << out.str();
  EXPECT_TRUE(contains(out.str(), "golden linear_attn__broken FAIL: ")) << out.str();
  EXPECT_TRUE(contains(out.str(), "linear_attn__broken.txt:6: tensor 'x' row 0 col 2: 'zwei'"))
      << out.str();
  EXPECT_TRUE(contains(out.str(), "golden toy__fine ok\n")) << out.str();
}

TEST(Golden, DriverFlagsIgnoredTensorsAndReportsUndefinedForms) {
  const GoldenCase golden = [] {
    std::istringstream in(toy_file("toy__case"));
    return parse_golden(in, "toy__case.txt");
  }();
  const CaseOutcome forgot = run_case(
      golden, {{"toy", {run_toy_forgets_final<double>, run_toy_forgets_final<float>}}}, {});
  EXPECT_EQ(forgot.status, Status::failed);
  EXPECT_EQ(forgot.failures.size(), 6u) << forgot.line;  // 3 forms × 2 precisions
  EXPECT_TRUE(contains(forgot.line, "tensor 'final_y' not used by the runner")) << forgot.line;

  const CaseOutcome partial =
      run_case(golden, {{"toy", {run_toy_no_parallel<double>, run_toy_no_parallel<float>}}}, {});
  EXPECT_EQ(partial.status, Status::ok) << partial.line;
  EXPECT_EQ(partial.line, "golden toy__case ok (parallel undefined: toy has no parallel form)");
}

TEST(Golden, ParserRejectsMalformedInput) {
  const std::string good = toy_file("toy__case");
  const auto error_of = [](const std::string& text) -> std::string {
    std::istringstream in(text);
    try {
      parse_golden(in, "f.txt");
    } catch (const std::runtime_error& error) {
      return error.what();
    }
    return "no error";
  };
  const auto edited = [&](const std::string& from, const std::string& to) {
    std::string text = good;
    text.replace(text.find(from), from.size(), to);
    return text;
  };
  EXPECT_EQ(error_of(good), "no error");
  EXPECT_TRUE(contains(error_of(""), "f.txt:0: empty file"));
  EXPECT_TRUE(contains(error_of(edited("seqmem-golden 1", "seqmem-golden 2")), "f.txt:1: "));
  EXPECT_TRUE(contains(error_of(edited("case toy__case", "case toy")), "f.txt:2: "));
  EXPECT_TRUE(contains(error_of(edited("0.5 -1 2\n1e-3", "0.5 -1\n1e-3")),
                       "f.txt:6: tensor 'x' row 0: expected 3 numbers, got 2"));
  EXPECT_TRUE(contains(error_of(edited("-7.25", "nan")), "f.txt:7: "));
  EXPECT_TRUE(
      contains(error_of(edited("tensor o 2 3", "tensor x 2 3")), "f.txt:8: duplicate tensor 'x'"));
  EXPECT_TRUE(contains(error_of(edited("tensor o 2 3", "tensor o 0 3")), "f.txt:8: "));
  EXPECT_TRUE(contains(error_of(edited("param scale", "parm scale")), "f.txt:4: unknown keyword"));
  EXPECT_TRUE(contains(error_of(edited("end\n", "")), "missing 'end'"));
  EXPECT_TRUE(contains(error_of(good + "tensor z 1 1\n"), "f.txt:15: text after 'end'"));

  std::istringstream in(good);
  const GoldenCase golden = parse_golden(in, "f.txt");
  EXPECT_EQ(golden.layer, "toy");
  EXPECT_EQ(golden.param_double("scale"), 1.0);
  EXPECT_THROW(golden.param_int("scale"), std::runtime_error);
  EXPECT_THROW(golden.tensor("missing"), std::runtime_error);
  EXPECT_EQ(golden.tensor("x")(1, 0), 1e-3);
}

TEST(Golden, GoldenFilesRejectsMissingOrEmptyDir) {
  const TempDir dir;
  EXPECT_THROW(golden_files(dir.path() / "absent"), std::runtime_error);
  dir.write("README.md", "only a readme\n");
  EXPECT_THROW(golden_files(dir.path()), std::runtime_error);
}

TEST(Golden, NearChecksShapeBoundAndNonFinite) {
  const Matrix<double> want = (Matrix<double>(2, 2) << 1.0, -3.0, 0.5, 2.0).finished();
  Matrix<double> got = want;
  EXPECT_TRUE(near(got, want, 1e-9));
  got(1, 0) += 3.9e-9;  // bound 1e-9·(1 + 3)
  EXPECT_TRUE(near(got, want, 1e-9));
  got(1, 0) += 0.2e-9;
  const auto result = near(got, want, 1e-9);
  EXPECT_FALSE(result);
  EXPECT_TRUE(contains(result.message(), "at (1, 0)")) << result.message();
  EXPECT_FALSE(near(Matrix<double>(want.leftCols(1)), want, 1.0));
  Matrix<float> nan = want.cast<float>();
  nan(0, 1) = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(near(nan, want, 1e-3));
}

}  // namespace
}  // namespace seqmem::golden
