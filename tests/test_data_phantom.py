"""The phantom draws every finding where its name says, deterministically, with realistic label statistics."""
import numpy as np
import pytest

from molre_lib.data.phantom import PhantomConfig, counterfactual, make_subject
from molre_lib.data.phantom_labels import sample_labels
from molre_lib.data.phantom_signatures import LATERALISED
from molre_lib.data.taxonomy import CATEGORY_OF, FINDING_KEYS

SMALL = PhantomConfig(shape=(16, 48, 48), pv_subsamples=2)


def test_deterministic_and_shapes():
    a, b = make_subject(11, SMALL), make_subject(11, SMALL)
    assert a.hu.shape == (16, 48, 48) and a.hu.dtype == np.float32
    np.testing.assert_array_equal(a.hu, b.hu)
    assert a.labels == b.labels and a.spacing == pytest.approx((10.0, 230 / 48, 230 / 48))
    assert not np.array_equal(a.hu, make_subject(12, SMALL).hu)
    assert a.hu.min() >= -1024 and a.hu.max() <= 3071


def test_head_fills_field_of_view_with_air_outside_and_brain_inside():
    s = make_subject(3, PhantomConfig(shape=(24, 64, 64)))
    mid = s.hu[12]
    assert mid[0, 0] < -900 and mid[32, 2] < -900                       # air at the edge of the FOV
    assert 15 < np.median(mid[24:40, 24:40]) < 45                        # brain in the middle
    assert (mid > 600).sum() > 50                                        # a skull ring


@pytest.mark.parametrize("key", FINDING_KEYS)
def test_each_finding_is_drawn_in_its_labelled_region(key):
    with_f, without = counterfactual(5, key, SMALL)
    assert with_f.labels[key] == 1 and without.labels[key] == 0
    mask = with_f.masks[key]
    assert mask.any(), f"{key}: empty mask"
    diff = np.abs(with_f.hu - without.hu)
    assert diff[mask].max() > 4.0, f"{key}: labelled region does not differ from the same subject without it"
    # focal findings change little outside their region (midline shift / atrophy reshape the whole brain)
    if key not in ("midline_shift", "subfalcine_herniation", "cerebral_atrophy", "calvarial_thickening",
                   "intracranial_foreign_body", "hydrocephalus", "mass_effect", "sulcal_effacement",
                   "ventricular_effacement", "entrapped_ventricle", "ex_vacuo_dilatation", "cerebellar_atrophy",
                   "transtentorial_herniation"):
        assert diff[~mask].mean() < diff[mask].mean()


def test_removing_a_finding_keeps_the_rest_of_the_subject():
    s = make_subject(21, SMALL, present={"epidural_hematoma": True, "calvarial_fracture": True})
    r = make_subject(21, SMALL, present={"epidural_hematoma": True, "calvarial_fracture": False})
    np.testing.assert_array_equal(s.masks["epidural_hematoma"], r.masks["epidural_hematoma"])
    assert "calvarial_fracture" not in r.masks
    from scipy import ndimage

    # the scanner kernel spreads an edit by a voxel or two in-plane
    near = ndimage.binary_dilation(s.masks["calvarial_fracture"], np.ones((1, 7, 7), bool))
    np.testing.assert_allclose(s.hu[~near], r.hu[~near], atol=1e-3)


@pytest.mark.parametrize("key", ["epidural_hematoma", "intraparenchymal_hemorrhage", "mca_territory_infarct",
                                 "intra_axial_mass"])
def test_side_moves_the_finding_left_or_right(key):
    assert key in LATERALISED
    left = make_subject(8, SMALL, present={key: True}, side={key: "left"})
    right = make_subject(8, SMALL, present={key: True}, side={key: "right"})
    w = np.arange(SMALL.shape[2])
    col = lambda m: (m.sum((0, 1)) * w).sum() / m.sum()  # noqa: E731 - mean column index
    # W runs patient right -> left, so "left" sits at larger column indices
    assert col(left.masks[key]) > SMALL.shape[2] / 2 > col(right.masks[key])
    assert left.sides[key] == "left" and right.sides[key] == "right"
    with pytest.raises(ValueError, match="not lateralised"):
        make_subject(8, SMALL, side={"hydrocephalus": "left"})


def test_prevalences_long_tailed_with_co_occurrence():
    n = 3000
    rows = [sample_labels(np.random.default_rng([i, 12]), float(np.random.default_rng(i).uniform(18, 92)))
            for i in range(n)]
    m = np.array([[r[k] for k in FINDING_KEYS] for r in rows], float)
    prev = m.mean(0)
    assert prev.max() < 0.35 and np.sort(prev)[-1] > 0.15                 # common findings up to ~30%
    assert np.median(prev) < 0.05 and (prev > 0).all()                     # long tail, every finding occurs
    idx = {k: i for i, k in enumerate(FINDING_KEYS)}
    mass, edema = m[:, idx["intra_axial_mass"]], m[:, idx["vasogenic_edema"]]
    assert edema[mass == 1].mean() > 3 * edema[mass == 0].mean()
    fx, scalp = m[:, idx["calvarial_fracture"]], m[:, idx["scalp_hematoma"]]
    assert scalp[fx == 1].mean() > 3 * scalp[fx == 0].mean()
    hem = [idx[k] for k in FINDING_KEYS if CATEGORY_OF[k] == "hemorrhage" and k != "intracranial_hemorrhage"]
    np.testing.assert_array_equal(m[:, idx["intracranial_hemorrhage"]], m[:, hem].max(1))


def test_label_noise_and_unknowns():
    cfg = PhantomConfig(shape=(8, 16, 16), label_noise=0.3, unknown_fraction=0.2)
    subs = [make_subject(i, cfg) for i in range(40)]
    unknown = np.mean([v is None for s in subs for v in s.reported.values()])
    assert 0.12 < unknown < 0.28
    flips = sum(s.reported[k] is not None and s.reported[k] != s.labels[k] for s in subs for k in FINDING_KEYS)
    assert flips > 0
    lab, mask = subs[0].label_vector(reported=True)
    assert lab.shape == mask.shape == (75,) and set(np.unique(mask)) <= {0.0, 1.0}


def test_sites_and_slice_thickness_change_the_image():
    base = PhantomConfig(shape=(12, 32, 32))
    sites = {make_subject(i, base).site for i in range(12)}
    assert len(sites) > 1
    thick = make_subject(4, PhantomConfig(shape=(12, 32, 32), slice_thickness_mm=20.0))
    thin = make_subject(4, PhantomConfig(shape=(12, 32, 32), slice_thickness_mm=2.0))
    assert not np.allclose(thick.hu, thin.hu)


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="Unknown PhantomConfig key: 'shapes'"):
        PhantomConfig.from_dict({"shapes": (1, 2, 3)})


@pytest.mark.parametrize("shape", [(8, 32, 32), (16, 64, 64)])
def test_every_finding_survives_coarse_grids(shape):
    cfg = PhantomConfig(shape=shape)
    missing = [k for k in FINDING_KEYS if not make_subject(9, cfg, present={k: True}).masks.get(k, np.zeros(1)).any()]
    assert not missing
