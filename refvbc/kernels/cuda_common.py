"""Launch configuration and block reductions shared by the numba.cuda kernels (cuda_layers.py,
cuda_prior.py, cuda_adam.py).

Shape legend
    n        number of work items of a launch (elements of a flat array, or outputs of a layer)
    TPB      threads per block (a power of two; the size of every shared-memory reduction buffer)
    G        REDUCE_BLOCKS, the fixed number of blocks of a reduction kernel; each block owns one
             row of a (G,) or (G, K) float64 partial-sum array, reduced later in a fixed order

Every kernel uses a grid-stride loop, so any grid size is correct; `grid(n)` caps the grid. Under the
CUDA simulator (NUMBA_ENABLE_CUDASIM=1) every simulated thread is a Python thread, so the simulator
configuration uses very few threads (the same code paths, only fewer of them in flight).

Reductions are deterministic: per-thread float64 accumulators, a tree sum in shared memory per block,
one row per block, then a single thread sums the rows in order (no floating-point atomics).
"""

from numba import config, cuda

SIMULATOR = bool(config.ENABLE_CUDASIM)

if SIMULATOR:
    TPB = 8
    MIX_TPB = 8
    MAX_BLOCKS = 2
    REDUCE_BLOCKS = 2
else:
    TPB = 256
    MIX_TPB = 64  # threads per block of the mixture pass (its shared array holds 1 + 3 KMAX sums per thread)
    MAX_BLOCKS = 4096
    REDUCE_BLOCKS = 256


def grid(n):
    """(blocks, threads per block) for a grid-stride kernel over n items."""
    blocks = (max(int(n), 1) + TPB - 1) // TPB
    return min(blocks, MAX_BLOCKS), TPB


@cuda.jit(device=True)
def block_sum(sh, tid):
    """Tree sum of the shared array sh (TPB,) in place; sh[0] holds the total afterwards.
    Every thread of the block must call it (it synchronises)."""
    cuda.syncthreads()
    s = TPB // 2
    while s > 0:
        if tid < s:
            sh[tid] += sh[tid + s]
        cuda.syncthreads()
        s //= 2


@cuda.jit
def zero_kernel(a, n):
    """a[:n] = 0."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for i in range(start, n, stride):
        a[i] = 0


@cuda.jit
def sum_rows_kernel(part, G, out, slot):
    """out[slot] += sum_g part[g], summed in order by one thread (deterministic)."""
    if cuda.grid(1) == 0:
        acc = 0.0
        for g in range(G):
            acc += part[g]
        out[slot] += acc


def launch(kernel, n, *args):
    """Run the grid-stride `kernel` over n work items: kernel[grid(n)](*args). Every launch wrapper of
    cuda_layers.py / cuda_adam.py is this call with its kernel's work count (its outputs)."""
    b, t = grid(n)
    kernel[b, t](*args)


def zero(a):
    """Zero a flat device array."""
    launch(zero_kernel, a.shape[0], a, a.shape[0])
