"""Routing specialisation: Cramér's V and mutual information equal scipy / scikit-learn; the permutation test
rejects on planted specialisation (by tissue, by lesion) and not on shuffled gates; category gate profiles."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats.contingency import association
from sklearn.metrics import mutual_info_score

from molre_lib.analysis import specialisation as sp
from molre_lib.analysis.routing import RoutingData
from molre_lib.data.phantom import PhantomConfig, make_subject
from molre_lib.data.phantom_masks import hu_bands

E, GRID, D = 4, (8, 8), 6


def test_statistics_equal_references():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, 500), rng.integers(0, 3, 500)
    b[:200] = a[:200] % 3
    t = sp.contingency(a, b)
    assert sp.cramers_v(t) == pytest.approx(association(t.astype(int), method="cramer"))
    assert sp.mutual_information(t) == pytest.approx(mutual_info_score(a, b))
    assert sp.cramers_v(sp.contingency(a, np.zeros_like(a))) == 0.0


def test_token_grid_labels():
    m = np.zeros((2, 4, 4), int)
    m[0, :2, :2] = 3
    m[0, 0, 2] = 1
    got = sp.token_grid_labels(m, 2, (2, 2))
    np.testing.assert_array_equal(got[0], [[3, 0], [0, 0]])
    frac = sp.token_grid_labels(m, 1, (2, 2), reduce="fraction", min_fraction=0.25)  # 2 slices per unit
    np.testing.assert_array_equal(frac[0], [[1, 0], [0, 0]])


@pytest.fixture(scope="module")
def maps():
    cfg = PhantomConfig(shape=(D, 64, 64))
    tissue, lesion = {}, {}
    for seed in range(4):
        sub = make_subject(seed, cfg, present={"intraparenchymal_hemorrhage": True})
        tissue[f"s{seed}"] = hu_bands(sub.hu)
        lesion[f"s{seed}"] = np.logical_or.reduce(list(sub.masks.values()))
    return tissue, lesion


def _routing(experts: dict[str, np.ndarray]) -> RoutingData:
    """RoutingData whose kept token gates put 0.7 on the given expert per token."""
    ids = list(experts)
    tok = np.stack([np.eye(E)[experts[s].reshape(D, -1)] * 0.6 + 0.1 for s in ids]).astype(np.float16)  # (K, U, P, E)
    s = len(ids)
    return RoutingData(layers=["l0"], layout={"l0": "token"}, unit_kind={"l0": "slice"}, scan_ids=ids,
                       labels=np.zeros((s, 2), np.float32), label_mask=np.ones((s, 2), np.float32),
                       unit_gates={"l0": tok.astype(np.float32).mean(2)}, unit_top1={"l0": tok.astype(np.float32).mean(2)},
                       unit_entropy={"l0": np.zeros((s, D))}, token_gates={"l0": tok}, token_scan_ids=ids,
                       grids={"l0": GRID}, input_shape=(D, 64, 64), finding_keys=["a", "b"])


def test_permutation_test_rejects_planted_specialisation_and_not_shuffled_gates(maps):
    tissue, lesion = maps
    rng = np.random.default_rng(1)
    planted = {}
    for s in tissue:
        t = sp.token_grid_labels(tissue[s], D, GRID)
        l = sp.token_grid_labels(lesion[s], D, GRID, reduce="fraction")
        e = np.where(t == 0, 0, np.where(t >= 4, 1, 2))  # air, dense, brain/CSF
        e = np.where(l == 1, 3, e)  # lesion tokens -> expert 3
        noise = rng.random(e.shape) < 0.2
        planted[s] = np.where(noise, rng.integers(0, E, e.shape), e)
    res = sp.specialisation_tests(_routing(planted), tissue, lesion, n_perm=99, seed=0).set_index("target")
    assert res.loc["tissue", "p"] <= 0.01 and res.loc["tissue", "v"] > 0.5
    assert res.loc["lesion", "p"] <= 0.01 and res.loc["lesion", "lesion_tokens"] > 0
    shuffled = {s: rng.permutation(e.ravel()).reshape(e.shape) for s, e in planted.items()}
    for null in ("shift", "shuffle"):
        res = sp.specialisation_tests(_routing(shuffled), tissue, lesion, n_perm=99, seed=0, null=null).set_index("target")
        assert (res["p"] > 0.05).all(), res
        assert res.loc["tissue", "v"] < 0.15


def test_shuffled_gates_give_uniform_p_values():
    rng = np.random.default_rng(2)
    labels = np.repeat(np.repeat(rng.integers(0, 3, (20, 4, 4)), 2, 1), 2, 2)  # spatially smooth labels (20, 8, 8)
    ps = [sp.permutation_test(rng.integers(0, E, labels.shape), labels, n_perm=49, seed=k)["p"] for k in range(40)]
    assert 0.3 < np.mean(ps) < 0.7 and np.mean(np.array(ps) <= 0.05) <= 0.15


def test_gates_by_category():
    rng = np.random.default_rng(3)
    n = 60
    labels = np.zeros((n, 3), np.float32)
    labels[:30, 0] = 1
    gates = np.full((n, D, E), 0.25, np.float32)
    gates[:30, :, 0], gates[:30, :, 1] = 0.4, 0.1  # category x scans lean on expert 0
    gates += rng.normal(0, 0.01, gates.shape).astype(np.float32)
    data = RoutingData(layers=["l0"], layout={"l0": "token"}, unit_kind={"l0": "slice"},
                       scan_ids=[f"s{i}" for i in range(n)], labels=labels, label_mask=np.ones_like(labels),
                       unit_gates={"l0": gates}, unit_top1={"l0": gates}, unit_entropy={"l0": np.zeros((n, D))},
                       token_gates={}, token_scan_ids=[], grids={"l0": GRID}, input_shape=(D, 64, 64),
                       finding_keys=["a", "b", "c"])
    out = sp.gates_by_category(data, n_boot=200, category_of={"a": "x", "b": "y", "c": "y"}).set_index(["category", "expert"])
    assert out.loc[("x", 0), "diff"] == pytest.approx(0.15, abs=0.01) and out.loc[("x", 0), "diff_lo"] > 0.1
    assert "y" not in out.index.get_level_values(0)  # no positives
    data.labels = np.zeros_like(labels)  # no positives at all: an empty table with its columns
    none = sp.gates_by_category(data, n_boot=10, category_of={"a": "x", "b": "y", "c": "y"})
    assert none.empty and "diff_lo" in none.columns
