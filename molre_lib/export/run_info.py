"""Everything an export states about a finished run, read once from the run folder's files.

Sources: ``config.json`` (TrainConfig, versions, parameter counts), ``adapter.safetensors`` metadata (adapter
config, adapted layers, trained modules), ``metrics.json`` (AUCs with CIs; ``molre evaluate`` fills the CIs),
``predictions_<split>.parquet`` (confidence regimes), ``compare_*/compare_categories.csv`` (a comparison with
another run, when one was made) and the training manifest (counts, splits, label source).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from molre_lib.adapters import read_adapter_metadata
from molre_lib.engine.config import TrainConfig

from .licences import WeightLicence, licence_of

REGIME_BAND = (0.3, 0.7)  # as molre compare's confidence-regime shift


class ExportError(ValueError):
    """A user error of ``molre export``: one line naming the file / field and what to do (exit code 2)."""


@dataclass
class RunInfo:
    """A finished run as an export describes it."""

    run_dir: Path
    cfg: TrainConfig
    config: dict[str, Any]                      # config.json
    adapter_meta: dict[str, Any]                # molre_config (dict or None), adapted, extra, adapter_kind
    metrics: dict[str, Any]                     # metrics.json
    licence: WeightLicence
    manifest: dict[str, Any] = field(default_factory=dict)   # counts per split, label source
    regimes: Optional[dict[str, Any]] = None    # test positives by confidence regime (this run)
    comparisons: list[dict[str, Any]] = field(default_factory=list)  # compare_*/compare_categories.csv 'all' rows

    @property
    def name(self) -> str:
        return self.run_dir.resolve().name

    @property
    def n_classes(self) -> int:
        return int(self.config.get("n_classes", 75))

    @property
    def molre_config(self) -> Optional[dict[str, Any]]:
        return self.adapter_meta.get("molre_config")

    @property
    def eval_split(self) -> Optional[str]:
        """The split the card reports: test, else val."""
        return next((s for s in ("test", "val") if isinstance(self.metrics.get(s), dict)), None)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ExportError(f"{path} is missing: {path.parent} is not a finished run (train it to the end first)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ExportError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}); re-run the training") from None


def _manifest_summary(cfg: TrainConfig, run_dir: Path) -> dict[str, Any]:
    """Scans / patients per split, the share of known labels, and where the labels come from."""
    path = Path(cfg.manifest) if cfg.manifest else None
    if path is not None and not path.is_absolute() and not path.exists():
        path = run_dir / path
    if path is None or not path.is_file():
        return {"path": cfg.manifest, "available": False}
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    from molre_lib.data.taxonomy import FINDING_KEYS

    keys = [k for k in FINDING_KEYS if k in df.columns]
    splits = {}
    for split, part in df.groupby("split", sort=False):
        known = (part[keys] != "").to_numpy() if keys else np.zeros((len(part), 0), bool)
        splits[split] = {"scans": int(len(part)), "patients": int(part["patient_id"].nunique()),
                         "known_label_fraction": float(known.mean()) if known.size else None}
    root = Path(cfg.data_root) if cfg.data_root else path.parent
    phantom = (root / "phantom.json").is_file()
    source = ("synthetic head-CT phantom (molre_lib.data.synth): labels are the lesions it rendered" if phantom else
              "the manifest's finding columns (1 / 0 / empty = unknown); the manifest does not record who labelled")
    first = [s for s in (cfg.train_split, cfg.val_split, cfg.test_split) if s in splits]
    splits = {s: splits[s] for s in first + [s for s in splits if s not in first]}  # train, val, test, then others
    return {"path": str(path), "available": True, "splits": splits, "n_findings": len(keys), "label_source": source,
            "synthetic": phantom}


def _regimes(run_dir: Path, split: str) -> Optional[dict[str, Any]]:
    """Known positives of ``split`` by predicted probability: low (< 0.3), borderline, confident (> 0.7)."""
    from molre_lib.engine.run_files import read_predictions

    path = run_dir / f"predictions_{split}.parquet"
    if not path.is_file():
        return None
    _, _, probs, labels, mask = read_predictions(path)
    pos = (mask > 0) & (labels == 1)
    p = probs[pos]
    lo, hi = REGIME_BAND
    n = int(pos.sum())
    return {"split": split, "band": list(REGIME_BAND), "n_pos": n, "low": int((p < lo).sum()),
            "borderline": int(((p >= lo) & (p <= hi)).sum()), "confident": int((p > hi).sum())}


def _comparisons(run_dir: Path) -> list[dict[str, Any]]:
    out = []
    for csv in sorted(run_dir.glob("compare_*/compare_categories.csv")):
        table = pd.read_csv(csv)
        row = table[table["category"] == "all"]
        if len(row):
            r = row.iloc[0]
            out.append({"against": csv.parent.name[len("compare_"):], "file": str(csv.relative_to(run_dir)),
                        "mean_delta_auc": float(r["mean_delta_auc"]), "moved_up": int(r["moved_up"]),
                        "moved_down": int(r["moved_down"]), "n_pos": int(r["n_pos"]),
                        "frac_moved_up": None if pd.isna(r["frac_moved_up"]) else float(r["frac_moved_up"])})
    return out


def read_run(run_dir: str | Path) -> RunInfo:
    """Read a finished run folder; raises :class:`ExportError` (one line) when a file is missing or damaged."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir} is not a folder; give a run folder (runs/<name>, as `molre train --run-dir`)")
    config = _read_json(run_dir / "config.json")
    try:
        cfg = TrainConfig.load(run_dir / "config.json")
    except ValueError as err:
        raise ExportError(str(err)) from None
    adapter = run_dir / "adapter.safetensors"
    if not adapter.is_file():
        raise ExportError(f"{adapter} is missing: {run_dir} is not a finished run (train it to the end first)")
    raw = read_adapter_metadata(adapter)
    meta = {"molre_config": json.loads(raw.get("molre_config", "null")), "adapted": json.loads(raw.get("adapted", "[]")),
            "extra": json.loads(raw.get("extra", '["head"]')), "adapter_kind": raw.get("adapter_kind", cfg.adapter),
            "frozen_fingerprint": raw.get("frozen_fingerprint")}
    metrics = _read_json(run_dir / "metrics.json")
    info = RunInfo(run_dir, cfg, config, meta, metrics, licence_of(cfg.backbone), _manifest_summary(cfg, run_dir))
    if info.eval_split:
        info.regimes = _regimes(run_dir, info.eval_split)
    info.comparisons = _comparisons(run_dir)
    return info
