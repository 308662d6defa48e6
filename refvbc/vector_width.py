"""512-bit vectors for refvbc's numba kernels on AVX-512 CPUs (applied once, when refvbc is imported).

LLVM tunes code for Intel's AVX-512 server CPUs (Skylake-SP up to Emerald Rapids) with the feature
``prefer-256-bit``: its loop vectorizer then uses 256-bit (8 x float32) vectors although the CPU has
512-bit ones. refvbc's float32 kernels are compute-bound elementwise loops (KL_VD's exp/log polynomials,
Adam, the im2col gathers); with 512-bit vectors the KL_VD kernel over LeNet-300-100's fc1 (235,200
weights) runs in 1.07 ms instead of 1.57 ms on one core, and the LeNet-300-100 VD training step in
0.0038 instead of 0.0044 s (docs/benchmarks.md, "512-bit vectors").

What this module does, at import, before refvbc compiles or loads any kernel: when the host CPU has
AVX-512F (as LLVM reports it, with numba's own ENABLE_AVX switch respected), and neither
NUMBA_CPU_FEATURES nor NUMBA_CPU_NAME is set by the user, and REFVBC_VECTOR_WIDTH is not "256", it sets
NUMBA_CPU_FEATURES to the host's features plus ``-prefer-256-bit`` and reloads numba's configuration.
The environment variable (not only numba.config) is what numba re-reads before every compilation, and
what worker processes (``--jobs``) inherit. numba's on-disk cache keys include the CPU features, so
kernels cached with the other setting are not reused by mistake.

Results do not change: the kernels are elementwise or reduce into explicit lanes, and without fastmath
LLVM never reorders a floating-point reduction, so a wider vector computes the same numbers (the kernel
tests compare them with their NumPy twins, several of them bit for bit).

Effect on other numba code in the same process: everything numba compiles for the CPU after refvbc's
import uses the same features (it is one process-wide setting, like the threading layer in
refvbc/parallel.py). ``REFVBC_VECTOR_WIDTH=256`` keeps LLVM's default.
"""

import os

SETTING = "unchanged"  # what happened at import: "unchanged (<why>)" or "512-bit vectors"


def _apply():
    if os.environ.get("REFVBC_VECTOR_WIDTH", "").strip() == "256":
        return "unchanged (REFVBC_VECTOR_WIDTH=256)"
    if os.environ.get("NUMBA_CPU_FEATURES") or os.environ.get("NUMBA_CPU_NAME"):
        return "unchanged (NUMBA_CPU_FEATURES or NUMBA_CPU_NAME set by the user)"
    from numba.core import codegen, config
    features = codegen.get_host_cpu_features()
    if "+avx512f" not in features.split(","):
        return "unchanged (no AVX-512F on this CPU)"
    os.environ["NUMBA_CPU_FEATURES"] = features + ",-prefer-256-bit"
    config.reload_config()
    return "512-bit vectors"


SETTING = _apply()
