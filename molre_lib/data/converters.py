"""Convert public head-CT label layouts into workbook manifests.

RSNA Intracranial Hemorrhage Detection 2019: ``SRC/stage_2_train.csv`` (``ID_<sop>_<subtype>,Label``)
plus per-slice DICOMs ``SRC/stage_2_train/ID_<sop>.dcm``. Slices are grouped into series by
SeriesInstanceUID and sorted by position; each series becomes a folder of links next to the
manifest. Scan label = any slice positive; 0 only when every slice is labelled negative.

CQ500: ``SRC/reads.csv`` (``name``, ``R1:ICH`` ... ``R3:MidlineShift``) plus one folder per patient
holding series folders of DICOMs. Labels are the readers' majority vote; ICH subtypes, calvarial
fracture, mass effect and midline shift map to taxonomy keys; a negative ICH (or Fracture) vote
makes every hemorrhage (or fracture) key 0; everything else stays unknown.
"""
from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np

from .taxonomy import FINDING_KEYS, keys_in

RSNA_SUBTYPES = {"any": "intracranial_hemorrhage", "epidural": "epidural_hematoma",
                 "intraparenchymal": "intraparenchymal_hemorrhage", "intraventricular": "intraventricular_hemorrhage",
                 "subarachnoid": "subarachnoid_hemorrhage", "subdural": "subdural_hematoma"}
CQ500_MAP = {"ICH": "intracranial_hemorrhage", "IPH": "intraparenchymal_hemorrhage",
             "IVH": "intraventricular_hemorrhage", "SDH": "subdural_hematoma", "EDH": "epidural_hematoma",
             "SAH": "subarachnoid_hemorrhage", "CalvarialFracture": "calvarial_fracture",
             "MassEffect": "mass_effect", "MidlineShift": "midline_shift"}
FRACTURE_KEYS = [k for k in keys_in("trauma") if k.endswith("_fracture")]
HEMORRHAGE_KEYS = keys_in("hemorrhage")


def auto_split(patient_id: str, fractions=(0.7, 0.15, 0.15)) -> str:
    """Deterministic patient-level split from a hash of the patient id."""
    u = int(hashlib.sha256(patient_id.encode()).hexdigest()[:8], 16) / 16**8
    edges = np.cumsum(fractions) / np.sum(fractions)
    return ("train", "val", "test")[int(np.searchsorted(edges, u, side="right").clip(0, 2))]


def _row(scan_id: str, patient_id: str, split: str, path: str, labels: dict[str, int | None], extra: dict) -> dict:
    out = {"scan_id": scan_id, "patient_id": patient_id, "split": split, "path": path}
    out.update({k: "" if labels.get(k) is None else str(int(labels[k])) for k in FINDING_KEYS})
    out.update(extra)
    return out


def _write(manifest: Path, rows: list[dict]) -> Path:
    if not rows:
        raise ValueError(f"no scans found; {manifest} not written")
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return manifest


def _link(src: Path, dst: Path, how: str) -> None:
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    if how == "symlink":
        os.symlink(src.resolve(), dst)
    elif how == "hardlink":
        os.link(src, dst)
    elif how == "copy":
        shutil.copy2(src, dst)
    else:
        raise ValueError(f"link must be symlink, hardlink or copy, got {how!r}")


