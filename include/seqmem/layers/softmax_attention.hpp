#pragma once

/// @file
/// Causal softmax attention with an optional sliding window (docs/math.md §1).

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <optional>
#include <string_view>
#include <tuple>
#include <vector>

#include "seqmem/core/layer.hpp"
#include "seqmem/core/state_layout.hpp"
#include "seqmem/core/types.hpp"
#include "seqmem/detail/checks.hpp"
#include "seqmem/detail/matmul.hpp"
#include "seqmem/detail/scratch.hpp"

namespace seqmem {

/// Causal softmax attention (docs/math.md §1):
///
///     o_t = Σ_{s∈W(t)} softmax_s(scale · q_t·k_s) v_s,   W(t) = {s : t − w < s ≤ t}
///
/// (`window` w = number of keys visible, self included; 0 = all s ≤ t).
///
/// Every form first appends the call's keys and values to the KV cache, so a query finds
/// all its keys at cache rows [max(0, p − w + 1), p] where p is its own row; at the end of
/// the call the cache is cut back to the last w − 1 rows (windowed) or kept whole.
///
/// Grouped-query attention: with `query_heads` G > 1, q is `T×(G·key_dim)`, G query heads
/// side by side that all attend to the one k and v (and the one KV cache) of the call; the
/// output is `T×(G·value_dim)`, query head g in columns g·value_dim … Under `MultiHead` a
/// head is then one KV head with its G query heads (docs/math.md §1, implementation notes).
template <class Scalar_>
class SoftmaxAttention : public LayerBase<SoftmaxAttention<Scalar_>> {
 public:
  /// The scalar type: float or double.
  using Scalar = Scalar_;
  static_assert(std::is_floating_point_v<Scalar>, "seqmem layers take float or double");

  /// Construction options (an aggregate, for designated initializers).
  struct Options {
    /// Width of k and of each query head; must be > 0.
    Index key_dim = 0;
    /// Width of v and of each query head's output; must be > 0.
    Index value_dim = 0;
    std::optional<Scalar> scale = std::nullopt;  ///< default 1/sqrt(key_dim)
    Index window = 0;                            ///< keys visible, self included; 0 = all
    /// Query heads sharing each call's k and v (grouped-query attention): q `T×(G·key_dim)`,
    /// output `T×(G·value_dim)`.
    Index query_heads = 1;
    Index chunk_size = 64;  ///< query and key tile of the chunkwise form
    /// Reject q, k, v containing NaN or Inf (one pass over the inputs); off skips the check.
    bool check_finite = true;
  };

  /// One call: q `T×(query_heads·key_dim)`, k `T×key_dim`, v `T×value_dim`.
  struct Inputs {
    /// Queries, `T×(query_heads·key_dim)`: the query heads side by side.
    InputRef<Scalar> q;
    /// Keys, `T×key_dim`, appended to the cache.
    InputRef<Scalar> k;
    /// Values, `T×value_dim`, appended to the cache.
    InputRef<Scalar> v;
  };

  /// The KV cache (the last `window − 1` keys and values, or all of them) and the number
  /// of tokens seen. Rows live in a buffer with spare room at both ends, so appending a
  /// token and evicting the oldest are amortized O(d).
  class State {
   public:
    /// Cached keys (`cached() × key_dim`), oldest first.
    auto keys() const { return keys_.middleRows(begin_, size_); }
    /// Cached values (`cached() × value_dim`), oldest first.
    auto values() const { return values_.middleRows(begin_, size_); }
    /// Rows in the cache (at most window − 1 when windowed).
    Index cached() const { return size_; }
    /// Rows the buffer has room for (cached rows plus spare room at both ends).
    Index capacity() const { return keys_.rows(); }
    /// Tokens seen since the initial state.
    Index tokens() const { return tokens_; }

   private:
    friend class SoftmaxAttention;

    /// Appends rows, growing (doubling) or compacting the buffer when it is full. A buffer at
    /// least twice the rows it must hold is compacted in place (no allocation: a windowed
    /// cache decodes without allocating), which moves at most one row per row appended since
    /// the last compaction.
    void append(const MatrixCRef<Scalar>& k, const MatrixCRef<Scalar>& v) {
      const Index n = k.rows();
      if (begin_ + size_ + n > keys_.rows()) {
        if (2 * (size_ + n) <= keys_.rows()) {
          compact();
        } else {
          move_to_buffer(std::max<Index>(2 * (size_ + n), 16));
        }
      }
      keys_.middleRows(begin_ + size_, n) = k;
      values_.middleRows(begin_ + size_, n) = v;
      size_ += n;
      tokens_ += n;
    }

