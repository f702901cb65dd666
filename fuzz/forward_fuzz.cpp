// libFuzzer target over input validation: the fuzz input decodes to a layer (any of the nine,
// float or double, alone or under seqmem::MultiHead), its options (dims 0–8, chunk sizes,
// mini_batch, window, depth, expansion, flags, scale and epsilons including NaN/Inf, bad
// outer-loop parameters), a possibly broken state, and up to three calls of random forms with
// shapes that may be wrong (T, mismatched dims, wrong gate lengths or widths, missing gates)
// and values from a palette that includes NaN, ±Inf, subnormals and out-of-range gates. The
// per-key-channel gates of the diagonal-gate layers (docs/math.md §7–§9: log-decays, a, b) also
// get whole tokens or channels at one special value (−30, −1e30, the lowest finite value, …)
// and single entries just above their bound, NaN or ±Inf.
//
// Properties (a violation aborts, so libFuzzer saves the input):
//   - a constructor either succeeds or throws seqmem::invalid_argument;
//   - a forward either throws seqmem::invalid_argument, leaving the state bit for bit as it
//     was, or returns an output of shape T × output_dim (MultiHead: T × H·output_dim);
//   - layer.check(form, inputs, state) agrees with forward on whether the call is valid;
//   - after a successful call every gate was finite and in its range;
//   - the diagonal-gate layers: a successful single-head call with moderate inputs and state,
//     whose outputs and state are bounded a priori (a bound that ignores the log-decays, since
//     decay only shrinks the state), returns finite outputs and state, however strong the
//     decays;
//   - no other exception, no crash, no sanitizer report (ASan, UBSan, Eigen's and libstdc++'s
//     assertions).
//
// The first byte picks the layer (bits 0–6 modulo 9, in the order of `dispatch`) and the
// scalar type (bit 7: float). SEQMEM_FUZZ_LAYER=<0..8> fuzzes one layer alone (a developer's
// run; CI leaves it unset).
//
// Index options also take huge values (2^31 up to 2^63 − 1) where that allocates nothing in
// proportion (chunk_size, window, Titans' mini_batch). `expansion` takes only values ≥ 2^62,
// whose product with any dim ≥ 2 overflows Index (the layer must refuse it); with dim 1 the
// hidden layer is too big to allocate and the constructor throws std::bad_alloc. TTT's
// mini_batch stays small: the layer keeps one token scale per position, so a huge one is a
// huge allocation, not a bug.

#include <algorithm>
#include <cmath>
#include <exception>
#include <limits>
#include <new>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fuzz_common.hpp"

