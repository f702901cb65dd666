/// @file
/// Peak memory of one softmax-attention call per form (Linux: getrusage ru_maxrss).
///
///   softmax_memory [--T=16384] [--d=64] [--forms=parallel,chunkwise,recurrent]
///
/// For each form the tool forks a fresh child process, so no form sees another's peak. The
/// child allocates and fills the call's inputs and output (q, k, v, out: T×d float each),
/// reads its peak resident set size (`baseline`), runs ONE `forward` from the initial state,
/// and reads the peak again. `delta` = peak − baseline is the extra memory the call needed:
/// the KV cache it appends (grown by doubling), the scaled copy of q, and the form's own
/// workspace — the T×T score matrix of the parallel form, one C×C tile of the chunkwise form,
/// one score vector of the recurrent form. ru_maxrss counts pages actually touched, in KiB.
/// The parent also reports the child's peak as seen by wait4 (the same number, cross-check).
///
/// Output: one JSON object per line on stdout, e.g.
///   {"form": "parallel", "T": 16384, "d": 64, "baseline_kib": ..., "peak_kib": ...,
///    "delta_kib": ..., "child_maxrss_kib": ..., "seconds": ..., "expected_workspace_kib": ...}
/// `expected_workspace_kib` is the form's score storage alone (T² floats; C² floats; T floats).

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <seqmem/seqmem.hpp>

namespace {

using seqmem::Form;
using seqmem::Index;

long max_rss_kib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

seqmem::Matrix<float> random_normal(std::mt19937_64& rng, Index rows, Index cols, double stddev) {
  std::normal_distribution<double> dist(0.0, stddev);
  seqmem::Matrix<float> m(rows, cols);
  for (Index i = 0; i < m.size(); ++i)
    m.data()[i] = static_cast<float>(dist(rng));
  return m;
}

/// Runs in the child: measures one call, writes its JSON fields (no braces) to `fd`.
int measure(Form form, Index T, Index d, int fd) {
  const seqmem::SoftmaxAttention<float> layer({.key_dim = d, .value_dim = d});
  std::mt19937_64 rng(0x5e9e3);
  const double qk = 1.0 / std::sqrt(std::sqrt(static_cast<double>(d)));
  const seqmem::Matrix<float> q = random_normal(rng, T, d, qk);
  const seqmem::Matrix<float> k = random_normal(rng, T, d, qk);
  const seqmem::Matrix<float> v = random_normal(rng, T, d, 1.0);
  seqmem::Matrix<float> out = seqmem::Matrix<float>::Zero(T, d);  // touched: resident
  auto state = layer.initial_state();

  const long baseline = max_rss_kib();
  const auto start = std::chrono::steady_clock::now();
  layer.forward(form, {.q = q, .k = k, .v = v}, state, out);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const long peak = max_rss_kib();

  const double C = static_cast<double>(layer.options().chunk_size);
  const double Td = static_cast<double>(T);
  const double expected_floats = form == Form::parallel    ? Td * Td
                                 : form == Form::chunkwise ? C * C
                                                           : Td;
  const int written =
      dprintf(fd,
              "\"form\": \"%s\", \"T\": %ld, \"d\": %ld, \"baseline_kib\": %ld, \"peak_kib\": %ld, "
              "\"delta_kib\": %ld, \"seconds\": %.4f, \"expected_workspace_kib\": %.0f, "
              "\"checksum\": %.6g",
              std::string(seqmem::to_string(form)).c_str(), static_cast<long>(T),
              static_cast<long>(d), baseline, peak, peak - baseline, seconds,
              expected_floats * 4.0 / 1024.0, static_cast<double>(out.sum()));
  return written > 0 ? 0 : 1;
}

bool parse_form(std::string_view name, Form& form) {
  for (const Form f : seqmem::all_forms) {
    if (seqmem::to_string(f) == name) {
      form = f;
      return true;
    }
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  Index T = 16384, d = 64;
  std::vector<Form> forms{Form::parallel, Form::chunkwise, Form::recurrent};
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg(argv[i]);
    if (arg.starts_with("--T=")) {
      T = std::atol(argv[i] + 4);
    } else if (arg.starts_with("--d=")) {
      d = std::atol(argv[i] + 4);
    } else if (arg.starts_with("--forms=")) {
      forms.clear();
      std::string_view list = arg.substr(8);
      while (!list.empty()) {
        const std::size_t comma = list.find(',');
        Form form{};
        if (!parse_form(list.substr(0, comma), form)) {
          std::fprintf(stderr, "softmax_memory: unknown form in %s\n", argv[i]);
          return 2;
        }
        forms.push_back(form);
        list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
      }
    } else {
      std::fprintf(stderr,
                   "usage: softmax_memory [--T=16384] [--d=64] "
                   "[--forms=parallel,chunkwise,recurrent]\n");
      return 2;
    }
  }
  if (T <= 0 || d <= 0) {
    std::fprintf(stderr, "softmax_memory: T and d must be positive\n");
    return 2;
  }

  int failures = 0;
  for (const Form form : forms) {
    std::fflush(stdout);
    int fds[2];
    if (pipe(fds) != 0) {
      std::perror("softmax_memory: pipe");
      return 1;
    }
    const pid_t pid = fork();
    if (pid < 0) {
      std::perror("softmax_memory: fork");
      return 1;
    }
    if (pid == 0) {
      close(fds[0]);
      int rc = 1;
      try {
        rc = measure(form, T, d, fds[1]);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "softmax_memory: %s\n", e.what());
      }
      close(fds[1]);
      _exit(rc);
    }
    close(fds[1]);
    std::string fields;
    char buffer[512];
    for (ssize_t n; (n = read(fds[0], buffer, sizeof buffer)) > 0;) {
      fields.append(buffer, static_cast<std::size_t>(n));
    }
    close(fds[0]);
    int status = 0;
    rusage usage{};
    if (wait4(pid, &status, 0, &usage) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      std::fprintf(stderr, "softmax_memory: the %s child failed\n",
                   std::string(seqmem::to_string(form)).c_str());
      ++failures;
      continue;
    }
    std::printf("{%s, \"child_maxrss_kib\": %ld}\n", fields.c_str(), usage.ru_maxrss);
    std::fflush(stdout);
  }
  return failures == 0 ? 0 : 1;
}