    /// Keeps the newest `keep` rows. A long call leaves a buffer sized for the whole call; it
    /// is given back, so that a windowed state (and each copy of it) stays O(window).
    void keep_last(Index keep) {
      if (size_ > keep) {
        begin_ += size_ - keep;
        size_ = keep;
      }
      const Index rows = std::max<Index>(2 * size_, 16);
      if (keys_.rows() > 2 * rows) move_to_buffer(rows);
    }

    /// Moves the cached rows to the top of the buffer (rows are contiguous: one forward copy
    /// of each matrix, from higher to lower addresses, so overlapping is fine).
    void compact() {
      if (begin_ == 0) return;
      for (Matrix<Scalar>* m : {&keys_, &values_}) {
        Scalar* const data = m->data();
        const Index cols = m->cols();
        std::copy(data + begin_ * cols, data + (begin_ + size_) * cols, data);
      }
      begin_ = 0;
    }

    /// Moves the cached rows to the top of a new buffer of `rows` rows (≥ size_).
    void move_to_buffer(Index rows) {
      Matrix<Scalar> keys(rows, keys_.cols()), values(rows, values_.cols());
      keys.topRows(size_) = this->keys();
      values.topRows(size_) = this->values();
      keys_.swap(keys);
      values_.swap(values);
      begin_ = 0;
    }

    Matrix<Scalar> keys_, values_;
    Index begin_ = 0, size_ = 0, tokens_ = 0;
  };

  /// The state in state files (core/state_layout.hpp). The KV cache is private: saved from
  /// keys()/values()/tokens(), rebuilt by make_state.
  struct StateLayout {
    /// The layer kind written in state files.
    static constexpr std::string_view kind = "SoftmaxAttention";
    /// The options that shape the state: key_dim, value_dim and window.
    static std::vector<StateParam> params(const SoftmaxAttention& layer) {
      const auto& o = layer.options();
      return {{"key_dim", o.key_dim}, {"value_dim", o.value_dim}, {"window", o.window}};
    }
    /// Visits the parts of the state in file order: `keys`, `values` (as many rows as `keys`; at
    /// most window − 1 when windowed) and the integer `tokens`.
    template <class V>
    static void visit(const SoftmaxAttention& layer, const State& state, V& v) {
      const MatrixCRef<Scalar> keys = state.keys(), values = state.values();
      const Index tokens = state.tokens();
      visit_cache(layer, keys, values, tokens, v);
    }
    /// Reads the parts `visit` writes and rebuilds the state through `make_state`.
    template <class V>
    static State restore(const SoftmaxAttention& layer, V& v) {
      Matrix<Scalar> keys, values;
      Index tokens = 0;
      visit_cache(layer, keys, values, tokens, v);
      return layer.make_state(keys, values, tokens);
    }

   private:
    template <class M, class I, class V>
    static void visit_cache(const SoftmaxAttention& layer, M& keys, M& values, I& tokens, V& v) {
      constexpr Index kMax = std::numeric_limits<Index>::max();
      const Index window = layer.options().window;
      v.tensor("keys", keys, RowRange{0, window > 0 ? window - 1 : kMax});
      v.tensor("values", values, RowRange{keys.rows(), keys.rows()});
      v.integer("tokens", tokens, keys.rows(), kMax);
    }
  };

  /// The layer's name in error messages.
  static constexpr const char* kName = "SoftmaxAttention";

  /// Checks `options` and fills in the default `scale`.
  /// @throws seqmem::invalid_argument unless key_dim, value_dim, chunk_size and query_heads
  /// are positive, query_heads·key_dim and query_heads·value_dim fit in `Index`, window ≥ 0 and
  /// the scale is finite.
  explicit SoftmaxAttention(const Options& options) : options_(options) {
    detail::require_positive(kName, "key_dim", options_.key_dim);
    detail::require_positive(kName, "value_dim", options_.value_dim);
    detail::require_positive(kName, "chunk_size", options_.chunk_size);
    detail::require_positive(kName, "query_heads", options_.query_heads);
    (void)detail::checked_product(kName, "query_heads·key_dim", options_.query_heads,
                                  options_.key_dim);
    (void)detail::checked_product(kName, "query_heads·value_dim", options_.query_heads,
                                  options_.value_dim);
    if (options_.window < 0) detail::fail(kName, "window must be >= 0, got ", options_.window);
    options_.scale = detail::scale_or_default(kName, options_.scale, options_.key_dim);
  }

