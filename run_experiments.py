#!/usr/bin/env python
"""Train and compress the paper's Table 2 models: python run_experiments.py --arch lenet300
(the command line is refvbc/cli.py; --help lists the flags in groups)."""
import sys

from refvbc.cli import main
from refvbc.parallel import keep_freed_memory

if __name__ == "__main__":
    keep_freed_memory()  # a training process: keep the step's large temporaries in the heap (~5% faster)
    sys.exit(main())
