"""Differentiable torch ops over the Taichi kernels (autograd Functions + thin documented wrappers)."""