  /// The options, with `scale` filled in.
  const Options& options() const { return options_; }
  /// The factor that multiplies q (the option, or 1/√key_dim).
  Scalar scale() const { return *options_.scale; }
  /// Query heads sharing one k and v (q and the output are that many heads wide).
  Index query_heads() const { return options_.query_heads; }
  /// No gates: the layer has none.
  static constexpr std::tuple<> gates() { return {}; }

  /// The empty cache (0 rows, 0 tokens seen).
  State initial_state() const {
    State state;
    state.keys_.resize(0, options_.key_dim);
    state.values_.resize(0, options_.value_dim);
    return state;
  }

  /// A state holding the given cache (`n×key_dim` keys, `n×value_dim` values, oldest first)
  /// after `tokens` tokens, as a state file or a caller restores it. Throws unless the cache
  /// fits the options (n ≤ window − 1 when windowed, n ≤ tokens).
  State make_state(const MatrixCRef<Scalar>& keys, const MatrixCRef<Scalar>& values,
                   Index tokens) const {
    const Index n = keys.rows();
    detail::require_shape(kName, "keys", keys, n, options_.key_dim);
    detail::require_shape(kName, "values", values, n, options_.value_dim);
    if (options_.window > 0 && n > options_.window - 1) {
      detail::fail(kName, "a cache of window ", options_.window, " holds at most ",
                   options_.window - 1, " rows, got ", n);
    }
    if (tokens < n)
      detail::fail(kName, "tokens must be >= the cached rows (", n, "), got ", tokens);
    State state = initial_state();
    state.append(keys, values);
    state.tokens_ = tokens;
    return state;
  }

  /// Throws `seqmem::invalid_argument` unless the cached keys are `cached()×key_dim` and the
  /// cached values `cached()×value_dim` (a state made for other dims).
  void check_state(Form, Index, const State& state) const {
    detail::require_shape(kName, "state.keys", state.keys(), state.cached(), options_.key_dim);
    detail::require_shape(kName, "state.values", state.values(), state.cached(),
                          options_.value_dim);
  }

  /// The math of one checked call with T > 0.
  void run(Form form, const Inputs& in, State& state, MatrixRef<Scalar> out) const {
    const Index T = in.q.rows(), dk = options_.key_dim, dv = options_.value_dim;
    state.append(in.k, in.v);                // once, whatever the number of query heads
    const Index first = state.cached() - T;  // cache row of the call's first query
    // The scaled q: in a per-thread buffer for the recurrent form (a decode step allocates
    // nothing), in a matrix of its own otherwise (a long call's q is not kept).
    auto& ws = detail::thread_workspace<RecurrentWorkspace>();
    Matrix<Scalar> owned;
    if (form != Form::recurrent) owned.resize(T, in.q.cols());
    Eigen::Map<Matrix<Scalar>, Eigen::AlignedMax> q =
        form == Form::recurrent
            ? ws.q.matrix(T, in.q.cols())
            : Eigen::Map<Matrix<Scalar>, Eigen::AlignedMax>(owned.data(), T, in.q.cols());
    q = in.q * scale();
    // Each query head in turn over the same cache (column views of q and out).
    for (Index g = 0; g < options_.query_heads; ++g) {
      const MatrixCRef<Scalar> qg = q.middleCols(g * dk, dk);
      MatrixRef<Scalar> og = out.middleCols(g * dv, dv);
      switch (form) {
        case Form::recurrent: recurrent(qg, state, first, og); break;
        case Form::parallel: parallel(qg, state, first, og); break;
        case Form::chunkwise: chunkwise(qg, state, first, og); break;
      }
    }
    if (options_.window > 0) state.keep_last(options_.window - 1);
  }

 private:
  static constexpr Scalar kNegInf = -std::numeric_limits<Scalar>::infinity();

  /// First cache row visible from the query at cache row p.
  Index first_visible(Index p) const {
    return options_.window > 0 ? std::max<Index>(0, p - options_.window + 1) : 0;
  }

