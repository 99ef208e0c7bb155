"""``predict``: a finished run's probabilities for new head CT, one row per input (or per DICOM series).

Every input is checked before the model sees it (see :mod:`molre_lib.data.io`): DICOM Modality must be CT, a
head CT needs a minimum number of slices and z-extent, NaN / inf voxels are an error (or masked as air), and a
folder holding several series becomes one row per series, named by series number, description and kernel.
Every DICOM series passes the loaders' series check (:func:`molre_lib.data.dicom_series.check_series`: scouts,
dose reports, reformats and bone kernels refused, gantry tilt corrected). A bad input gives a row with
``status=error`` and its reason; the other rows are still predicted. ``pseudonymize`` writes ``input-0001``… instead of the path
(folder names often carry patient names or MRNs).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

INFO_COLUMNS = ("input", "series_uid", "status", "warning", "error", "series_number", "series_description", "kernel")


@dataclass
class PredictChecks:
    """What an input must satisfy before it is predicted."""

    allow_non_ct: bool = field(default=False, metadata={"help": "predict DICOM whose Modality is not CT (stated in the warning column)"})
    min_slices: int = field(default=10, metadata={"help": "fewest slices accepted as a head CT"})
    min_extent_mm: float = field(default=80.0, metadata={"help": "shortest z-extent (mm) accepted as a head CT"})
    mask_nonfinite: bool = field(default=False, metadata={"help": "treat NaN / inf voxels as air with a warning instead of refusing the file"})


def check_output_path(out: str | Path) -> Path:
    """Refuse an output CSV path that cannot be written, before any inference runs."""
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a CSV file path")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"--out {out}: folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise ValueError(f"--out {out}: cannot write there (permissions or read-only file system)")
    return out


def expand_inputs(inputs: Sequence[str | Path]) -> list[tuple[int, Path, Optional[str]]]:
    """(input index, path, series uid or None): a DICOM folder with several series gives one item per series."""
    return [(i, path, uid) for i, path, uid, _ in expand_series(inputs)]


def expand_series(inputs: Sequence[str | Path]) -> list[tuple[int, Path, Optional[str], Optional[object]]]:
    """(input index, path, series uid or None, SeriesInfo or None): a DICOM folder with several series gives one
    item per series (largest first), each described by its headers."""
    from molre_lib.data.dicom_series import series_of
    from molre_lib.data.io import is_nifti

    items = []
    for i, raw in enumerate(inputs):
        path = Path(raw)
        series = {}
        if path.is_dir() and not is_nifti(path):
            series = series_of(sorted(f for f in path.iterdir() if f.is_file() and not f.name.startswith(".")))
        if len(series) > 1:
            items += [(i, path, uid, series[uid]) for uid in sorted(series, key=lambda u: -series[u].n_images)]
        else:
            items.append((i, path, None, next(iter(series.values()), None)))
    return items


def _warnings(meta: dict, checks: PredictChecks, n_series: int) -> list[str]:
    out = []
    if meta.get("modality") and meta["modality"] != "CT":
        out.append(f"Modality {meta['modality']} forced with --allow-non-ct: not a CT, probabilities are not meaningful")
    if meta.get("masked_nonfinite"):
        out.append(f"{meta['masked_nonfinite']} NaN/inf voxels masked as air (--mask-nonfinite)")
    if meta.get("uneven_slice_spacing"):
        out.append("uneven slice spacing")
    out += meta.get("series_warnings", [])
    if n_series > 1:
        out.append(f"folder holds {n_series} series; this row is one of them")
    return list(dict.fromkeys(out))


def predict(run_dir: str | Path, inputs: Sequence[str | Path], device: str = "auto",
            checks: Optional[PredictChecks] = None, pseudonymize: bool = False,
            progress=None, policy=None) -> pd.DataFrame:
    """Probabilities (one column per finding) for NIfTI files, DICOM series folders or single DICOM files,
    preprocessed exactly as in training. Columns: ``input`` (or ``input_id``), ``series_uid``, ``status``
    (ok | error), ``warning``, ``error``, ``series_number``, ``series_description``, ``kernel``, then one per
    finding (empty when status is error). ``policy``: the SeriesPolicy DICOM inputs are checked with (default: the run's ``series_policy``).
    ``df.attrs["id_map"]`` maps pseudonymous ids to paths when ``pseudonymize``."""
    import torch

    from molre_lib.backbones import get_spec
    from molre_lib.common.device import resolve_device
    from molre_lib.data.dataset import preprocess_volume
    from dataclasses import replace

    from molre_lib.data.dicom_series import SeriesPolicy
    from molre_lib.data.io import VolumeReadError, check_extent, load_volume

    from .evaluate import load_run_model
    from .loaders import preprocess_config
    from .run_files import finding_keys

    checks = checks or PredictChecks()
    dev = resolve_device(device)
    model, cfg = load_run_model(run_dir, str(dev))
    pre = preprocess_config(cfg, get_spec(cfg.backbone))
    if policy is None:                                                      # the run's own, else the defaults
        policy = SeriesPolicy.from_pairs(pre.series_policy) if pre.series_policy else SeriesPolicy()
    policy = replace(policy, min_images=1)                                  # slices are counted by check_extent
    keys = finding_keys(model.num_classes)
    items = expand_series(inputs)
    per_input = pd.Series([i for i, *_ in items]).value_counts().to_dict()
    rows, id_map = [], {}
    for i, path, uid, info in items:
        name = f"input-{i + 1:04d}" + (f"-s{sum(1 for r in rows if r['_i'] == i) + 1}" if per_input[i] > 1 else "")
        id_map[name] = str(path)
        row = {"_i": i, "input": name if pseudonymize else str(path), "series_uid": uid or "", "status": "ok",
               "warning": "", "error": "", "series_number": getattr(info, "series_number", ""),
               "series_description": getattr(info, "description", ""), "kernel": getattr(info, "kernel", "")}
        try:
            vol = load_volume(path, series_uid=uid, allow_non_ct=checks.allow_non_ct,
                              nonfinite="mask" if checks.mask_nonfinite else "error", policy=policy)
            check_extent(vol, checks.min_slices, checks.min_extent_mm)
            row["series_uid"] = vol.meta.get("series_uid", row["series_uid"])
            for col, key in (("series_number", "series_number"), ("series_description", "series_description"),
                             ("kernel", "kernel")):
                row[col] = vol.meta.get(key, row[col])
            row["warning"] = "; ".join(_warnings(vol.meta, checks, per_input[i]))
            image = torch.as_tensor(preprocess_volume(vol, pre))[None].to(dev)  # (1, C, D, H, W)
            with torch.no_grad():
                probs = torch.sigmoid(model(image).float())[0].cpu().numpy()
            row.update({k: float(p) for k, p in zip(keys, probs)})
        except VolumeReadError as err:
            row.update(status="error", error=str(err))
        except Exception as err:  # noqa: BLE001 - any reader / decoder failure is this input's, not the batch's
            row.update(status="error", error=f"{path}: cannot read as NIfTI / DICOM ({type(err).__name__}: {err})")
        if pseudonymize:
            row["error"] = row["error"].replace(str(path), row["input"])
        if progress is not None:
            progress(row)
        rows.append(row)
    df = pd.DataFrame(rows, columns=["_i", *INFO_COLUMNS, *keys]).drop(columns="_i")
    if pseudonymize:
        df = df.rename(columns={"input": "input_id"})
        df.attrs["id_map"] = id_map
    return df
