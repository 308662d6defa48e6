"""The log of a run: every line printed and appended to a file in the run directory (train.log,
sweep.log), flushed line by line so a killed run keeps everything it printed."""

import os


class RunLog:
    """A callable log(line) that prints `line` and appends it to `path`; a context manager that opens
    the file (creating its directory) and closes it."""

    def __init__(self, path):
        self.path = path
        self._f = None

    def __enter__(self):
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._f = open(self.path, "a")
        return self

    def __exit__(self, *exc):
        self._f.close()
        return False

    def __call__(self, line):
        print(line, flush=True)
        self._f.write(line + "\n")
        self._f.flush()
