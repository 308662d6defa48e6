"""numba's on-disk cache is keyed by the Python function (its qualified name and source line): two
dispatchers compiled from one function with different options (parallel or not) load each other's
cached machine code (this made the parallel noise kernel run serially once). Every cached kernel of
refvbc must be compiled from its own function."""
import importlib
import pkgutil
import types

import numba
from numba.core.registry import CPUDispatcher

import refvbc
import refvbc.kernels


def _modules():
    for pkg in (refvbc, refvbc.kernels):
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("cuda"):
                yield importlib.import_module(f"{pkg.__name__}.{info.name}")


def _collisions(modules):
    """Pairs of names of distinct cached dispatchers compiled from the same function; and the count."""
    seen, bad = {}, []
    for mod in modules:
        for name, obj in vars(mod).items():
            if not isinstance(obj, CPUDispatcher) or not obj._cache.__class__.__name__ == "FunctionCache":
                continue
            code = obj.py_func.__code__
            key = (code.co_filename, code.co_firstlineno, obj.py_func.__qualname__)
            objs = seen.setdefault(key, {})
            if id(obj) not in objs:  # a new dispatcher object (an alias of a known one is fine)
                if objs:
                    bad.append((next(iter(objs.values())), f"{mod.__name__}.{name}"))
                objs[id(obj)] = f"{mod.__name__}.{name}"
    return bad, len(seen)


def test_every_cached_kernel_has_its_own_function():
    bad, n = _collisions(_modules())
    assert not bad, f"compiled from the same function, sharing numba's cache entries: {bad}"
    assert n > 20, f"found only {n} cached kernels: the scan is broken"


def _twice(x):
    return x + 1


def test_the_scan_finds_a_collision():
    mod = types.ModuleType("fake")
    mod.par = numba.njit(cache=True, parallel=True)(_twice)
    mod.ser = numba.njit(cache=True)(_twice)
    mod.alias = mod.ser
    bad, n = _collisions([mod])
    assert bad == [("fake.par", "fake.ser")] and n == 1, (bad, n)
