"""Train the self-supervised multi-level face model (paper Sec. 6-7).

    python examples/train_fml.py                                  # configs/default.yaml -> runs/default
    python examples/train_fml.py --config configs/gpu_long.yaml --out runs/long
    python examples/train_fml.py --out runs/default --resume
    torchrun --standalone --nproc_per_node=2 examples/train_fml.py --config configs/gpu_long.yaml

The bundled default trains on synthetic faces in under 10 minutes on a 2-core CPU and ends with
runs/default/metrics.json (held-out faces, base vs final level). Same as ``fml-taichi train``.
"""
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its thread pool

from fml_taichi.apps.train_cmd import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
