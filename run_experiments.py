#!/usr/bin/env python
"""Train and compress the paper's Table 2 models: python run_experiments.py --arch lenet300"""
import sys

from refvbc.experiment import main

if __name__ == "__main__":
    sys.exit(main())
