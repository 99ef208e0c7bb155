"""Localisation of finished runs on the phantom: attribution maps of every run on the *same* positive scans,
scored against the lesion masks, summarised per finding / category / overall and paired against the first run.

Used by 04_gradcam and ``molre localise`` (so a sweep or a shell can compute the numbers without a notebook).
Files written by :func:`write_localisation` into an output folder:

- ``localisation_scores.csv``: one row per (model, method, scan, finding) with every metric and chance level;
- ``localisation_summary.csv``: per (model, method) and grouping level (``all`` / ``category`` / ``finding``)
  the mean with scan-bootstrap CI of hit rate, energy in mask and voxel AUROC, with their chance levels;
- ``localisation_paired.csv``: each other model minus the first (reference) on the same (scan, finding);
- ``localisation.json``: settings and the overall rows, what ``molre demo`` prints.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from molre_lib.analysis import localisation as loc
from molre_lib.data.dataset import unwrap_dataset

SCORES, SUMMARY, PAIRED, OVERVIEW = ("localisation_scores.csv", "localisation_summary.csv",
                                     "localisation_paired.csv", "localisation.json")


@dataclass
class LocalisationSettings:
    """What is scored and how."""

    split: str = field(default="test", metadata={"help": "split whose positive phantom scans are scored"})
    max_scans: int = field(default=32, metadata={"help": "first N scans of the split with a lesion mask"})
    methods: tuple[str, ...] = field(default=("gradcam", "occlusion"), metadata={"help": "attribution methods"})
    margin_mm: float = field(default=loc.DEFAULT_MARGIN_MM, metadata={"help": "pointing-game margin around the mask"})
    occlusion_patch: tuple[int, int, int] = field(default=(1, 16, 16), metadata={
        "help": "occluded (d, h, w) voxels: one slice, 16 x 16 pixels (a 4 x 4 grid on 64-pixel slices)"})
    findings: tuple[str, ...] | None = field(default=None, metadata={"help": "only these findings (None: all)"})
    bootstrap: int = field(default=1000, metadata={"help": "bootstrap resamples of scans"})
    seed: int = field(default=0, metadata={"help": "bootstrap seed"})


class NoLesionMasks(ValueError):
    """The data have no lesion masks to score against (not phantom data, or no masked finding in the scans)."""


@dataclass
class Localisation:
    scores: pd.DataFrame
    summary: pd.DataFrame
    paired: pd.DataFrame
    settings: LocalisationSettings
    models: list[str]


def model_names(runs: Sequence) -> list[str]:
    """Adapter names ('lora', 'molre'), or run folder names where adapters repeat."""
    names = [str(r.cfg.adapter) for r in runs]
    return names if len(set(names)) == len(names) else [r.run_dir.name for r in runs]


def score_runs(runs: Sequence, settings: LocalisationSettings | None = None) -> pd.DataFrame:
    """Per-(model, method, scan, finding) scores of opened runs (``workbook.runs.open_run``) on the same scans:
    the first run picks the first ``max_scans`` scans of the split with a mask; the others score those."""
    from molre_lib.data.phantom_masks import PhantomTruth

    s = settings or LocalisationSettings()
    kwargs = {"occlusion": {"patch": tuple(s.occlusion_patch)}}
    tables, scan_ids, truth = [], None, None
    for run, name in zip(runs, model_names(runs)):
        dataset = run.dataset(s.split)
        try:
            again = PhantomTruth.from_dataset(dataset)
        except FileNotFoundError as err:
            raise NoLesionMasks(str(err)) from None
        if truth is None or (again.root, again.cfg) != (truth.root, truth.cfg):  # same data: render each scan once
            truth = again
        t = loc.score_dataset(run.model, dataset, truth, name, methods=s.methods, findings=s.findings,
                              max_scans=s.max_scans if scan_ids is None else None, margin_mm=s.margin_mm,
                              method_kwargs=kwargs, scan_ids=scan_ids)
        if t.empty:
            raise NoLesionMasks(f"no scan of split {s.split!r} has a lesion mask for the chosen findings")
        scan_ids = scan_ids or sorted(set(t["scan_id"]))
        tables.append(t)
    return pd.concat(tables, ignore_index=True)


def summarise_scores(scores: pd.DataFrame, settings: LocalisationSettings | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary, paired) tables at three levels: all findings, per category, per finding."""
    s = settings or LocalisationSettings()
    models = list(dict.fromkeys(scores["model"]))
    scores = scores.assign(all="all findings")
    summary, paired = [], []
    for level in ("all", "category", "finding"):
        t = loc.summarise(scores, by=["model", "method", level], n_boot=s.bootstrap, seed=s.seed)
        summary.append(t.rename(columns={level: "group"}).assign(level=level))
        for other in models[1:]:
            p = loc.paired(scores, models[0], other, by=["method", level], n_boot=s.bootstrap, seed=s.seed)
            paired.append(p.rename(columns={level: "group"}).assign(level=level))
    return pd.concat(summary, ignore_index=True), (pd.concat(paired, ignore_index=True) if paired else pd.DataFrame())


