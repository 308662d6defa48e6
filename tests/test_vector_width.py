"""refvbc/vector_width.py: 512-bit vectors on AVX-512 CPUs unless the user says otherwise; the thread
policy of refvbc/parallel.py survives numba's configuration reload."""
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

PROBE = ("import json, os, numba, refvbc; from numba.core import codegen; "
         "print(json.dumps([refvbc.vector_width.SETTING, numba.config.THREADING_LAYER, "
         "os.environ.get('NUMBA_CPU_FEATURES'), '+avx512f' in codegen.get_host_cpu_features().split(',')]))")


def _probe(**env):
    e = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CPU_FEATURES", "NUMBA_CPU_NAME",
                                                          "REFVBC_VECTOR_WIDTH", "NUMBA_THREADING_LAYER")}
    e.update(env)
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", PROBE], env=e, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_default_setting_follows_the_cpu():
    setting, layer, features, avx512 = _probe()
    assert layer == "workqueue", f"threading layer {layer!r} after the reload, expected 'workqueue'"
    if avx512:
        assert setting == "512-bit vectors", setting
        assert features.endswith(",-prefer-256-bit") and "+avx512f" in features, features
    else:
        assert setting == "unchanged (no AVX-512F on this CPU)", setting
        assert features is None, features


@pytest.mark.parametrize("env, why", [
    ({"REFVBC_VECTOR_WIDTH": "256"}, "unchanged (REFVBC_VECTOR_WIDTH=256)"),
    ({"NUMBA_CPU_FEATURES": "+sse2"}, "unchanged (NUMBA_CPU_FEATURES or NUMBA_CPU_NAME set by the user)"),
])
def test_user_settings_win(env, why):
    setting, layer, features, _ = _probe(**env)
    assert setting == why, f"expected {why!r}, got {setting!r}"
    assert features == env.get("NUMBA_CPU_FEATURES"), features
    assert layer == "workqueue", layer
