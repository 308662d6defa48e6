"""The two code blocks of docs/crosscheck.md ("Producing the file from your own code") run as they
stand, with `my_loss` taken from tests/support/torch_spec.py / tests/support/jax_spec.py, and the files they write pass
`verify` at rtol 1e-7.  Each block is skipped when its framework is not installed."""

import os
import re

import numpy as np
import pytest

from conftest import ROOT, slow_param
from support import xcheck_util as XU

DOC = os.path.join(ROOT, "docs", "crosscheck.md")


def doc_blocks():
    with open(DOC, encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


def torch_loss(arrays, arch):
    pytest.importorskip("torch")
    from support import torch_spec

    config = {k: float(arrays[f"config/{k}"]) for k in torch_spec.CONFIG_KEYS}
    return lambda p, x, y, noise: torch_spec.spec_forward(arch, p, x, y, noise, config)[:2]


def jax_loss(arrays, arch):
    pytest.importorskip("jax")
    from support import jax_spec

    config = {k: float(arrays[f"config/{k}"]) for k in jax_spec.CONFIG}
    return lambda p, x, y, noise: jax_spec.objective(p, arch, x, y, noise, config)


@pytest.mark.parametrize("block,make_loss", [(0, torch_loss), (1, jax_loss)], ids=["pytorch", "jax"])
@pytest.mark.parametrize("arch", ["lenet300", slow_param("lenet5")])  # the blocks do not depend on the architecture
def test_doc_example_writes_a_passing_file(tmp_path, monkeypatch, block, make_loss, arch):
    blocks = doc_blocks()
    assert len(blocks) == 2, f"expected the PyTorch and the JAX block in {DOC}, found {len(blocks)}"
    arrays = XU.build(arch, 0.02, steps=3, with_outputs=False)
    assert not any(k.startswith(("out/", "grad/")) or "/param/" in k for k in arrays), "inputs only"
    my_loss = make_loss(arrays, arch)
    monkeypatch.chdir(tmp_path)
    np.savez("inputs.npz", **arrays)
    exec(compile(blocks[block], f"docs/crosscheck.md block {block}", "exec"), {"my_loss": my_loss})
    code, out, err = XU.run_verify_path(tmp_path / "theirs.npz")
    XU.assert_passes(code, out, err, 1e-7, f"docs block {block}, {arch}")
    assert f"{arch}, tau1 1, tau2 0.02, batch {XU.BATCH}, float64, 3 Adam steps" in out.splitlines()[0]
