import os

# Before torch or taichi start any thread pool (see fml_taichi.common.runtime).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TI_SKIP_VERSION_CHECK", "ON")

import pytest  # noqa: E402

import fml_taichi.common.runtime as runtime  # noqa: E402

runtime.init()


@pytest.fixture(scope="session")
def ti_arch():
    return runtime.init()
