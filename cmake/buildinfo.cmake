# Writes OUT (a C header) with the git commit the tree was built from, for
# offhook_build_info. Run at every build (cmake -P), so the commit follows the checkout
# without re-running the configure step; the header is rewritten only when the commit
# changes, so nothing is recompiled otherwise. Outside a git checkout of SRC (a release
# tarball, the copy dpkg-buildpackage builds) the commit is empty and the label omitted.
set(commit "")
find_program(GIT git)
if(GIT)
  execute_process(COMMAND ${GIT} -C ${SRC} rev-parse --show-toplevel
                  OUTPUT_VARIABLE top RESULT_VARIABLE rc ERROR_QUIET
                  OUTPUT_STRIP_TRAILING_WHITESPACE)
  # Only SRC's own repository: a tree unpacked inside some other checkout is not it.
  if(rc EQUAL 0)
    get_filename_component(top "${top}" REALPATH)
    get_filename_component(src "${SRC}" REALPATH)
    if(top STREQUAL src)
      execute_process(COMMAND ${GIT} -C ${SRC} rev-parse --short=12 HEAD
                      OUTPUT_VARIABLE commit RESULT_VARIABLE rc ERROR_QUIET
                      OUTPUT_STRIP_TRAILING_WHITESPACE)
      if(NOT rc EQUAL 0)
        set(commit "")
      endif()
    endif()
  endif()
endif()
file(WRITE ${OUT}.tmp "/* Generated at build time by cmake/buildinfo.cmake. */\n"
                      "#define OFFHOOK_COMMIT \"${commit}\"\n")
configure_file(${OUT}.tmp ${OUT} COPYONLY)
file(REMOVE ${OUT}.tmp)
