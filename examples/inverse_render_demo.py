"""Recover a mesh's pose and SH lighting from one image by gradient descent through the Taichi kernels.

    python examples/inverse_render_demo.py --out runs/demo

Same as ``fml-taichi demo``; writes before_after.png, loss.png and summary.json.
"""
import sys

from fml_taichi.apps.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
