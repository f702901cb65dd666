# seqmem_target_defaults(<target> [PORTABLE])
#
# Compile settings for seqmem's OWN targets (tests, benchmarks, examples): no compiler
# extensions, warnings, optional -Werror (SEQMEM_WERROR), -march=native (SEQMEM_NATIVE) and
# sanitizers (SEQMEM_SANITIZE, e.g. "address;undefined" or "thread": -fsanitize=…,
# -fno-sanitize-recover=all and libstdc++'s checked mode, -D_GLIBCXX_ASSERTIONS). (The libxsmm
# backend comes with seqmem::seqmem itself.)
# PORTABLE leaves out -march=native: the target is built with the compiler's default target, as a
# consumer's Release build is (the backend guard, bench/CMakeLists.txt).
# Never call it on the `seqmem` interface target: consumers must not inherit any of this.
include_guard(GLOBAL)
include(CheckCXXCompilerFlag)

function(seqmem_target_defaults target)
  cmake_parse_arguments(PARSE_ARGV 1 _arg "PORTABLE" "" "")
  if(NOT TARGET ${target})
    message(FATAL_ERROR "seqmem_target_defaults: no target named '${target}'")
  endif()
  get_target_property(_type ${target} TYPE)
  if(_type STREQUAL "INTERFACE_LIBRARY")
    message(FATAL_ERROR "seqmem_target_defaults: '${target}' is an INTERFACE library; "
                        "these flags are for seqmem's own tests/benchmarks/examples only")
  endif()

  set_target_properties(${target} PROPERTIES CXX_EXTENSIONS OFF) # -std=c++20, not gnu++20
  if(MSVC)
    target_compile_options(${target} PRIVATE /W4 /permissive-)
    if(SEQMEM_WERROR)
      target_compile_options(${target} PRIVATE /WX)
    endif()
  elseif(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wconversion)
    if(SEQMEM_WERROR)
      target_compile_options(${target} PRIVATE -Werror)
    endif()
    # GCC < 13 reports false "may be used uninitialized" warnings on disengaged std::optional
    # members of aggregates (GCC PR 80635) — our Options structs — and, with -march=native,
    # inside its own AVX-512 intrinsics that Eigen uses (GCC PR 105593).
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
      target_compile_options(${target} PRIVATE -Wno-maybe-uninitialized)
    endif()
    if(SEQMEM_SANITIZE)
      list(JOIN SEQMEM_SANITIZE "," _sanitizers)
      target_compile_options(${target} PRIVATE -fsanitize=${_sanitizers}
                                               -fno-sanitize-recover=all -fno-omit-frame-pointer)
      target_link_options(${target} PRIVATE -fsanitize=${_sanitizers})
      target_compile_definitions(${target} PRIVATE _GLIBCXX_ASSERTIONS)
    endif()
    if(SEQMEM_NATIVE AND NOT _arg_PORTABLE)
      check_cxx_compiler_flag(-march=native SEQMEM_HAVE_MARCH_NATIVE)
      if(SEQMEM_HAVE_MARCH_NATIVE)
        target_compile_options(${target} PRIVATE -march=native)
        # (GCC PR 105593 also shows as -Wuninitialized: `__Y = __Y` in avx512fintrin.h.)
        if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
          target_compile_options(${target} PRIVATE -Wno-uninitialized)
        endif()
      endif()
    endif()
  elseif(SEQMEM_SANITIZE)
    message(FATAL_ERROR "SEQMEM_SANITIZE needs GCC or Clang, got ${CMAKE_CXX_COMPILER_ID}")
  endif()
endfunction()
