# cmake -DMODE=<find_package|add_subdirectory|fetchcontent> -DSEQMEM_SOURCE_DIR=<src>
#       -DCONSUMER_SOURCE_DIR=<src>/tests/consumer -DWORK_DIR=<scratch dir>
#       [-DSEQMEM_BINARY_DIR=<configured seqmem build, for find_package>] [-DSEQMEM_VERSION=X.Y.Z]
#       [-DCONFIG=<config to install>] [-DGENERATOR=...] [-DGENERATOR_PLATFORM=...]
#       [-DGENERATOR_TOOLSET=...] [-DMAKE_PROGRAM=...] [-DCXX_COMPILER=...] [-DEigen3_DIR=...]
#       [-DEXPECT_LIBXSMM=ON|OFF] -P RunConsumerTest.cmake
#
# Builds and runs the tiny consumer project in tests/consumer against seqmem:
#   find_package     - `cmake --install` the seqmem build into WORK_DIR/prefix, then
#                      find_package(seqmem) with CMAKE_PREFIX_PATH=WORK_DIR/prefix; also builds
#                      and runs the consumer with `pkg-config --cflags --libs seqmem` alone
#                      when pkg-config is available.
#   add_subdirectory - add_subdirectory(SEQMEM_SOURCE_DIR), checking nothing but the library is
#                      built when seqmem is not the top-level project.
#   fetchcontent     - FetchContent_Declare(seqmem SOURCE_DIR SEQMEM_SOURCE_DIR), same checks.
# The consumer is built in Release; its `run_consumer` target runs the program. With
# EXPECT_LIBXSMM given, the consumer checks at compile time that it got that product backend
# (seqmem::product_backend()), i.e. that the package passed libxsmm on, or did not.
cmake_minimum_required(VERSION 3.22)

foreach(_var IN ITEMS MODE SEQMEM_SOURCE_DIR CONSUMER_SOURCE_DIR WORK_DIR)
  if(NOT DEFINED ${_var} OR "${${_var}}" STREQUAL "")
    message(FATAL_ERROR "RunConsumerTest: -D${_var}=... is required")
  endif()
endforeach()
if(NOT MODE MATCHES "^(find_package|add_subdirectory|fetchcontent)$")
  message(FATAL_ERROR "RunConsumerTest: unknown MODE '${MODE}'")
endif()

