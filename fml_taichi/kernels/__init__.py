"""Taichi only; one source for CPU and CUDA.

The ``@ti.func`` building blocks and the kernels of every op, nothing else: no torch, no argument
checks (those are in :mod:`fml_taichi.ops`, which wraps these kernels as differentiable torch ops).
Kernels take torch tensors as ndarrays zero-copy; the shared numerical constants come from
:mod:`fml_taichi.common.constants`, so the plain-torch references read the same values.

Modules (one per op family): ``helpers`` (row loads/stores, chunked loops), ``transform``,
``projection``, ``normals``, ``shading``, ``visibility``, ``sampling``, ``photometric``,
``image_formation`` (the fused layer), ``landmarks``, ``regularizers``, ``rasterize``, ``composite``.

Kernel factories are ``functools.cache``d: a Taichi kernel is compiled per distinct template
argument set on first launch, and defining it once per process keeps that cache hit. Factories that
take no dtype call :func:`fml_taichi.common.runtime.init` themselves; the dtype-specialised ones
(landmarks, regularizers) and the module-level kernels (rasterize, composite) expect the op to have
called it before the first launch.
"""
