"""The planning rules one by one: each rule's value and reason (medmonai.data.planning)."""

from __future__ import annotations

import pytest

import medmonai.data.fingerprint as fingerprint
from medmonai.data import planning
from medmonai.data.planning import (
    Planner,
    Rule,
    alpha_rule,
    anisotropy_rule,
    channels_rule,
    ct_padding_rule,
    input_size_rule,
    modality_category,
    normalization_rule,
    orientation_rule,
    plan_from_fingerprint,
    plan_options,
    size_budget_rule,
    size_mode_rule,
    target_spacing_rule,
)


def _fp(shapes, spacings, dims=3, **extra):
    fp = {
        "spatial_dims": dims,
        "images": [{"shape": list(s), "spacing": list(p)} for s, p in zip(shapes, spacings)],
        "modality_counts": {"MR": len(shapes)},
        "modality_sources": {"reader": len(shapes)},
        "channels": {"1": len(shapes)},
        "nonzero_bbox_fraction": {"median": 1.0},
    }
    fp.update(extra)
    return fp


CT_INTENSITY = {"percentile_00_5": -1000.0, "percentile_99_5": 400.0, "mean": -300.0, "std": 400.0}


def test_fingerprint_module_re_exports_the_planner():
    assert fingerprint.plan_from_fingerprint is plan_from_fingerprint
    assert fingerprint.Planner is Planner
    assert fingerprint.DEFAULT_DIVISOR is planning.DEFAULT_DIVISOR
    assert callable(fingerprint.ensure_plan)


def test_plan_options_defaults_and_errors():
    fp3 = _fp([(10, 10, 10)], [(1.0, 1.0, 1.0)])
    assert plan_options(fp3) == planning.PlanOptions(3, 8, 128**3)
    assert plan_options(_fp([(10, 10)], [(1.0, 1.0)], dims=2)).axes == ["i", "j"]
    assert plan_options(fp3, divisor=4, max_patch_voxels=1000).max_patch_voxels == 1000
    with pytest.raises(ValueError, match="power of two"):
        plan_options(fp3, divisor=12)
    with pytest.raises(ValueError, match="divisor block"):
        plan_options(fp3, divisor=16, max_patch_voxels=100)
    with pytest.raises(ValueError, match="3D"):
        plan_options(fp3, spatial_dims=2)


def test_target_spacing_rule_is_the_median():
    fp = _fp([(10, 10, 10)] * 3, [(1.0, 1.0, 2.0), (0.5, 1.0, 3.0), (1.0, 2.0, 2.5)])
    rule = target_spacing_rule(fp, plan_options(fp))
    assert isinstance(rule, Rule) and rule.reported
    assert rule.value == [1.0, 1.0, 2.5]
    assert (
        rule.reason
        == "target spacing: median spacing per axis (1, 1, 2.5) mm (axes LR, PA, IS, RAS order) over 3 images"
    )


def test_anisotropy_rule():
    spacings = [(1.0, 1.0, 5.0)] * 4 + [(1.0, 1.0, 3.5)]
    thick = _fp([(200, 200, 20)] * 5, spacings)
    opts = plan_options(thick)
    rule = anisotropy_rule(thick, [1.0, 1.0, 5.0], opts)
    assert rule.value["anisotropic"] is True
    assert rule.value["target_spacing"] == [1.0, 1.0, 4.1]  # 10th percentile of 3.5, 5, 5, 5, 5
    assert (
        rule.reason.startswith("anisotropic data: axis IS median spacing 5 mm is > 3x")
        and "10th percentile" in rule.reason
    )
    # coarse but with enough voxels: the median is kept
    many = _fp([(200, 200, 150)] * 5, spacings)
    rule = anisotropy_rule(many, [1.0, 1.0, 5.0], opts)
    assert rule.value == {"target_spacing": [1.0, 1.0, 5.0], "anisotropic": False}
    assert rule.reason == "axis IS is > 3x coarser but has enough voxels (150): median spacing kept"
    # isotropic: nothing to report
    iso = _fp([(20, 20, 20)], [(1.0, 1.0, 1.0)])
    rule = anisotropy_rule(iso, [1.0, 1.0, 1.0], opts)
    assert rule.value == {"target_spacing": [1.0, 1.0, 1.0], "anisotropic": False} and rule.reason is None


