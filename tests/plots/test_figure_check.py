"""Every figure of the notebook series, made from small synthetic inputs at the size its notebook saves it
(03 at double-column, 05 at single-column print width, the others at their own size under the paper style),
passes the reviewer's check of :func:`molre_lib.plots.checks.figure_problems`: no overlapping text, no text
cut by the canvas, finding and method names instead of keys, no legend over data. The checker itself is tested
on figures with each fault, and the ΔAUC plot on the faults issue 26 found in it (axis far wider than the
deltas, stars far from their row).

Adding a figure to a notebook: add its maker to ``SERIES`` below."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from molre_lib import plots  # noqa: E402
from molre_lib.analysis import routing  # noqa: E402
from molre_lib.analysis.routing import RoutingData  # noqa: E402
from molre_lib.analysis.slices import cam_location  # noqa: E402
from molre_lib.data.taxonomy import CATEGORY_OF, FINDING_KEYS  # noqa: E402
from molre_lib.plots import localisation as lp  # noqa: E402
from molre_lib.plots.checks import figure_problems  # noqa: E402
from molre_lib.stats.auroc import auc_report  # noqa: E402
from molre_lib.stats.calibration import confidence_regime_shift  # noqa: E402
from molre_lib.stats.delong import paired_delong  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# -- synthetic inputs, shaped like the demo's (60 test scans, 75 findings, rare findings with 0-4 positives) ----
def _predictions(n: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    prevalence = rng.uniform(0.01, 0.25, len(FINDING_KEYS))
    y = (rng.random((n, len(FINDING_KEYS))) < prevalence).astype(float)
    a, b = y * 0.3 + rng.random(y.shape), y * 0.35 + rng.random(y.shape)
    return y, np.clip(a / 1.35, 0, 1), np.clip(b / 1.35, 0, 1)


def _per_finding(y, p) -> pd.DataFrame:
    return auc_report(y, p, n_boot=50, seed=0, finding_keys=FINDING_KEYS)["per_finding"]


def _routing(n_scans: int = 24, experts: int = 4, layers: int = 8, depth: int = 8, grid: int = 4) -> RoutingData:
    rng = np.random.default_rng(1)
    names = [f"encoder.blocks.{i}.attn.qkv" for i in range(layers)]
    y, _, _ = _predictions(n_scans, seed=2)
    gates = {n: rng.dirichlet(np.ones(experts), (n_scans, depth)) for n in names}  # (S, U, E)
    tokens = {n: rng.dirichlet(np.ones(experts), (2, depth, grid * grid)).astype(np.float16) for n in names}
    return RoutingData(
        layers=names, layout={n: "token" for n in names}, unit_kind={n: "slice" for n in names},
        scan_ids=[f"scan{i:03d}" for i in range(n_scans)], labels=y.astype(np.float32),
        label_mask=np.ones_like(y, np.float32), unit_gates=gates,
        unit_top1={n: (g == g.max(-1, keepdims=True)).astype(float) for n, g in gates.items()},
        unit_entropy={n: -(g * np.log(g)).sum(-1) for n, g in gates.items()}, token_gates=tokens,
        token_scan_ids=["scan000", "scan001"], grids={n: (grid, grid) for n in names}, input_shape=(depth, 64, 64),
        finding_keys=list(FINDING_KEYS))


def _head_slice(size: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    head = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.42 * size) ** 2
    mask = (yy - 0.35 * size) ** 2 + (xx - 0.6 * size) ** 2 < (0.08 * size) ** 2
    cam = np.exp(-((yy - rng.uniform(20, 44)) ** 2 + (xx - rng.uniform(20, 44)) ** 2) / 60.0)
    return head * 0.5 + mask * 0.3, mask, head, cam


def _localisation_rows(findings=("intraparenchymal_hemorrhage", "subdural_hematoma", "mca_territory_infarct")):
    rows = []
    for model in ("lora", "molre"):
        for f in findings:
            rows.append({"model": model, "finding": f, "n_scans": 4, **{
                f"{m}{s}": v for m in ("hit", "energy", "auroc")
                for s, v in (("", 0.4), ("_lo", 0.2), ("_hi", 0.6), ("_chance", 0.07))}})
    return pd.DataFrame(rows)


def _notebook_00():
    y, _, _ = _predictions(200)
    mask = np.ones_like(y)
    prevalence = plots.prevalence_table(y, mask, FINDING_KEYS, CATEGORY_OF)
    hu = np.random.default_rng(0).normal(30, 20, (16, 64, 64))
    return {"prevalence_by_finding": lambda: plots.plot_prevalence(prevalence),
            "prevalence_by_category": lambda: plots.plot_prevalence(prevalence, by="category"),
            "cooccurrence": lambda: plots.plot_cooccurrence(plots.cooccurrence_matrix(y, mask, FINDING_KEYS), CATEGORY_OF),
            "slice_gallery": lambda: plots.plot_slice_gallery(hu, title="phantom_0007: brain / subdural / bone windows")}


def _notebook_01():
    log = pd.DataFrame({"step": range(40), "train_loss": np.linspace(1, 0.2, 40),
                        "val_auc": [np.nan, np.nan, np.nan, np.nan, 0.6] * 8})
    return {"training_curves": lambda: plots.plot_training_curves(log, title="phantom_vit · MoLRE")}


def _notebook_02():
    data = _routing()
    layer = data.layers[len(data.layers) // 2]
    base = np.random.default_rng(0).random((64, 64))
    maps = [routing.dominant_expert_map(data, layer, s, d, base.shape) for s in ("scan000", "scan001") for d in (4, 5)]
    tests = pd.DataFrame([{"layer": n, "layer_index": i, "target": t, "v": 0.3, "v_null_mean": 0.05, "v_null_95": 0.08,
                           "p": 0.005, "n_scans": 16} for i, n in enumerate(data.layers) for t in ("tissue", "lesion")])
    cats = pd.DataFrame([{"category": c, "expert": e, "diff": 0.01 * e, "diff_lo": -0.01, "diff_hi": 0.05}
                         for c in dict.fromkeys(CATEGORY_OF.values()) for e in range(4)])
    short = plots.short_layer_names([layer])[0]
    return {"expert_usage": lambda: plots.plot_expert_usage(routing.expert_usage(data)),
            "gate_entropy": lambda: plots.plot_gate_entropy(routing.gate_entropy(data)),
            "gates_by_finding": lambda: plots.plot_gates_by_finding(routing.gates_by_finding(data, layer), title=short),
            "expert_specialisation": lambda: plots.plot_expert_specialisation(
                routing.expert_specialisation(data, layer), CATEGORY_OF),
            "routing_maps": lambda: plots.plot_routing_maps(
                [base] * 4, maps, 4, labels=[f"scan00{i // 2} (3 findings), slice {4 + i % 2}" for i in range(4)]),
            "specialisation_tests": lambda: lp.plot_specialisation_tests(tests),
            "gates_by_category": lambda: lp.plot_category_gates(cats, title=short)}


def _notebook_03():
    y, a, b = _predictions()
    forest = _per_finding(y, a)
    compare = paired_delong(y, a, b, finding_keys=FINDING_KEYS)
    compare.insert(1, "category", [CATEGORY_OF[k] for k in compare["finding"]])
    shift = confidence_regime_shift(y, a, b, finding_keys=FINDING_KEYS)
    return {"forest": lambda: plots.plot_forest(forest, title="LoRA · test"),
            "delta_auc": lambda: plots.plot_delta_auc(compare, xlabel="ΔAUC (MoLRE − LoRA)"),
            "confidence_shift": lambda: plots.plot_confidence_shift(shift, label_a="LoRA", label_b="MoLRE"),
            "reliability": lambda: plots.plot_reliability({"LoRA": a, "MoLRE": b}, y)}


def _notebook_04():
    slices = [_head_slice(seed=i) for i in range(3)]
    bases, masks, heads, cams = (list(x) for x in zip(*slices))
    keys = ["intraparenchymal_hemorrhage", "subdural_hematoma", "mca_territory_infarct"]
    labels = [f"{plots.names.finding_name(k)}\nphantom_{i:04d} · slice {4 + i}" for i, k in enumerate(keys)]
    return {"localisation_forest": lambda: lp.plot_localisation_forest(
                _localisation_rows(), metrics=("hit", "energy", "auroc"), title="Grad-CAM: localisation per finding"),
            "cam_overlay": lambda: lp.plot_cam_comparison(
                bases[:1], masks[:1], heads[:1], {"lora": cams[:1], "molre": cams[1:2]},
                locations={m: rows[:1] for m, rows in _locations(heads, cams).items()},
                title=f"{plots.names.finding_name(keys[0])} · phantom_0000 · slice 4"),
            "cam_panel": lambda: lp.plot_cam_comparison(bases, masks, heads, {"lora": cams, "molre": cams[::-1]},
                                                        row_labels=labels, locations=_locations(heads, cams)),
            "cam_panel_slice_scaled": lambda: lp.plot_cam_comparison(
                bases, masks, heads, {"lora": cams, "molre": cams[::-1]}, row_labels=labels,
                locations=_locations(heads, cams), scale="slice")}


def _locations(heads, cams):
    """The panel's captions as 04 makes them: the shown slice 4 of an 8-slice volume; MoLRE's map peaks on slice 6."""
    out = {}
    for model, peak in (("lora", 4), ("molre", 6)):
        rows = []
        for head, cam in zip(heads, cams):
            volume = np.stack([cam * (0.2 if z != peak else 1.0) for z in range(8)])
            rows.append(cam_location(volume, np.stack([head] * 8), shown=4))
        out[model] = rows
    return out


def test_cam_location_says_where_the_map_lies():
    head = np.ones((4, 8, 8), bool)
    cam = np.zeros((4, 8, 8))
    cam[3, 2:4, 2:4] = 1.0  # all the mass on slice 3
    cam[1, 0, 0] = 1.0 / 3  # a little on slice 1
    where = cam_location(cam, head, shown=1)
    assert where["peak_slice"] == 3 and where["peak_share"] == pytest.approx(12 / 13)
    assert where["shown_share"] == pytest.approx(1 / 13) and where["shown_peak"] == pytest.approx(1 / 3)
    assert lp.cam_caption(where) == "8% of its mass here\nmost on slice 3 (92%)"
    assert lp.cam_caption(cam_location(cam, head, shown=3)).endswith("(its peak slice)")
    assert np.isnan(cam_location(np.zeros_like(cam), head, 0)["shown_share"])


def _notebook_05():
    bars = pd.DataFrame({"backbone": ["phantom_vit", "phantom_vit"], "arm": ["lora", "molre"],
                         "mean_auc": [0.69, 0.68], "ci_low": [0.67, 0.65], "ci_high": [0.73, 0.72]})
    shown = pd.DataFrame({"Backbone": ["phantom_vit"], "Family": ["demo"], "AUC: LoRA": ["0.691"],
                          "AUC: MoLRE": ["0.684"], "ΔAUC [95% CI]: MoLRE − LoRA": ["−0.007 [−0.049, 0.020]"]})
    return {"summary_auc": lambda: plots.plot_summary(bars, title="Test macro AUC (95% CI)"),
            "summary_table": lambda: plots.plot_table(shown, title="Test macro AUROC of LoRA, MoLRE across backbones.")}


# notebook -> (the print column its setup cell sets, its figures)
SERIES = {"00_data": (None, _notebook_00), "01_train": (None, _notebook_01), "02_routing": (None, _notebook_02),
          "03_per_finding_auc": ("double", _notebook_03), "04_gradcam": (None, _notebook_04),
          "05_summary": ("single", _notebook_05)}


@pytest.mark.parametrize("notebook", list(SERIES))
def test_every_figure_of_the_series_passes_the_print_check(notebook):
    column, makers = SERIES[notebook]
    failures = []
    with plots.paper_style(column):
        for name, make in makers().items():
            fig = make()
            problems = figure_problems(fig)
            failures += [f"{notebook}/{name}: {p}" for p in problems[:6]]
            failures += [f"{notebook}/{name}: ... {len(problems) - 6} more"] if len(problems) > 6 else []
            plt.close(fig)
    assert not failures, "\n".join(failures)


# -- the checker finds each fault ---------------------------------------------------------------------------
def test_check_finds_colliding_axis_labels_cut_text_and_machine_names():
    with plots.paper_style("double"):
        fig, axes = plt.subplots(1, 2)
        for ax in axes:
            ax.set_xlabel("ΔAUC (phantom_vit_molre_seed0 − phantom_vit_lora_seed0)")  # 03's old label, twice
        axes[0].set_yticks([0, 1], ["intracranial_hemorrhage_fluid_level", "Hydrocephalus"])
        problems = figure_problems(fig)
    assert any(p.startswith("overlapping text") for p in problems)
    assert any(p.startswith("text cut by the canvas") for p in problems)
    assert any("run folder name 'phantom_vit_molre_seed0'" in p for p in problems)
    assert any("taxonomy key 'intracranial_hemorrhage_fluid_level'" in p for p in problems)
    assert not any("Hydrocephalus" in p for p in problems)  # a one-word name is a name


def test_check_finds_a_legend_over_data_and_ignores_undrawn_text():
    with plots.paper_style(None):
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot([0, 1], [0, 1], label="LoRA")
        ax.legend(loc="center")
        ax.set_xticks([0.5, 5.0], ["in view", "intracranial_hemorrhage_fluid_level"])
        ax.set_xlim(0, 1)  # the tick at 5.0 lies outside the view: not drawn, not checked
        problems = figure_problems(fig)
    assert any(p.startswith("legend over data") for p in problems)
    assert not any("taxonomy key" in p for p in problems)


def test_check_on_a_clean_figure_finds_nothing():
    with plots.paper_style("single"):
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0.6, 0.8], label="MoLRE")
        ax.set_xlabel("epoch")
        ax.legend(loc="upper left", bbox_to_anchor=(0.0, 1.0))
        ax.set_ylim(0.0, 1.4)
        fig.tight_layout()
        assert figure_problems(fig) == []


# -- the ΔAUC plot as issue 26 found it ---------------------------------------------------------------------
def _delta_figure():
    y, a, b = _predictions()
    compare = paired_delong(y, a, b, finding_keys=FINDING_KEYS)
    with plots.paper_style("double"):
        return compare, plots.plot_delta_auc(compare, xlabel="ΔAUC (MoLRE − LoRA)")


def test_delta_auc_axis_spans_what_is_drawn():
    compare, fig = _delta_figure()
    drawn = compare[compare["n_pos"] >= plots.MIN_POSITIVES]
    lo = min(drawn["ci_low"].min(), compare["delta_auc"].min(), 0)
    hi = max(drawn["ci_high"].max(), compare["delta_auc"].max(), 0)
    for ax in fig.axes[:2]:
        left, right = ax.get_xlim()
        assert left <= lo and right >= hi  # nothing drawn is clipped
        assert right - left <= 1.3 * (hi - lo)  # the old axis spanned 2.4 for deltas within ±0.4


def test_delta_auc_stars_sit_beside_their_row_and_rare_rows_have_no_interval():
    y, a, b = _predictions()
    rng = np.random.default_rng(7)
    y[:, :5] = rng.random((len(y), 5)) < 0.3  # findings 0-4: common, and clearly better under B
    b[:, :5] = y[:, :5] * 3 + rng.random((len(y), 5))
    compare = paired_delong(y, a, b, finding_keys=FINDING_KEYS)
    with plots.paper_style("double"):
        fig = plots.plot_delta_auc(compare, xlabel="ΔAUC (MoLRE − LoRA)")
    ax = fig.axes[0]
    names = [t.get_text() for t in ax.get_yticklabels()]
    rows = compare.set_index(compare["finding"].map(lambda k: plots.names.finding_name(k, short=True)))
    stars = [t for t in ax.texts if set(t.get_text()) == {"*"}]
    assert stars
    width = np.diff(ax.get_xlim())[0]
    for star in stars:
        x, yi = star.get_position()
        row = rows.loc[names[int(round(yi))]]
        assert row["n_pos"] >= plots.MIN_POSITIVES
        assert 0 < x - row["ci_high"] < 0.03 * width  # just right of its own interval
    rare = compare[compare["n_pos"] < plots.MIN_POSITIVES]
    assert len(rare)
    intervals = ax.collections[0].get_segments()  # hlines: one segment per row with an interval
    assert len(intervals) == sum(rows.loc[n, "n_pos"] >= plots.MIN_POSITIVES for n in names)
