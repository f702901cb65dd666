#pragma once

/// @file
/// `seqmem::invalid_argument`, what every public entry throws for bad input (the checks
/// themselves are in detail/checks.hpp).

#include <stdexcept>

namespace seqmem {

/// Thrown for bad shapes, dimensions, gate values and options. The message names the
/// argument, what was expected and what was given.
class invalid_argument : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

}  // namespace seqmem
