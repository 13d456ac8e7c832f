"""Command-line inputs -> a list of work items: image files, video files and folders of them.

Folders are walked recursively (CelebA's flat ``img_align_celeba/``, LFW's ``Name/Name_0001.jpg``,
300-W's nested sets), in sorted order so every run sees the same sequence. Each item gets a *name*
that is unique within the run and says where it came from: the path relative to the folder given on
the command line, without extension (``George_W_Bush/George_W_Bush_0001``), or the file's stem for a
file given directly. Output files are laid out by these names.

A path that does not exist is still an item (``kind="missing"``): the caller reports it like any
other failed input, and the other inputs go on.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from .video import VIDEO_EXTENSIONS

__all__ = ["IMAGE_EXTENSIONS", "InputItem", "collect_inputs", "list_images"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jp2")


@dataclass(frozen=True)
class InputItem:
    """One input: ``path``, ``name`` (unique, '/'-separated, no extension) and ``kind``
    ("image", "video" or "missing")."""

    path: str
    name: str
    kind: str


def _kind(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    return "video" if ext in VIDEO_EXTENSIONS else "image"


def list_images(folder, videos: bool = False) -> list[str]:
    """Image files (and video files if ``videos``) under ``folder``, recursively, sorted.

    Hidden files and folders (``.name``) are skipped: they hold caches and temp files, not data.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"input folder not found: {folder!r}")
    exts = IMAGE_EXTENSIONS + (VIDEO_EXTENSIONS if videos else ())
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in files
                  if not f.startswith(".") and os.path.splitext(f)[1].lower() in exts]
    return sorted(found)


def _unique(name: str, used: set) -> str:
    if name not in used:
        return name
    k = 2
    while f"{name}-{k}" in used:
        k += 1
    return f"{name}-{k}"


def collect_inputs(paths) -> list[InputItem]:
    """Expand command-line ``paths`` (files and folders) into :class:`InputItem` s (module docstring).

    A file is taken whatever its extension (decoding tells whether it is an image); a folder
    contributes the images and videos found in it, by extension.
    """
    items, used = [], set()
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            for f in list_images(p, videos=True):
                rel = os.path.splitext(os.path.relpath(f, p))[0].replace(os.sep, "/")
                name = _unique(rel, used)
                used.add(name)
                items.append(InputItem(f, name, _kind(f)))
            continue
        stem = os.path.splitext(os.path.basename(p.rstrip("/\\")))[0] or "input"
        name = _unique(stem, used)
        used.add(name)
        items.append(InputItem(p, name, _kind(p) if os.path.exists(p) else "missing"))
    return items
