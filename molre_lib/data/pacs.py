"""``molre convert pacs``: index a hospital PACS export tree, choose one series per study, write a manifest.

Any layout is walked (Patient/Study/Series folders, flat study folders holding several series, files with or
without extensions, DICOMDIR files ignored); only headers are read (``stop_before_pixels`` with the tags
:data:`~molre_lib.data.dicom_series.HEADER_TAGS`). Every series becomes a row of the inventory CSV with its
decision (``chosen`` / ``acceptable`` / ``refused``) and the reason; a study is one manifest row holding the
chosen series' folder and its ``series_uid`` (so a flat folder is unambiguous for every loader). The choice is
a stated :class:`SelectionPolicy`: series that pass :func:`~molre_lib.data.dicom_series.check_series` and
cover the head are ranked by soft-tissue kernel, ORIGINAL/PRIMARY, thickness nearest the target, coverage,
then series number. A study with no acceptable series is listed (stdout, inventory), never dropped silently.
Manifest paths are relative to the export root (``--root ROOT`` / ``data_root`` when reading it).
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from molre_lib.common.config_keys import check_known_keys
from .dicom_series import HEADER_TAGS, SeriesInfo, SeriesPolicy, check_series, describe_series, read_headers
from .manifest import NEGATIVE, POSITIVE, UNKNOWN
from .taxonomy import FINDING_KEYS

INVENTORY_COLUMNS = ("patient_id", "study_uid", "accession", "study_date", "series_number", "description",
                     "series_uid", "sop_class", "image_type", "kernel", "kernel_class", "manufacturer", "orientation",
                     "obliquity_deg", "tilt_deg", "n_images", "thickness_mm", "spacing_mm", "extent_mm", "missing",
                     "folder", "decision", "reason")


@dataclass
class SelectionPolicy:
    """How one series per study is chosen among those that pass the series check."""

    target_thickness_mm: float = field(default=5.0, metadata={"help": "prefer the slice thickness nearest this"})
    min_slices: int = field(default=10, metadata={"help": "fewest images of an acceptable series (coverage)"})
    min_extent_mm: float = field(default=80.0, metadata={"help": "shortest coverage along the slice axis, mm"})
    prefer_original: bool = field(default=True, metadata={
        "help": "rank ImageType ORIGINAL\\PRIMARY above DERIVED (e.g. a thick series rebuilt from a thin one)"})
    unknown_kernel: str = field(default="accept", metadata={
        "help": "accept | refuse a kernel the table does not know (accepted ones rank below known soft kernels)"})

    def __post_init__(self):
        if self.unknown_kernel not in ("accept", "refuse"):
            raise ValueError(f"SelectionPolicy.unknown_kernel must be accept or refuse, got {self.unknown_kernel!r}")


def parse_policy(pairs: list[str]) -> tuple[SelectionPolicy, SeriesPolicy]:
    """``["target_thickness_mm=2.5", "bone_kernel=warn"]`` -> the two policies (keys of either; unknown keys raise)."""
    sel, ser = {}, {}
    kinds = {f.name: (sel, f.type) for f in fields(SelectionPolicy)} | {f.name: (ser, f.type) for f in fields(SeriesPolicy)}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or key not in kinds:
            raise ValueError(f"--policy {pair!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(kinds))}")
        target, tp = kinds[key]
        tp = str(tp)
        try:
            target[key] = (value.lower() in ("1", "true", "yes")) if "bool" in tp else \
                int(value) if tp == "int" else float(value) if tp == "float" else value
        except ValueError:
            raise ValueError(f"--policy {pair!r}: {value!r} is not a {tp}") from None
    check_known_keys(SelectionPolicy, sel)
    return SelectionPolicy(**sel), SeriesPolicy(**ser)


def scan_tree(root: str | Path, table: str | None = None) -> tuple[dict[str, dict[str, SeriesInfo]], list[Path]]:
    """study uid -> series uid -> :class:`SeriesInfo` of every DICOM file under ``root``; and the non-DICOM files."""
    root = Path(root)
    files = sorted(f for f in root.rglob("*") if f.is_file() and not any(p.startswith(".") for p in f.relative_to(root).parts)
                   and f.name.upper() != "DICOMDIR")
    items, other = read_headers(files, HEADER_TAGS)
    groups: dict[tuple[str, str], list] = {}
    for f, ds in items:
        groups.setdefault((str(ds.get("StudyInstanceUID", "")), str(ds.get("SeriesInstanceUID", ""))), []).append((f, ds))
    studies: dict[str, dict[str, SeriesInfo]] = {}
    for (study, series), members in groups.items():
        studies.setdefault(study, {})[series] = describe_series(members, table)
    return studies, other


def _folder(info: SeriesInfo, root: Path) -> str:
    parents = {f.parent for f in info.files}
    if len(parents) > 1:
        raise ValueError(f"{info.label()} of study {info.study_uid} is spread over {len(parents)} folders "
                         f"({', '.join(sorted(str(p.relative_to(root)) for p in parents)[:3])}); the loaders read "
                         "one folder per series: move its files into one folder")
    return parents.pop().relative_to(root).as_posix() or "."


def _assess(info: SeriesInfo, sel: SelectionPolicy, ser: SeriesPolicy) -> tuple[bool, str]:
    verdict = check_series(info, ser)
    if not verdict.ok:
        return False, verdict.reason.split(": ", 1)[-1] if verdict.reason.startswith(info.label()) else verdict.reason
    if info.n_images < sel.min_slices or info.extent_mm < sel.min_extent_mm:
        return False, (f"{info.n_images} image(s) covering {info.extent_mm:.0f} mm; a head CT needs at least "
                       f"{sel.min_slices} and {sel.min_extent_mm:.0f} mm (min_slices / min_extent_mm)")
    if info.kernel_class == "unknown" and sel.unknown_kernel == "refuse":
        return False, f"kernel {info.kernel!r} is not in the kernel table (unknown_kernel=refuse)"
    return True, "; ".join(verdict.warnings)


def _rank(info: SeriesInfo, sel: SelectionPolicy) -> tuple:
    original = "ORIGINAL" in info.image_type.upper().split("\\")[:1] and "PRIMARY" in info.image_type.upper()
    thickness = info.thickness_mm if info.thickness_mm is not None else (info.spacing_mm or 0.0)
    return ({"soft": 0, "unknown": 1}.get(info.kernel_class, 2), 0 if (original or not sel.prefer_original) else 1,
            abs(thickness - sel.target_thickness_mm), -info.extent_mm, _num(info.series_number))


def _num(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("inf")


RANKED_BY = ("a soft-tissue kernel", "ImageType ORIGINAL\\PRIMARY", "thickness nearer the target", "more coverage",
             "a lower series number")


def _why_below(info: SeriesInfo, chosen: SeriesInfo, sel: SelectionPolicy) -> str:
    """'ranked below series 2 (thickness nearer the target: 5 mm vs 2.5 mm)': the first criterion that decided."""
    mine, best = _rank(info, sel), _rank(chosen, sel)
    k = next((i for i, (a, b) in enumerate(zip(mine, best)) if a != b), len(RANKED_BY) - 1)
    detail = f": {chosen.thickness_mm:g} mm vs {info.thickness_mm:g} mm" if k == 2 and chosen.thickness_mm is not None \
        and info.thickness_mm is not None else ""
    return f"ranked below series {chosen.series_number} ({RANKED_BY[k]}{detail})"


def _why_chosen(info: SeriesInfo, sel: SelectionPolicy) -> str:
    kernel = f"{info.kernel_class} kernel {info.kernel}" if info.kernel else f"{info.kernel_class or 'unnamed'} kernel"
    thick = f"{info.thickness_mm:g} mm" if info.thickness_mm is not None else "thickness not stated"
    return (f"axial, {info.image_type or 'no ImageType'}, {kernel}, {thick} (target {sel.target_thickness_mm:g}), "
            f"{info.n_images} images over {info.extent_mm:.0f} mm")


def _labels(path: Path | None) -> tuple[dict[str, dict], list[str]]:
    """key (accession or study uid) -> finding labels; the finding columns."""
    if path is None:
        return {}, []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = [c.strip() for c in reader.fieldnames or []]
        rows = list(reader)
    keys = [c for c in cols if c in ("accession", "accession_number", "AccessionNumber", "study_uid", "StudyInstanceUID")]
    if not keys:
        raise ValueError(f"{path}: needs a column accession (or accession_number) or study_uid to join labels on; "
                         f"got {', '.join(cols[:8])}")
    bad = [c for c in cols if c not in keys and c not in FINDING_KEYS and not c.startswith("meta_")]
    if bad:
        raise ValueError(f"{path}: column {bad[0]!r} is not a taxonomy finding key (data_manifests/findings.csv); "
                         "rename it or prefix it with meta_")
    out = {}
    for n, r in enumerate(rows, start=1):
        for c in cols:                                   # as the manifest check would refuse it, but here
            v = (r.get(c) or "").strip()
            if c in FINDING_KEYS and v not in POSITIVE + NEGATIVE + UNKNOWN:
                raise ValueError(f"{path}: row {n} (line {n + 1}), column {c!r}: label must be 1, 0 or empty, got {v!r}")
        for k in keys:
            v = (r.get(k) or "").strip()
            if v:
                if v in out:
                    raise ValueError(f"{path}: row {n}: {k} {v!r} appears twice")
                out[v] = {c: (r.get(c) or "").strip() for c in cols if c not in keys}
    return out, [c for c in cols if c not in keys]


def _scan_id(info: SeriesInfo, used: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", info.accession or f"{info.patient_id}_{info.study_uid[-10:]}").strip("_")
    sid, n = base or "study", 2
    while sid in used:
        sid, n = f"{base}_{n}", n + 1
    used.add(sid)
    return sid


def convert_pacs(root: str | Path, out: str | Path, labels: str | Path | None = None, inventory: str | Path | None = None,
                 selection: SelectionPolicy | None = None, series_policy: SeriesPolicy | None = None,
                 split: str = "auto", kernels: str | None = None) -> dict:
    """Index ``root``, write the manifest ``out``, the inventory (default ``<out stem>_inventory.csv``) and the
    policy used (``<out stem>_policy.json``). Returns {"manifest", "inventory", "policy", "studies", "chosen",
    "refused": [(study, reason)], "unlabelled": [...], "unmatched_labels": [...], "non_dicom": n}."""
    from .converters import auto_split

    root, out = Path(root).resolve(), Path(out)
    sel, ser = selection or SelectionPolicy(), series_policy or SeriesPolicy()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (give the export tree's top folder)")
    studies, other = scan_tree(root, kernels)
    if not studies:
        raise ValueError(f"{root}: no DICOM files found ({len(other)} other file(s)); nothing written")
    label_rows, label_cols = _labels(Path(labels) if labels else None)
    inv_rows, manifest_rows, refused, unlabelled, used_labels, used_ids = [], [], [], [], set(), set()
    for study_uid, series in sorted(studies.items(), key=lambda kv: (next(iter(kv[1].values())).patient_id, kv[0])):
        assessed = {uid: _assess(info, sel, ser) for uid, info in series.items()}
        ok = sorted((info for uid, info in series.items() if assessed[uid][0]), key=lambda i: _rank(i, sel))
        chosen = ok[0] if ok else None
        for uid, info in sorted(series.items(), key=lambda kv: (_num(kv[1].series_number), kv[0])):
            good, why = assessed[uid]
            if info is chosen:
                decision, reason = "chosen", _why_chosen(info, sel) + (f"; {why}" if why else "")
            elif good:
                decision, reason = "acceptable", _why_below(info, chosen, sel) + (f"; {why}" if why else "")
            else:
                decision, reason = "refused", why
            row = {k: getattr(info, k, "") for k in INVENTORY_COLUMNS if hasattr(info, k)}
            row.update(series_uid=uid, missing=info.missing_text(), folder=_folder(info, root), decision=decision,
                       reason=reason, sop_class=_sop_name(info.sop_class),
                       thickness_mm="" if info.thickness_mm is None else info.thickness_mm,
                       spacing_mm="" if info.spacing_mm is None else info.spacing_mm)
            inv_rows.append(row)
        first = next(iter(series.values()))
        if chosen is None:
            refused.append((f"{first.accession or study_uid} ({first.patient_id})",
                            "; ".join(f"{i.label()}: {assessed[u][1]}" for u, i in series.items())))
            continue
        key = chosen.accession if chosen.accession in label_rows else chosen.study_uid
        labels_of = label_rows.get(key, {})
        if key in label_rows:
            used_labels.add(key)
        elif label_rows:
            unlabelled.append(chosen.accession or study_uid)
        pid = chosen.patient_id or study_uid
        manifest_rows.append({"scan_id": _scan_id(chosen, used_ids), "patient_id": pid,
                              "split": auto_split(pid) if split == "auto" else split, "path": _folder(chosen, root),
                              "series_uid": chosen.series_uid, **{c: labels_of.get(c, "") for c in label_cols},
                              "meta_accession": chosen.accession, "meta_study_uid": chosen.study_uid,
                              "meta_series_number": chosen.series_number, "meta_series_description": chosen.description,
                              "meta_kernel": chosen.kernel})
    stem = out.with_suffix("")
    inventory = Path(inventory) if inventory else stem.parent / f"{stem.name}_inventory.csv"
    policy_path = stem.parent / f"{stem.name}_policy.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    _write(inventory, list(INVENTORY_COLUMNS), inv_rows)
    policy_path.write_text(json.dumps({"selection": asdict(sel), "series": ser.to_dict(),
                                       "kernel_table": kernels or "molre_lib/resources/ct_kernels.csv"}, indent=1) + "\n")
    if manifest_rows:
        _write(out, list(manifest_rows[0]), manifest_rows)
    return {"manifest": out if manifest_rows else None, "inventory": inventory, "policy": policy_path,
            "root": root, "studies": len(studies), "chosen": len(manifest_rows), "refused": refused,
            "unlabelled": unlabelled, "unmatched_labels": sorted(set(label_rows) - used_labels
                                                                 - {i.study_uid for s in studies.values() for i in s.values()}
                                                                 - {i.accession for s in studies.values() for i in s.values()}),
            "non_dicom": len(other)}


def _sop_name(uid: str) -> str:
    from .dicom_series import sop_class_name

    return sop_class_name(uid) or uid


def _write(path: Path, columns: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
