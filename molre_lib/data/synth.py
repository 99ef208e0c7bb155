"""Write a phantom data set: volumes (NIfTI or DICOM series) plus ``manifest.csv``.

Scans are grouped into patients (some patients get a follow-up scan with the same anatomy);
splits are assigned by patient. The manifest holds the *reported* labels (with the configured
label noise and unknowns); ``labels_true.csv`` next to it holds the noise-free truth, and ``reports.csv`` a
free-text radiology report per scan written from that truth (``phantom_reports``; ``molre label-reports`` reads it).
"""
from __future__ import annotations

import csv
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from .phantom import PhantomConfig, make_subject
from .phantom_masks import PHANTOM_RECORD
from .phantom_reports import write_report
from .taxonomy import FINDING_KEYS
from .writers import write_dicom_series, write_nifti

SPLITS = ("train", "val", "test")
REPORTS_CSV = "reports.csv"   # report_id (= scan_id), report: a free-text report per scan, true to labels_true.csv
KERNELS = ("SOFT", "STANDARD", "SHARP")


def _plan(n_scans: int, seed: int, splits: tuple[float, float, float], followup_fraction: float):
    """(scan_seed, patient index, patient seed) per scan and split per patient."""
    rng = np.random.default_rng([seed, 99])
    patients: list[int] = []
    for i in range(n_scans):
        if patients and rng.random() < followup_fraction and patients.count(patients[-1]) == 1:
            patients.append(patients[-1])
        else:
            patients.append(len(set(patients)))
    n_pat = len(set(patients))
    frac = np.asarray(splits, float)
    if frac.shape != (3,) or (frac < 0).any() or frac.sum() <= 0:
        raise ValueError(f"splits must be three non-negative fractions (train, val, test), got {splits}")
    counts = np.floor(frac / frac.sum() * n_pat).astype(int)
    for j in np.argsort(-frac):                       # hand out the remainder, keep every requested split non-empty
        if counts.sum() < n_pat:
            counts[j] += 1
    for j in range(3):
        if frac[j] > 0 and counts[j] == 0 and counts.max() > 1:
            counts[j] += 1
            counts[int(np.argmax(counts))] -= 1
    order = rng.permutation(n_pat)
    split_of = np.empty(n_pat, object)
    split_of[order] = np.repeat(SPLITS, counts)
    return [(seed * 1_000_003 + i, p, seed * 1_000_003 + 500_000 + p) for i, p in enumerate(patients)], split_of


def _one(job) -> dict:
    i, scan_seed, pat, pat_seed, split, out, fmt, cfg, compression = job
    sub = make_subject(scan_seed, cfg, patient_seed=pat_seed)
    scan_id, patient_id = f"phantom-{i:05d}", f"P{pat:05d}"
    if fmt == "nifti":
        rel = f"scans/{scan_id}.nii.gz"
        write_nifti(Path(out) / rel, sub.hu, sub.spacing, sub.origin)
    else:
        rel = f"scans/{scan_id}"
        write_dicom_series(Path(out) / rel, sub.hu, sub.spacing, sub.origin, uid_seed=f"{scan_seed}",
                           patient_id=f"{pat:05d}", slice_thickness=cfg.slice_thickness_mm, compression=compression,
                           kernel=KERNELS[sub.site % len(KERNELS)])
    row = {"scan_id": scan_id, "patient_id": patient_id, "split": split, "path": rel}
    row.update({k: "" if sub.reported[k] is None else str(sub.reported[k]) for k in FINDING_KEYS})
    row.update({"meta_site": sub.site, "meta_age": f"{sub.age:.0f}"})
    truth = {"scan_id": scan_id, **{k: sub.labels[k] for k in FINDING_KEYS}}
    report = {"report_id": scan_id, "report": write_report(sub.labels, np.random.default_rng([scan_seed, 23]))}
    return {"row": row, "truth": truth, "report": report}


def synthesize(out_dir: str | Path, n_scans: int, shape: tuple[int, int, int] = (24, 64, 64),
               spacing: tuple[float, float, float] | None = None, fmt: str = "nifti", seed: int = 0,
               label_noise: float = 0.0, splits: tuple[float, float, float] = (0.7, 0.15, 0.15),
               unknown_fraction: float = 0.0, followup_fraction: float = 0.1, compression: str = "none",
               workers: int | None = None, cfg: PhantomConfig | None = None) -> Path:
    """Generate ``n_scans`` phantom scans under ``out_dir`` and return ``out_dir/manifest.csv``.

    shape is (D, H, W); spacing (dz, dy, dx) mm or None to fit the default head field of view.
    """
    if fmt not in ("nifti", "dicom"):
        raise ValueError(f"fmt must be 'nifti' or 'dicom', got {fmt!r}")
    if n_scans < 1:
        raise ValueError(f"n_scans must be >= 1, got {n_scans}")
    cfg = replace(cfg or PhantomConfig(), shape=tuple(shape), spacing=spacing, label_noise=label_noise,
                  unknown_fraction=unknown_fraction)
    out = Path(out_dir)
    (out / "scans").mkdir(parents=True, exist_ok=True)
    plan, split_of = _plan(n_scans, seed, splits, followup_fraction)
    jobs = [(i, s, p, ps, split_of[p], str(out), fmt, cfg, compression) for i, (s, p, ps) in enumerate(plan)]
    workers = workers if workers is not None else min(len(os.sched_getaffinity(0)), 8)
    if workers > 1 and n_scans >= 8:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_one, jobs, chunksize=max(1, n_scans // (workers * 8))))
    else:
        results = [_one(j) for j in jobs]
    manifest = out / "manifest.csv"
    _write_csv(manifest, [r["row"] for r in results])
    _write_csv(out / "labels_true.csv", [r["truth"] for r in results])
    _write_csv(out / REPORTS_CSV, [r["report"] for r in results])
    write_phantom_record(out, cfg, {f"phantom-{i:05d}": (s, ps) for i, (s, _, ps) in enumerate(plan)})
    return manifest


def write_phantom_record(out: Path, cfg: PhantomConfig, seeds: dict[str, tuple[int, int]]) -> Path:
    """``phantom.json``: the rendering settings and each scan's (seed, patient seed), so any scan (its lesion
    masks, its noise-free tissue map) can be rendered again later (``molre_lib.data.phantom_masks``)."""
    record = {"version": 1, "config": asdict(cfg),
              "scans": {k: {"seed": int(s), "patient_seed": int(ps)} for k, (s, ps) in seeds.items()}}
    path = Path(out) / PHANTOM_RECORD
    path.write_text(json.dumps(record, indent=1))
    return path


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
