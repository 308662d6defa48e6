"""Sparse inference model against the dense decoded one: accuracy, agreement, batch-1 latency, batch-1000
throughput and resident weight bytes, measured interleaved in one run (`python -m refvbc.compress bench`).

Shape legend
    N        test images (10,000)
    x, y     (N, 784) float32, (N,) int labels
    logits   (N, 10)

Latency: `calls` single-image forward passes of each model, each timed on its own, the two models taking
turns in blocks of 100 calls (so each runs with its own weights in cache, as when serving requests one by
one, and both share the machine's load over the run); the median. Throughput: `rounds` batches of `batch`
images per model, taking turns batch by batch; images per second from the median batch time. Both models
run on the same images; JIT compilation is done before timing (warm-up calls of each).
"""

import os
import time

import numpy as np

from refvbc.compress.fileformat import read_rvbc
from refvbc.compress.sparse_model import SparseModel, dense_logits
from refvbc.models import predict


def _ties(logits):
    """Number of rows whose largest logit is not unique."""
    top2 = np.sort(logits, axis=1)[:, -2:]
    return int(np.count_nonzero(top2[:, 0] == top2[:, 1]))


def _interleaved(fa, fb, args, block):
    """Time fa(a) and fb(a) for every a in args, one call at a time, in alternating blocks of `block`
    calls (a, b, b, a, a, b, ...: each model runs with its own data in cache, as a model serving requests
    does, and both see the same machine load over the run). Returns (times_a, times_b) in seconds."""
    ta, tb = [], []
    clock = time.perf_counter
    for k0 in range(0, len(args), block):
        chunk = args[k0:k0 + block]
        order = (fa, fb) if (k0 // block) % 2 == 0 else (fb, fa)
        for f in order:
            times = ta if f is fa else tb
            for a in chunk:
                t0 = clock()
                f(a)
                times.append(clock() - t0)
    return np.array(ta), np.array(tb)


def benchmark(path, x, y, calls=2000, rounds=20, batch=1000):
    """Measure the file at `path` on (x, y). Returns a dict: the eight figures of the issue
    (latency_*_s, throughput_* images/s, bytes_*, accuracy_*) plus "n", "disagree" (argmax differences),
    "ties_sparse", "ties_dense", "max_abs_logit_diff", "loadavg" (before, after), "arch", "method"."""
    load = [os.getloadavg()]
    sm = SparseModel.from_file(path)
    cm = read_rvbc(path)
    params = cm.to_params()
    arch = cm.arch
    ls = sm.predict(x, batch)
    ld = predict(arch, params, x, batch_size=batch)
    res = {
        "arch": arch, "method": cm.method, "n": int(len(y)),
        "accuracy_sparse": float(np.mean(ls.argmax(1) == y)), "accuracy_dense": float(np.mean(ld.argmax(1) == y)),
        "disagree": int(np.count_nonzero(ls.argmax(1) != ld.argmax(1))),
        "ties_sparse": _ties(ls), "ties_dense": _ties(ld),
        "max_abs_logit_diff": float(np.max(np.abs(ls.astype(np.float64) - ld))) if len(y) else 0.0,
        "bytes_sparse": sm.nbytes, "bytes_dense": int(sum(v.nbytes for v in params.values())),
    }
    fs = sm.logits
    fd = lambda xb: dense_logits(arch, params, xb)
    singles = [x[k % len(x):k % len(x) + 1] for k in range(calls)]
    for xb in singles[:20]:  # warm-up: caches, allocator
        fs(xb), fd(xb)
    ts, td = _interleaved(fs, fd, singles, block=100)
    res["latency_sparse_s"], res["latency_dense_s"] = float(np.median(ts)), float(np.median(td))
    nb = max(len(x) // batch, 1)
    batches = [x[(k % nb) * batch:(k % nb + 1) * batch] for k in range(rounds)]
    fs(batches[0]), fd(batches[0])
    ts, td = _interleaved(fs, fd, batches, block=1)
    res["throughput_sparse"] = float(len(batches[0]) / np.median(ts))
    res["throughput_dense"] = float(len(batches[0]) / np.median(td))
    load.append(os.getloadavg())
    res["loadavg"] = [round(v, 2) for v in load[0] + load[1]]
    return res


JSON_KEYS = ("latency_sparse_s", "latency_dense_s", "throughput_sparse", "throughput_dense", "bytes_sparse",
             "bytes_dense", "accuracy_sparse", "accuracy_dense")


def format_bench(path, r, batch=1000):
    """The bench result as text."""
    la = r["loadavg"]
    lines = [
        f"{path}: {r['arch']}, {r['method']}; load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} before, "
        f"{la[3]:.2f} {la[4]:.2f} {la[5]:.2f} after",
        f"{'':28s}{'sparse':>14s}{'dense decoded':>16s}{'sparse/dense':>14s}",
        f"{'latency, batch 1 (median)':28s}{r['latency_sparse_s'] * 1e6:11.1f} us{r['latency_dense_s'] * 1e6:13.1f} us"
        f"{r['latency_sparse_s'] / r['latency_dense_s']:13.3f}x",
        f"{f'throughput, batch {batch}':28s}{r['throughput_sparse']:10.0f} /s{r['throughput_dense']:12.0f} /s"
        f"{r['throughput_sparse'] / r['throughput_dense']:13.2f}x",
        f"{'weights resident':28s}{r['bytes_sparse']:12d} B{r['bytes_dense']:14d} B"
        f"{r['bytes_sparse'] / r['bytes_dense']:13.4f}x",
        f"{'test accuracy':28s}{100 * r['accuracy_sparse']:12.2f} %{100 * r['accuracy_dense']:14.2f} %",
        f"predictions differ on {r['disagree']} of {r['n']} images; ties (top two logits equal): "
        f"{r['ties_sparse']} sparse, {r['ties_dense']} dense; max |logit difference| {r['max_abs_logit_diff']:.2e}",
    ]
    return "\n".join(lines)