  /// The definition: one query at a time over its visible keys, stable softmax.
  /// Per-thread buffers of the recurrent form: the scaled q and one query's scores.
  struct RecurrentWorkspace {
    detail::Scratch<Scalar> q, scores;
  };

  void recurrent(const MatrixCRef<Scalar>& q, const State& state, Index first,
                 MatrixRef<Scalar> out) const {
    const auto keys = state.keys();
    const auto values = state.values();
    auto scores = detail::thread_workspace<RecurrentWorkspace>().scores.column(first + q.rows());
    for (Index t = 0; t < q.rows(); ++t) {
      const Index p = first + t, lo = first_visible(p), n = p - lo + 1;
      auto s = scores.head(n);
      s.noalias() = keys.middleRows(lo, n) * q.row(t).transpose();
      s = (s.array() - s.maxCoeff()).exp();
      out.row(t).noalias() = s.transpose() * values.middleRows(lo, n);
      out.row(t) /= s.sum();
    }
  }

  /// Scores of all queries against all visible cache rows, masked, row softmax, times values.
  void parallel(const MatrixCRef<Scalar>& q, const State& state, Index first,
                MatrixRef<Scalar> out) const {
    const Index lo = first_visible(first), n = state.cached() - lo;
    Matrix<Scalar> scores(q.rows(), n);
    std::array<Matrix<Scalar>, 2> transposed;
    detail::multiply_by_transpose_into<Scalar>(scores, q, state.keys().bottomRows(n), transposed);
    for (Index t = 0; t < q.rows(); ++t) {
      const Index p = first + t, row_lo = first_visible(p) - lo, row_hi = p - lo;
      auto s = scores.row(t);
      s.head(row_lo).setConstant(kNegInf);
      s.tail(n - row_hi - 1).setConstant(kNegInf);
      s = (s.array() - s.maxCoeff()).exp();
      s /= s.sum();
    }
    detail::multiply_into<Scalar>(out, scores, state.values().bottomRows(n));
  }

  /// Flash-style tiles: for each block of C queries, sweep the visible key blocks with the
  /// online softmax (running max m, running sum l, rescaled accumulator). Holds at most one
  /// C×C score tile: memory O(C² + T·d).
  void chunkwise(const MatrixCRef<Scalar>& q, const State& state, Index first,
                 MatrixRef<Scalar> out) const {
    const auto keys = state.keys();
    const auto values = state.values();
    const Index C = options_.chunk_size;
    Matrix<Scalar> tile, acc;
    std::array<Matrix<Scalar>, 2> transposed;  // scratch of multiply_by_transpose
    Vector<Scalar> row_max, row_sum;
    for (Index q0 = 0; q0 < q.rows(); q0 += C) {
      const Index nq = std::min(C, q.rows() - q0);
      const Index p0 = first + q0, p1 = p0 + nq;  // cache rows [p0, p1) of these queries
      acc.setZero(nq, options_.value_dim);
      row_max.setConstant(nq, kNegInf);
      row_sum.setZero(nq);
      for (Index k0 = first_visible(p0); k0 < p1; k0 += C) {
        const Index nk = std::min(C, p1 - k0);
        detail::multiply_by_transpose<Scalar>(tile, q.middleRows(q0, nq), keys.middleRows(k0, nk),
                                              transposed);
        for (Index i = 0; i < nq; ++i) {
          const Index p = p0 + i, lo = first_visible(p);
          auto s = tile.row(i);
          // Keys outside [lo, p] are masked.
          const Index masked_front = std::clamp<Index>(lo - k0, 0, nk);
          const Index visible_end = std::clamp<Index>(p - k0 + 1, 0, nk);
          s.head(masked_front).setConstant(kNegInf);
          s.tail(nk - visible_end).setConstant(kNegInf);
          const Scalar m = std::max(row_max(i), s.maxCoeff());
          if (m == kNegInf) {  // nothing visible yet in this row
            s.setZero();
            continue;
          }
          s = (s.array() - m).exp();
          const Scalar rescale = std::exp(row_max(i) - m);
          row_sum(i) = row_sum(i) * rescale + s.sum();
          acc.row(i) *= rescale;
          row_max(i) = m;
        }
        detail::multiply<Scalar>(acc, tile, values.middleRows(k0, nk), true);
      }
      out.middleRows(q0, nq) = acc.array().colwise() / row_sum.array();
    }
  }

  Options options_;
};

}  // namespace seqmem