def test_input_size_rule_rounds_the_resampled_median_up():
    fp = _fp([(50, 50, 20)] * 2 + [(100, 100, 40)], [(1.0, 1.0, 2.0)] * 2 + [(0.5, 0.5, 1.0)])
    rule = input_size_rule(fp, [1.0, 1.0, 2.0], plan_options(fp))
    assert rule.value == {"spatial_size": [56, 56, 24], "median_shape_resampled": [50.0, 50.0, 20.0]}
    assert rule.reason == (
        "spatial size: median shape after resampling to the target spacing (50, 50, 20) rounded up to a multiple of 8"
        " -> (56, 56, 24)"
    )


def test_size_budget_rule_within_crop_and_coarsen():
    fp = _fp([(36, 50, 35)], [(1.0, 1.0, 1.0)])
    opts = plan_options(fp)
    rule = size_budget_rule(fp, [1.0, 1.0, 1.0], [40, 56, 40], opts)
    assert rule.value["spatial_size"] == [40, 56, 40] and rule.value["target_spacing"] == [1.0, 1.0, 1.0]
    assert rule.reason == f"spatial size (40, 56, 40) is within the budget of {128**3} voxels"
    # a small crop stays a crop
    fp2 = _fp([(300, 300)], [(1.0, 1.0)], dims=2)
    rule = size_budget_rule(fp2, [1.0, 1.0], [304, 304], plan_options(fp2))
    assert rule.value["spatial_size"] == [256, 256] and rule.value["target_spacing"] == [1.0, 1.0]
    assert "largest axes shrunk to (256, 256)" in rule.reason and "centre-cropped" in rule.reason
    # a large crop becomes a coarser spacing
    fp3 = _fp([(512, 512)], [(0.76, 0.76)], dims=2)
    opts3 = plan_options(fp3, max_patch_voxels=128**2)
    rule = size_budget_rule(fp3, [0.76, 0.76], [512, 512], opts3)
    assert rule.value["target_spacing"][0] > 2.9 and rule.value["spatial_size"] == [128, 128]
    assert "coarsened from (0.76, 0.76)" in rule.reason and "low-resolution rule" in rule.reason


def test_size_mode_rule_is_not_reported():
    fp = _fp([(10, 10)], [(1.0, 1.0)], dims=2)
    rule = size_mode_rule(fp, plan_options(fp))
    assert rule.value == "crop_pad" and rule.reason.startswith("size mode: crop_pad") and not rule.reported
    assert not any(r.startswith("size mode") for r in plan_from_fingerprint(fp)["reasons"])


def test_normalization_rule_by_modality():
    ct = _fp([(10, 10, 10)] * 2, [(1.0,) * 3] * 2, modality_counts={"CT": 2},
             intensity=dict(CT_INTENSITY, source="foreground"))  # fmt: skip
    rule = normalization_rule(ct, plan_options(ct))
    assert rule.value == {"preset": "ct_clip_zscore", "lower": -1000.0, "upper": 400.0, "mean": -300.0, "std": 400.0}
    assert rule.reason.startswith("normalization: all images are CT (modality from reader: 2): nnU-Net CT")
    assert "no masks" not in rule.reason
    eight = _fp([(10, 10)], [(1.0, 1.0)], dims=2, modality_counts={"8bit": 1})
    rule = normalization_rule(eight, plan_options(eight))
    assert rule.value == {"preset": "scale255"}
    assert rule.reason == "normalization: all images are 8-bit (modality from reader: 1): scale 0..255 to 0..1"
    mr = _fp([(10, 10, 10)], [(1.0,) * 3], nonzero_bbox_fraction={"median": 0.5})
    rule = normalization_rule(mr, plan_options(mr))
    assert rule.value == {"preset": "zscore", "nonzero": True, "channel_wise": True}
    assert "all images are MR" in rule.reason and "over the non-zero voxels" in rule.reason
    mixed = _fp([(10, 10, 10)] * 2, [(1.0,) * 3] * 2, modality_counts={"CT": 1, "MR": 1})
    rule = normalization_rule(mixed, plan_options(mixed))
    assert rule.value == {"preset": "zscore", "nonzero": False, "channel_wise": True}
    assert "mixed modalities {'CT': 1, 'MR': 1}" in rule.reason and "over all voxels" in rule.reason
    assert [modality_category(m) for m in ("CT", "8bit", "MR", "PT")] == ["CT", "8bit", "zscore", "zscore"]