def localise(runs: Sequence, settings: LocalisationSettings | None = None) -> Localisation:
    s = settings or LocalisationSettings()
    scores = score_runs(runs, s)
    summary, paired = summarise_scores(scores, s)
    return Localisation(scores, summary, paired, s, list(dict.fromkeys(scores["model"])))


def write_localisation(result: Localisation, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result.scores.to_csv(out / SCORES, index=False)
    result.summary.to_csv(out / SUMMARY, index=False)
    result.paired.to_csv(out / PAIRED, index=False)
    overall = result.summary[result.summary["level"] == "all"]
    pairs = result.paired[result.paired["level"] == "all"] if not result.paired.empty else result.paired
    doc = {"settings": asdict(result.settings), "models": result.models,
           "n_scans": int(result.scores["scan_id"].nunique()), "n_pairs_per_model_method": int(overall["n_pairs"].max()),
           "overall": overall.drop(columns=["level", "group"]).to_dict(orient="records"),
           "paired": pairs.drop(columns=["level", "group"]).to_dict(orient="records") if len(pairs) else []}
    (out / OVERVIEW).write_text(json.dumps(doc, indent=1, default=float))
    return out


def overview_lines(doc: dict) -> list[str]:
    """Human-readable lines of ``localisation.json`` (what ``molre demo`` prints)."""
    lines = [f"localisation on {doc['n_scans']} phantom scans ({doc['n_pairs_per_model_method']} scan-finding pairs), "
             f"pointing-game margin {doc['settings']['margin_mm']:g} mm; mean [95% CI] (chance)"]
    for r in doc["overall"]:
        lines.append(f"  {r['method']:<9} {r['model']:<8} hit {r['hit']:.2f} [{r['hit_lo']:.2f}, {r['hit_hi']:.2f}] "
                     f"({r['hit_chance']:.2f})  energy {r['energy']:.2f} [{r['energy_lo']:.2f}, {r['energy_hi']:.2f}] "
                     f"({r['energy_chance']:.2f})  AUROC {r['auroc']:.2f} [{r['auroc_lo']:.2f}, {r['auroc_hi']:.2f}]")
    for r in doc["paired"]:
        lines.append(f"  {r['method']:<9} {r['other']} - {r['reference']}: hit {r['d_hit']:+.2f} "
                     f"[{r['d_hit_lo']:+.2f}, {r['d_hit_hi']:+.2f}] p={r['p_hit']:.3g}  energy {r['d_energy']:+.3f} "
                     f"[{r['d_energy_lo']:+.3f}, {r['d_energy_hi']:+.3f}] p={r['p_energy']:.3g}")
    return lines


# ----------------------------------------------------------------------------------------------- example views
@dataclass
class ExampleViews:
    """What 04's overlays, paper panel and viewer draw, per example row (finding, scan)."""

    table: pd.DataFrame  # finding, index, scan_id, has_mask, slice, p_<model>
    images: dict  # dataset index -> (1, C, D, H, W) model input
    hu_brain: dict  # dataset index -> (D, H, W) brain-window view in [0, 1]
    heads: dict  # dataset index -> bool (D, H, W)
    masks: dict  # (index, finding) -> bool (D, H, W) lesion mask on the model grid (phantom data only)
    cams: dict  # model -> dataset index -> finding -> (D, H, W) map in [0, 1]

    def masks_of(self, index: int) -> dict:
        """finding -> lesion mask (D, H, W) of one example scan (for the viewer's outline); empty off the phantom."""
        return {k: m for (i, k), m in self.masks.items() if i == int(index)}

    def rows(self, table: pd.DataFrame | None = None) -> tuple[list, list, list, dict]:
        """(bases, masks, heads, model -> CAM slices) for the rows of ``table`` (default all) on their slices."""
        t = self.table if table is None else table
        bases = [self.hu_brain[r.index][r.slice] for r in t.itertuples()]
        masks = [self.masks[(r.index, r.finding)][r.slice] if (r.index, r.finding) in self.masks else None
                 for r in t.itertuples()]
        heads = [self.heads[r.index][r.slice] for r in t.itertuples()]
        cams = {m: [self.cams[m][r.index][r.finding][r.slice] for r in t.itertuples()] for m in self.cams}
        return bases, masks, heads, cams

    def locations(self, table: pd.DataFrame | None = None) -> dict:
        """model -> per row of ``table`` (default all): ``analysis.slices.cam_location`` of the row's CAM volume at
        its shown slice (share of the CAM mass there, peak slice), for the captions of the CAM panel."""
        from molre_lib.analysis.slices import cam_location

        t = self.table if table is None else table
        return {m: [cam_location(self.cams[m][r.index][r.finding], self.heads[r.index], r.slice) for r in t.itertuples()]
                for m in self.cams}


def example_views(runs: Sequence, dataset, examples: pd.DataFrame, findings: Sequence[str],
                  method: str = "gradcam") -> ExampleViews:
    """Maps of every run for every finding on the example scans (``positive_examples`` rows), each row's slice
    by ``analysis.slices.pick_slice`` (largest lesion slice, else most map mass of the last run in the head)."""
    import numpy as np
    import torch

    from molre_lib.analysis.explain import ATTRIBUTIONS
    from molre_lib.analysis.localisation import head_from_image
    from molre_lib.analysis.slices import pick_slice
    from molre_lib.data.dataset import slice_indices
    from molre_lib.data.phantom_masks import PhantomTruth
    from molre_lib.data.taxonomy import FINDING_KEYS
    from molre_lib.data.windowing import window

    base = unwrap_dataset(dataset, ("fitted",))
    try:
        truth = PhantomTruth(base.root, base.cfg)
    except FileNotFoundError:
        truth = None
    names = model_names(runs)
    images, brain, heads, masks = {}, {}, {}, {}
    cams: dict = {n: {} for n in names}
    probs: dict = {n: {} for n in names}
    for i in examples["index"].unique():
        i = int(i)
        item = dataset[i]
        images[i] = item["image"].unsqueeze(0)
        hu = base.fitted(i)
        brain[i] = window(hu[slice_indices(hu.shape[0], base.cfg.n_slices)].astype(np.float32), "brain")
        heads[i] = head_from_image(item["image"].numpy(), base.cfg.windows)
        sid = str(item["scan_id"])
        if truth is not None and sid in truth:
            for k, m in truth(sid).masks.items():
                if k in findings and m.any():
                    masks[(i, k)] = m
        for run, name in zip(runs, names):
            x = images[i].to(run.device)
            cams[name][i] = ATTRIBUTIONS[method](run.model, x, list(findings))
            with torch.no_grad():
                probs[name][i] = torch.sigmoid(run.model(x))[0].float().cpu().numpy()
    t = examples.copy()
    t["has_mask"] = [(int(r.index), r.finding) in masks for r in t.itertuples()]
    t["slice"] = [pick_slice(mask=masks.get((int(r.index), r.finding)), cam=cams[names[-1]][int(r.index)][r.finding],
                             head=heads[int(r.index)]) for r in t.itertuples()]
    for name in names:
        t[f"p_{name}"] = [float(probs[name][int(r.index)][FINDING_KEYS.index(r.finding)]) for r in t.itertuples()]
    return ExampleViews(t, images, brain, heads, masks, cams)
