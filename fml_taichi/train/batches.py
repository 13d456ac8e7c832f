"""Training batches: a pre-rendered image pool and a resumable, rank-aware sample order.

Why a pool: rendering a synthetic face costs about as much as a training step on a 2-core CPU, so
the bundled CPU config renders a fixed set once at start (``data.n_train``) and cycles over it.
The pool keeps only what training may see (image, landmarks, confidences): ground truth never
enters it, so it cannot leak into a loss. Images are stored as uint8 (4x smaller than float32).

With a *preparer* (:class:`fml_taichi.recon.anchored.EncoderInputPreparer`) the pool stores what
inference feeds the encoder instead: the aligned crop, its landmarks and exact camera
(``intrinsics`` per item, which the losses then use) and the landmark start's z (``start``),
computed once per item when the pool is built (batched, with the progress bar).

One opt-in exception to "no ground truth": ``truth=True`` also keeps each synthetic item's true mesh
(``gt_vertices`` [N, 3] float32, model space) for the synthetic 3D supervision of the geometry
(``losses.geometry_teacher``, :mod:`fml_taichi.losses.teacher`; not the paper's self-supervision).
Without it the pool holds no ground truth, as before.

Why a cursor instead of a DataLoader iterator: the order of samples is a pure function of
``(seed, position)``. Position ``p`` of the endless stream is item ``perm_e[p mod n]`` of epoch
``e = p div n``, with ``perm_e`` a permutation drawn from a generator seeded by ``(seed, e)``. A
checkpoint stores the cursor (samples consumed); resuming continues with exactly the same batches.
With ``world`` data-parallel ranks each global batch is ``world * batch`` consecutive positions and
rank ``r`` takes the ``r``-th slice, so the ranks see disjoint samples.
"""
from __future__ import annotations

import torch
from tqdm import tqdm

from ..common.images import to_uint8

_SEED_STRIDE = 1_000_003  # decorrelates the per-epoch permutation seeds


