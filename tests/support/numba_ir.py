"""Test helper: the float64 arithmetic that numba emits for a kernel called with float32 arrays.

numba types a Python literal in a kernel by Python's rules (1.0 is float64, 2 is int64) and combines
it with a float32 value into float64, so one literal can turn a float32 loop into a float64 one: twice
the work per vector and, for a chain like Adam, not the float32 arithmetic of the NumPy twin or PyTorch.
This compiles a fresh, uncached copy of the kernel (inspection is disabled for cached code) and lists
the double-precision fadd/fsub/fmul/fdiv instructions of its LLVM IR (comparisons are not arithmetic:
numba's reshape emits a few).
"""

import re

import numba

_DOUBLE_ARITH = re.compile(r"=\s*(fadd|fsub|fmul|fdiv)\b[^=]*\bdouble\b")


def float64_arithmetic(kernel, *args, **njit_options):
    """Lines of double arithmetic in the IR of `kernel` (a numba dispatcher or plain function) compiled
    for `args`."""
    fn = numba.njit(error_model="numpy", **njit_options)(getattr(kernel, "py_func", kernel))
    fn(*args)
    ir = fn.inspect_llvm(fn.signatures[0])
    return [line.strip() for line in ir.splitlines() if _DOUBLE_ARITH.search(line)]
