#pragma once

/// @file
/// seqmem version; kept equal to `project(VERSION)` in the top-level CMakeLists.txt
/// (a test checks it).

/// Major version.
#define SEQMEM_VERSION_MAJOR 0
/// Minor version.
#define SEQMEM_VERSION_MINOR 1
/// Patch version.
#define SEQMEM_VERSION_PATCH 0
