"""Mode metrics of a checkpoint's corrective spaces: geometry mode RMS (mm, face region, +-3 sigma) and
reflectance mode luminance vs mean-face shading correlation. Usage: mode_metrics.py [--checkpoint P] --json OUT"""
import argparse
import json

import torch

from fml_taichi.apps.view_cmd import regress_synthetic
from fml_taichi.common.atomic import write_text
from fml_taichi.eval.harness import face_region
from fml_taichi.model import mesh as mesh_utils
from fml_taichi.recon.pipeline import default_checkpoint
from fml_taichi.recon.reconstructor import Reconstructor
from fml_taichi.reference.image_formation import sh_basis
from fml_taichi.viewer import modes as M
from fml_taichi.viewer.scene import DEFAULT_LIGHT, FaceScene


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--faces", type=int, default=8)
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    rec = Reconstructor.from_checkpoint(a.checkpoint or default_checkpoint())
    fm = rec.face_model
    scene = FaceScene(fm, rec.multilevel, regressed=regress_synthetic(rec, a.faces))
    region = torch.as_tensor(face_region(fm))
    g, r = scene.modes("geometry"), scene.modes("reflectance")
    v = fm.mean_geometry.double().numpy()
    normals = torch.as_tensor(mesh_utils.vertex_normals(v, fm.triangles.long().numpy()))
    light = torch.as_tensor(DEFAULT_LIGHT).double().reshape(9, 3)  # the viewer's default light
    shading = M.luminance(sh_basis(normals.unsqueeze(0))[0] @ light)
    out = {"checkpoint": a.checkpoint or "shipped default", "sigma_source": g.sigma_source,
           "geometry_rms_mm_3sigma": M.geometry_mode_rms(g, region, 3.0)[:10].tolist(),
           "reflectance_shading_corr": M.shading_correlation(r, shading, region)[:10].tolist(),
           "targets": {"geometry_rms_mm_min": 1.0, "reflectance_abs_corr_max": 0.3}}
    write_text(a.json, json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