# ----------------------------------------------------------------------------- RSNA
def convert_rsna_ich(src: str | Path, out: str | Path, link: str = "symlink", split: str = "auto",
                     labels_csv: str = "stage_2_train.csv", dicom_dir: str = "stage_2_train") -> Path:
    """RSNA ICH 2019 -> manifest at ``out`` with one series folder per SeriesInstanceUID next to it."""
    import pydicom

    src, manifest = Path(src), Path(out)
    table = src / labels_csv
    if not table.exists():
        raise FileNotFoundError(f"{table}: RSNA label file not found (expected SRC/{labels_csv})")
    slice_labels: dict[str, dict[str, int]] = defaultdict(dict)
    with open(table, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"ID", "Label"} <= set(reader.fieldnames):
            raise ValueError(f"{table}: expected columns ID,Label, got {reader.fieldnames}")
        for n, r in enumerate(reader, start=1):
            m = re.fullmatch(r"(ID_[0-9a-fA-F]+)_(\w+)", r["ID"].strip())
            if not m or m.group(2) not in RSNA_SUBTYPES or r["Label"].strip() not in ("0", "1"):
                raise ValueError(f"{table}: row {n}: cannot parse ID {r['ID']!r} / Label {r['Label']!r}")
            slice_labels[m.group(1)][m.group(2)] = int(r["Label"])
    series: dict[str, list] = defaultdict(list)
    for f in sorted((src / dicom_dir).glob("*.dcm")):
        ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        ipp = [float(v) for v in getattr(ds, "ImagePositionPatient", [0, 0, 0])]
        iop = np.asarray([float(v) for v in getattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 1, 0])])
        series[str(ds.SeriesInstanceUID)].append((float(np.cross(iop[:3], iop[3:]) @ ipp), f, ds))
    if not series:
        raise FileNotFoundError(f"{src / dicom_dir}: no .dcm files")
    rows = []
    for uid, items in sorted(series.items()):
        items.sort(key=lambda t: t[0])
        folder = manifest.parent / "rsna_series" / uid
        folder.mkdir(parents=True, exist_ok=True)
        for i, (_, f, _) in enumerate(items):
            _link(f, folder / f"{i:04d}_{f.name}", link)
        per_slice = [slice_labels.get(f.stem) for _, f, _ in items]
        labels: dict[str, int | None] = {}
        for sub, key in RSNA_SUBTYPES.items():
            vals = [s.get(sub) if s else None for s in per_slice]
            labels[key] = 1 if any(v == 1 for v in vals) else (0 if all(v == 0 for v in vals) else None)
        if labels["intracranial_hemorrhage"] == 0:
            labels.update({k: 0 for k in HEMORRHAGE_KEYS})
        pid = str(getattr(items[0][2], "PatientID", uid))
        rows.append(_row(uid, pid, auto_split(pid) if split == "auto" else split,
                         folder.relative_to(manifest.parent).as_posix(), labels,
                         {"meta_n_slices": len(items), "meta_study_uid": str(getattr(items[0][2], "StudyInstanceUID", ""))}))
    return _write(manifest, rows)


# ----------------------------------------------------------------------------- CQ500
def _vote(values: list[str]) -> int | None:
    votes = [int(float(v)) for v in values if v.strip() not in ("", "nan", "NaN")]
    if not votes:
        return None
    return int(2 * sum(votes) > len(votes))


def _series_folders(patient_dir: Path) -> list[Path]:
    return sorted({f.parent for f in patient_dir.rglob("*") if f.is_file() and f.suffix.lower() in (".dcm", "")
                   and not f.name.startswith(".")})


def _pick_series(folders: list[Path], policy: str, why: list | None = None) -> list[tuple[Path, str]]:
    """Series to keep as (folder, series_uid): 'plain' = the acceptable soft-tissue series with thickness closest
    to 5 mm, 'thin' = the thinnest acceptable one, 'all' = every folder. Acceptable = passes the loaders' series
    check (:func:`~molre_lib.data.dicom_series.check_series`: no scout, dose report, reformat or bone kernel); a
    missing SliceThickness ranks last instead of counting as 5 mm. ``series_uid`` is set when the folder holds
    several series (the manifest's series_uid column then picks it). With none acceptable, ``why`` gets each
    series' refusal."""
    from .dicom_series import check_series, series_of

    if policy == "all":
        return [(d, "") for d in folders]
    if policy not in ("plain", "thin"):
        raise ValueError(f"series policy must be plain, thin or all, got {policy!r}")
    info = []
    for d in folders:
        found = series_of(sorted(f for f in d.iterdir() if f.is_file()))
        for uid, s in found.items():
            verdict = check_series(s)
            if verdict.ok and s.n_images > 1:
                t = s.thickness_mm if s.thickness_mm is not None else s.spacing_mm
                info.append((d, uid if len(found) > 1 else "", float("inf") if t is None else t, s.kernel_class != "soft"))
            elif why is not None:
                why.append(verdict.reason or f"{s.label()}: a single image, not a volume")
    soft = sorted(info, key=lambda t: t[3])
    if not soft:
        return []
    if policy == "thin":
        return [min(soft, key=lambda t: (t[3], t[2]))[:2]]
    return [min(soft, key=lambda t: (t[3], abs(t[2] - 5.0)))[:2]]