namespace seqmem_fuzz {
namespace {

using namespace seqmem;

enum class Huge { none, any, overflowing };

/// An Index option: byte 0 → `fallback`; otherwise lo..hi, or one of the huge values.
Index option(Bytes& in, Index fallback, Index lo, Index hi, Huge huge = Huge::any) {
  constexpr Index kMax = std::numeric_limits<Index>::max();
  constexpr Index kHuge[] = {
      Index{1} << 31, (Index{1} << 32) + 1, kMax / 2, kMax / 2 + 1, kMax - 1, kMax};
  const std::uint8_t b = in.u8();
  if (b == 0) return fallback;
  if (b >= 250 && huge == Huge::any) return kHuge[b - 250];
  if (b >= 250 && huge == Huge::overflowing) return kHuge[3 + (b - 250) % 3];
  return lo + static_cast<Index>(b - 1) % (hi - lo + 1);
}

template <class S>
std::optional<S> optional_scalar(Bytes& in) {
  if (in.u8() % 3 != 0) return std::nullopt;
  return value<S>(in, 0.0, 2.0);
}

/// A per-token gate: T×cols, uniform in [lo, hi] plus specials; sometimes absent or of the
/// wrong length or width.
template <class S>
std::optional<Matrix<S>> gate(Bytes& in, Index T, Index cols, double lo, double hi,
                              std::mt19937& gen) {
  const std::uint8_t mode = in.u8() % 16;
  if (mode == 15) return std::nullopt;
  const Index rows = mode == 13 ? clamp0(T - 1) : mode == 14 ? T + 1 : T;
  const Index width = mode == 12 ? cols + 1 : cols;
  return tensor<S>(in, rows, width, lo, hi, gen);
}

template <class S>
std::optional<GateRef<S>> ref(const std::optional<Matrix<S>>& g) {
  return g ? std::optional<GateRef<S>>(*g) : std::nullopt;
}

/// A required gate: an absent one (which the inputs cannot express) becomes a 0×0 gate, which
/// the layer must refuse like any gate of the wrong shape.
template <class S>
GateRef<S> required(const std::optional<Matrix<S>>& g) {
  static const Matrix<S> kEmpty(0, 0);
  return g ? GateRef<S>(*g) : GateRef<S>(kEmpty);
}

template <class S>
bool all_in(const std::optional<Matrix<S>>& g, double lo, double hi) {
  if (!g) return true;
  for (Index i = 0; i < g->rows(); ++i)
    for (Index j = 0; j < g->cols(); ++j) {
      const double x = static_cast<double>((*g)(i, j));
      if (!std::isfinite(x) || x < lo || x > hi) return false;
    }
  return true;
}

/// q, k: T×(H·dk), v: T×(H·dv), each possibly with a row or column too many or too few.
template <class S>
struct QKV {
  Matrix<S> q, k, v;
};

/// q `T×dq` (dq = dk unless given), k `T×dk`, v `T×dv`, each maybe off by a fuzz-chosen size.
template <class S>
QKV<S> qkv(Bytes& in, Index T, Index dk, Index dv, std::mt19937& gen, Index dq = -1) {
  auto rows = [&] { return clamp0(T + delta(in, T)); };
  auto cols = [&](Index d) { return clamp0(d + delta(in, d)); };
  const Index rq = rows(), cq = cols(dq < 0 ? dk : dq), rk = rows(), ck = cols(dk), rv = rows(),
              cv = cols(dv);
  return {tensor<S>(in, rq, cq, -1, 1, gen), tensor<S>(in, rk, ck, -1, 1, gen),
          tensor<S>(in, rv, cv, -1, 1, gen)};
}

/// Resizes `m` by a fuzz-chosen ±1 in each direction, or puts NaN in it.
template <class S>
void break_tensor(Bytes& in, Matrix<S>& m) {
  switch (in.u8() % 3) {
    case 0:
      m.conservativeResize(m.rows() + 1, m.cols());
      m.row(m.rows() - 1).setZero();
      break;
    case 1:
      m.resize(m.rows(), clamp0(m.cols() - 1));
      m.setZero();
      break;
    default:
      if (m.size() > 0) m(0, 0) = std::numeric_limits<S>::quiet_NaN();
      break;
  }
}

template <class S>
void break_weights(Bytes& in, Weights<S>& w) {
  switch (in.u8() % 4) {
    case 0:
      if (!w.W.empty()) break_tensor(in, w.W[in.u8() % w.W.size()]);
      break;
    case 1:
      if (!w.b.empty()) break_tensor(in, w.b[in.u8() % w.b.size()]);
      break;
    case 2:
      if (!w.W.empty()) w.W.pop_back();
      break;
    default: w.b.push_back(Matrix<S>::Zero(1, 1)); break;
  }
}

/// A state position: −1, b − 1, b (both ends of [0, b) and just outside) or inside.
inline Index position(Bytes& in, Index b) {
  switch (in.u8() % 4) {
    case 0: return -1;
    case 1: return b - 1;
    case 2: return b;
    default: return static_cast<Index>(in.u8()) % std::min<Index>(b, 16);
  }
}

// ---------------------------------------------------------------------------------------------
// Per layer family: options from bytes, inputs, a broken state, the state's tensors, and
// whether the gates of a successful call were valid.
// ---------------------------------------------------------------------------------------------

template <class Layer>
struct Fuzz;

template <class S>
struct Fuzz<LinearAttention<S>> {
  using Layer = LinearAttention<S>;
  static Layer make(Bytes& in) {
    typename Layer::Options o;
    o.key_dim = (in.u8() + 3) % 9;  // byte 0 → 3
    o.value_dim = (in.u8() + 2) % 9;
    o.scale = optional_scalar<S>(in);
    o.feature_map = static_cast<FeatureMap>(in.u8() % 3);
    const std::uint8_t flags = in.u8();
    o.normalize = flags & 1;
    o.check_finite = !(flags & 2);
    if (flags & 4) o.norm_eps = value<S>(in, 0.0, 1.0);
    o.chunk_size = option(in, 4, -2, 12);
    return Layer(o);
  }
  struct Data {
    QKV<S> x;
    std::optional<Matrix<S>> g;
    typename Layer::Inputs inputs() const {
      return {.q = x.q, .k = x.k, .v = x.v, .log_decay = ref(g)};
    }
    bool gates_valid() const { return all_in(g, -HUGE_VAL, 0.0); }
  };
  static Data data(Bytes& in, const Layer& l, Index T, Index H, std::mt19937& gen) {
    Data d{qkv<S>(in, T, H * l.options().key_dim, H * l.options().value_dim, gen), std::nullopt};
    d.g = gate<S>(in, T, H, -1.0, 0.0, gen);
    if (in.u8() % 4 == 0) d.g.reset();  // the gate is optional
    return d;
  }
  static void break_state(Bytes& in, const Layer&, typename Layer::State& s) {
    if (in.u8() % 2)
      break_tensor(in, s.S);
    else
      break_tensor(in, s.z);
  }
  static std::vector<Matrix<S>> tensors(const typename Layer::State& s) { return {s.S, s.z}; }
};

template <class S>
struct Fuzz<SoftmaxAttention<S>> {
  using Layer = SoftmaxAttention<S>;
  static Layer make(Bytes& in) {
    typename Layer::Options o;
    o.key_dim = (in.u8() + 3) % 9;
    o.value_dim = (in.u8() + 2) % 9;
    o.scale = optional_scalar<S>(in);
    o.window = option(in, 0, -2, 10);
    o.chunk_size = option(in, 4, -2, 12);
    o.check_finite = !(in.u8() & 1);
    o.query_heads = option(in, 1, -1, 3, Huge::none);
    return Layer(o);
  }
  struct Data {
    QKV<S> x;
    typename Layer::Inputs inputs() const { return {.q = x.q, .k = x.k, .v = x.v}; }
    bool gates_valid() const { return true; }
  };
  static Data data(Bytes& in, const Layer& l, Index T, Index H, std::mt19937& gen) {
    const Index dk = l.options().key_dim;
    return {qkv<S>(in, T, H * dk, H * l.options().value_dim, gen, H * l.query_heads() * dk)};
  }
  /// A cache of fuzz-chosen size and width from make_state (which may refuse it).
  static void break_state(Bytes& in, const Layer& l, typename Layer::State& s) {
    std::mt19937 gen(in.u8());
    const Index n = in.u8() % 12;
    const Matrix<S> keys = tensor<S>(in, n, clamp0(l.options().key_dim + delta(in, 1)), -1, 1, gen);
    const Matrix<S> values =
        tensor<S>(in, n, clamp0(l.options().value_dim + delta(in, 1)), -1, 1, gen);
    const Index tokens = n + static_cast<Index>(in.u8() % 4) - 1;
    try {
      s = l.make_state(keys, values, tokens);
    } catch (const seqmem::invalid_argument&) {
    }
  }
  static std::vector<Matrix<S>> tensors(const typename Layer::State& s) {
    return {s.keys(), s.values(), Matrix<S>::Constant(1, 1, static_cast<S>(s.tokens()))};
  }
};

template <class S>
struct Fuzz<DeltaNet<S>> {
  using Layer = DeltaNet<S>;
  static Layer make(Bytes& in) {
    typename Layer::Options o;
    o.key_dim = (in.u8() + 3) % 9;
    o.value_dim = (in.u8() + 2) % 9;
    o.scale = optional_scalar<S>(in);
    const std::uint8_t flags = in.u8();
    o.qk_l2norm = flags & 1;
    o.check_finite = !(flags & 2);
    o.chunk_size = option(in, 4, -2, 12);
    return Layer(o);
  }
  struct Data {
    QKV<S> x;
    std::optional<Matrix<S>> beta, g;
    typename Layer::Inputs inputs() const {
      return {.q = x.q, .k = x.k, .v = x.v, .beta = required(beta), .log_decay = ref(g)};
    }
    bool gates_valid() const { return beta && all_in(beta, 0.0, 2.0) && all_in(g, -HUGE_VAL, 0.0); }
  };
  static Data data(Bytes& in, const Layer& l, Index T, Index H, std::mt19937& gen) {
    Data d{qkv<S>(in, T, H * l.options().key_dim, H * l.options().value_dim, gen), std::nullopt,
           std::nullopt};
    d.beta = gate<S>(in, T, H, 0.0, 2.0, gen);
    d.g = gate<S>(in, T, H, -1.0, 0.0, gen);
    if (in.u8() % 4 == 0) d.g.reset();
    return d;
  }
  static void break_state(Bytes& in, const Layer&, typename Layer::State& s) {
    break_tensor(in, s.S);
  }
  static std::vector<Matrix<S>> tensors(const typename Layer::State& s) { return {s.S}; }
};

template <class S, TTTModel Model>
struct Fuzz<TTT<S, Model>> {
  using Layer = TTT<S, Model>;
  static Layer make(Bytes& in) {
    typename Layer::Options o;
    o.key_dim = (in.u8() + 3) % 9;
    o.mini_batch = option(in, 4, -2, 17, Huge::none);
    const std::uint8_t flags = in.u8();
    o.token_index_scaling = !(flags & 1);
    o.layer_norm = !(flags & 2);
    o.bias = !(flags & 4);
    o.check_finite = !(flags & 8);
    if (flags & 16) o.ln_eps = value<S>(in, 0.0, 1e-3);
    o.expansion = option(in, 2, -1, 4, Huge::overflowing);
    const std::uint8_t lambdas = in.u8() % 8;
    if (lambdas >= 5 && o.mini_batch > 0 && o.mini_batch <= 64) {
      const Index n = lambdas == 5 ? o.mini_batch : lambdas == 6 ? o.mini_batch + 1 : in.u8() % 5;
      for (Index i = 0; i < n; ++i)
        o.token_scale_offset.push_back(value<S>(in, -0.5, 0.5));
    }
    if (in.u8() % 4 != 0) return Layer(o);
    auto p = Layer(o).parameters();  // the defaults, broken
    switch (in.u8() % 3) {
      case 0: break_weights(in, p.initial); break;
      case 1: break_tensor(in, p.ln_weight); break;
      default: break_tensor(in, p.ln_bias); break;
    }
    return Layer(o, p);
  }
  struct Data {
    QKV<S> x;
    std::optional<Matrix<S>> eta;
    typename Layer::Inputs inputs() const {
      return {.q = x.q, .k = x.k, .v = x.v, .learning_rate = required(eta)};
    }
    bool gates_valid() const { return eta && all_in(eta, 0.0, HUGE_VAL); }
  };
  static Data data(Bytes& in, const Layer& l, Index T, Index H, std::mt19937& gen) {
    Data d{qkv<S>(in, T, H * l.options().key_dim, H * l.options().key_dim, gen), std::nullopt};
    d.eta = gate<S>(in, T, H, 0.0, 0.25, gen);
    return d;
  }
  static void break_state(Bytes& in, const Layer& l, typename Layer::State& s) {
    switch (in.u8() % 4) {
      case 0: s.position = position(in, l.options().mini_batch); break;
      case 1: break_weights(in, s.reference); break;
      case 2: break_weights(in, s.gradient); break;
      default:
        for (auto& G : s.gradient.W)
          G.setConstant(S(0.01));
        break;  // G ≠ 0 anywhere
    }
  }
  static std::vector<Matrix<S>> tensors(const typename Layer::State& s) {
    std::vector<Matrix<S>> out;
    append(out, s.reference);
    append(out, s.gradient);
    out.push_back(Matrix<S>::Constant(1, 1, static_cast<S>(s.position)));
    return out;
  }
};

template <class S>
struct Fuzz<TitansMemory<S>> {
  using Layer = TitansMemory<S>;
  static Layer make(Bytes& in) {
    typename Layer::Options o;
    o.key_dim = (in.u8() + 3) % 9;
    o.value_dim = (in.u8() + 2) % 9;
    o.depth = (in.u8() + 1) % 6;  // 0..5, byte 0 → 1
    o.expansion = option(in, 2, -1, 4, Huge::overflowing);
    const std::uint8_t flags = in.u8();
    o.activation = flags & 1 ? Activation::silu : Activation::gelu_tanh;
    o.bias = flags & 2;
    o.layer_norm = flags & 4;
    o.check_finite = !(flags & 8);
    if (flags & 16) o.ln_eps = value<S>(in, 0.0, 1e-3);
    o.mini_batch = option(in, 4, -2, 17);
    if (in.u8() % 4 != 0) return Layer(o);
    auto p = Layer(o).parameters();
    switch (in.u8() % 3) {
      case 0: break_weights(in, p.initial); break;
      case 1: break_tensor(in, p.ln_weight); break;
      default: break_tensor(in, p.ln_bias); break;
    }
    return Layer(o, p);
  }
  struct Data {
    QKV<S> x;
    std::optional<Matrix<S>> theta, alpha, eta;
    typename Layer::Inputs inputs() const {
      return {.q = x.q,
              .k = x.k,
              .v = x.v,
              .learning_rate = required(theta),
              .forgetting = required(alpha),
              .momentum_decay = required(eta)};
    }
    bool gates_valid() const {
      return theta && alpha && eta && all_in(theta, 0.0, HUGE_VAL) && all_in(alpha, 0.0, 1.0) &&
             all_in(eta, 0.0, 1.0);
    }
  };
  static Data data(Bytes& in, const Layer& l, Index T, Index H, std::mt19937& gen) {
    Data d{qkv<S>(in, T, H * l.options().key_dim, H * l.options().value_dim, gen), std::nullopt,
           std::nullopt, std::nullopt};
    d.theta = gate<S>(in, T, H, 0.0, 0.1, gen);
    d.alpha = gate<S>(in, T, H, 0.0, 1.0, gen);
    d.eta = gate<S>(in, T, H, 0.0, 1.0, gen);
    return d;
  }
  static void break_state(Bytes& in, const Layer& l, typename Layer::State& s) {
    switch (in.u8() % 4) {
      case 0: s.position = position(in, l.options().mini_batch); break;
      case 1: break_weights(in, s.reference); break;
      case 2: break_weights(in, s.current); break;
      default: break_weights(in, s.momentum); break;
    }
  }
  static std::vector<Matrix<S>> tensors(const typename Layer::State& s) {
    std::vector<Matrix<S>> out;
    append(out, s.reference);
    append(out, s.current);
    append(out, s.momentum);
    out.push_back(Matrix<S>::Constant(1, 1, static_cast<S>(s.position)));
    return out;
  }
};

// The diagonal-gate layers (docs/math.md §7–§9) --------------------------------------------

/// A per-key-channel gate, T×width (width = H·key_dim): uniform in [lo, hi] plus specials
/// (which include the valid −0, −30, −1e30 and the lowest finite value for a log-decay);
/// sometimes one token or one channel set to a single special value throughout, one entry
/// broken (just above `limit`, the gate's upper bound, NaN or ±Inf), the wrong length or
/// width, or absent (which the inputs cannot express: a 0×0 gate).
template <class S>
std::optional<Matrix<S>> channel_gate(Bytes& in, Index T, Index width, double lo, double hi,
                                      double limit, std::mt19937& gen) {
  const std::uint8_t mode = in.u8() % 16;
  if (mode == 15) return std::nullopt;
  const Index rows = mode == 13 ? clamp0(T - 1) : mode == 14 ? T + 1 : T;
  const Index cols = mode == 11 ? clamp0(width - 1) : mode == 12 ? width + 1 : width;
  Matrix<S> g = tensor<S>(in, rows, cols, lo, hi, gen);
  if (g.size() == 0 || mode < 8 || mode > 10) return g;
  const Index i = in.u8() % g.rows(), j = in.u8() % g.cols();
  using L = std::numeric_limits<S>;
  switch (mode) {
    case 8: g.row(i).setConstant(special<S>(in)); break;  // one token, every channel
    case 9: g.col(j).setConstant(special<S>(in)); break;  // one channel, every token
    default:
      switch (in.u8() % 4) {
        case 0: g(i, j) = std::nextafter(static_cast<S>(limit), L::infinity()); break;
        case 1: g(i, j) = L::quiet_NaN(); break;
        case 2: g(i, j) = L::infinity(); break;
        default: g(i, j) = -L::infinity(); break;
      }
      break;
  }
  return g;
}

/// A required per-key-channel gate: an absent one becomes 0×0, which the layer must refuse.
template <class S>
InputRef<S> required_channels(const std::optional<Matrix<S>>& g) {
  static const Matrix<S> kEmpty(0, 0);
  return g ? InputRef<S>(*g) : InputRef<S>(kEmpty);
}

/// Bounds of the finiteness property below: inputs and state of at most kModerate in magnitude,
/// and a bound on every output and state entry of at most kFiniteBound<S>.
constexpr double kModerate = 1e3;
template <class S>
constexpr double kFiniteBound = sizeof(S) == 4 ? 1e20 : 1e200;

template <class M>
bool moderate(const M& m) {
  for (Index i = 0; i < m.rows(); ++i)
    for (Index j = 0; j < m.cols(); ++j)
      if (!(std::abs(static_cast<double>(m(i, j))) <= kModerate)) return false;
  return true;
}

template <class M>
double row_norm(const M& m, Index t) {
  return m.row(t).template cast<double>().norm();
}

/// For a matrix memory with ‖S_t‖ ≤ growth(t)·‖S_{t−1}‖ + write(t) and o_t = scale·q_t S_t: a
/// bound on every |output| and every entry of S over a call of T tokens (q_norm(t) ≥ ‖q_t‖ as
/// the layer uses it), or +Inf unless the scale and the start state are moderate (the caller
/// checks the inputs). Whatever the log-decays (finite and ≤ 0, however strong), a call under
/// a moderate bound must return finite outputs and state (docs/math.md §7: strong decays work
/// without NaN/Inf).
template <class S, class QNorm, class Growth, class Write>
double memory_bound(Index T, S scale, const Matrix<S>& state, QNorm q_norm, Growth growth,
                    Write write) {
  if (!moderate(state) || !(std::abs(double(scale)) <= kModerate)) return HUGE_VAL;
  double s = state.template cast<double>().norm(), worst = s;
  for (Index t = 0; t < T; ++t) {
    s = growth(t) * s + write(t);
    worst = std::max({worst, s, std::abs(double(scale)) * q_norm(t) * s});
  }
  return worst;
}

template <class S>
struct Fuzz<GatedLinearAttention<S>> {
  using Layer = GatedLinearAttention<S>;
  static Layer make(Bytes& in) {
    typename Layer::Options o;
    o.key_dim = (in.u8() + 3) % 9;
    o.value_dim = (in.u8() + 2) % 9;
    o.scale = optional_scalar<S>(in);
    o.check_finite = !(in.u8() & 1);
    o.chunk_size = option(in, 4, -2, 12);
    return Layer(o);
  }
  struct Data {
    QKV<S> x;
    std::optional<Matrix<S>> g;
    typename Layer::Inputs inputs() const {
      return {.q = x.q, .k = x.k, .v = x.v, .log_decay = required_channels(g)};
    }
    bool gates_valid() const { return g && all_in(g, -HUGE_VAL, 0.0); }
  };
  static Data data(Bytes& in, const Layer& l, Index T, Index H, std::mt19937& gen) {
    const Index dk = l.options().key_dim;
    Data d{qkv<S>(in, T, H * dk, H * l.options().value_dim, gen), std::nullopt};
    d.g = channel_gate<S>(in, T, H * dk, -1.0, 0.0, 0.0, gen);
    return d;
  }
  /// ‖S_t‖ ≤ ‖S_{t−1}‖ + ‖k_t‖‖v_t‖ (a decay only shrinks S).
  static double output_bound(const Layer& l, const Data& d, const typename Layer::State& s) {
    if (!moderate(d.x.q) || !moderate(d.x.k) || !moderate(d.x.v)) return HUGE_VAL;
    return memory_bound(
        d.x.q.rows(), l.scale(), s.S, [&](Index t) { return row_norm(d.x.q, t); },
        [](Index) { return 1.0; },
        [&](Index t) { return row_norm(d.x.k, t) * row_norm(d.x.v, t); });
  }
  static void break_state(Bytes& in, const Layer&, typename Layer::State& s) {
    break_tensor(in, s.S);
  }
  static std::vector<Matrix<S>> tensors(const typename Layer::State& s) { return {s.S}; }
};

template <class S>
struct Fuzz<KimiDeltaAttention<S>> {
  using Layer = KimiDeltaAttention<S>;
  static Layer make(Bytes& in) {
    typename Layer::Options o;
    o.key_dim = (in.u8() + 3) % 9;
    o.value_dim = (in.u8() + 2) % 9;
    o.scale = optional_scalar<S>(in);
    const std::uint8_t flags = in.u8();
    o.qk_l2norm = flags & 1;
    o.check_finite = !(flags & 2);
    o.chunk_size = option(in, 4, -2, 12);
    return Layer(o);
  }
  struct Data {
    QKV<S> x;
    std::optional<Matrix<S>> beta, g;
    typename Layer::Inputs inputs() const {
      return {
          .q = x.q, .k = x.k, .v = x.v, .beta = required(beta), .log_decay = required_channels(g)};
    }
    bool gates_valid() const {
      return beta && all_in(beta, 0.0, 2.0) && g && all_in(g, -HUGE_VAL, 0.0);
    }
  };
  static Data data(Bytes& in, const Layer& l, Index T, Index H, std::mt19937& gen) {
    const Index dk = l.options().key_dim;
    Data d{qkv<S>(in, T, H * dk, H * l.options().value_dim, gen), std::nullopt, std::nullopt};
    d.beta = gate<S>(in, T, H, 0.0, 2.0, gen);
    d.g = channel_gate<S>(in, T, H * dk, -1.0, 0.0, 0.0, gen);
    return d;
  }
  /// With k̃ the key the layer uses (‖k̃‖ ≤ 1 under qk_l2norm): ‖S_t‖ ≤ (1 + β‖k̃‖²)‖S_{t−1}‖ +
  /// β‖k̃‖‖v‖ (S̃ = diag(e^g) S only shrinks, and ‖I − β k̃ᵀk̃‖ ≤ 1 + β‖k̃‖²).
  static double output_bound(const Layer& l, const Data& d, const typename Layer::State& s) {
    const bool unit = l.options().qk_l2norm;
    const bool inputs_ok =
        unit ? d.x.q.allFinite() && d.x.k.allFinite() : moderate(d.x.q) && moderate(d.x.k);
    if (!inputs_ok || !moderate(d.x.v)) return HUGE_VAL;
    const auto key = [&](Index t) { return unit ? 1.0 : row_norm(d.x.k, t); };
    const auto beta = [&](Index t) { return static_cast<double>((*d.beta)(t, 0)); };
    return memory_bound(
        d.x.q.rows(), l.scale(), s.S, [&](Index t) { return unit ? 1.0 : row_norm(d.x.q, t); },
        [&](Index t) { return 1.0 + beta(t) * key(t) * key(t); },
        [&](Index t) { return beta(t) * key(t) * row_norm(d.x.v, t); });
  }
  static void break_state(Bytes& in, const Layer&, typename Layer::State& s) {
    break_tensor(in, s.S);
  }
  static std::vector<Matrix<S>> tensors(const typename Layer::State& s) { return {s.S}; }
};

template <class S>
struct Fuzz<GeneralizedDeltaRule<S>> {
  using Layer = GeneralizedDeltaRule<S>;
  static Layer make(Bytes& in) {
    typename Layer::Options o;
    o.key_dim = (in.u8() + 3) % 9;
    o.value_dim = (in.u8() + 2) % 9;
    o.scale = optional_scalar<S>(in);
    o.check_finite = !(in.u8() & 1);
    o.chunk_size = option(in, 4, -2, 12);
    return Layer(o);
  }
  struct Data {
    QKV<S> x;
    std::optional<Matrix<S>> a, b, g;
    typename Layer::Inputs inputs() const {
      return {.q = x.q,
              .k = x.k,
              .v = x.v,
              .a = required_channels(a),
              .b = required_channels(b),
              .log_decay = required_channels(g)};
    }
    bool gates_valid() const {
      return a && b && g && all_in(a, -HUGE_VAL, HUGE_VAL) && all_in(b, -HUGE_VAL, HUGE_VAL) &&
             all_in(g, -HUGE_VAL, 0.0);
    }
  };
  /// a, b in [−0.5, 0.5] (RWKV-7's a = −κ̂, b = κ̂ ⊙ α have entries in [−1, 1]); broken ones
  /// get NaN or ±Inf (nothing finite is out of range).
  static Data data(Bytes& in, const Layer& l, Index T, Index H, std::mt19937& gen) {
    const Index dk = l.options().key_dim;
    Data d{qkv<S>(in, T, H * dk, H * l.options().value_dim, gen), std::nullopt, std::nullopt,
           std::nullopt};
    d.a = channel_gate<S>(in, T, H * dk, -0.5, 0.5, HUGE_VAL, gen);
    d.b = channel_gate<S>(in, T, H * dk, -0.5, 0.5, HUGE_VAL, gen);
    d.g = channel_gate<S>(in, T, H * dk, -1.0, 0.0, 0.0, gen);
    return d;
  }
  /// ‖S_t‖ ≤ (1 + ‖a_t‖‖b_t‖)‖S_{t−1}‖ + ‖k_t‖‖v_t‖.
  static double output_bound(const Layer& l, const Data& d, const typename Layer::State& s) {
    if (!moderate(d.x.q) || !moderate(d.x.k) || !moderate(d.x.v) || !moderate(*d.a) ||
        !moderate(*d.b)) {
      return HUGE_VAL;
    }
    return memory_bound(
        d.x.q.rows(), l.scale(), s.S, [&](Index t) { return row_norm(d.x.q, t); },
        [&](Index t) { return 1.0 + row_norm(*d.a, t) * row_norm(*d.b, t); },
        [&](Index t) { return row_norm(d.x.k, t) * row_norm(d.x.v, t); });
  }
  static void break_state(Bytes& in, const Layer&, typename Layer::State& s) {
    break_tensor(in, s.S);
  }
  static std::vector<Matrix<S>> tensors(const typename Layer::State& s) { return {s.S}; }
};

// ---------------------------------------------------------------------------------------------

template <class Layer>
std::optional<Layer> make(Bytes& in) {
  try {
    return Fuzz<Layer>::make(in);
  } catch (const seqmem::invalid_argument&) {
    return std::nullopt;  // refused options: fine
  } catch (const std::bad_alloc&) {
    return std::nullopt;  // a hidden layer too big to allocate (expansion ≥ 2^62, dim 1)
  }
}

/// Up to three calls on one head, each of a fuzz-chosen form, length and shape.
template <class Layer>
void run_single(Bytes& in, const Layer& layer, std::mt19937& gen) {
  using S = typename Layer::Scalar;
  using F = Fuzz<Layer>;
  auto state = layer.initial_state();
  if (in.u8() % 4 == 3) F::break_state(in, layer, state);
  for (int call = 0; call < 3 && !(call > 0 && in.empty()); ++call) {
    const Form form = static_cast<Form>(in.u8() % 3);
    const Index T = in.u8() % 13;
    const auto data = F::data(in, layer, T, 1, gen);
    const auto inputs = data.inputs();
    const auto before = F::tensors(state);
    const auto copy = state;
    const bool out_param = in.u8() % 4 == 3;
    const Index rows = Layer::tokens(inputs), cols = layer.output_dim();
    Matrix<S> out(clamp0(rows + (out_param ? delta(in, rows) : 0)),
                  clamp0(cols + (out_param ? delta(in, cols) : 0)));
    bool threw = false;
    try {
      if (out_param) {
        layer.forward(form, inputs, state, out);
      } else {
        out = layer.forward(form, inputs, state);
      }
    } catch (const seqmem::invalid_argument&) {
      threw = true;
    }
    bool check_threw = false;
    try {
      layer.check(form, inputs, copy);
    } catch (const seqmem::invalid_argument&) {
      check_threw = true;
    }
    if (threw) {
      FUZZ_REQUIRE(identical(F::tensors(state), before));
      const bool out_shape_ok = out.rows() == rows && out.cols() == cols;
      FUZZ_REQUIRE(check_threw || !out_shape_ok);  // check() knows every bad input but `out`
      return;
    }
    FUZZ_REQUIRE(!check_threw);
    FUZZ_REQUIRE(out.rows() == rows && out.cols() == cols);
    FUZZ_REQUIRE(data.gates_valid());
    if constexpr (requires { F::output_bound(layer, data, copy); }) {
      if (F::output_bound(layer, data, copy) <= kFiniteBound<S>) {
        FUZZ_REQUIRE(out.allFinite());
        for (const auto& m : F::tensors(state))
          FUZZ_REQUIRE(m.allFinite());
      }
    }
  }
}

/// Up to three calls through MultiHead (one worker thread) on H = 1..3 heads.
template <class Layer>
void run_multi(Bytes& in, const Layer& layer, std::mt19937& gen) {
  using S = typename Layer::Scalar;
  using F = Fuzz<Layer>;
  const Index H = 1 + in.u8() % 3;
  const MultiHead<Layer> exec(layer, H, 1);
  auto states = exec.initial_state();
  switch (in.u8() % 8) {
    case 5: states.pop_back(); break;
    case 6: states.push_back(layer.initial_state()); break;
    case 7:
      if (!states.empty()) F::break_state(in, layer, states.back());
      break;
    default: break;
  }
  auto snapshot = [&] {
    std::vector<std::vector<Matrix<S>>> all;
    for (const auto& s : states)
      all.push_back(F::tensors(s));
    return all;
  };
  for (int call = 0; call < 3 && !(call > 0 && in.empty()); ++call) {
    const Form form = static_cast<Form>(in.u8() % 3);
    const Index T = in.u8() % 13;
    const auto data = F::data(in, layer, T, H, gen);
    const auto before = snapshot();
    try {
      const Matrix<S> out = exec.forward(form, data.inputs(), states);
      FUZZ_REQUIRE(out.rows() == Layer::tokens(data.inputs()) &&
                   out.cols() == H * layer.output_dim());
      FUZZ_REQUIRE(data.gates_valid());
    } catch (const seqmem::invalid_argument&) {
      const auto after = snapshot();
      FUZZ_REQUIRE(after.size() == before.size());
      for (std::size_t h = 0; h < after.size(); ++h)
        FUZZ_REQUIRE(identical(after[h], before[h]));
      return;
    }
  }
}

template <class Layer>
void run(Bytes& in) {
  const auto layer = make<Layer>(in);
  if (!layer) return;
  const bool multi = in.u8() % 4 == 3;
  std::mt19937 gen(in.u8());
  if (multi) {
    run_multi(in, *layer, gen);
  } else {
    run_single(in, *layer, gen);
  }
}

/// SEQMEM_FUZZ_LAYER=0..8 (the order of `dispatch`) fuzzes that layer alone, whatever the
/// first byte says (its bit 7 still picks float or double); unset: −1, every layer.
inline int only_layer() {
  const char* text = std::getenv("SEQMEM_FUZZ_LAYER");
  if (text == nullptr || *text == '\0') return -1;
  const int layer = std::atoi(text);
  if (layer < 0 || layer > 8) {
    std::fprintf(stderr, "SEQMEM_FUZZ_LAYER=%s: want 0..8\n", text);
    std::abort();
  }
  return layer;
}

template <class S>
void dispatch(Bytes& in, std::uint8_t which) {
  switch (which % 9) {
    case 0: return run<LinearAttention<S>>(in);
    case 1: return run<SoftmaxAttention<S>>(in);
    case 2: return run<DeltaNet<S>>(in);
    case 3: return run<TTTLinear<S>>(in);
    case 4: return run<TTTMLP<S>>(in);
    case 5: return run<TitansMemory<S>>(in);
    case 6: return run<GatedLinearAttention<S>>(in);
    case 7: return run<KimiDeltaAttention<S>>(in);
    default: return run<GeneralizedDeltaRule<S>>(in);
  }
}

}  // namespace
}  // namespace seqmem_fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  seqmem_fuzz::Bytes in(data, size);
  const std::uint8_t head = in.u8();  // layer (low bits), scalar type (bit 7)
  static const int only = seqmem_fuzz::only_layer();
  const std::uint8_t which = only >= 0 ? static_cast<std::uint8_t>(only) : head & 0x7f;
  try {
    if (head & 0x80) {
      seqmem_fuzz::dispatch<float>(in, which);
    } else {
      seqmem_fuzz::dispatch<double>(in, which);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "unexpected exception: %s\n", e.what());
    std::abort();
  }
  return 0;
}
