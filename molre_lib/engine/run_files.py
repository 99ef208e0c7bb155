"""Files of a run directory: config.json (with provenance), predictions parquet, metrics.json."""
from __future__ import annotations

import csv
import json
import math
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from molre_lib.common.files import atomic_write

from .config import TrainConfig

PACKAGES = ("torch", "torchvision", "timm", "transformers", "monai", "numpy", "scipy", "scikit-learn", "pandas",
            "safetensors", "pyarrow")


def finding_keys(n: int) -> list[str]:
    """Taxonomy keys when there are 75 outputs, else ``finding_0..n-1`` (toy models in tests)."""
    from molre_lib.data.taxonomy import FINDING_KEYS

    return list(FINDING_KEYS) if len(FINDING_KEYS) == n else [f"finding_{j}" for j in range(n)]


def _git_revision() -> Optional[str]:
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, Optional[str]]:
    from molre_lib import __version__

    out: dict[str, Optional[str]] = {"molre_lib": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def write_run_config(run_dir: Path, cfg: Any, info: Any, model: Any, n_classes: int) -> Path:
    """config.json: {"train": TrainConfig fields, "n_classes", "versions", "git_revision", "world_size", "device",
    "params", "scaling", "determinism"}."""
    from molre_lib.adapters import parameter_report
    from molre_lib.common.determinism import determinism_state

    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        params = parameter_report(model, head=getattr(model, "trainable_modules", ("head",))).to_dict()
    except (ValueError, AttributeError):
        params = None
    doc = {"train": cfg.to_dict(), "n_classes": n_classes, "versions": versions(), "git_revision": _git_revision(),
           "world_size": info.world_size, "device": str(info.device), "params": params,
           "scaling": scaling_summary(cfg), "determinism": determinism_state()}
    path = run_dir / "config.json"
    return atomic_write(path, json.dumps(doc, indent=2))


def scaling_summary(cfg: Any) -> dict[str, Any]:
    """The adapter's scale and effective step as trained (docs/explanation/scaling.md); nulls for a probe / full
    fine-tuning, which have no low-rank update."""
    from molre_lib.adapters.config import SCALING_RULES

    low_rank = getattr(cfg, "adapter", None) in ("lora", "molre")
    experts = (cfg.n_experts if cfg.adapter == "molre" else 1) if low_rank else None
    return {"rule": cfg.scaling if low_rank else None, "alpha": cfg.alpha if low_rank else None,
            "rank_per_expert": cfg.rank if low_rank else None, "n_experts": experts,
            "scale": SCALING_RULES[cfg.scaling](cfg.alpha, cfg.rank) if low_rank else None,
            "lr": cfg.lr, "effective_step": cfg.effective_step(),
            "definition": "effective_step = lr * scale / n_experts; scale = alpha / r (lora) or alpha / sqrt(r) "
                          "(rslora), r = one expert's rank"}


LOG_FIELDS = ["step", "epoch", "loss", "lr", "val_macro_auc", "elapsed_s"]


def open_train_log(run_dir: Path, keep_up_to: Optional[int]) -> tuple[Any, csv.DictWriter]:
    """(file, writer) of ``train_log.csv`` for appending; on resume, rows after the checkpoint's step are dropped
    (they are re-done)."""
    path = run_dir / "train_log.csv"
    rows = []
    if keep_up_to is not None and path.exists():
        with open(path, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= keep_up_to]
    fh = open(path, "w", newline="")
    writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    fh.flush()
    return fh, writer


def write_predictions(path: Path, out: dict[str, Any], split: str, keys: Sequence[str]) -> Path:
    """scan_id, split, prob_<key>..., label_<key>... (label NaN where unknown)."""
    labels = np.where(out["mask"] > 0, out["labels"], np.nan)
    cols: dict[str, Any] = {"scan_id": list(out["scan_id"]), "split": split}
    cols.update({f"prob_{k}": out["probs"][:, j].astype(np.float32) for j, k in enumerate(keys)})
    cols.update({f"label_{k}": labels[:, j].astype(np.float32) for j, k in enumerate(keys)})
    df = pd.DataFrame(cols)
    return atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))


def read_predictions(path: str | Path) -> tuple[pd.DataFrame, list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(frame, finding keys, probs (N, F), labels (N, F) with 0 where unknown, mask (N, F))."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no predictions file {path}")
    df = pd.read_parquet(path)
    keys = [c[len("prob_"):] for c in df.columns if c.startswith("prob_")]
    missing = [k for k in keys if f"label_{k}" not in df.columns]
    if not keys or missing or "scan_id" not in df.columns:
        raise ValueError(f"{path}: not a predictions file (needs scan_id, prob_<k>, label_<k>; missing labels for {missing[:3]})")
    probs = df[[f"prob_{k}" for k in keys]].to_numpy(np.float64)
    raw = df[[f"label_{k}" for k in keys]].to_numpy(np.float64)
    mask = ~np.isnan(raw)
    return df, keys, probs, np.nan_to_num(raw, nan=0.0), mask.astype(np.float32)


@dataclass
class PairedPredictions:
    """Two runs' predictions on the scans they share, in run A's order, with labels both runs agree on."""

    keys: list[str]
    labels: np.ndarray   # (N, F), 0 where unknown
    mask: np.ndarray     # (N, F), 1 where the label is known
    probs_a: np.ndarray  # (N, F)
    probs_b: np.ndarray  # (N, F)
    scan_ids: list[str]
    n_a: int             # scans in run A's file (before pairing)
    n_b: int


