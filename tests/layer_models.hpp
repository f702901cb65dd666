// The layers from x under test, by the name golden files give them (metadata `layer`): each
// name's configuration is read from the file's JSON `config` (peer argument names; every key
// must be known) and handed, with the layer's class template, to a generic visitor. Used by
// layer_golden_test and layer_conformance_test.

#pragma once

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>

#include <seqmem/models/attention.hpp>
#include <seqmem/models/deltanet.hpp>
#include <seqmem/models/gated_deltanet.hpp>
#include <seqmem/models/mamba2.hpp>
#include <seqmem/models/titans.hpp>
#include <seqmem/models/ttt.hpp>

namespace seqmem::test {

/// The directory of the layer golden files: $SEQMEM_LAYER_GOLDEN_DIR, or the repository's copy.
inline std::filesystem::path layer_golden_dir() {
  if (const char* env = std::getenv("SEQMEM_LAYER_GOLDEN_DIR"); env != nullptr && *env != '\0') {
    return env;
  }
  return std::filesystem::path(SEQMEM_SOURCE_DIR) / "tests" / "data" / "golden-layers";
}

/// Field `key` of `config` into `field` if present, removing it from `config`.
template <class T>
void take(nlohmann::json& config, const char* key, T& field) {
  if (!config.contains(key)) return;
  field = config.at(key).get<T>();
  config.erase(key);
}

/// As take, for a key whose Python None (JSON null) means "none", kept here as 0.
inline void take_or_none(nlohmann::json& config, const char* key, Index& field) {
  if (config.contains(key) && config.at(key).is_null()) {
    field = 0;
    config.erase(key);
  }
  take(config, key, field);
}

/// Every layer name `with_layer` knows.
inline const std::set<std::string>& known_layers() {
  static const auto* const kNames = new std::set<std::string>{
      "fla.GatedDeltaNet", "fla.DeltaNet", "seqmem.Titans", "ttt.TTTLinear", "ttt.TTTMLP"};
  return *kNames;
}

/// Calls `visit.template operator()<Layer>(layer_config)` for the layer named `name` and
/// returns its result (a string, "" for success); "config keys not supported: …" when
/// `config` has keys the layer does not take; nullopt for an unknown name.
template <class Visit>
std::optional<std::string> with_layer(const std::string& name, nlohmann::json config,
                                      Visit&& visit) {
  const auto finish = [&]<template <class> class Layer>(const auto& c) {
    if (!config.empty()) return "config keys not supported: " + config.dump();
    return std::string(visit.template operator()<Layer>(c));
  };
  if (name == "fla.GatedDeltaNet") {
    models::GatedDeltaNetConfig c;
    take(config, "hidden_size", c.hidden_size);
    take(config, "expand_v", c.expand_v);
    take(config, "head_dim", c.head_dim);
    take(config, "num_heads", c.num_heads);
    take(config, "num_v_heads", c.num_v_heads);
    take(config, "use_gate", c.use_gate);
    take(config, "use_short_conv", c.use_short_conv);
    take(config, "allow_neg_eigval", c.allow_neg_eigval);
    take(config, "conv_size", c.conv_size);
    take(config, "conv_bias", c.conv_bias);
    take(config, "norm_eps", c.norm_eps);
    return finish.template operator()<models::GatedDeltaNet>(c);
  }
  if (name == "fla.DeltaNet") {
    models::DeltaNetConfig c;
    take(config, "hidden_size", c.hidden_size);
    take(config, "expand_k", c.expand_k);
    take(config, "expand_v", c.expand_v);
    take(config, "num_heads", c.num_heads);
    take(config, "use_beta", c.use_beta);
    take(config, "use_gate", c.use_gate);
    take(config, "use_short_conv", c.use_short_conv);
    take(config, "conv_size", c.conv_size);
    take(config, "conv_bias", c.conv_bias);
    take(config, "allow_neg_eigval", c.allow_neg_eigval);
    take(config, "qk_activation", c.qk_activation);
    take(config, "qk_norm", c.qk_norm);
    take(config, "norm_eps", c.norm_eps);
    return finish.template operator()<models::DeltaNetLayer>(c);
  }
  if (name == "fla.Mamba2") {
    models::Mamba2Config c;
    take_or_none(config, "num_heads", c.num_heads);
    take(config, "head_dim", c.head_dim);
    take(config, "hidden_size", c.hidden_size);
    take(config, "state_size", c.state_size);
    take(config, "expand", c.expand);
    take(config, "n_groups", c.n_groups);
    take(config, "conv_kernel", c.conv_kernel);
    take(config, "use_conv_bias", c.use_conv_bias);
    take(config, "hidden_act", c.hidden_act);
    take(config, "D_has_hdim", c.D_has_hdim);
    take(config, "rmsnorm", c.rmsnorm);
    take(config, "norm_before_gate", c.norm_before_gate);
    take(config, "dt_limit", c.dt_limit);
    take(config, "use_bias", c.use_bias);
    take(config, "norm_eps", c.norm_eps);
    take(config, "chunk_size", c.chunk_size);
    return finish.template operator()<models::Mamba2>(c);
  }
  if (name == "fla.Attention") {
    models::AttentionConfig c;
    take(config, "hidden_size", c.hidden_size);
    take(config, "num_heads", c.num_heads);
    take_or_none(config, "num_kv_heads", c.num_kv_heads);
    take(config, "qkv_bias", c.qkv_bias);
    take(config, "qk_norm", c.qk_norm);
    take_or_none(config, "window_size", c.window_size);
    take(config, "rope_theta", c.rope_theta);
    take_or_none(config, "max_position_embeddings", c.max_position_embeddings);
    return finish.template operator()<models::Attention>(c);
  }
  if (name == "seqmem.Titans") {
    models::TitansConfig c;
    take(config, "hidden_size", c.hidden_size);
    take(config, "num_heads", c.num_heads);
    take(config, "head_dim", c.head_dim);
    take(config, "depth", c.depth);
    take(config, "expansion", c.expansion);
    take(config, "mini_batch", c.mini_batch);
    take(config, "conv_size", c.conv_size);
    take(config, "theta_max", c.theta_max);
    take(config, "norm_eps", c.norm_eps);
    take(config, "use_gate", c.use_gate);
    return finish.template operator()<models::Titans>(c);
  }
  if (name == "ttt.TTTLinear" || name == "ttt.TTTMLP") {
    models::TTTConfig c;  // ttt-lm-pytorch's TTTConfig arguments
    take(config, "hidden_size", c.hidden_size);
    take(config, "num_attention_heads", c.num_attention_heads);
    take(config, "mini_batch_size", c.mini_batch_size);
    take(config, "rope_theta", c.rope_theta);
    take(config, "ttt_base_lr", c.ttt_base_lr);
    take(config, "use_gate", c.use_gate);
    take(config, "share_qk", c.share_qk);
    take(config, "conv_kernel", c.conv_kernel);
    take(config, "ttt_layer_type", c.ttt_layer_type);
    if (name == "ttt.TTTLinear") return finish.template operator()<models::TTTLinearLayer>(c);
    return finish.template operator()<models::TTTMLPLayer>(c);
  }
  return std::nullopt;
}

}  // namespace seqmem::test
