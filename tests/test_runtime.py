"""The Taichi runtime start-up picks an arch explicitly, sets the process environment first, and is idempotent."""
import os
import subprocess
import sys

import pytest

from fml_taichi.common import runtime


def test_init_is_idempotent_and_reports_the_arch():
    first = runtime.init()
    assert first in ("cpu", "cuda")
    assert runtime.init() == first and runtime.init("cuda") == first and runtime.arch() == first
    assert runtime.torch_device() == ("cuda" if first == "cuda" else "cpu")
    assert runtime.device_name().startswith(first)


def test_environment_is_set_before_torch_starts():
    assert os.environ["TI_SKIP_VERSION_CHECK"] == "ON"
    assert os.environ["OMP_WAIT_POLICY"].upper() == "PASSIVE"


def test_bad_arch_is_a_clear_error():
    with pytest.raises(ValueError, match="arch must be"):
        runtime._resolve_arch("gpu")  # ti.gpu is never used: it can segfault probing OpenGL


def test_cpu_fallback_in_a_fresh_process_without_a_gpu():
    # A fresh interpreter: the environment comes from importing the package, and asking for CUDA
    # without a usable GPU falls back to the CPU cleanly.
    code = ("import os; os.environ.pop('OMP_WAIT_POLICY', None); import fml_taichi, torch; "
            "from fml_taichi.common import runtime; a = runtime.init('cuda'); "
            "print(a, os.environ['OMP_WAIT_POLICY'], torch.cuda.is_available())")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "FML_TAICHI_ARCH")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    arch, policy, cuda = out.stdout.split()[-3:]
    assert policy == "PASSIVE"
    assert arch == ("cuda" if cuda == "True" else "cpu")