def _patient_dir(src: Path, name: str) -> Path | None:
    compact = name.replace("-", "")
    for d in sorted(p for p in src.iterdir() if p.is_dir()):
        if d.name == name or d.name.split(" ")[0] in (name, compact):
            return d
    return None


def convert_cq500(src: str | Path, out: str | Path, series: str = "plain", split: str = "auto",
                  skipped: list | None = None) -> Path:
    """CQ500 (reads.csv majority vote) -> manifest at ``out``; each kept series is linked as
    ``cq500_series/<name>[__<series>]`` next to the manifest (with its ``series_uid`` when the folder holds
    several). ``skipped`` gets ``(name, reason)`` for each reads.csv name without a folder or an acceptable
    series."""
    src, manifest = Path(src), Path(out)
    table = src / "reads.csv"
    if not table.exists():
        raise FileNotFoundError(f"{table}: CQ500 reads.csv not found")
    with open(table, newline="") as f:
        reader = csv.DictReader(f)
        reads = list(reader)
        cols = reader.fieldnames or []
    if "name" not in cols:
        raise ValueError(f"{table}: expected a 'name' column, got {cols[:6]}")
    rows, missing = [], []
    for n, r in enumerate(reads, start=1):
        name = r["name"].strip()
        pdir = _patient_dir(src, name)
        if pdir is None:
            missing.append(name)
            if skipped is not None:
                skipped.append((name, f"no folder named {name} under {src}"))
            continue
        labels: dict[str, int | None] = {}
        for field_, key in CQ500_MAP.items():
            readers = [c for c in cols if re.fullmatch(rf"R\d+:{field_}", c)]
            if not readers:
                raise ValueError(f"{table}: no reader columns R1:{field_} .. found")
            labels[key] = _vote([r[c] for c in readers])
        if labels["intracranial_hemorrhage"] == 0:
            labels.update({k: 0 for k in HEMORRHAGE_KEYS})
        fracture = _vote([r[c] for c in cols if re.fullmatch(r"R\d+:Fracture", c)])
        if fracture == 0:
            labels.update({k: 0 for k in FRACTURE_KEYS})
        why: list[str] = []
        picked = _pick_series(_series_folders(pdir), series, why)
        if not picked and skipped is not None:
            skipped.append((name, "no acceptable series: " + ("; ".join(why) or "no DICOM series found")))
        for d, uid in picked:
            scan_id = name if series != "all" else f"{name}__{re.sub(r'[^A-Za-z0-9]+', '_', d.name)}"
            target = manifest.parent / "cq500_series" / scan_id
            target.parent.mkdir(parents=True, exist_ok=True)
            _link(d, target, "symlink")
            rows.append(_row(scan_id, name, auto_split(name) if split == "auto" else split,
                             target.relative_to(manifest.parent).as_posix(), labels,
                             {"meta_category": r.get("Category", ""), "meta_series": d.name, "series_uid": uid}))
    if missing and not rows:
        raise FileNotFoundError(f"{src}: no patient folder found for any reads.csv name (e.g. {missing[0]})")
    return _write(manifest, rows)
