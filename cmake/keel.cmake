# Shared compile settings for keel's own targets.
function(keel_target_flags target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:${KEEL_WARNINGS} ${KEEL_CXX_FLAGS}>
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra,-Werror --expt-relaxed-constexpr -O3>)
endfunction()
