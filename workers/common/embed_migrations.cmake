# Writes a C file holding every migration file's text (called at build time).
# Input: FILES (list of NNNN_name.sql, sorted), OUT (the .c file).
#
# Each file's bytes are embedded exactly, as a NUL-terminated char array of
# hex values (one generated line per SQL line): file(READ) in text form
# would drop carriage returns, and an array needs no escaping of quotes,
# backslashes, '?' (trigraphs) or semicolons (CMake list separators).
# Versions must be positive, unique and in file order; the store applies
# them in array order.
cmake_policy(VERSION 3.18)
set(arrays "")
set(table "")
set(n 0)
set(seen "")
set(prev 0)
foreach(f ${FILES})
  get_filename_component(base ${f} NAME_WE)
  get_filename_component(fname ${f} NAME)
  set(_match "")
  string(REGEX MATCH "^([0-9]+)_([A-Za-z0-9_]+)$" _match "${base}")
  if(NOT _match OR NOT fname STREQUAL "${base}.sql")
    message(FATAL_ERROR "migration ${f}: name must be NNNN_description.sql (description: letters, digits, _)")
  endif()
  math(EXPR ver "${CMAKE_MATCH_1}")
  set(name "${CMAKE_MATCH_2}")
  if(ver LESS_EQUAL 0)
    message(FATAL_ERROR "migration ${f}: version must be positive")
  endif()
  if(ver IN_LIST seen)
    message(FATAL_ERROR "migration ${f}: version ${ver} used twice")
  endif()
  if(ver LESS prev)
    message(FATAL_ERROR "migration ${f}: files are not in version order")
  endif()
  list(APPEND seen ${ver})
  set(prev ${ver})
  file(READ ${f} hex HEX)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
  string(REPLACE "0x0a," "0x0a,\n    " bytes "${bytes}")
  string(APPEND arrays "/* ${fname} */\nstatic const char migration_${n}[] = {\n    ${bytes}0x00};\n\n")
  string(APPEND table "    {${ver}, \"${name}\", migration_${n}},\n")
  math(EXPR n "${n} + 1")
endforeach()
set(body "/* generated from deploy/sql at build time; do not edit */\n#include \"store.h\"\n\n")
string(APPEND body "${arrays}const store_migration_t store_migrations[] = {\n${table}    {0, 0, 0}\n};\nconst int store_n_migrations = ${n};\n")
file(WRITE ${OUT} "${body}")
