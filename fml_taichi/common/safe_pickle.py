"""Reading pickled model files without running their code.

``pickle.load`` imports and calls whatever a file names, so a model file from the internet could run
any code. :func:`load` uses an unpickler that admits only what the model formats need:

* numpy arrays, dtypes and scalars (how numpy pickles them);
* scipy sparse matrices (FLAME's ``J_regressor``), rebuilt from their arrays;
* ``chumpy`` arrays (the official FLAME file is a Python 2 pickle of chumpy objects): a stand-in,
  :class:`ChumpyArray`, keeps the stored value without chumpy, so the file loads without it;
* plain containers (dict, list, tuple, set, str, numbers) need no class at all.

Anything else (a function such as ``os.system`` or ``builtins.open``, any other class) is refused with
:class:`RefusedPickle`, whose message names the refused ``module.name``, before anything is called.
"""
from __future__ import annotations

import codecs
import copyreg
import io
import os
import pickle

import numpy as np

__all__ = ["ChumpyArray", "RefusedPickle", "load", "loads", "load_npy"]


class RefusedPickle(ValueError):
    """The pickle names a class or function outside the allowed set; nothing from it was run."""


class ChumpyArray:
    """Stand-in for ``chumpy.ch.Ch``: holds the pickled state; ``.r`` is its value as a numpy array.

    chumpy keeps a plain ``Ch``'s value in its ``x`` attribute, which is what its pickle stores.
    """

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {"x": state}

    @property
    def r(self) -> np.ndarray:
        if "x" not in self.state:
            raise ValueError(f"a chumpy object without a stored value (keys: {sorted(map(str, self.state))}); "
                             "only plain chumpy arrays can be read without chumpy")
        return np.asarray(self.state["x"])

    def __array__(self, dtype=None, copy=None):
        a = self.r
        return a if dtype is None else a.astype(dtype)


def _numpy_globals() -> dict:
    try:  # numpy 2 (numpy.core is a deprecated alias there)
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1
        from numpy.core import multiarray, numeric

    allowed = {}
    for prefix in ("numpy.core", "numpy._core"):  # files written by numpy 1 and 2
        allowed[(prefix + ".multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(prefix + ".multiarray", "scalar")] = multiarray.scalar
        allowed[(prefix + ".numeric", "_frombuffer")] = numeric._frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    return allowed


_BUILTINS = {"object": object, "set": set, "frozenset": frozenset, "bytearray": bytearray, "complex": complex,
             "list": list, "dict": dict, "tuple": tuple}
_SPARSE = ("csc_matrix", "csr_matrix", "coo_matrix", "csc_array", "csr_array", "coo_array")
_CHUMPY = {("chumpy.ch", "Ch"), ("chumpy", "Ch")}


class _RestrictedUnpickler(pickle.Unpickler):
    _allowed = None

    def find_class(self, module: str, name: str):
        if _RestrictedUnpickler._allowed is None:
            _RestrictedUnpickler._allowed = _numpy_globals()
        key = (module, name)
        if key in self._allowed:
            return self._allowed[key]
        if key in _CHUMPY:
            return ChumpyArray
        if module == "numpy.dtypes" and name.endswith("DType"):  # numpy 2 names dtype classes so
            import numpy.dtypes

            cls = getattr(numpy.dtypes, name, None)
            if isinstance(cls, type) and issubclass(cls, np.dtype):
                return cls
        if (module.startswith("scipy.sparse") and name in _SPARSE):
            import scipy.sparse

            return getattr(scipy.sparse, name)
        if key in (("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor")):
            return _reconstructor
        if module in ("__builtin__", "builtins") and name in _BUILTINS:  # containers protocols 0-2 name
            return _BUILTINS[name]
        if key == ("_codecs", "encode"):  # how protocols 0-2 store bytes (a pure data transform)
            return codecs.encode
        raise RefusedPickle(f"refused to load {module}.{name}: the file asks for a class or function that a "
                            "model file does not need (loading it could run code)")


def _reconstructor(cls, base, state):
    """``copyreg._reconstructor`` limited to the admitted classes (Python 2 pickles of new-style objects)."""
    if base is not object and not (isinstance(base, type) and issubclass(cls, base)):
        raise RefusedPickle(f"refused to rebuild {getattr(cls, '__name__', cls)!r} on base {base!r}")
    return copyreg._reconstructor(cls, base, state)


def loads(data: bytes, encoding: str = "latin1"):
    """Unpickle ``data`` with the allowed classes only (module docstring).

    Raises:
        RefusedPickle: the data name a class/function outside the allowed set.
        ValueError: the data are not a readable pickle (truncated, garbage).
    """
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
    except RefusedPickle:
        raise
    except Exception as e:  # noqa: BLE001 - garbage fed to the admitted constructors fails in many types
        raise ValueError(f"not a readable pickle ({type(e).__name__}: {_first_line(e)})") from e


def load(path: str | os.PathLike, encoding: str = "latin1"):
    """:func:`loads` of a file; errors name the file."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        return loads(data, encoding)
    except RefusedPickle as e:
        raise RefusedPickle(f"{path}: {e}") from None
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def load_npy(path: str | os.PathLike):
    """A ``.npy`` file; an object array (e.g. a dict saved with ``np.save``) goes through :func:`loads`.

    The 0-d object array that ``np.save(dict)`` writes is returned as the object itself.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                _, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                _, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
        except Exception as e:  # noqa: BLE001 - numpy's header parser raises SyntaxError, TokenError, ...
            raise ValueError(f"{path}: not a readable .npy file ({_first_line(e)})") from e
        if not dtype.hasobject:
            f.seek(0)
            try:
                return np.load(f, allow_pickle=False)
            except Exception as e:  # noqa: BLE001 - as above
                raise ValueError(f"{path}: not a readable .npy file ({_first_line(e)})") from e
        data = f.read()
    try:
        value = loads(data)
    except RefusedPickle as e:
        raise RefusedPickle(f"{path}: {e}") from None
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    if isinstance(value, np.ndarray) and value.dtype == object and value.shape == ():
        value = value.item()
    return value


def _first_line(e: BaseException) -> str:
    text = str(e)
    return text.splitlines()[0] if text else type(e).__name__
