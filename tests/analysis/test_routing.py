"""Routing analysis: statistics on hand-made gates with known answers, the token -> unit reduction, and a
real MoLRE-injected backbone collected over a DataLoader, saved and reloaded."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from molre_lib.analysis import routing
from molre_lib.analysis.routing import RoutingData


def _known(n_scans: int = 4, d: int = 2) -> RoutingData:
    """Two layers, 2 experts. Layer a: scans with finding f0 use expert 1 (0.9), the others expert 0 (0.8)."""
    labels = np.array([[1, 0], [1, 0], [0, 1], [0, 0]], dtype=np.float32)
    mask = np.ones_like(labels)
    mask[3, 1] = 0  # unknown: must not count as a negative
    a = np.where(labels[:, :1, None] == 1, [0.1, 0.9], [0.8, 0.2]) * np.ones((n_scans, d, 2))  # (S, U, E)
    b = np.full((n_scans, d, 2), 0.5)
    tokens = np.zeros((1, d, 4, 2), np.float16)  # scan 0, 2x2 grid: left column expert 0, right column expert 1
    tokens[0, :, [0, 2], 0] = 1
    tokens[0, :, [1, 3], 1] = 1
    return RoutingData(
        layers=["a", "b"], layout={"a": "token", "b": "token"}, unit_kind={"a": "slice", "b": "slice"},
        scan_ids=["s0", "s1", "s2", "s3"], labels=labels, label_mask=mask,
        unit_gates={"a": a, "b": b}, unit_top1={"a": (a > 0.5).astype(float), "b": np.full((4, d, 2), 0.5)},
        unit_entropy={"a": np.full((4, d), 0.3), "b": np.full((4, d), np.log(2))},
        token_gates={"a": tokens}, token_scan_ids=["s0"], grids={"a": (2, 2), "b": (2, 2)}, input_shape=(d, 8, 8),
        finding_keys=["f0", "f1"])


def test_usage_and_entropy_on_known_gates():
    data = _known()
    usage = routing.expert_usage(data).set_index(["layer", "expert"])
    assert usage.loc[("a", 1), "usage"] == pytest.approx((0.9 * 2 + 0.2 * 2) / 4)
    assert usage.loc[("b", 0), "usage"] == pytest.approx(0.5)
    ent = routing.gate_entropy(data).set_index("layer")
    assert ent.loc["b", "token_entropy_norm"] == pytest.approx(1.0)
    assert ent.loc["b", "usage_entropy_norm"] == pytest.approx(1.0)
    p = np.array([0.55, 0.45])
    assert ent.loc["a", "usage_entropy"] == pytest.approx(-(p * np.log(p)).sum())


def test_gates_by_finding_and_specialisation_on_known_gates():
    data = _known()
    table = routing.gates_by_finding(data, layer="a").set_index(["finding", "expert"])
    assert table.loc[("f0", 1), "pos_mean"] == pytest.approx(0.9)
    assert table.loc[("f0", 1), "neg_mean"] == pytest.approx(0.2)
    assert table.loc[("f0", 1), "n_neg"] == 2
    assert table.loc[("f1", 0), "n_neg"] == 2  # scan 3's unknown f1 label is not a negative
    spec = routing.expert_specialisation(data, layer="a")
    assert spec.loc["f0", 1] == pytest.approx(0.7) and spec.loc["f0", 0] == pytest.approx(-0.7)
    top = routing.top_findings_per_expert(spec, k=1)
    assert top.set_index("expert").loc[1, "finding"] == "f0"
    mean = routing.gates_by_finding(data).set_index(["finding", "expert"])  # mean over layers a and b
    assert mean.loc[("f0", 1), "pos_mean"] == pytest.approx((0.9 + 0.5) / 2)


def test_dominant_expert_map_is_the_token_grid_upsampled():
    data = _known()
    m = routing.dominant_expert_map(data, "a", "s0", slice_index=1)
    assert m.shape == (8, 8)
    assert (m[:, :4] == 0).all() and (m[:, 4:] == 1).all()
    with pytest.raises(KeyError, match="no token gates"):
        routing.dominant_expert_map(data, "a", "s1", 0)


def test_to_units_drops_prefix_tokens_and_groups_slices():
    b, d, prefix, e = 2, 3, 5, 4
    gates = torch.rand(b * d, prefix + 6, e).softmax(-1)  # (B*D, T, E), 2x3 patch grid
    units, grid, kind = routing.to_units(gates, "token", b, d, dims=2, prefix=prefix, grid=(2, 3))
    assert units.shape == (b, d, 6, e) and grid == (2, 3) and kind == "slice"
    assert torch.equal(units[1, 2], gates[1 * d + 2, prefix:])  # b-major slice order
    spatial = torch.rand(b, 4, 5, 6, e)  # 3D conv router (B, d, h, w, E)
    units, grid, kind = routing.to_units(spatial, "spatial", b, 16, dims=3, prefix=0, grid=None)
    assert units.shape == (b, 4, 30, e) and grid == (5, 6) and kind == "depth"
    tokens = routing.tokens_to_grid(torch.arange(2 * 7 * 3.0).reshape(2, 7, 3), (2, 3), num_prefix_tokens=1)
    assert tokens.shape == (2, 3, 2, 3) and tokens[0, :, 0, 0].tolist() == [3.0, 4.0, 5.0]


@pytest.fixture(scope="module")
def molre_model():
    from molre_lib.adapters import MoLREConfig, inject
    from molre_lib.backbones import create_model

    torch.manual_seed(0)
    model = create_model("dinov3_vitb16", reduced=True, image_size=(64, 64), chunk_size=3)
    inject(model, MoLREConfig(r=2, n_experts=3, target_modules=model.spec.target_modules))
    return model


def test_collect_routing_over_a_loader_and_roundtrip(molre_model, tmp_path):
    g = torch.Generator().manual_seed(0)
    batches = [{"image": torch.rand(2, 3, 4, 48, 48, generator=g), "labels": torch.randint(0, 2, (2, 75), generator=g).float(),
                "label_mask": torch.ones(2, 75), "scan_id": [f"scan{2 * i}", f"scan{2 * i + 1}"]} for i in range(3)]
    data = routing.collect_routing(molre_model, batches, device="cpu", max_batches=2, token_scans=3)
    assert data.scan_ids == ["scan0", "scan1", "scan2", "scan3"]
    assert len(data.layers) == 4 and data.unit_kind[data.layers[0]] == "slice"
    gates = data.unit_gates[data.layers[0]]
    assert gates.shape == (4, 4, 3) and np.allclose(gates.sum(-1), 1.0, atol=1e-5)
    assert data.token_scan_ids == ["scan0", "scan1", "scan2"]
    assert data.token_gates[data.layers[0]].shape == (3, 4, 16, 3)  # 64/16 = 4x4 patch grid, 5 prefix tokens dropped
    assert data.grids[data.layers[0]] == (4, 4)
    path = data.save(tmp_path / "routing.npz")
    again = RoutingData.load(path)
    assert again.layers == data.layers and again.grids == data.grids and again.input_shape == (4, 48, 48)
    np.testing.assert_allclose(again.unit_gates[data.layers[1]], data.unit_gates[data.layers[1]])
    m = routing.dominant_expert_map(again, again.layers[-1], "scan1", slice_index=2)
    assert m.shape == (48, 48) and set(np.unique(m)) <= {0, 1, 2}
    volume = routing.routing_volume(again, again.layers[-1], "scan1")
    assert volume.shape == (4, 48, 48) and np.array_equal(volume[2], m)
    assert len(routing.expert_usage(again)) == 4 * 3


def test_routing_plots_render(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from molre_lib import plots

    data = _known()
    paths = []
    paths += plots.save_figure(plots.plot_expert_usage(routing.expert_usage(data)), tmp_path, "usage")
    paths += plots.save_figure(plots.plot_gate_entropy(routing.gate_entropy(data)), tmp_path, "entropy")
    fig = plots.plot_gates_by_finding(routing.gates_by_finding(data, "a"))
    # every finding here has < MIN_POSITIVES positives: ranked over all of them, each panel says its n+
    assert [a.get_title() for a in fig.axes if a.get_title()][:2] == ["f0\n(n+ = 2)", "f1\n(n+ = 1)"]
    spec = routing.expert_specialisation(data, "a")
    plots.plot_expert_specialisation(spec, categories={"f0": "hemorrhage", "f1": "mass"})
    base = np.zeros((8, 8))
    fig = plots.plot_routing_maps([base], [routing.dominant_expert_map(data, "a", "s0", 0)], n_experts=2, labels=["s0 z0"])
    paths += plots.save_figure(fig, tmp_path, "routing_map")
    assert all(p.stat().st_size > 0 for p in paths) and len(paths) == 9


def test_gates_by_finding_ranks_only_findings_with_enough_positives():
    """A gate difference over one or two scans would top the ranking by chance: with enough findings of at least
    MIN_POSITIVES positives, the rare ones are not chosen, and each panel names its n+."""
    import pandas as pd

    from molre_lib import plots
    from molre_lib.plots.style import MIN_POSITIVES

    rows = []
    for finding, n_pos, diff in (("rare", 1, 0.5), ("common", MIN_POSITIVES + 3, 0.05), ("other", MIN_POSITIVES, 0.02)):
        for e in range(2):
            rows.append({"finding": finding, "expert": e, "pos_mean": 0.5 + diff * (1 - 2 * e), "neg_mean": 0.5,
                         "diff": diff * (1 - 2 * e), "n_pos": n_pos, "n_neg": 50})
    fig = plots.plot_gates_by_finding(pd.DataFrame(rows))
    assert [a.get_title() for a in fig.axes if a.get_title()] == [f"common\n(n+ = {MIN_POSITIVES + 3})",
                                                                   f"other\n(n+ = {MIN_POSITIVES})"]


def test_expert_specialisation_greys_rare_rows_and_keeps_them_out_of_the_scale():
    import pandas as pd

    from molre_lib import plots

    spec = pd.DataFrame({0: [0.9, 0.05], 1: [-0.9, -0.05]}, index=["rare", "common"])
    fig = plots.plot_expert_specialisation(spec, categories={"rare": "mass", "common": "mass"},
                                           n_pos={"rare": 1, "common": 12})
    image = fig.axes[0].get_images()[0]
    assert np.ma.getmaskarray(image.get_array())[0].all() and not np.ma.getmaskarray(image.get_array())[1].any()
    assert image.get_clim() == (-0.05, 0.05)  # the one-scan row does not set the colour scale
    assert "grey" in fig.axes[0].get_xlabel()
