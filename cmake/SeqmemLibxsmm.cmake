# Finds libxsmm through pkg-config (Debian: libxsmm-dev) and, when found, defines the imported
# target seqmem::libxsmm: the compile definition SEQMEM_USE_LIBXSMM plus libxsmm's link line,
# which puts detail/matmul.hpp's products on libxsmm's small-matrix kernels.
#
# Used by seqmem's CMakeLists.txt (option SEQMEM_USE_LIBXSMM) and installed beside
# seqmemConfig.cmake, which includes it again when the installed package was configured with
# libxsmm: find_package(seqmem) then gives a consumer the same engine as seqmem's own tests.
include_guard(GLOBAL)

if(NOT TARGET seqmem::libxsmm)
  find_package(PkgConfig QUIET)
  if(PkgConfig_FOUND AND NOT TARGET PkgConfig::SEQMEM_LIBXSMM)
    pkg_check_modules(SEQMEM_LIBXSMM QUIET IMPORTED_TARGET GLOBAL libxsmmnoblas)
  endif()
  if(TARGET PkgConfig::SEQMEM_LIBXSMM)
    # Debian's libxsmmnoblas.pc lists the BLAS stubs before libxsmm.a, whose objects refer to
    # them: with static archives the stubs must come again after libxsmm.
    find_library(SEQMEM_LIBXSMM_NOBLAS xsmmnoblas HINTS ${SEQMEM_LIBXSMM_LIBRARY_DIRS})
    mark_as_advanced(SEQMEM_LIBXSMM_NOBLAS)
    add_library(seqmem::libxsmm INTERFACE IMPORTED GLOBAL)
    target_compile_definitions(seqmem::libxsmm INTERFACE SEQMEM_USE_LIBXSMM)
    target_link_libraries(seqmem::libxsmm INTERFACE PkgConfig::SEQMEM_LIBXSMM
                                                    ${SEQMEM_LIBXSMM_NOBLAS})
  endif()
endif()
