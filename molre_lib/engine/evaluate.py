"""Library entry points behind ``molre evaluate / compare / predict``, callable from notebooks.

``evaluate_run`` and ``compare_runs`` read only the files of run directories (predictions parquet),
so they are cheap and never need the model; ``load_run_model`` rebuilds the model from ``config.json`` and
``adapter.safetensors`` (for :mod:`molre_lib.engine.predict`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from molre_lib.common.files import atomic_write
from molre_lib.stats.calibration import confidence_regime_shift, operating_points
from molre_lib.stats.auroc import default_categories
from .run_files import _clean, metrics_document, paired_predictions, read_predictions
from molre_lib.stats.delong import paired_delong


def _table_name(stem: str, split: str) -> str:
    return f"{stem}.csv" if split == "test" else f"{stem}_{split}.csv"


def evaluate_run(run_dir: str | Path, split: str = "test", bootstrap: int = 1000, seed: int = 0,
                 out_dir: Optional[str | Path] = None) -> dict:
    """AUROC with bootstrap CIs, ECE and operating points of one split of a finished run.

    Writes ``per_finding_auc.csv`` (``per_finding_auc_<split>.csv`` for other splits), the same for
    ``operating_points``, and updates the ``<split>`` section of ``metrics.json``.

    Args:
        run_dir: a finished run of ``molre train`` / ``01_train`` (it holds ``predictions_<split>.parquet``).
        split: ``"test"`` or ``"val"``.
        bootstrap: replicates of the scan bootstrap for the 95% CIs (0: no CIs).
        seed: the bootstrap's seed.
        out_dir: where the tables go (default ``run_dir``).

    Returns:
        The ``<split>`` section of ``metrics.json``: macro / micro / category AUCs with CIs, per-finding AUC,
        n_pos, ECE.

    Raises:
        FileNotFoundError: the run has no ``predictions_<split>.parquet``.
    """
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    _, keys, probs, labels, mask = read_predictions(run_dir / f"predictions_{split}.parquet")
    doc = metrics_document(labels, probs, mask, keys, bootstrap, seed)
    pd.DataFrame(doc["per_finding"]).to_csv(out_dir / _table_name("per_finding_auc", split), index=False)
    operating_points(labels, probs, mask, keys).to_csv(out_dir / _table_name("operating_points", split), index=False)
    path = out_dir / "metrics.json"
    metrics = json.loads(path.read_text()) if path.exists() else {}
    metrics[split] = _clean(doc)
    atomic_write(path, json.dumps(metrics, indent=2))
    return metrics[split]


MIN_SHARED = 0.9


def check_shared(run_a: Path, run_b: Path, split: str, n_a: int, n_b: int, n_shared: int, min_shared: float) -> None:
    """Refuse a comparison on fewer shared scans than ``min_shared`` of either run's scans, naming the counts."""
    frac = n_shared / max(n_a, n_b, 1)
    if frac < min_shared:
        raise ValueError(f"{run_a.name} has {n_a} {split} scans and {run_b.name} {n_b}; only {n_shared} are shared "
                         f"({frac:.0%} of the larger, below --min-shared {min_shared:g}): their AUCs would be on other "
                         f"scans than the runs report; compare on the shared scans with --min-shared {frac:.2f}")


