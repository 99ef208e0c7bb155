"""Localisation scores: equal to a direct numpy / scikit-learn reference on hand-made masks; on the phantom a map
that follows a moved lesion scores high and one that ignores it scores at chance; aggregation bootstraps scans;
occlusion equals captum's Occlusion; a whole dataset is scored end to end with a tiny model."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import roc_auc_score
from torch import nn

from molre_lib.analysis import explain, localisation as loc
from molre_lib.data.phantom import PhantomConfig, make_subject
from molre_lib.data.phantom_masks import ScanTruth


def _hand_made():
    mask = np.zeros((4, 6, 6), bool)
    mask[1, 2:4, 2:4] = True
    head = np.zeros_like(mask)
    head[:, 1:5, 1:5] = True
    cam = np.zeros(mask.shape)
    cam[1, 2, 2], cam[1, 3, 3], cam[2, 1, 1], cam[0, 0, 0] = 1.0, 0.5, 0.4, 0.2  # one value on the air
    return cam, mask, head


def test_metrics_equal_a_direct_reference():
    cam, mask, head = _hand_made()
    spacing, margin = (2.0, 1.0, 1.0), 1.5
    # dilation: brute-force distances in mm to the nearest mask voxel
    grid = np.stack(np.indices(mask.shape), -1).reshape(-1, 3) * np.array(spacing)
    inside = grid[mask.ravel()]
    dist = np.sqrt(((grid[:, None] - inside[None]) ** 2).sum(-1)).min(1).reshape(mask.shape)
    np.testing.assert_array_equal(loc.dilate_mm(mask, spacing, margin), dist <= margin)
    s = loc.score_map(cam, mask, head, spacing, margin)
    assert s["hit"] == 1.0
    assert s["energy"] == pytest.approx(1.5 / 2.1)
    assert s["share"] == pytest.approx(4 / 64)
    assert s["hit_chance"] == pytest.approx(((dist <= margin) & head).sum() / head.sum())
    assert s["auroc"] == pytest.approx(roc_auc_score(mask[head], cam[head]))
    # the maximum moved onto the air: a miss, and the energy counts the air's mass
    cam2 = cam.copy()
    cam2[0, 0, 0] = 2.0
    s2 = loc.score_map(cam2, mask, head, spacing, margin)
    assert s2["hit"] == 0.0 and s2["energy"] == pytest.approx(1.5 / 3.9)
    assert loc.pointing_game(np.zeros(mask.shape), mask) is False  # a blank map points nowhere
    block = np.zeros(mask.shape)
    block[1, 0:5, 0:5] = 1.0  # a plateau (occluded patch) centred on the mask, its corner in the air
    assert loc.peak_voxel(block) == (1, 2, 2) and loc.pointing_game(block, mask, spacing, 0.0)
    assert np.isnan(loc.voxel_auroc(cam, np.zeros_like(mask), head))


CFG = PhantomConfig(shape=(12, 48, 48))
KEY = "acute_subdural_hematoma"


def _smooth(mask: np.ndarray) -> np.ndarray:
    return ndimage.gaussian_filter(mask.astype(float), 1.5)


def test_a_map_that_follows_the_moved_lesion_scores_high_and_one_that_ignores_it_at_chance():
    rng = np.random.default_rng(0)
    follow, ignore, chance = [], [], []
    for seed in range(6):
        left = make_subject(seed, CFG, present={KEY: True}, side={KEY: "left"})
        right = make_subject(seed, CFG, present={KEY: True}, side={KEY: "right"})
        for sub, other in ((left, right), (right, left)):
            head = ndimage.binary_fill_holes(sub.hu > -500)
            mask = sub.masks[KEY]
            follow.append(loc.score_map(_smooth(mask), mask, head, sub.spacing))
            ignore.append(loc.score_map(_smooth(other.masks[KEY]), mask, head, sub.spacing))  # stays on the old side
            noise = ndimage.gaussian_filter(rng.random(mask.shape), 2.0) * head
            chance.append(loc.score_map(noise, mask, head, sub.spacing))
    follow, ignore, chance = (pd.DataFrame(r) for r in (follow, ignore, chance))
    assert follow["hit"].mean() == 1.0
    assert (follow["energy"] > 4 * follow["share"]).all() and follow["auroc"].min() > 0.9
    assert ignore["hit"].mean() == 0.0 and ignore["energy"].mean() < ignore["share"].mean()
    # a map unrelated to the lesion: AUROC about 0.5, energy about the mask's share, hits about chance
    assert abs(chance["auroc"].mean() - 0.5) < 0.1
    assert chance["energy"].mean() == pytest.approx(chance["share"].mean(), rel=0.35)
    assert abs(chance["hit"].mean() - chance["hit_chance"].mean()) < 0.3


def _table():
    rng = np.random.default_rng(1)
    rows = []
    for s in range(30):
        for f, cat in (("a", "x"), ("b", "x"), ("c", "y")):
            for model, shift in (("lora", 0.0), ("molre", 0.2)):
                e = float(np.clip(rng.normal(0.3 + shift, 0.05), 0, 1))
                rows.append({"model": model, "method": "gradcam", "scan_id": f"s{s}", "finding": f, "category": cat,
                             "hit": float(e > 0.35), "hit_chance": 0.2, "energy": e, "share": 0.1, "auroc": 0.5 + e / 2})
    return pd.DataFrame(rows)


def test_summary_and_paired_comparison_bootstrap_scans():
    table = _table()
    by_finding = loc.summarise(table, n_boot=300)
    assert len(by_finding) == 6 and (by_finding["n_scans"] == 30).all()
    row = by_finding[(by_finding.model == "lora") & (by_finding.finding == "a")].iloc[0]
    ref = table[(table.model == "lora") & (table.finding == "a")]
    assert row["energy"] == pytest.approx(ref["energy"].mean())
    assert row["energy_lo"] < row["energy"] < row["energy_hi"] and row["energy_chance"] == pytest.approx(0.1)
    by_cat = loc.summarise(table, by=["model", "category"], n_boot=300)
    assert set(by_cat["n_pairs"]) == {60, 30}
    d = loc.paired(table, "lora", "molre", by=["method", "category"], n_boot=300)
    x = d[d.category == "x"].iloc[0]
    assert x["d_energy"] == pytest.approx(0.2, abs=0.03) and x["d_energy_lo"] > 0 and x["p_energy"] < 0.01
    same = loc.paired(table.assign(model="lora"), "lora", "lora", by="method", n_boot=200)
    assert same["d_energy"].iloc[0] == 0.0
    with pytest.raises(ValueError, match="share no"):
        loc.paired(table, "lora", "nope")


class TinyNet(nn.Module):
    """3-channel volume -> 75 logits; findings read the max of a conv response (so maps are local)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 75)
        self.cam_layer = "conv"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3, 4)))