def paired_predictions(run_a: str | Path, run_b: str | Path, split: str) -> PairedPredictions:
    """Pair two runs' ``predictions_<split>.parquet`` by scan_id, for every comparison of two runs.

    Refuses runs that predict different findings, share no scan, or carry different labels (or a label known in
    one and unknown in the other) for a shared scan: those were not scored on the same test set.
    """
    run_a, run_b = Path(run_a), Path(run_b)
    da, keys_a, pa, ya, ma = read_predictions(run_a / f"predictions_{split}.parquet")
    db, keys_b, pb, yb, mb = read_predictions(run_b / f"predictions_{split}.parquet")
    if keys_a != keys_b:
        raise ValueError(f"{run_a} and {run_b} predict different findings ({len(keys_a)} vs {len(keys_b)})")
    index_b = {s: j for j, s in enumerate(db["scan_id"])}
    pairs = [(i, index_b[s]) for i, s in enumerate(da["scan_id"]) if s in index_b]
    if not pairs:
        raise ValueError(f"{run_a} and {run_b} share no scan_id in split {split!r}")
    ia, ib = (np.array(x) for x in zip(*pairs))
    disagree = (ma[ia] != mb[ib]) | ((ya[ia] != yb[ib]) & (ma[ia] > 0))
    if disagree.any():
        r, c = np.argwhere(disagree)[0]
        raise ValueError(f"labels differ between {run_a} and {run_b} for scan {da['scan_id'].iloc[ia[r]]!r}, "
                         f"finding {keys_a[c]!r}: not the same test set")
    return PairedPredictions(keys_a, ya[ia], ma[ia], pa[ia], pb[ib], [str(s) for s in da["scan_id"].iloc[ia]],
                             len(da), len(db))


def _clean(x: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def metrics_document(labels: np.ndarray, probs: np.ndarray, mask: np.ndarray, keys: Sequence[str], n_boot: int,
                     seed: int) -> dict[str, Any]:
    """AUC report (macro / micro / categories with CIs, per finding) plus pooled ECE for one split."""
    from molre_lib.stats.calibration import expected_calibration_error
    from molre_lib.stats.auroc import auc_report

    rep = auc_report(labels, probs, mask, keys, n_boot=n_boot, seed=seed)
    per_ece, ece = expected_calibration_error(labels, probs, mask)
    table = rep["per_finding"].assign(ece=per_ece)
    summary = {r.metric: {"value": r.value, "ci_low": r.ci_low, "ci_high": r.ci_high, "n_findings": r.n_findings}
               for r in rep["summary"].itertuples()}
    return {"n_scans": int(labels.shape[0]), "bootstrap": n_boot, "seed": seed, "ece": ece, "summary": summary,
            "per_finding": table.to_dict(orient="records")}


def write_metrics(path: Path, results: dict[str, dict[str, Any]], keys: Sequence[str], n_boot: int, seed: int,
                  extra: dict[str, Any]) -> Path:
    doc = dict(extra)
    for split, out in results.items():
        doc[split] = metrics_document(out["labels"], out["probs"], out["mask"], keys, n_boot, seed)
    return atomic_write(path, json.dumps(_clean(doc), indent=2))


# ----------------------------------------------------------------------------- the run folder's state
RUN_FILES = ("config.json", "train_log.csv", "adapter.safetensors", "metrics.json", "predictions_train.parquet",
             "predictions_val.parquet", "predictions_test.parquet")


def has_checkpoint(run_dir: Path) -> bool:
    return any((run_dir / "checkpoints" / name).exists() for name in ("last.pt", "prev.pt"))


def _logged_steps(run_dir: Path) -> int:
    path = run_dir / "train_log.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.is_file() else 0


def clear_run(run_dir: Path) -> None:
    """--restart: remove what a previous attempt trained (checkpoints, config, log, outputs), nothing else."""
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)


def check_run_dir(cfg: TrainConfig, run_dir: Path, resume: bool, restart: bool = False) -> bool:
    """A new run needs an empty run dir; a resumed one a checkpoint and the same config. Returns ``resume``,
    False when a resume finds a run killed before its first checkpoint (nothing trained yet: it starts over)."""
    if restart:
        clear_run(run_dir)
        return False
    started = has_checkpoint(run_dir) or (run_dir / "config.json").exists()
    if resume:
        if not has_checkpoint(run_dir):
            if started and _logged_steps(run_dir) == 0:
                print(f"note: {run_dir} was stopped before its first checkpoint; nothing was trained, starting it "
                      "over", file=sys.stderr)
                clear_run(run_dir)
                return False
            raise FileNotFoundError(f"cannot resume {run_dir}: no checkpoint in {run_dir / 'checkpoints'}; start "
                                    "the run over with --restart")
        changed = TrainConfig.load(run_dir / "config.json").diff(cfg)
        if changed:
            raise ValueError(f"cannot resume {run_dir}: config differs from config.json in {changed}; resume with "
                             "the run's own config (no other flags), or start it over with --restart")
    elif started:
        raise FileExistsError(f"{run_dir} already holds a run; resume it (--resume), start it over (--restart) or "
                              "choose another run dir")
    return resume
