// Layers from x beyond the golden cases (tests/layer_golden_test.cpp): models::Mamba2 and
// models::Attention on random checkpoints written from their tensor_specs, in every option the
// golden files do not cover, against a plain token-by-token transcription of
// tests/data/golden-layers/README.md written here (no seqmem pieces or memories), in every form
// and across calls; their configuration checks, the strong guarantee, and the bounded state of
// a windowed Attention.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include <seqmem/checkpoint.hpp>
#include <seqmem/models/attention.hpp>
#include <seqmem/models/mamba2.hpp>

#include "test_util.hpp"

namespace seqmem::test {
namespace {

using Tensors = std::map<std::string, Matrix<double>>;

/// Random values for each spec, in the ranges the golden README names (linear weights
/// ~ U(±1/√in), norm weights and D in [0.5, 1.5], A = exp(A_log) in [1, 16], dt_bias the
/// inverse softplus of dt in [0.001, 0.1]); `n×1×K` convolutions and vectors as `1×n`.
Tensors random_tensors(const std::vector<TensorSpec>& specs, Rng& rng) {
  Tensors w;
  for (const TensorSpec& s : specs) {
    Index elements = 1;
    for (const Index n : s.shape)
      elements *= n;
    const Index rows = s.shape.size() >= 2 ? s.shape.front() : 1;
    const Index cols = elements / rows;
    Matrix<double> m;
    if (s.name == "A_log") {
      m = uniform<double>(rng, rows, cols, 0.0, std::log(16.0));
    } else if (s.name == "dt_bias") {
      m = uniform<double>(rng, rows, cols, 0.001, 0.1);
      m = (m.array() + (-(-m.array()).exp() + 1.0).log()).matrix();  // dt + log(1 − e^−dt)
    } else if (s.name.find("norm") != std::string::npos || s.name == "D") {
      m = uniform<double>(rng, rows, cols, 0.5, 1.5);
    } else {
      const double r = 1.0 / std::sqrt(double(s.shape.back()));
      m = uniform<double>(rng, rows, cols, -r, r);
    }
    w[s.name] = m;
  }
  return w;
}

/// A safetensors file (F64) holding `w` under `prefix`, with the shapes of `specs`.
SafetensorsFile write(const std::vector<TensorSpec>& specs, const Tensors& w,
                      const std::string& prefix) {
  nlohmann::json header = nlohmann::json::object();
  std::string data;
  for (const TensorSpec& s : specs) {
    const Matrix<double>& m = w.at(s.name);
    const std::size_t begin = data.size();
    data.append(reinterpret_cast<const char*>(m.data()),
                static_cast<std::size_t>(m.size()) * sizeof(double));  // little-endian machine
    header[prefix + s.name] = {
        {"dtype", "F64"}, {"shape", s.shape}, {"data_offsets", {begin, data.size()}}};
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string bytes(8, '\0');
  auto n = static_cast<std::uint64_t>(text.size());
  for (int i = 0; i < 8; ++i, n >>= 8)
    bytes[static_cast<std::size_t>(i)] = static_cast<char>(n & 0xff);
  return SafetensorsFile::from_bytes(bytes + text + data, "random.safetensors");
}

double silu(double z) {
  return z / (1.0 + std::exp(-z));
}
double softplus(double z) {
  return z > 20 ? z : std::log1p(std::exp(z));
}

/// x Wᵀ (+ b).
Matrix<double> linear(const Matrix<double>& x, const Tensors& w, const std::string& name) {
  Matrix<double> y = x * w.at(name + ".weight").transpose();
  if (w.count(name + ".bias") != 0) y.rowwise() += w.at(name + ".bias").row(0);
  return y;
}

/// z / sqrt(mean(z²) + eps) · weight over each `width` group of each row; weight 1×width or
/// 1×cols.
void rms_groups(Matrix<double>& z, const Matrix<double>& weight, double eps, Index width) {
  for (Index t = 0; t < z.rows(); ++t) {
    for (Index c0 = 0; c0 < z.cols(); c0 += width) {
      double sq = 0;
      for (Index j = 0; j < width; ++j)
        sq += z(t, c0 + j) * z(t, c0 + j);
      const double r = 1.0 / std::sqrt(sq / double(width) + eps);
      for (Index j = 0; j < width; ++j)
        z(t, c0 + j) *= r * weight(0, weight.cols() == width ? j : c0 + j);
    }
  }
}

/// README "fla.Mamba2", steps 1–6, token by token.
Matrix<double> mamba2_reference(const models::Mamba2Config& c, const Tensors& w,
                                const Matrix<double>& x) {
  const Index T = x.rows(), I = c.expand * c.hidden_size, P = c.head_dim, H = I / P;
  const Index N = c.state_size, G = c.n_groups, K = c.conv_kernel, cd = I + 2 * G * N;
  const Matrix<double> zxbcdt = linear(x, w, "in_proj");
  Matrix<double> xbc(T, cd);
  for (Index t = 0; t < T; ++t) {
    for (Index ch = 0; ch < cd; ++ch) {
      double s = c.use_conv_bias ? w.at("conv1d.bias")(0, ch) : 0.0;
      for (Index i = 0; i < K; ++i) {
        const Index src = t - K + 1 + i;
        if (src >= 0) s += w.at("conv1d.weight")(ch, i) * zxbcdt(src, I + ch);
      }
      xbc(t, ch) = silu(s);
    }
  }
  Matrix<double> y(T, I);
  for (Index h = 0; h < H; ++h) {
    const Index g = h / (H / G);
    const double A = -std::exp(w.at("A_log")(0, h));
    Matrix<double> S = Matrix<double>::Zero(P, N);
    for (Index t = 0; t < T; ++t) {
      const double dt = std::clamp(softplus(zxbcdt(t, I + cd + h) + w.at("dt_bias")(0, h)),
                                   c.dt_limit.first, c.dt_limit.second);
      for (Index p = 0; p < P; ++p) {
        const double xp = xbc(t, h * P + p);
        double out = 0;
        for (Index n = 0; n < N; ++n) {
          S(p, n) = std::exp(dt * A) * S(p, n) + dt * xp * xbc(t, I + g * N + n);
          out += S(p, n) * xbc(t, I + G * N + g * N + n);
        }
        y(t, h * P + p) = out + w.at("D")(0, c.D_has_hdim ? h * P + p : h) * xp;
      }
    }
  }
  const auto gate = [&] {
    for (Index t = 0; t < T; ++t)
      for (Index i = 0; i < I; ++i)
        y(t, i) *= silu(zxbcdt(t, i));
  };
  if (c.rmsnorm && c.norm_before_gate) {
    rms_groups(y, w.at("norm.weight"), c.norm_eps, I / G);
    gate();
  } else {
    gate();
    if (c.rmsnorm) rms_groups(y, w.at("norm.weight"), c.norm_eps, I / G);
  }
  return linear(y, w, "out_proj");
}

/// README "fla.Attention", steps 1–5, query by query.
Matrix<double> attention_reference(const models::AttentionConfig& c, const Tensors& w,
                                   const Matrix<double>& x) {
  const Index T = x.rows(), H = c.num_heads, HK = c.num_kv_heads == 0 ? H : c.num_kv_heads;
  const Index d = c.hidden_size / H;
  Matrix<double> q = linear(x, w, "q_proj"), k = linear(x, w, "k_proj"), v = linear(x, w, "v_proj");
  if (c.qk_norm) {
    rms_groups(q, w.at("q_norm.weight"), 1e-5, d);
    rms_groups(k, w.at("k_norm.weight"), 1e-5, d);
  }
  for (Matrix<double>* m : {&q, &k}) {
    for (Index t = 0; t < T; ++t) {
      for (Index h0 = 0; h0 < m->cols(); h0 += d) {
        for (Index i = 0; i < d / 2; ++i) {
          const double th = double(t) * std::pow(c.rope_theta, -2.0 * double(i) / double(d));
          const double a = (*m)(t, h0 + i), b = (*m)(t, h0 + i + d / 2);
          (*m)(t, h0 + i) = a * std::cos(th) - b * std::sin(th);
          (*m)(t, h0 + i + d / 2) = b * std::cos(th) + a * std::sin(th);
        }
      }
    }
  }
  Matrix<double> o = Matrix<double>::Zero(T, H * d);
  for (Index h = 0; h < H; ++h) {
    const Index kv = h / (H / HK);
    for (Index t = 0; t < T; ++t) {
      const Index lo = c.window_size > 0 ? std::max<Index>(0, t - c.window_size + 1) : 0;
      std::vector<double> p;
      for (Index s = lo; s <= t; ++s) {
        p.push_back(q.row(t).segment(h * d, d).dot(k.row(s).segment(kv * d, d)) /
                    std::sqrt(double(d)));
      }
      const double m = *std::max_element(p.begin(), p.end());
      double sum = 0;
      for (double& e : p)
        sum += (e = std::exp(e - m));
      for (Index s = lo; s <= t; ++s) {
        o.row(t).segment(h * d, d) +=
            p[static_cast<std::size_t>(s - lo)] / sum * v.row(s).segment(kv * d, d);
      }
    }
  }
  return linear(o, w, "o_proj");
}

/// Every form in one call, and a split into calls of mixed forms ending in decode steps, each
/// within 1e-10·(1 + max|want|) of `want`.
template <class Layer>
void expect_all_forms(const Layer& layer, const Matrix<double>& x, const Matrix<double>& want) {
  for (const Form form : all_forms) {
    auto state = layer.initial_state();
    EXPECT_TRUE(near(layer.forward(form, x, state), want, 1e-10)) << to_string(form);
  }
  Rng rng(static_cast<std::uint64_t>(x.rows()));
  auto state = layer.initial_state();
  Matrix<double> got(x.rows(), x.cols());
  for (Index begin = 0, call = 0; begin < x.rows(); ++call) {
    const Index n =
        begin + 3 >= x.rows() ? 1 : std::min(uniform_index(rng, 1, 6), x.rows() - begin);
    got.middleRows(begin, n) = layer.forward(all_forms[call % 3], x.middleRows(begin, n), state);
    begin += n;
  }
  EXPECT_TRUE(near(got, want, 1e-10)) << "split";
}

/// The message `make` throws, or "" when it does not throw.
std::string error_of(const std::function<void()>& make) {
  try {
    make();
  } catch (const invalid_argument& e) {
    return e.what();
  }
  return "";
}

models::Mamba2Config small_mamba2() {
  return {.head_dim = 4,
          .hidden_size = 8,
          .state_size = 3,
          .n_groups = 2,
          .conv_kernel = 3,
          .chunk_size = 4};  // I = 16, 4 heads, 2 groups
}

TEST(Mamba2, EveryOptionMatchesTheReadmeInEveryForm) {
  std::vector<std::pair<std::string, models::Mamba2Config>> cases;
  const auto add = [&](const std::string& name,
                       const std::function<void(models::Mamba2Config&)>& f) {
    models::Mamba2Config c = small_mamba2();
    f(c);
    cases.emplace_back(name, c);
  };
  add("defaults, 2 groups", [](auto&) {});
  add("4 groups", [](auto& c) { c.n_groups = 4; });
  add("D_has_hdim", [](auto& c) { c.D_has_hdim = true; });
  add("norm_before_gate", [](auto& c) { c.norm_before_gate = true; });
  add("no rmsnorm", [](auto& c) { c.rmsnorm = false; });
  add("dt_limit", [](auto& c) { c.dt_limit = {0.02, 0.05}; });
  add("use_bias, no conv bias", [](auto& c) {
    c.use_bias = true;
    c.use_conv_bias = false;
  });
  for (const auto& [name, config] : cases) {
    SCOPED_TRACE(name);
    Rng rng(11);
    const auto specs = models::Mamba2<double>::tensor_specs(config);
    const Tensors w = random_tensors(specs, rng);
    const models::Mamba2<double> layer(config, write(specs, w, "m."), "m.");
    const Matrix<double> x = uniform<double>(rng, 13, config.hidden_size);
    expect_all_forms(layer, x, mamba2_reference(config, w, x));
  }
}

TEST(Attention, EveryOptionMatchesTheReadmeInEveryForm) {
  const models::AttentionConfig base{.hidden_size = 16, .num_heads = 4, .chunk_size = 3};
  std::vector<std::pair<std::string, models::AttentionConfig>> cases;
  const auto add = [&](const std::string& name,
                       const std::function<void(models::AttentionConfig&)>& f) {
    models::AttentionConfig c = base;
    f(c);
    cases.emplace_back(name, c);
  };
  add("multi-head", [](auto&) {});
  add("one KV head, qk_norm", [](auto& c) {
    c.num_kv_heads = 1;
    c.qk_norm = true;
  });
  add("2 KV heads, window 3, qkv_bias", [](auto& c) {
    c.num_kv_heads = 2;
    c.window_size = 3;
    c.qkv_bias = true;
  });
  add("window 1, rope_theta 500, 2 threads", [](auto& c) {
    c.window_size = 1;
    c.rope_theta = 500;
    c.num_threads = 2;
  });
  for (const auto& [name, config] : cases) {
    SCOPED_TRACE(name);
    Rng rng(12);
    const auto specs = models::Attention<double>::tensor_specs(config);
    const Tensors w = random_tensors(specs, rng);
    const models::Attention<double> layer(config, write(specs, w, "a."), "a.");
    const Matrix<double> x = uniform<double>(rng, 13, config.hidden_size, -2, 2);
    expect_all_forms(layer, x, attention_reference(config, w, x));
  }
}

TEST(LayersFromX, ConfigurationsAreChecked) {
  const auto mamba2 = [](const std::function<void(models::Mamba2Config&)>& f) {
    models::Mamba2Config c = small_mamba2();
    f(c);
    return error_of([&] { (void)models::Mamba2<double>::tensor_specs(c); });
  };
  EXPECT_EQ(mamba2([](auto&) {}), "");
  EXPECT_NE(mamba2([](auto& c) { c.head_dim = 5; }).find("(16) must be divisible by head_dim (5)"),
            std::string::npos);
  EXPECT_NE(mamba2([](auto& c) { c.num_heads = 3; }).find("must equal expand·hidden_size (16)"),
            std::string::npos);
  EXPECT_NE(mamba2([](auto& c) { c.n_groups = 3; }).find("multiple of n_groups (3)"),
            std::string::npos);
  EXPECT_NE(mamba2([](auto& c) { c.hidden_act = "gelu"; }).find("hidden_act must be silu"),
            std::string::npos);
  EXPECT_NE(mamba2([](auto& c) { c.dt_limit = {0.1, 0.01}; }).find("dt_limit"), std::string::npos);
  const auto attention = [](const std::function<void(models::AttentionConfig&)>& f) {
    models::AttentionConfig c{.hidden_size = 16, .num_heads = 4};
    f(c);
    return error_of([&] { (void)models::Attention<double>::tensor_specs(c); });
  };
  EXPECT_EQ(attention([](auto&) {}), "");
  EXPECT_NE(attention([](auto& c) { c.num_kv_heads = 3; }).find("multiple of num_kv_heads (3)"),
            std::string::npos);
  EXPECT_NE(
      attention([](auto& c) { c.hidden_size = 12; }).find("must be even (rotary pairs), got 3"),
      std::string::npos);
  EXPECT_NE(attention([](auto& c) { c.window_size = -1; }).find("window_size must be >= 0"),
            std::string::npos);
}

// A call that throws leaves the state as it was; a windowed Attention keeps at most W − 1 rows
// per KV head (one cache per KV head, not per query head) however long the stream.
TEST(LayersFromX, BadCallsKeepTheStateAndWindowedStateIsBounded) {
  Rng rng(13);
  const models::AttentionConfig ac{
      .hidden_size = 16, .num_heads = 4, .num_kv_heads = 2, .window_size = 5};
  const auto aspecs = models::Attention<double>::tensor_specs(ac);
  const models::Attention<double> attn(ac, write(aspecs, random_tensors(aspecs, rng), ""), "");
  auto astate = attn.initial_state();
  Index seen = 0;
  for (int call = 0; call < 40; ++call) {
    const Index n = call == 20 ? 2000 : uniform_index(rng, 1, 9);
    (void)attn.forward(all_forms[call % 3], uniform<double>(rng, n, 16), astate);
    seen += n;
    ASSERT_EQ(astate.heads.size(), 2u);
    for (const auto& head : astate.heads) {
      ASSERT_LE(head.cached(), 4);
      ASSERT_EQ(head.keys().cols(), 4);
      ASSERT_LE(head.capacity(), 64);
    }
  }
  EXPECT_EQ(astate.heads[0].tokens(), seen);
  EXPECT_EQ(astate.heads[1].cached(), 4);
  const auto before = astate;
  EXPECT_NE(error_of([&] {
              (void)attn.forward(Form::chunkwise, Matrix<double>::Ones(3, 15), astate);
            }).find("x must be 3x16, got 3x15"),
            std::string::npos);
  EXPECT_EQ(astate.heads[0].tokens(), before.heads[0].tokens());
  EXPECT_EQ(astate.heads[0].keys(), before.heads[0].keys());

  const models::Mamba2Config mc = small_mamba2();
  const auto mspecs = models::Mamba2<double>::tensor_specs(mc);
  const models::Mamba2<double> mamba(mc, write(mspecs, random_tensors(mspecs, rng), ""), "");
  auto mstate = mamba.initial_state();
  (void)mamba.forward(Form::chunkwise, uniform<double>(rng, 7, 8), mstate);
  const auto mbefore = mstate;
  Matrix<double> bad = uniform<double>(rng, 2, 8);
  bad(1, 3) = std::nan("");
  EXPECT_NE(
      error_of([&] { (void)mamba.forward(Form::recurrent, bad, mstate); }).find("x must be finite"),
      std::string::npos);
  EXPECT_EQ(mstate.conv_cache, mbefore.conv_cache);
  EXPECT_EQ(mstate.heads[3].S, mbefore.heads[3].S);
  mstate.heads.pop_back();
  EXPECT_NE(error_of([&] {
              (void)mamba.forward(Form::recurrent, uniform<double>(rng, 2, 8), mstate);
            }).find("state must hold 4 head states, got 3"),
            std::string::npos);
}

}  // namespace
}  // namespace seqmem::test
