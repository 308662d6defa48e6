"""Numba kernels (leaves of the import graph): CPU kernels here, optional numba.cuda ones in cuda*.py."""


def cuda_available():
    """(True, "") when numba.cuda can run kernels here, else (False, reason)."""
    try:
        from numba import cuda
    except Exception as e:  # numba without CUDA support
        return False, f"numba.cuda cannot be imported ({e})"
    try:
        if not cuda.is_available():
            return False, ("no CUDA GPU or CUDA driver/toolkit found (numba.cuda.is_available() is False); "
                           "install the GPU extra with `pip install -e .[cuda]`, or set "
                           "NUMBA_ENABLE_CUDASIM=1 to run on the (slow) CUDA simulator")
    except Exception as e:
        return False, f"CUDA unavailable: {e}"
    return True, ""