def test_ct_padding_rule():
    padding = {"n_images": 1, "sources": {"out-of-field constant": 1}, "values": {"-3024": 1}, "median_fraction": 0.2}
    ct = _fp([(10, 10, 10)] * 2, [(1.0,) * 3] * 2, modality_counts={"CT": 2}, padding=padding,
             intensity=dict(CT_INTENSITY, source="in-field voxels"))  # fmt: skip
    rule = ct_padding_rule(ct, plan_options(ct))
    assert rule.value == 1
    assert rule.reason == (
        "padding excluded from the CT statistics: 1 of 2 images have padding outside the field of view (-3024 HU in 1;"
        " found by out-of-field constant: 1; a median 20% of their voxels)"
    )
    ct["intensity"]["source"] = "foreground"
    assert ct_padding_rule(ct, plan_options(ct)).reason.endswith("not in the statistics (they use the mask foreground)")
    ct["padding"] = {"n_images": 0}
    assert ct_padding_rule(ct, plan_options(ct)) == Rule(0, None)


def test_orientation_rule():
    fp3 = _fp([(10, 10, 10)], [(1.0,) * 3])
    fp2 = _fp([(10, 10)], [(1.0,) * 2], dims=2)
    assert orientation_rule(fp3, plan_options(fp3)).value == "RAS"
    assert "re-orient 3D images to RAS" in orientation_rule(fp3, plan_options(fp3)).reason
    assert orientation_rule(fp2, plan_options(fp2)) == Rule(
        None, "orientation: none for 2D images (projection images are kept as stored)"
    )


def test_channels_and_alpha_rules():
    def rules(dims=2, **extra):
        fp = _fp([(10,) * dims] * 4, [(1.0,) * dims] * 4, dims=dims, **extra)
        return channels_rule(fp, plan_options(fp)), alpha_rule(fp, plan_options(fp))

    ch, al = rules()
    assert ch.value == {"in_channels": 1, "channels": None} and ch.reason.startswith("channels: all 4 images have one")
    assert al == Rule(0, None)
    ch, _ = rules(channels={"1": 1, "3": 3}, colour_images=3)
    assert ch.value == {"in_channels": 3, "channels": 3}
    assert ch.reason == (
        "channels: 3 of 4 images are colour (stored channels: 1 with 1, 3 with 3): in_channels 3 (RGB); the 1 grey "
        "image(s) are replicated to 3 channels"
    )
    ch, al = rules(channels={"4": 4}, colour_images=0, alpha_images={"n": 4, "varying": 1})
    assert ch.value == {"in_channels": 1, "channels": 1} and "no image holds colour" in ch.reason
    assert al.value == 4 and al.reason.startswith("alpha: 4 image(s) have an alpha") and "composite" in al.reason
    ch, al = rules(dims=3, channels={"2": 4})
    assert ch.value == {"in_channels": 2, "channels": None} and al == Rule(0, None)
    assert ch.reason == "channels: all 4 images have 2 channel(s): in_channels 2"
    ch, _ = rules(dims=3, channels={"1": 2, "2": 2})
    assert ch.value["in_channels"] == 2 and "mixed channel counts" in ch.reason
    ch, _ = rules(channels={})
    assert ch.value == {"in_channels": 1, "channels": None} and "unknown" in ch.reason


