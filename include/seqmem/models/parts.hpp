#pragma once

/// @file
/// Parts that several layers from x share (docs/layers.md): an input stream (a projection of
/// x, then optionally the causal short convolution with its cache) and the output stage of
/// the delta-rule layers (per-head RMSNorm, optionally gated by silu(x g_projᵀ), then o_proj).
///
/// Row blocks: a layer's forward works through x a block of rows at a time (`row_block`), into
/// scratch buffers of one block allocated once per call. Every step but the memory is
/// row-local, the convolution and the memory carry their state from block to block, and a
/// block is a whole number of the memory's chunks, so the result is that of one pass over all
/// rows; what it saves is the T-row temporaries: fresh pages of tens of MB per call, whose
/// first touch (a page fault per 4 KiB) cost as much as a projection (docs/benchmarks.md,
/// "Layers from x").

#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "seqmem/checkpoint.hpp"
#include "seqmem/core/types.hpp"
#include "seqmem/detail/checks.hpp"
#include "seqmem/pieces/linear.hpp"
#include "seqmem/pieces/norm.hpp"
#include "seqmem/pieces/short_conv.hpp"

/// Layers from x: whole token mixers (`T×hidden_size` in and out) built from a checkpoint, each
/// around one of seqmem's memories (docs/layers.md), and the parts they share.
namespace seqmem::models {

/// Rows per block of a layer's forward over `T` tokens: `block` rounded down to a multiple of
/// the memory's `chunk` (at least one chunk), at most T; the whole call for the parallel form
/// (whose one block is all of T) or `block` ≤ 0.
inline Index row_block(Form form, Index T, Index block, Index chunk) {
  if (form == Form::parallel || block <= 0) return T;
  chunk = std::max<Index>(chunk, 1);
  return std::min(T, std::max(chunk, block / chunk * chunk));
}

/// The convolution caches of a layer's q, k and v streams, as one argument.
template <class Scalar>
struct ConvCaches {
  /// The q stream's convolution cache, `(K−1)×channels` (empty without a convolution).
  Matrix<Scalar>& q;
  /// The k stream's convolution cache.
  Matrix<Scalar>& k;
  /// The v stream's convolution cache.
  Matrix<Scalar>& v;
};

/// Runs `block(x_rows, heads, caches, out_rows, n)` over x in row blocks of `B` rows (see
/// row_block) for a layer whose state is `heads` plus `q_cache`, `k_cache`, `v_cache`, keeping
/// the strong guarantee. One block (a decode step, a short prompt): `block` checks every head's
/// inputs before changing any head state, so the heads are updated in place, without a copy of
/// the state; the caches are updated in copies, swapped in at the end. Several blocks work on a
/// copy of the state, moved in at the end.
template <class Scalar, class State, class Block>
void in_row_blocks(const MatrixCRef<Scalar>& x, State& state, MatrixRef<Scalar> out, Index B,
                   const Block& block) {
  const Index T = x.rows();
  if (T <= B) {
    Matrix<Scalar> q_cache = state.q_cache, k_cache = state.k_cache, v_cache = state.v_cache;
    block(x, state.heads, ConvCaches<Scalar>{q_cache, k_cache, v_cache}, out, T);
    state.q_cache.swap(q_cache);
    state.k_cache.swap(k_cache);
    state.v_cache.swap(v_cache);
    return;
  }
  State next = state;
  for (Index begin = 0; begin < T; begin += B) {
    const Index n = std::min(B, T - begin);
    block(x.middleRows(begin, n), next.heads,
          ConvCaches<Scalar>{next.q_cache, next.k_cache, next.v_cache}, out.middleRows(begin, n),
          n);
  }
  state = std::move(next);
}

/// `conv(x projᵀ)` (or `x projᵀ` without a convolution), continuing from a cache.
template <class Scalar>
struct ConvProjection {
  /// The projection, weight `channels×hidden` (`<s>_proj.weight`, no bias).
  pieces::Linear<Scalar> proj;
  /// The short convolution after it; absent when the stream has none.
  std::optional<pieces::ShortConv<Scalar>> conv;

  /// The cache at the start of a sequence (empty without a convolution).
  Matrix<Scalar> initial_cache() const { return conv ? conv->initial_cache() : Matrix<Scalar>(); }

  /// `conv(x projᵀ)` for x `T×hidden`, returned as `T×channels`; `cache` moves on by T rows.
  Matrix<Scalar> operator()(const MatrixCRef<Scalar>& x, Matrix<Scalar>& cache) const {
    Matrix<Scalar> z = proj(x);
    if (!conv) return z;
    Matrix<Scalar> out(z.rows(), z.cols());
    conv->apply(z, cache, out);
    return out;
  }

  /// As above, into `out` (`T×channels`), with `z` (the same shape) as scratch.
  void apply(const MatrixCRef<Scalar>& x, Matrix<Scalar>& cache, MatrixRef<Scalar> z,
             MatrixRef<Scalar> out) const {
    if (!conv) return proj.apply(x, out);
    proj.apply(x, z);
    conv->apply(z, cache, out);
  }
};

/// Per value head (width `head_dim`): o ← o / sqrt(mean(o²) + eps) · norm_weight, times
/// silu(x g_projᵀ) when gated; then y = o o_projᵀ.
template <class Scalar>
struct GatedOutput {
  Matrix<Scalar> norm_weight;  ///< 1 × head_dim, shared by the heads
  /// g_proj (weight `heads·head_dim × hidden`); absent when the output is not gated.
  std::optional<pieces::Linear<Scalar>> gate;
  /// o_proj (weight `hidden × heads·head_dim`).
  pieces::Linear<Scalar> proj;
  /// ε of the RMSNorm.
  Scalar eps;
  /// Width of one value head: the RMSNorm's group.
  Index head_dim;

