"""refvbc: a reference implementation of Improved Bayesian Compression
(Federici, Ullrich, Welling 2017): Sparse Variational Dropout + Soft Weight-Sharing,
handwritten forward/backward passes, and a real compressed-model file format."""

__version__ = "0.1.0"

from . import vector_width  # noqa: F401,E402  (first: 512-bit vectors on AVX-512 CPUs, before any kernel compiles)
from . import parallel  # noqa: F401,E402  (thread policy: single-threaded BLAS, numba workqueue layer)
