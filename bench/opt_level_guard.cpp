/// @file
/// The cases that once fell off a cliff at -O2 (issue 17: TTT-Linear's recurrent form took 2.4×
/// its -O3 time), timed by one small program that bench/CMakeLists.txt compiles twice, as
/// `opt_level_guard_o2` (-O2) and `opt_level_guard_o3` (-O3). bench/opt_level_guard.py runs the
/// two alternately and checks, per case, -O2 time ÷ -O3 time against a wide margin
/// (ctest bench.ratio_guard.opt_level).
///
///   opt_level_guard_o3 [--repetitions=N] [--min-time=SECONDS] [--filter=SUBSTRING]
///
/// Prints one line per case, `<name> <best ns per token>` (CPU time of the thread), the best of
/// N repetitions of at least SECONDS each (defaults 5 and 0.05): interference from other processes
/// only slows a repetition down. Small sizes, so the two programs together run in well under 20 s.
///
/// SEQMEM_GUARD_BREAK_O2 (a compile definition, for checking that the guard fails) makes the
/// -O2 program spin for as long again as every TTT-Linear recurrent call took.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <seqmem/seqmem.hpp>

namespace {

using seqmem::Form;
using seqmem::Index;
using Matrix = seqmem::Matrix<float>;
using Clock = std::chrono::steady_clock;
using Rng = std::mt19937_64;

Matrix random_matrix(Rng& rng, Index rows, Index cols, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  Matrix m(rows, cols);
  for (Index i = 0; i < m.size(); ++i)
    m.data()[i] = dist(rng);
  return m;
}

/// Rows scaled to unit length (keys of the delta-rule layers).
Matrix unit_rows(Matrix m) {
  m.rowwise().normalize();
  return m;
}

/// One guarded case: `run` does the timed work once and returns how many tokens it processed.
struct Case {
  std::string name;
  std::function<Index()> run;
};

/// The state a decode case starts every burst from: `prompt_tokens` tokens through chunkwise.
constexpr Index kPrompt = 512;
constexpr Index kDecodeSteps = 16;

/// Prefill + kDecodeSteps single-token recurrent calls; each run restores the prefilled state
/// (a copy, cheap next to the steps) and decodes the same tokens.
template <class Layer, class MakeInputs>
Case decode_case(std::string name, Layer layer, MakeInputs make_inputs) {
  struct Data {
    Layer layer;
    typename Layer::State prefilled, state;
    std::vector<Matrix> inputs;  // owners of every token's q, k, v, gates
    std::vector<typename Layer::Inputs> tokens;
    Matrix out;
  };
  auto data = std::make_shared<Data>(Data{std::move(layer), {}, {}, {}, {}, {}});
  data->inputs.reserve(64 * kDecodeSteps);  // no reallocation: the views stay valid
  Rng rng(17);
  data->prefilled = data->layer.initial_state();
  {
    std::vector<Matrix> owner;
    owner.reserve(16);
    const auto prompt = make_inputs(rng, kPrompt, owner);
    data->layer.forward(Form::chunkwise, prompt, data->prefilled);
  }
  for (Index i = 0; i < kDecodeSteps; ++i)
    data->tokens.push_back(make_inputs(rng, 1, data->inputs));
  data->out.resize(1, data->layer.output_dim());
  return {std::move(name), [data] {
            data->state = data->prefilled;
            for (const auto& token : data->tokens)
              data->layer.forward(Form::recurrent, token, data->state, data->out);
            return kDecodeSteps;
          }};
}

/// One call of `T` tokens through `form` from a fresh state.
template <class Layer, class MakeInputs>
Case sequence_case(std::string name, Layer layer, Form form, Index T, MakeInputs make_inputs,
                   [[maybe_unused]] bool spin_at_o2 = false) {
  struct Data {
    std::vector<Matrix> owner;
    std::optional<typename Layer::Inputs> inputs;
    Matrix out;
  };
  Rng rng(5);
  auto data = std::make_shared<Data>();
  data->owner.reserve(16);  // no reallocation: the views stay valid
  data->inputs.emplace(make_inputs(rng, T, data->owner));
  data->out.resize(T, layer.output_dim());
  return {std::move(name), [data, layer = std::move(layer), form, T, spin_at_o2] {
            [[maybe_unused]] const auto start = Clock::now();
            auto state = layer.initial_state();
            layer.forward(form, *data->inputs, state, data->out);
#if defined(SEQMEM_GUARD_BREAK_O2) && defined(SEQMEM_GUARD_O2)
            // The deliberately broken -O2 program: this case takes twice its time.
            if (spin_at_o2) {
              const auto spent = Clock::now() - start;
              while (Clock::now() - start < 2 * spent) {
              }
            }
#else
            (void)spin_at_o2;
#endif
            return T;
          }};
}

/// `owner` keeps the matrices the returned views point into.
Matrix& own(std::vector<Matrix>& owner, Matrix m) {
  owner.push_back(std::move(m));
  return owner.back();
}

std::vector<Case> make_cases() {
  std::vector<Case> cases;
  constexpr Index d = 64, D = 128;

  cases.push_back(sequence_case(
      "ttt_linear/recurrent/T:256/d:64", seqmem::TTTLinear<float>({.key_dim = d}), Form::recurrent,
      256,
      [](Rng& rng, Index T, std::vector<Matrix>& o) {
        return seqmem::TTTLinear<float>::Inputs{
            .q = own(o, random_matrix(rng, T, d, -1, 1)),
            .k = own(o, random_matrix(rng, T, d, -1, 1)),
            .v = own(o, random_matrix(rng, T, d, -1, 1)),
            .learning_rate = seqmem::GateRef<float>(own(o, random_matrix(rng, T, 1, 0, 1.f / d)))};
      },
      true));

  cases.push_back(sequence_case(
      "titans_L2/recurrent/T:256/d:64",
      seqmem::TitansMemory<float>({.key_dim = d, .value_dim = d, .depth = 2}), Form::recurrent, 256,
      [](Rng& rng, Index T, std::vector<Matrix>& o) {
        return seqmem::TitansMemory<float>::Inputs{
            .q = own(o, random_matrix(rng, T, d, -1, 1)),
            .k = own(o, unit_rows(random_matrix(rng, T, d, -1, 1))),
            .v = own(o, random_matrix(rng, T, d, -1, 1)),
            .learning_rate =
                seqmem::GateRef<float>(own(o, random_matrix(rng, T, 1, 0.005f, 0.05f))),
            .forgetting = seqmem::GateRef<float>(own(o, random_matrix(rng, T, 1, 0, 0.2f))),
            .momentum_decay =
                seqmem::GateRef<float>(own(o, random_matrix(rng, T, 1, 0.5f, 0.95f)))};
      }));

  const auto delta_inputs = [](Index width) {
    return [width](Rng& rng, Index T, std::vector<Matrix>& o) {
      return seqmem::DeltaNet<float>::Inputs{
          .q = own(o, random_matrix(rng, T, width, -0.3f, 0.3f)),
          .k = own(o, unit_rows(random_matrix(rng, T, width, -1, 1))),
          .v = own(o, random_matrix(rng, T, width, -1, 1)),
          .beta = seqmem::GateRef<float>(own(o, random_matrix(rng, T, 1, 0, 1))),
          .log_decay = seqmem::GateRef<float>(own(o, random_matrix(rng, T, 1, -0.1f, -0.001f)))};
    };
  };
  cases.push_back(sequence_case("gated_delta_net/chunkwise/T:1024/d:64",
                                seqmem::DeltaNet<float>({.key_dim = d, .value_dim = d}),
                                Form::chunkwise, 1024, delta_inputs(d)));
  cases.push_back(decode_case("gated_delta_net/decode/d:128",
                              seqmem::DeltaNet<float>({.key_dim = D, .value_dim = D}),
                              delta_inputs(D)));

  cases.push_back(decode_case(
      "linear_attention_gated/decode/d:128",
      seqmem::LinearAttention<float>({.key_dim = D, .value_dim = D}),
      [](Rng& rng, Index T, std::vector<Matrix>& o) {
        return seqmem::LinearAttention<float>::Inputs{
            .q = own(o, random_matrix(rng, T, D, -0.3f, 0.3f)),
            .k = own(o, random_matrix(rng, T, D, -0.3f, 0.3f)),
            .v = own(o, random_matrix(rng, T, D, -1, 1)),
            .log_decay = seqmem::GateRef<float>(own(o, random_matrix(rng, T, 1, -0.1f, -0.001f)))};
      }));

  cases.push_back(decode_case("generalized_delta_rule/decode/d:128",
                              seqmem::GeneralizedDeltaRule<float>({.key_dim = D, .value_dim = D}),
                              [](Rng& rng, Index T, std::vector<Matrix>& o) {
                                Matrix kappa = unit_rows(random_matrix(rng, T, D, -1, 1));
                                Matrix alpha = random_matrix(rng, T, D, 0, 1);
                                return seqmem::GeneralizedDeltaRule<float>::Inputs{
                                    .q = own(o, random_matrix(rng, T, D, -0.3f, 0.3f)),
                                    .k = own(o, random_matrix(rng, T, D, -0.3f, 0.3f)),
                                    .v = own(o, random_matrix(rng, T, D, -1, 1)),
                                    .a = own(o, -kappa),
                                    .b = own(o, (kappa.array() * alpha.array()).matrix()),
                                    .log_decay = own(o, random_matrix(rng, T, D, -0.6f, -0.01f))};
                              }));

  // The per-channel decay exponents of the diagonal-gate chunkwise forms (detail/channel_decay.hpp)
  // once ran as a scalar loop at -O2.
  cases.push_back(
      sequence_case("kda/chunkwise/T:1024/d:64",
                    seqmem::KimiDeltaAttention<float>({.key_dim = d, .value_dim = d}),
                    Form::chunkwise, 1024, [](Rng& rng, Index T, std::vector<Matrix>& o) {
                      return seqmem::KimiDeltaAttention<float>::Inputs{
                          .q = own(o, random_matrix(rng, T, d, -0.3f, 0.3f)),
                          .k = own(o, unit_rows(random_matrix(rng, T, d, -1, 1))),
                          .v = own(o, random_matrix(rng, T, d, -1, 1)),
                          .beta = seqmem::GateRef<float>(own(o, random_matrix(rng, T, 1, 0, 1))),
                          .log_decay = own(o, random_matrix(rng, T, d, -0.5f, -0.001f))};
                    }));
  return cases;
}

/// Seconds of CPU time of this thread (everything runs on it): on a busy machine the wall time
/// also counts the other processes' turns. Wall time where there is no such clock.
double cpu_seconds() {
#if defined(CLOCK_THREAD_CPUTIME_ID)
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
#else
  return std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
#endif
}

/// Best nanoseconds (CPU time) per token over `repetitions` repetitions of at least `min_time`
/// seconds.
double best_ns_per_token(const Case& c, int repetitions, double min_time) {
  c.run();  // warm-up: first-touch allocations, caches
  double best = std::numeric_limits<double>::infinity();
  for (int r = 0; r < repetitions; ++r) {
    Index tokens = 0;
    const double start = cpu_seconds();
    double seconds = 0;
    do {
      tokens += c.run();
      seconds = cpu_seconds() - start;
    } while (seconds < min_time);
    best = std::min(best, seconds * 1e9 / static_cast<double>(tokens));
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  int repetitions = 5;
  double min_time = 0.05;
  std::string filter;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg(argv[i]);
    if (arg.starts_with("--repetitions=")) {
      repetitions = std::max(1, std::atoi(argv[i] + 14));
    } else if (arg.starts_with("--min-time=")) {
      min_time = std::atof(argv[i] + 11);
    } else if (arg.starts_with("--filter=")) {
      filter = std::string(arg.substr(9));
    } else {
      std::fprintf(stderr, "usage: %s [--repetitions=N] [--min-time=SECONDS] [--filter=S]\n",
                   argv[0]);
      return 2;
    }
  }
  for (const Case& c : make_cases()) {
    if (!filter.empty() && c.name.find(filter) == std::string::npos) continue;
    std::printf("%s %.1f\n", c.name.c_str(), best_ns_per_token(c, repetitions, min_time));
    std::fflush(stdout);
  }
  return 0;
}