def test_occlusion_equals_captum():
    from captum.attr import Occlusion

    model = TinyNet().eval()
    x = torch.rand(1, 3, 4, 16, 16)
    ours = explain.occlusion_maps(model, x, [3, 7], patch=(1, 4, 4), baseline=0.0, postprocess=None, batch=5)
    for f in (3, 7):
        ref = Occlusion(model).attribute(x, target=f, sliding_window_shapes=(3, 1, 4, 4), strides=(3, 1, 4, 4),
                                         baselines=0.0)
        np.testing.assert_allclose(ours[str(f)], ref[0, 0].numpy(), atol=1e-5)


def test_score_dataset_end_to_end():
    model = TinyNet()
    rng = np.random.default_rng(0)
    items, truths = [], {}
    for s in range(3):
        image = torch.zeros(3, 4, 16, 16)
        image[:, :, 3:13, 3:13] = 0.5  # a "head"
        image[:, 1, 5:8, 5:8] = 1.0
        noise = 0.01 * torch.from_numpy(rng.random(image.shape)).float() * (image > 0)  # air stays 0 (below the window)
        items.append({"image": image + noise, "scan_id": f"s{s}"})
        m = np.zeros((4, 16, 16), bool)
        m[1, 5:8, 5:8] = True
        truths[f"s{s}"] = ScanTruth(f"s{s}", {"intraparenchymal_hemorrhage": m, "hydrocephalus": np.zeros_like(m)},
                                    np.zeros((4, 16, 16), np.int8), (5.0, 1.0, 1.0))

    class Truth(dict):
        def __call__(self, sid):
            return self[sid]

    windows = ((40.0, 80.0), (80.0, 200.0), (600.0, 2800.0))
    table = loc.score_dataset(model, items, Truth(truths), "tiny", methods=("gradcam", "occlusion"), windows=windows,
                              method_kwargs={"occlusion": {"patch": (1, 4, 4)}}, max_scans=2)
    assert len(table) == 4  # 2 scans x 2 methods x the one finding with a non-empty mask
    assert set(table["finding"]) == {"intraparenchymal_hemorrhage"} and set(table["scan_id"]) == {"s0", "s1"}
    assert table[["hit", "energy", "share", "auroc"]].notna().all().all()
    assert np.allclose(table["share"], 9 / 400)  # the mask's share of the (4 x 10 x 10) head
