"""Video files in and out (OpenCV's bundled FFmpeg: no extra package), with clear errors.

Frames are float32 RGB [H, W, 3] in [0, 1] like every image in the project (``docs/conventions.md``);
the BGR <-> RGB swap happens here only.

* :class:`VideoReader`: ``with VideoReader(path) as v: for frame in v: ...`` (``fps``, ``size``,
  ``n_frames_declared``, ``n_read``). A file that cannot be opened or yields no frame raises a
  ``ValueError`` naming it; a file that stops decoding early (truncated) ends the iteration and sets
  ``truncated`` (frames decoded before the damage are kept).
* :class:`VideoWriter`: writes MP4 (MPEG-4 Part 2, which every OpenCV wheel can encode) to a temp file
  and renames it over the target on ``close()``; on an error (or ``abort()``) nothing is left behind.
"""
from __future__ import annotations

import contextlib
import os
import tempfile

import cv2
import numpy as np

from ..common.images import to_uint8

__all__ = ["VIDEO_EXTENSIONS", "is_video_path", "VideoReader", "VideoWriter"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")


def is_video_path(path) -> bool:
    """True for a file name with a video extension (case-insensitive)."""
    return os.path.splitext(os.fspath(path))[1].lower() in VIDEO_EXTENSIONS


class VideoReader:
    """Decode a video file frame by frame (module docstring). ``max_frames`` stops early (None: all)."""

    def __init__(self, path, max_frames: int | None = None):
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"video file not found: {self.path!r}")
        if os.path.isdir(self.path):
            raise ValueError(f"not a video file (a directory): {self.path!r}")
        if os.path.getsize(self.path) == 0:
            raise ValueError(f"not a video: {self.path!r} is empty")
        if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
            raise ValueError(f"max_frames: expected a positive int or None, got {max_frames!r}")
        self.max_frames = max_frames
        self._cap = cv2.VideoCapture(self.path)
        if not self._cap.isOpened():
            self._cap.release()
            raise ValueError(f"cannot decode video {self.path!r}: not a video, or truncated / corrupt "
                             "(its container index is unreadable), or a codec OpenCV's FFmpeg lacks")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        # Some containers report no or absurd rates; 30 fps is the common default of cameras.
        self.fps = fps if 1.0 <= fps <= 1000.0 else 30.0
        self.n_frames_declared = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.size = (int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self.n_read = 0
        self.truncated = False

    def __iter__(self):
        while self.max_frames is None or self.n_read < self.max_frames:
            ok, frame = self._cap.read()
            if not ok or frame is None:
                break
            self.n_read += 1
            yield np.ascontiguousarray(frame[:, :, ::-1], dtype=np.float32) / 255.0
        if self.n_read == 0:
            raise ValueError(f"cannot decode video {self.path!r}: no frame could be decoded")
        # Fewer frames than the container declares (and no frame limit hit): the stream is damaged.
        limit_hit = self.max_frames is not None and self.n_read >= self.max_frames
        self.truncated = not limit_hit and self.n_frames_declared > 0 and self.n_read < self.n_frames_declared

    def close(self) -> None:
        self._cap.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class VideoWriter:
    """Write frames ([H, W, 3] float in [0, 1] or uint8) to an MP4 atomically (module docstring)."""

    def __init__(self, path, fps: float, size: tuple[int, int]):
        self.path = os.fspath(path)
        w, h = int(size[0]), int(size[1])
        if w < 2 or h < 2:
            raise ValueError(f"size: expected (width, height) of at least 2 px, got {size!r}")
        if not fps > 0:
            raise ValueError(f"fps: expected a positive number, got {fps!r}")
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(self.path) + "-", suffix=".mp4",
                                         dir=folder)
        os.close(fd)
        self.size = (w, h)
        self._writer = cv2.VideoWriter(self._tmp, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
        if not self._writer.isOpened():
            self.abort()
            raise OSError(f"cannot write video {self.path!r}: OpenCV has no MP4 encoder here")
        self.n_written = 0

    def write(self, frame) -> None:
        img = to_uint8(frame, "frame")
        if (img.shape[1], img.shape[0]) != self.size:
            raise ValueError(f"frame: expected size {self.size} (width, height), got {(img.shape[1], img.shape[0])}")
        self._writer.write(np.ascontiguousarray(img[:, :, ::-1]))
        self.n_written += 1

    def close(self) -> None:
        """Finish the file and move it into place (an empty video is an error, and is removed)."""
        self._writer.release()
        if self.n_written == 0:
            self.abort()
            raise ValueError(f"video {self.path!r}: no frames written")
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.release()
        with contextlib.suppress(OSError):
            os.remove(self._tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()
        else:
            self.abort()
