"""Generic differentiable Taichi kernels (nothing face-specific), each with its torch autograd bridge."""