  /// Normalizes (and gates) `o` (`T×(heads·head_dim)`) in place, then writes y = o o_projᵀ
  /// (`T×hidden`); x (`T×hidden`) feeds the gate.
  void operator()(Matrix<Scalar>& o, const MatrixCRef<Scalar>& x, MatrixRef<Scalar> y) const {
    Matrix<Scalar> scratch(gate ? o.rows() : 0, gate ? o.cols() : 0);
    (*this)(o, x, scratch, y);
  }

  /// As above with `gate_scratch` (the shape of `o` when gated, else unused) for x g_projᵀ.
  void operator()(MatrixRef<Scalar> o, const MatrixCRef<Scalar>& x, MatrixRef<Scalar> gate_scratch,
                  MatrixRef<Scalar> y) const {
    if (gate) {
      gate->apply(x, gate_scratch);
      pieces::gated_rms_norm<Scalar>(o, gate_scratch, norm_weight, eps, head_dim);
    } else {
      pieces::rms_norm<Scalar>(o, norm_weight, eps, head_dim);
    }
    proj.apply(o, y);
  }
};

/// How a layer's input streams are stored: `<s>_proj.weight` [channels, hidden] and, with a
/// short convolution, `<s>_conv1d.weight` [channels, 1, conv_size] (+ `.bias` [channels]).
struct StreamShape {
  /// Width of x, the projections' input.
  Index hidden = 0;
  /// Whether a short convolution follows the projection.
  bool short_conv = true;
  /// Its kernel size K.
  Index conv_size = 4;
  /// Whether the convolution has a bias.
  bool conv_bias = false;
};

/// Adds the tensors of stream `name` (`channels` wide) to `specs`.
inline void add_stream_specs(std::vector<TensorSpec>& specs, const std::string& name,
                             Index channels, const StreamShape& shape) {
  specs.push_back({name + "_proj.weight", {channels, shape.hidden}});
  if (!shape.short_conv) return;
  specs.push_back({name + "_conv1d.weight", {channels, 1, shape.conv_size}});
  if (shape.conv_bias) specs.push_back({name + "_conv1d.bias", {channels}});
}

/// Stream `name`, built from (and taking its tensors out of) the loaded `w`.
template <class Scalar>
ConvProjection<Scalar> take_stream(std::map<std::string, Matrix<Scalar>>& w,
                                   const std::string& name, const StreamShape& shape,
                                   std::string_view where) {
  const auto take = [&w](const std::string& key) { return std::move(w.at(key)); };
  ConvProjection<Scalar> s{pieces::Linear<Scalar>(take(name + "_proj.weight"), std::nullopt, where),
                           std::nullopt};
  if (shape.short_conv) {
    s.conv.emplace(take(name + "_conv1d.weight"),
                   shape.conv_bias ? take(name + "_conv1d.bias") : Matrix<Scalar>(), where);
  }
  return s;
}

/// Adds the output stage's tensors to `specs`: `o_norm.weight` [head_dim], `o_proj.weight`
/// [hidden, heads·head_dim] and, when gated, `g_proj.weight` [heads·head_dim, hidden].
inline void add_output_specs(std::vector<TensorSpec>& specs, Index heads, Index head_dim,
                             Index hidden, bool gated) {
  specs.push_back({"o_norm.weight", {head_dim}});
  specs.push_back({"o_proj.weight", {hidden, heads * head_dim}});
  if (gated) specs.push_back({"g_proj.weight", {heads * head_dim, hidden}});
}

/// The output stage, built from (and taking its tensors out of) the loaded `w`.
template <class Scalar>
GatedOutput<Scalar> take_output(std::map<std::string, Matrix<Scalar>>& w, Index head_dim,
                                bool gated, double eps, std::string_view where) {
  std::optional<pieces::Linear<Scalar>> gate;
  if (gated) gate.emplace(std::move(w.at("g_proj.weight")), std::nullopt, where);
  return {std::move(w.at("o_norm.weight")), std::move(gate),
          pieces::Linear<Scalar>(std::move(w.at("o_proj.weight")), std::nullopt, where),
          static_cast<Scalar>(eps), head_dim};
}

/// The mini-batch position shared by the heads of a TTT or Titans layer's state (the memory
/// state's `position`): throws unless `heads` holds `count` states, all at one position in
/// [0, mini_batch).
template <class States>
Index shared_position(std::string_view where, const States& heads, Index count, Index mini_batch) {
  if (static_cast<Index>(heads.size()) != count) {
    detail::fail(where, "state must hold ", count, " head states, got ", heads.size());
  }
  const Index position = heads.front().position;
  if (position < 0 || position >= mini_batch) {
    detail::fail(where, "state.heads[0].position must be in [0, ", mini_batch, "), got ", position);
  }
  for (std::size_t h = 1; h < heads.size(); ++h) {
    if (heads[h].position != position) {
      detail::fail(where, "state.heads[", h, "].position (", heads[h].position,
                   ") must equal state.heads[0].position (", position, ")");
    }
  }
  return position;
}

/// Calls run(begin, n) for the pieces a call of T tokens is given to a TTT or Titans memory in:
/// one piece, except for the parallel form, which those memories define within one
/// mini-batch only (docs/math.md §4): a parallel call is cut at the mini-batch ends.
template <class Run>
void mini_batch_pieces(Form form, Index T, Index position, Index mini_batch, const Run& run) {
  for (Index begin = 0, p = position; begin < T;) {
    const Index n = form == Form::parallel ? std::min(mini_batch - p, T - begin) : T;
    run(begin, n);
    begin += n;
    p = (p + n) % mini_batch;
  }
}

}  // namespace seqmem::models
