"""Fine-tuning after the collapse (beyond the paper): assignments and zeros stay fixed, the
cross-entropy goes down, and the result is a valid .rvbc model."""
import numpy as np
import pytest

from refvbc import models
from refvbc.arch import get_arch
from refvbc.compress.cluster import build_codebook
from refvbc.compress.pipeline import evaluate, layout_model
from refvbc.finetune import finetune_quantized


def quantized_net(seed=0):
    rng = np.random.default_rng(seed)
    params = models.init_params("lenet300", rng)
    centres = np.array([-0.08, -0.04, 0.04, 0.08], np.float32)
    q, b = {}, {}
    for layer in get_arch("lenet300"):
        w = centres[rng.integers(0, 4, layer.weight_shape)]
        w[rng.random(layer.weight_shape) < 0.7] = 0.0
        q[layer.name] = w
        b[layer.name] = params[f"{layer.name}.bias"]
    x = rng.random((400, 784)).astype(np.float32)
    y = np.argmax(x @ rng.standard_normal((784, 10)).astype(np.float32), axis=1)
    return q, b, x, y


def ce(q, b, x, y):
    params = {f"{n}.bias": v for n, v in b.items()}
    logits = models.forward("lenet300", params, x, weights=q)[0].astype(np.float64)
    logits -= logits.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(logits).sum(1)) - logits[np.arange(len(y)), y]))


@pytest.mark.parametrize("variant", ["bias", "bias+means"])
def test_assignments_fixed_and_loss_down(variant):
    q, b, x, y = quantized_net()
    q2, b2 = finetune_quantized("lenet300", q, b, x, y, variant=variant, epochs=3, lr=1e-3)
    cb, sym = build_codebook(q)
    cb2, sym2 = build_codebook(q2)
    for n in q:
        np.testing.assert_array_equal(q2[n] == 0, q[n] == 0, err_msg=f"{n}: the zeros moved")
        if variant == "bias":
            np.testing.assert_array_equal(q2[n], q[n], err_msg=f"{n}: weights changed")
        else:  # one value per old cluster: the assignment is the same map
            for s in range(1, cb.size):
                vals = np.unique(q2[n][sym[n] == s])
                assert vals.size <= 1, f"{n}: cluster {s} split into {vals}"
    assert cb2.size == cb.size
    before, after = ce(q, b, x, y), ce(q2, b2, x, y)
    assert after < before, f"cross-entropy {before} -> {after}"
    cm = layout_model("lenet300", "vdsws", q2, b2)
    params = {f"{n}.bias": v for n, v in b2.items()}
    np.testing.assert_allclose(evaluate(cm, x), models.forward("lenet300", params, x, weights=q2)[0],
                               rtol=1e-5, atol=1e-5)


def test_unknown_variant():
    q, b, x, y = quantized_net()
    with pytest.raises(ValueError, match="variant"):
        finetune_quantized("lenet300", q, b, x, y, variant="all")
