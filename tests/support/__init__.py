"""Helper modules of the tests: the spec implementations in PyTorch and JAX, central differences, numba IR probes and the cross-check helpers (not tests themselves)."""
