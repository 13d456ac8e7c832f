"""Two held-out sets: same distribution on evaluation seeds, and a differently built one."""
import pytest

from fml_taichi.data import EVAL_SEED_START, SyntheticConfig
from fml_taichi.eval import harness
from fml_taichi.eval.methods import MeanFaceMethod
from fml_taichi.model import default_face_model


def test_heldout_sets_differ_in_family_and_seeds():
    cfg, start = harness.heldout_config("heldout", SyntheticConfig(image_size=96))
    alt, alt_start = harness.heldout_config("heldout_alt", SyntheticConfig(image_size=96))
    assert cfg.image_size == alt.image_size == 96
    assert cfg.fields == SyntheticConfig().fields and alt.fields != cfg.fields
    for family in ("rbf", "exaggerate"):  # the alternative set never repeats the training's family
        trained = SyntheticConfig(image_size=96, fields=family)
        assert harness.heldout_config("heldout", trained)[0].fields == family
        assert harness.heldout_config("heldout_alt", trained)[0].fields not in (family, "none")
    assert start >= EVAL_SEED_START and alt_start >= start + 1_000_000
    with pytest.raises(ValueError, match="heldout"):
        harness.heldout_config("nope")


def test_evaluate_on_the_alternative_set_reports_its_seeds():
    method = MeanFaceMethod(default_face_model(4000))
    res = harness.evaluate(method, n=1, config=SyntheticConfig(image_size=96), n_examples=0, progress=False,
                           heldout="heldout_alt")
    assert res.records[0]["seed"] == harness.HELDOUT_SETS["heldout_alt"]
    assert res.summary["geom_mm_base"] > 0
