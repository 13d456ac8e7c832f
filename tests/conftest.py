import os

# Before torch or taichi start any thread pool (see fml_taichi.backend).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TI_SKIP_VERSION_CHECK", "ON")

import pytest  # noqa: E402

import fml_taichi.backend as backend  # noqa: E402

backend.init()


@pytest.fixture(scope="session")
def ti_arch():
    return backend.init()
