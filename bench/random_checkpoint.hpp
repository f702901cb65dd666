#pragma once

/// @file
/// Random checkpoints for benchmarks: a safetensors file (F32, held in memory) with every
/// tensor of a spec list (e.g. a layer's `tensor_specs(config)`), filled by name with values
/// in the range a trained or freshly initialized layer has, so that every gate works in its
/// non-saturated range:
///
///   `A_log`                       log U[1, 16]                (Mamba-style decay rates)
///   `dt_bias`                     softplus⁻¹(dt), dt log-uniform in [1e-3, 1e-1]
///   `*norm*.weight`               U[0.9, 1.1]                 (norm weights ≈ 1)
///   `*conv1d.weight` [C, 1, K]    U[−1/√K, 1/√K]              (PyTorch's Conv1d init)
///   other 2-D `*.weight` [out, in] N(0, 1/in)                  (linear weights)
///   anything else                 N(0, 0.02²)                 (biases and the like)

#include <cmath>
#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <seqmem/checkpoint.hpp>

namespace seqmem::bench {

/// One value for tensor `name` of shape `shape` (see the file comment).
inline double random_parameter(std::string_view name, const std::vector<Index>& shape,
                               std::mt19937_64& rng) {
  const auto ends_with = [name](std::string_view tail) { return name.ends_with(tail); };
  const auto uniform = [&rng](double lo, double hi) {
    return std::uniform_real_distribution<double>(lo, hi)(rng);
  };
  const auto normal = [&rng](double stddev) {
    return std::normal_distribution<double>(0.0, stddev)(rng);
  };
  if (ends_with("A_log")) return std::log(uniform(1.0, 16.0));
  if (ends_with("dt_bias")) {
    const double dt = std::exp(uniform(std::log(1e-3), std::log(1e-1)));
    return dt + std::log(-std::expm1(-dt));  // softplus(dt_bias) = dt
  }
  if (ends_with(".weight") && name.find("norm") != std::string_view::npos) {
    return uniform(0.9, 1.1);
  }
  if (ends_with("conv1d.weight") && shape.size() == 3) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(shape[2]));
    return uniform(-bound, bound);
  }
  if (ends_with(".weight") && shape.size() == 2) {
    return normal(1.0 / std::sqrt(static_cast<double>(shape[1])));
  }
  return normal(0.02);
}

/// The bytes of a safetensors file holding every tensor of `specs` (as `prefix` + name),
/// F32, random by name (see the file comment), the same for the same `seed`.
inline std::string random_safetensors(const std::vector<TensorSpec>& specs, std::uint64_t seed,
                                      const std::string& prefix = "") {
  std::mt19937_64 rng(seed);
  nlohmann::json header = nlohmann::json::object();
  std::string data;
  for (const TensorSpec& spec : specs) {
    Index count = 1;
    for (const Index n : spec.shape)
      count *= n;
    const std::size_t begin = data.size();
    data.resize(begin + static_cast<std::size_t>(count) * sizeof(float));
    for (Index i = 0; i < count; ++i) {
      const auto value = static_cast<float>(random_parameter(spec.name, spec.shape, rng));
      std::memcpy(data.data() + begin + static_cast<std::size_t>(i) * sizeof(float), &value,
                  sizeof(float));  // little-endian machines only, as the benchmarks run on
    }
    header[prefix + spec.name] = {
        {"dtype", "F32"}, {"shape", spec.shape}, {"data_offsets", {begin, data.size()}}};
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // data block 8-byte aligned, as writers do
  std::string out(8, '\0');
  const std::uint64_t n = json.size();
  for (int i = 0; i < 8; ++i)
    out[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + json + data;
}

/// `random_safetensors` opened as a checkpoint (`SafetensorsFile::from_bytes`).
inline SafetensorsFile random_checkpoint(const std::vector<TensorSpec>& specs, std::uint64_t seed,
                                         const std::string& prefix = "") {
  return SafetensorsFile::from_bytes(random_safetensors(specs, seed, prefix), "<random>");
}

}  // namespace seqmem::bench
