# cmake -DHEADER=<include/seqmem/version.hpp> -DEXPECTED_VERSION=<X.Y.Z> -P CheckVersionHeader.cmake
#
# Fails unless SEQMEM_VERSION_MAJOR/MINOR/PATCH in HEADER equal project(VERSION).
foreach(_var IN ITEMS HEADER EXPECTED_VERSION)
  if(NOT DEFINED ${_var})
    message(FATAL_ERROR "CheckVersionHeader: -D${_var}=... is required")
  endif()
endforeach()
if(NOT EXISTS "${HEADER}")
  message(FATAL_ERROR "CheckVersionHeader: ${HEADER} does not exist")
endif()

file(READ "${HEADER}" _text)
set(_found "")
foreach(_part IN ITEMS MAJOR MINOR PATCH)
  if(NOT _text MATCHES "#[ \t]*define[ \t]+SEQMEM_VERSION_${_part}[ \t]+([0-9]+)")
    message(FATAL_ERROR "CheckVersionHeader: no '#define SEQMEM_VERSION_${_part} <n>' in ${HEADER}")
  endif()
  list(APPEND _found "${CMAKE_MATCH_1}")
endforeach()
list(JOIN _found "." _found)

if(NOT _found VERSION_EQUAL EXPECTED_VERSION)
  message(FATAL_ERROR "CheckVersionHeader: ${HEADER} says ${_found}, "
                      "project(VERSION) in CMakeLists.txt says ${EXPECTED_VERSION}")
endif()
message(STATUS "version.hpp ${_found} == project(VERSION) ${EXPECTED_VERSION}")