def compare_runs(run_a: str | Path, run_b: str | Path, out_dir: Optional[str | Path] = None, split: str = "test",
                 band: tuple[float, float] = (0.3, 0.7), alpha: float = 0.05,
                 min_shared: float = MIN_SHARED) -> pd.DataFrame:
    """Per-finding paired comparison of run B against run A (e.g. MoLRE vs LoRA) on their shared scans.

    Columns: finding, category, n_pos, auc_a, auc_b, delta_auc (b - a) with its DeLong 95% CI, p, p_holm,
    p_bh, and the confidence-regime shift (positives moving from ``band`` in A to > band[1] in B).
    Writes ``compare_per_finding.csv`` and ``compare_categories.csv`` to ``out_dir``
    (default ``<run_b>/compare_<run_a name>``). The category summary is in ``df.attrs["categories"]``.
    Both CSVs carry ``n_scans_a``, ``n_scans_b`` and ``n_shared``; fewer shared scans than ``min_shared`` of the
    larger run raise (a silent subset would report AUCs on other scans than each run's own).

    Args:
        run_a: the reference run (e.g. LoRA).
        run_b: the run compared with it (e.g. MoLRE); scans are paired by ``scan_id``.
        out_dir: where the two CSVs go (default ``<run_b>/compare_<run_a name>``).
        split: ``"test"`` or ``"val"``.
        band: the borderline probability band of the confidence-regime shift.
        alpha: significance level of the per-category counts of findings better under each run (Holm / BH
            adjusted p < alpha).
        min_shared: the smallest share of the larger run's scans both runs must have.

    Returns:
        One row per finding, as above; ``df.attrs["categories"]`` holds the per-category summary.

    Raises:
        ValueError: fewer shared scans than ``min_shared`` (the message says how many each run has and the
            ``--min-shared`` value that would compare on the shared ones).
    """
    run_a, run_b = Path(run_a), Path(run_b)
    pair = paired_predictions(run_a, run_b, split)
    keys, y, m, pa, pb, na, nb = pair.keys, pair.labels, pair.mask, pair.probs_a, pair.probs_b, pair.n_a, pair.n_b
    check_shared(run_a, run_b, split, na, nb, len(y), min_shared)
    df = paired_delong(y, pa, pb, m, keys)
    regime = confidence_regime_shift(y, pa, pb, m, keys, band).drop(columns=["finding", "n_pos"])
    df = pd.concat([df, regime], axis=1)
    cats = default_categories(keys) or {}
    df.insert(1, "category", [cats.get(k, "") for k in keys])
    ok = df["p"].notna()
    summary = (df[ok].groupby("category", sort=False)
               .agg(n_findings=("finding", "size"), mean_auc_a=("auc_a", "mean"), mean_auc_b=("auc_b", "mean"),
                    mean_delta_auc=("delta_auc", "mean"),
                    b_better_holm=("p_holm", lambda s: int(((s < alpha) & (df.loc[s.index, "delta_auc"] > 0)).sum())),
                    a_better_holm=("p_holm", lambda s: int(((s < alpha) & (df.loc[s.index, "delta_auc"] < 0)).sum())),
                    b_better_bh=("p_bh", lambda s: int(((s < alpha) & (df.loc[s.index, "delta_auc"] > 0)).sum())),
                    moved_up=("moved_up", "sum"), moved_down=("moved_down", "sum"), n_pos=("n_pos", "sum"))
               .reset_index())
    total = pd.DataFrame([{"category": "all", "n_findings": int(ok.sum()), "mean_auc_a": df.loc[ok, "auc_a"].mean(),
                           "mean_auc_b": df.loc[ok, "auc_b"].mean(), "mean_delta_auc": df.loc[ok, "delta_auc"].mean(),
                           **{c: int(summary[c].sum()) for c in ("b_better_holm", "a_better_holm", "b_better_bh",
                                                                  "moved_up", "moved_down", "n_pos")}}])
    summary = pd.concat([summary, total], ignore_index=True)
    summary["frac_moved_up"] = summary["moved_up"] / summary["n_pos"].where(summary["n_pos"] > 0)
    out = Path(out_dir) if out_dir is not None else run_b / f"compare_{run_a.name}"
    out.mkdir(parents=True, exist_ok=True)
    for table in (df, summary):
        table["n_scans_a"], table["n_scans_b"], table["n_shared"] = na, nb, len(y)
    df.to_csv(out / "compare_per_finding.csv", index=False)
    summary.to_csv(out / "compare_categories.csv", index=False)
    df.attrs.update(categories=summary, out_dir=str(out), n_scans=len(y), n_scans_a=na, n_scans_b=nb)
    return df


def format_comparison(df: pd.DataFrame, name_a: str = "A", name_b: str = "B", top: int = 10) -> str:
    """Printable category summary and the findings with the largest |delta AUC|."""
    cats = df.attrs.get("categories")
    lines = [f"{name_b} vs {name_a} on {df.attrs.get('n_scans', '?')} shared scans ({name_a} has "
             f"{df.attrs.get('n_scans_a', '?')}, {name_b} has {df.attrs.get('n_scans_b', '?')}) "
             f"(delta = {name_b} - {name_a}; DeLong, Holm/BH over {int(df['p'].notna().sum())} findings)"]
    if cats is not None:
        lines.append(cats.drop(columns=["n_scans_a", "n_scans_b", "n_shared"], errors="ignore")
                     .to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    cols = ["finding", "category", "n_pos", "auc_a", "auc_b", "delta_auc", "p", "p_holm", "p_bh", "moved_up"]
    ranked = df.assign(_untested=df["p"].isna(), _size=-df["delta_auc"].abs())
    order = ranked.sort_values(["_untested", "_size"], na_position="last").index[:top]
    lines += ["", f"largest |delta AUC| ({top}; findings with a DeLong test first):", df.loc[order, cols].to_string(index=False, float_format=lambda v: f"{v:.3g}")]
    return "\n".join(lines)


def load_run_model(run_dir: str | Path, device: str = "cpu"):
    """(model with the run's adapter loaded, TrainConfig) from ``config.json`` + ``adapter.safetensors``."""
    from molre_lib.adapters import load_adapter, read_adapter_metadata

    from .checkpoint import frozen_fingerprint
    from .build import build_model
    from .config import TrainConfig

    run_dir = Path(run_dir)
    cfg = TrainConfig.load(run_dir / "config.json")
    meta = json.loads((run_dir / "config.json").read_text())
    n_classes = int(meta.get("n_classes", 75))
    model = build_model(cfg, n_classes)
    load_adapter(model, run_dir / "adapter.safetensors")
    saved = read_adapter_metadata(run_dir / "adapter.safetensors").get("frozen_fingerprint")
    now = frozen_fingerprint(model)
    if saved is not None and abs(float(saved) - now) > 1e-6 * max(1.0, abs(now)):
        raise ValueError(f"{run_dir}: the backbone weights found now differ from those the run was trained with "
                         f"(frozen-weight fingerprint {now} != {saved}); point --weights / MOLRE_CACHE_DIR at the same weights")
    return model.to(device).eval(), cfg
