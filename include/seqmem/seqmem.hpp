#pragma once

/// @file
/// Umbrella header: every seqmem layer and the multi-head executor.

#include "seqmem/core/concepts.hpp"
#include "seqmem/core/errors.hpp"
#include "seqmem/core/math.hpp"
#include "seqmem/core/types.hpp"
#include "seqmem/layers/delta_net.hpp"
#include "seqmem/layers/linear_attention.hpp"
#include "seqmem/layers/softmax_attention.hpp"
#include "seqmem/layers/titans.hpp"
#include "seqmem/layers/ttt.hpp"
#include "seqmem/multi_head.hpp"
#include "seqmem/state_io.hpp"
#include "seqmem/version.hpp"
