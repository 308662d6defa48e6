"""Cross-checking refvbc against other frameworks (docs/crosscheck.md, docs/objective.md
"Cross-check file").

    python -m refvbc.crosscheck [export] --arch A --tau2 T --batch B --seed S [--steps K] [--mask-pruned]
                                [--components C] --out FILE.npz
    python -m refvbc.crosscheck verify FILE.npz [--rtol R]

Modules: layout (keys, shapes, validation), compute (refvbc's outputs for a file's inputs), export
(branchy parameters, MNIST minibatches, writing), verify (comparison and report), cli.
"""

from .cli import main
from .compute import outputs
from .export import build, inputs, write
from .layout import LayoutError, check
from .verify import RTOL, rel_err, verify_file

__all__ = ["main", "outputs", "build", "inputs", "write", "check", "LayoutError", "RTOL", "rel_err",
           "verify_file"]
