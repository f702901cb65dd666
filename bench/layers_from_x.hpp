#pragma once

/// @file
/// The layers-from-x cases of layers_bench (`--suite=layers`, also in `full` and `quick`);
/// bench/layers_from_x.cpp describes them.

namespace seqmem::bench {

/// Registers every layer from x at D = 1024: prefill T = 4096 and decode after 4096 tokens.
/// `rounds_scale` < 1 runs fewer timed rounds (the quick suite).
void register_layers_from_x(double rounds_scale = 1.0);

/// Prefill (T = 4096) of gated DeltaNet and DeltaNet over block_size ∈ {0 (one block),
/// 64 … 1024}: how the models' default row block was chosen (`--suite=layer_blocks`).
void register_layers_from_x_blocks();

}  // namespace seqmem::bench