def test_the_plan_collects_the_reasons_in_rule_order():
    fp = _fp([(200, 200, 20)] * 5, [(1.0, 1.0, 5.0)] * 5)
    plan = plan_from_fingerprint({"fingerprint": fp})
    prefixes = ["target spacing", "anisotropic data", "spatial size:", "spatial size (", "normalization", "orientation"]
    assert [r[: len(p)] for r, p in zip(plan["reasons"], prefixes)] == prefixes
    assert plan["reasons"][-1].startswith("channels")
    assert plan["size_mode"] == "crop_pad" and plan["denoise"] is None and plan["anisotropic"] is True


def test_a_subclass_overrides_one_rule():
    class IsotropicPlanner(Planner):
        def target_spacing(self, fp, options):
            return Rule([1.0] * options.spatial_dims, "target spacing: 1 mm isotropic (site policy)")

    fp = _fp([(50, 50, 20)] * 3, [(1.0, 1.0, 2.0)] * 3)
    plan = IsotropicPlanner(divisor=8).plan(fp)
    assert plan["target_spacing"] == [1.0, 1.0, 1.0] and plan["spatial_size"] == [56, 56, 40]
    assert plan["reasons"][0] == "target spacing: 1 mm isotropic (site policy)"
    assert Planner(divisor=8).plan(fp) == plan_from_fingerprint(fp, divisor=8)


def test_classification_plans_a_2d_input_budget_with_the_whole_field_of_view():
    # the default 2D phantoms: ~75 px at ~0.85 mm (80 x 80 planned without a task)
    fp = _fp([(75, 75)] * 4 + [(70, 72)], [(0.85, 0.85)] * 5, dims=2, modality_counts={"8bit": 5})
    general = plan_from_fingerprint(fp)
    assert general["spatial_size"] == [80, 80] and "task" not in general
    cls = plan_from_fingerprint(fp, task="classification")
    assert cls["task"] == "classification" and cls["max_patch_voxels"] == planning.CLASSIFICATION_MAX_VOXELS[2]
    # the whole image resized (anti-aliased) into the budget at the median spacing: no centre crop
    assert cls["spatial_size"] == [48, 48] and cls["size_mode"] == "resize"
    assert cls["target_spacing"] == general["target_spacing"] and general["size_mode"] == "crop_pad"
    assert any(r.startswith("input budget: 2D classification, 48 x 48 = 2304 voxels") for r in cls["reasons"])
    assert any(r.startswith("classification input: the whole image") for r in cls["reasons"])
    # a wide image keeps its aspect ratio within the budget
    wide = plan_from_fingerprint(_fp([(150, 75)] * 3, [(0.85, 0.85)] * 3, dims=2), task="classification")
    assert wide["spatial_size"] == [64, 32] and wide["size_mode"] == "resize"
    # given by hand, the budget wins and no budget reason is added
    manual = plan_from_fingerprint(fp, task="classification", max_patch_voxels=128**2)
    assert manual["spatial_size"] == [80, 80] and not any(r.startswith("input budget") for r in manual["reasons"])
    # small images (MedMNIST's 28 px) keep their plan (only the budget and its reasons are recorded); 3D is planned
    # as without a task, apart from the recorded task
    small = _fp([(28, 28)] * 3, [(1.0, 1.0)] * 3, dims=2, modality_counts={"8bit": 3})
    with_task, without = plan_from_fingerprint(small, task="classification"), plan_from_fingerprint(small)
    recorded = ("task", "max_patch_voxels", "reasons")
    assert {k: v for k, v in with_task.items() if k not in recorded} == {
        k: v for k, v in without.items() if k not in recorded
    }
    assert with_task["spatial_size"] == [32, 32]
    vol = _fp([(40, 40, 20)] * 3, [(1.0, 1.0, 2.0)] * 3)
    with_task = plan_from_fingerprint(vol, task="classification")
    assert with_task.pop("task") == "classification" and with_task == plan_from_fingerprint(vol)
    assert plan_from_fingerprint(fp, task="segmentation")["spatial_size"] == [80, 80]
    with pytest.raises(ValueError, match="unknown plan task"):
        plan_from_fingerprint(fp, task="detection")