function(run_step what)
  string(REPLACE ";" " " _pretty "${ARGN}")
  message(STATUS "[consumer.${MODE}] ${what}: ${_pretty}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "[consumer.${MODE}] ${what} failed (${_rc})")
  endif()
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
set(_build_dir "${WORK_DIR}/build")

set(_configure_args
    -S "${CONSUMER_SOURCE_DIR}" -B "${_build_dir}" -DCMAKE_BUILD_TYPE=Release
    -DSEQMEM_CONSUMER_MODE=${MODE} -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
if(DEFINED EXPECT_LIBXSMM AND NOT EXPECT_LIBXSMM STREQUAL "")
  if(EXPECT_LIBXSMM)
    set(_expect_libxsmm 1)
  else()
    set(_expect_libxsmm 0)
  endif()
  list(APPEND _configure_args "-DSEQMEM_CONSUMER_EXPECT_LIBXSMM=${_expect_libxsmm}")
  if(NOT MODE STREQUAL "find_package") # a vendored seqmem takes the parent's choice
    list(APPEND _configure_args "-DSEQMEM_USE_LIBXSMM=${EXPECT_LIBXSMM}")
  endif()
endif()
foreach(_pair IN ITEMS "GENERATOR;-G" "GENERATOR_PLATFORM;-A" "GENERATOR_TOOLSET;-T"
                       "MAKE_PROGRAM;-DCMAKE_MAKE_PROGRAM=" "CXX_COMPILER;-DCMAKE_CXX_COMPILER="
                       "Eigen3_DIR;-DEigen3_DIR=")
  list(GET _pair 0 _var)
  list(GET _pair 1 _flag)
  if(DEFINED ${_var} AND NOT "${${_var}}" STREQUAL "" AND NOT "${${_var}}" MATCHES "-NOTFOUND$")
    if(_flag MATCHES "=$")
      list(APPEND _configure_args "${_flag}${${_var}}")
    else()
      list(APPEND _configure_args "${_flag}" "${${_var}}")
    endif()
  endif()
endforeach()

if(MODE STREQUAL "find_package")
  if(NOT DEFINED SEQMEM_BINARY_DIR OR NOT EXISTS "${SEQMEM_BINARY_DIR}/cmake_install.cmake")
    message(FATAL_ERROR "RunConsumerTest: -DSEQMEM_BINARY_DIR=<configured seqmem build> "
                        "is required for MODE=find_package")
  endif()
  set(_prefix "${WORK_DIR}/prefix")
  set(_install_cmd "${CMAKE_COMMAND}" --install "${SEQMEM_BINARY_DIR}" --prefix "${_prefix}"
                   --component seqmem)
  if(DEFINED CONFIG AND NOT CONFIG STREQUAL "")
    list(APPEND _install_cmd --config "${CONFIG}")
  endif()
  run_step("install" ${_install_cmd})
  list(APPEND _configure_args "-DCMAKE_PREFIX_PATH=${_prefix}" "-DSEQMEM_EXPECTED_PREFIX=${_prefix}")
  if(DEFINED SEQMEM_VERSION)
    list(APPEND _configure_args "-DSEQMEM_EXPECTED_VERSION=${SEQMEM_VERSION}")
  endif()

  # The pkg-config file must point at the installed headers, wherever the prefix is.
  find_program(_pkg_config NAMES pkg-config pkgconf)
  file(GLOB_RECURSE _pc_files "${_prefix}/*/seqmem.pc")
  if(NOT _pc_files)
    message(FATAL_ERROR "[consumer.${MODE}] seqmem.pc was not installed under ${_prefix}")
  endif()
  if(_pkg_config)
    list(GET _pc_files 0 _pc_file)
    get_filename_component(_pc_dir "${_pc_file}" DIRECTORY)
    set(ENV{PKG_CONFIG_PATH} "${_pc_dir}")
    execute_process(COMMAND "${_pkg_config}" --cflags seqmem RESULT_VARIABLE _rc
                    OUTPUT_VARIABLE _cflags OUTPUT_STRIP_TRAILING_WHITESPACE)
    message(STATUS "[consumer.${MODE}] pkg-config --cflags seqmem: ${_cflags}")
    if(NOT _rc EQUAL 0)
      message(FATAL_ERROR "[consumer.${MODE}] pkg-config --cflags seqmem failed (${_rc})")
    endif()
    if(NOT _cflags MATCHES "-I([^ ]*/include)( |$)")
      message(FATAL_ERROR "[consumer.${MODE}] no -I<prefix>/include in '${_cflags}'")
    endif()
    if(NOT EXISTS "${CMAKE_MATCH_1}/seqmem/version.hpp")
      message(FATAL_ERROR "[consumer.${MODE}] pkg-config include dir ${CMAKE_MATCH_1} "
                          "has no seqmem/version.hpp")
    endif()
    # A consumer built from pkg-config's flags alone, as a Makefile user would.
    execute_process(COMMAND "${_pkg_config}" --libs seqmem RESULT_VARIABLE _rc
                    OUTPUT_VARIABLE _libs OUTPUT_STRIP_TRAILING_WHITESPACE)
    message(STATUS "[consumer.${MODE}] pkg-config --libs seqmem: ${_libs}")
    if(NOT _rc EQUAL 0)
      message(FATAL_ERROR "[consumer.${MODE}] pkg-config --libs seqmem failed (${_rc})")
    endif()
    if(DEFINED CXX_COMPILER AND NOT CXX_COMPILER STREQUAL "")
      separate_arguments(_cflags_list UNIX_COMMAND "${_cflags}")
      separate_arguments(_libs_list UNIX_COMMAND "${_libs}")
      set(_pc_defs "")
      if(DEFINED _expect_libxsmm)
        set(_pc_defs "-DSEQMEM_CONSUMER_EXPECT_LIBXSMM=${_expect_libxsmm}")
      endif()
      run_step("build with pkg-config" "${CXX_COMPILER}" -O2 ${_cflags_list} ${_pc_defs}
               "${CONSUMER_SOURCE_DIR}/main.cpp" -o "${WORK_DIR}/consumer_pkgconfig"
               ${_libs_list})
      run_step("run the pkg-config build" "${WORK_DIR}/consumer_pkgconfig")
    endif()
  else()
    message(STATUS "[consumer.${MODE}] pkg-config not found; seqmem.pc not checked")
  endif()
else()
  list(APPEND _configure_args "-DSEQMEM_SOURCE_DIR=${SEQMEM_SOURCE_DIR}")
endif()

run_step("configure" "${CMAKE_COMMAND}" ${_configure_args})
run_step("build + run" "${CMAKE_COMMAND}" --build "${_build_dir}" --config Release
         --target run_consumer)
message(STATUS "[consumer.${MODE}] OK")
