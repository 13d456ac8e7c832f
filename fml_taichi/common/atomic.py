"""Atomic file writes: write to a temp file in the destination folder, then rename over the target.

A crash (or an exception in the writer) leaves either the old file or none, never half a file.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator

#: Temp files are named ``TEMP_PREFIX + basename + "-" + random``: a killed writer leaves one behind,
#: and the folder's owner can recognise (and delete) it by that name.
TEMP_PREFIX = ".tmp-"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[str]:
    """Yield a temp path next to ``path``; on success it is renamed to ``path``, on error removed.

    ``suffix`` defaults to the target's extension, so writers that pick a format from the name
    (imageio, cv2, numpy) still do the right thing.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise OSError(f"cannot create output folder {folder!r}: {e.strerror}") from e
    if suffix is None:
        suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX + os.path.basename(path) + "-", suffix=suffix, dir=folder)
    os.close(fd)
    # mkstemp creates 0600 files; give the result the permissions a plain open() would (umask applies).
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))
