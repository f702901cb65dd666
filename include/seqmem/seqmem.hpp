#pragma once

/// @file
/// Umbrella header: every seqmem layer, the multi-head executor and state files.
/// Public headers are core/ (types, concepts, errors, the shared layer surface), layers/,
/// multi_head.hpp and state_io.hpp; detail/ holds the implementation (shared math, the
/// TTT/Titans engine, products, checks). Checkpoints (checkpoint.hpp, which parses with
/// nlohmann-json), the pieces of layers from x (pieces/) and the layers from x (models/) are
/// included on their own.

#include "seqmem/core/concepts.hpp"
#include "seqmem/core/errors.hpp"
#include "seqmem/core/layer.hpp"
#include "seqmem/core/state_layout.hpp"
#include "seqmem/core/types.hpp"
#include "seqmem/core/weights.hpp"
#include "seqmem/layers/delta_net.hpp"
#include "seqmem/layers/generalized_delta_rule.hpp"
#include "seqmem/layers/gla.hpp"
#include "seqmem/layers/kda.hpp"
#include "seqmem/layers/linear_attention.hpp"
#include "seqmem/layers/softmax_attention.hpp"
#include "seqmem/layers/titans.hpp"
#include "seqmem/layers/ttt.hpp"
#include "seqmem/multi_head.hpp"
#include "seqmem/state_io.hpp"
#include "seqmem/version.hpp"