class ImagePool:
    """Items of a dataset materialised in memory: images uint8 [n, H, W, 3], landmarks, confidences.

    ``dataset[i]`` must return a dict with ``image`` [H, W, 3] float in [0, 1], ``landmarks`` [68, 2]
    and ``landmark_conf`` [68]; any other keys (ground truth) are dropped, except ``gt_vertices`` when the
    pool is built with ``truth=True`` (module docstring).
    """

    def __init__(self, images: torch.Tensor, landmarks: torch.Tensor, landmark_conf: torch.Tensor,
                 intrinsics: torch.Tensor | None = None, start: torch.Tensor | None = None,
                 gt_vertices: torch.Tensor | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images: expected uint8 [n, H, W, 3], got {images.dtype} {tuple(images.shape)}")
        n = images.shape[0]
        if landmarks.shape != (n, 68, 2) or landmark_conf.shape != (n, 68):
            raise ValueError(f"landmarks/landmark_conf: expected ({n}, 68, 2) and ({n}, 68), got "
                             f"{tuple(landmarks.shape)} and {tuple(landmark_conf.shape)}")
        if intrinsics is not None and tuple(intrinsics.shape) != (n, 4):
            raise ValueError(f"intrinsics: expected ({n}, 4), got {tuple(intrinsics.shape)}")
        if start is not None and (start.ndim != 2 or start.shape[0] != n):
            raise ValueError(f"start: expected ({n}, n_base), got {tuple(start.shape)}")
        if gt_vertices is not None and (gt_vertices.ndim != 3 or gt_vertices.shape[0] != n or gt_vertices.shape[2] != 3):
            raise ValueError(f"gt_vertices: expected ({n}, N, 3), got {tuple(gt_vertices.shape)}")
        self.gt_vertices = None if gt_vertices is None else gt_vertices.float()
        self.images, self.landmarks, self.landmark_conf = images, landmarks.float(), landmark_conf.float()
        self.intrinsics = None if intrinsics is None else intrinsics.float()
        self.start = None if start is None else start.float()

    @classmethod
    def from_dataset(cls, dataset, n: int | None = None, progress: bool = True, desc: str = "render pool",
                     chunk: int = 16, prepare=None, truth: bool = False) -> "ImagePool":
        """Materialise the first ``n`` items (all by default), ``chunk`` at a time when the dataset
        can fetch lists (``__getitems__``: one rasteriser launch per chunk for synthetic faces).
        ``prepare``: an :class:`~fml_taichi.recon.anchored.EncoderInputPreparer` (module docstring);
        the items then need ``intrinsics`` [4] (default: the training crop camera of their size).
        ``truth``: keep the items' ``gt_vertices`` too (synthetic data; module docstring)."""
        n = len(dataset) if n is None else int(n)
        if n < 1:
            raise ValueError(f"n: the pool needs at least one item, got {n}")
        images = lms = conf = ks = starts = gt = None
        with tqdm(total=n, desc=desc, unit="img", disable=not progress, leave=False) as bar:
            for start in range(0, n, chunk):
                idx = list(range(start, min(start + chunk, n)))
                items = (dataset.__getitems__(idx) if hasattr(dataset, "__getitems__")
                         else [dataset[i] for i in idx])
                items = [_check(item, i) for i, item in zip(idx, items)]
                if images is None:
                    h, w = items[0]["image"].shape[:2]
                    if prepare is not None:
                        h = w = prepare.crop_size
                    images = torch.empty(n, h, w, 3, dtype=torch.uint8)
                    lms, conf = torch.empty(n, 68, 2), torch.empty(n, 68)
                    if truth:
                        if "gt_vertices" not in items[0]:
                            raise ValueError("truth: the dataset's items have no 'gt_vertices' (synthetic data only)")
                        gt = torch.empty(n, *items[0]["gt_vertices"].shape)
                for i, item in zip(idx, items):
                    if prepare is None and tuple(item["image"].shape[:2]) != tuple(images.shape[1:3]):
                        raise ValueError(f"dataset item {i}: image is {tuple(item['image'].shape[:2])}, "
                                         f"item 0 is {tuple(images.shape[1:3])}")
                    conf[i] = torch.as_tensor(item["landmark_conf"], dtype=torch.float32)
                    if gt is not None:
                        gt[i] = torch.as_tensor(item["gt_vertices"], dtype=torch.float32)
                sl = slice(idx[0], idx[-1] + 1)
                if prepare is None:
                    for i, item in zip(idx, items):
                        images[i] = torch.from_numpy(to_uint8(item["image"]))
                        lms[i] = torch.as_tensor(item["landmarks"], dtype=torch.float32)
                else:
                    prepared = _prepare(prepare, items)
                    for j, i in enumerate(idx):
                        images[i] = torch.from_numpy(to_uint8(prepared.images[j]))
                    lms[sl] = prepared.landmarks
                    if ks is None:
                        ks = torch.empty(n, 4)
                        starts = None if prepared.start_z is None else torch.empty(n, prepared.start_z.shape[1])
                    ks[sl] = prepared.intrinsics
                    if starts is not None:
                        starts[sl] = prepared.start_z
                bar.update(len(idx))
        return cls(images, lms, conf, ks, starts, gt)

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, indices: torch.Tensor) -> dict:
        """Float32 images [B, H, W, 3] in [0, 1] (contiguous, for the kernels), landmarks, confidences."""
        idx = indices.long()
        out = {"image": self.images[idx].float().div_(255.0).contiguous(),
               "landmarks": self.landmarks[idx].contiguous(), "landmark_conf": self.landmark_conf[idx].contiguous()}
        if self.intrinsics is not None:
            out["intrinsics"] = self.intrinsics[idx].contiguous()
        if self.start is not None:
            out["start"] = self.start[idx].contiguous()
        if self.gt_vertices is not None:
            out["gt_vertices"] = self.gt_vertices[idx].contiguous()
        return out


class DatasetSource:
    """Reads batches straight from a dataset (no pool): large folders, or on-the-fly synthetic faces.

    Same interface as :class:`ImagePool`; ground-truth keys are dropped here too.
    """

    def __init__(self, dataset, prepare=None):
        if len(dataset) < 1:
            raise ValueError("dataset: holds no items")
        self.dataset = dataset
        self.prepare = prepare

    def __len__(self) -> int:
        return len(self.dataset)

    def batch(self, indices: torch.Tensor) -> dict:
        idx = [int(i) for i in indices]
        if hasattr(self.dataset, "__getitems__"):  # e.g. SyntheticFaces renders a list in one launch
            fetched = self.dataset.__getitems__(idx)
            items = [_check(it, i) for it, i in zip(fetched, idx)]
        else:
            items = [_checked_item(self.dataset, i) for i in idx]
        if self.prepare is not None:
            p = _prepare(self.prepare, items)
            out = {"image": p.images.contiguous(), "landmarks": p.landmarks.contiguous(), "intrinsics": p.intrinsics,
                   "landmark_conf": torch.stack([torch.as_tensor(it["landmark_conf"], dtype=torch.float32)
                                                 for it in items])}
            if p.start_z is not None:
                out["start"] = p.start_z
            return out
        return {"image": torch.stack([torch.as_tensor(it["image"], dtype=torch.float32) for it in items]).contiguous(),
                "landmarks": torch.stack([torch.as_tensor(it["landmarks"], dtype=torch.float32) for it in items]),
                "landmark_conf": torch.stack([torch.as_tensor(it["landmark_conf"], dtype=torch.float32)
                                              for it in items])}


def _prepare(prepare, items: list[dict]):
    """The preparer on a list of checked items (their images, detected landmarks and cameras)."""
    from ..common.camera import default_intrinsics

    images = torch.stack([torch.as_tensor(it["image"], dtype=torch.float32) for it in items])
    lms = torch.stack([torch.as_tensor(it["landmarks"], dtype=torch.float32) for it in items])
    ks = torch.stack([torch.as_tensor(it["intrinsics"], dtype=torch.float32).reshape(4) if "intrinsics" in it
                      else default_intrinsics(images.shape[1]).float() for it in items])
    return prepare(images, lms, ks)


def _checked_item(dataset, i: int) -> dict:
    return _check(dataset[i], i)


def _check(item: dict, i: int) -> dict:
    for key in ("image", "landmarks", "landmark_conf"):
        if key not in item:
            raise ValueError(f"dataset item {i}: missing {key!r} (got keys {sorted(item)})")
    img = torch.as_tensor(item["image"])
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"dataset item {i}: image must be [H, W, 3], got {tuple(img.shape)}")
    if img.is_floating_point() and not bool(torch.isfinite(img).all()):
        raise ValueError(f"dataset item {i}: image contains NaN or inf values")
    for key in ("landmarks", "landmark_conf"):
        if not bool(torch.isfinite(torch.as_tensor(item[key], dtype=torch.float32)).all()):
            raise ValueError(f"dataset item {i}: {key} contains NaN or inf values")
    return item


class SampleOrder:
    """The endless, seeded sample order over ``n`` items (see the module docstring)."""

    def __init__(self, n: int, seed: int):
        if n < 1:
            raise ValueError(f"n: need at least one training item, got {n}")
        self.n, self.seed = int(n), int(seed)
        self._epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * _SEED_STRIDE + epoch)
            self._perm, self._epoch = torch.randperm(self.n, generator=g), epoch
        return self._perm

    def positions(self, start: int, count: int) -> torch.Tensor:
        """Item indices for stream positions ``start .. start + count - 1``."""
        out = torch.empty(count, dtype=torch.long)
        for k in range(count):
            p = start + k
            out[k] = self._permutation(p // self.n)[p % self.n]
        return out

    def batch_indices(self, cursor: int, batch: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        """This rank's item indices of the global batch starting at ``cursor`` (``world * batch`` long)."""
        return self.positions(cursor + rank * batch, batch)
