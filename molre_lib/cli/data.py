"""Data commands: ``molre synth``, ``molre validate``, ``molre convert rsna-ich|cq500|pacs``, ``molre gallery``."""
from __future__ import annotations

import argparse
import sys


def _floats(text: str, n: int | None = None, name: str = "value") -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name}: expected comma-separated numbers, got {text!r}") from None
    if n is not None and len(vals) != n:
        raise argparse.ArgumentTypeError(f"{name}: expected {n} comma-separated numbers, got {text!r}")
    return vals


def _hwd(text: str) -> tuple[int, int, int]:
    h, w, d = _floats(text, 3, "--shape")
    return int(d), int(h), int(w)                                    # -> (D, H, W)


def register(subparsers) -> None:
    p = subparsers.add_parser("synth", help="write a synthetic head-CT phantom data set and its manifest.csv")
    p.add_argument("--out", required=True,
                   help="output folder (scans/, manifest.csv, labels_true.csv, reports.csv: a free-text report per scan)")
    p.add_argument("--n-scans", type=int, default=None, help="number of scans (required for nifti / dicom)")
    p.add_argument("--shape", type=_hwd, default=(24, 64, 64), help="H,W,D voxels (default 64,64,24)")
    p.add_argument("--spacing", type=lambda t: _floats(t, 3, "--spacing"), default=None,
                   help="row,col,slice spacing dy,dx,dz in mm (default: fit the 230x230x160 mm head field of view)")
    p.add_argument("--slice-thickness", type=float, default=None, help="slice thickness mm (default = slice spacing)")
    p.add_argument("--format", choices=("nifti", "dicom", "pacs"), default="nifti",
                   help="nifti / dicom: a phantom data set with manifest.csv; pacs: a small hospital-style PACS export "
                   "tree (OUT/export, OUT/labels.csv; --n-scans is ignored) to try molre convert pacs on")
    p.add_argument("--dicom-compression", choices=("none", "rle", "jpeg2000", "jpegls"), default="none",
                   help="lossless transfer syntax of DICOM output")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label-noise", type=float, default=0.0, help="probability a positive label is missed")
    p.add_argument("--unknown-fraction", type=float, default=0.0, help="fraction of labels left empty (unknown)")
    p.add_argument("--prevalence-scale", type=float, default=1.0, help="multiply every finding probability")
    p.add_argument("--splits", type=lambda t: _floats(t, 3, "--splits"), default=(0.7, 0.15, 0.15),
                   help="train,val,test fractions of patients")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.set_defaults(func=_synth)

    p = subparsers.add_parser("validate", help="check a manifest and print every problem (exit 0 valid, 2 invalid)")
    p.add_argument("manifest")
    p.add_argument("--root", default=None, help="folder the paths are relative to (default: the manifest's folder)")
    p.add_argument("--require-splits", default="train,val,test",
                   help="splits that must have rows (comma-separated; empty string for none)")
    p.add_argument("--no-file-check", action="store_true", help="skip opening the scan files")
    p.add_argument("--every", action="store_true",
                   help="one line per problem (default: repeats of a problem are one line with their count and rows)")
    _add_series_policy(p)
    p.set_defaults(func=_validate)

    p = subparsers.add_parser("convert", help="convert a public data set layout into a manifest")
    sub = p.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    q = sub.add_parser("rsna-ich", help="RSNA Intracranial Hemorrhage Detection 2019 (stage_2_train.csv + DICOMs)")
    q.add_argument("src", help="folder with stage_2_train.csv and stage_2_train/")
    q.add_argument("--out", required=True, help="manifest path; series folders are linked next to it")
    q.add_argument("--link", choices=("symlink", "hardlink", "copy"), default="symlink")
    q.add_argument("--split", default="auto", help="train|val|test for every scan, or auto (70/15/15 by patient)")
    q.set_defaults(func=_convert_rsna)
    q = sub.add_parser("cq500", help="CQ500 (reads.csv majority vote + patient folders)")
    q.add_argument("src", help="folder with reads.csv and the CQ500 patient folders")
    q.add_argument("--out", required=True, help="manifest path; chosen series are linked next to it")
    q.add_argument("--series", choices=("plain", "thin", "all"), default="plain",
                   help="plain: one non-bone series closest to 5 mm; thin: thinnest non-bone; all: every series")
    q.add_argument("--split", default="auto", help="train|val|test for every scan, or auto (70/15/15 by patient)")
    q.set_defaults(func=_convert_cq500)
    q = sub.add_parser("pacs", help="a hospital PACS export tree: inventory of every series, one chosen per study",
                       description="Walks ROOT (any layout: Patient/Study/Series, flat study folders, files without "
                       "extensions), writes an inventory CSV of every series with its decision and reason, and a "
                       "manifest with one row per study (the chosen series' folder and series_uid). Paths are relative "
                       "to ROOT: read the manifest with --root ROOT (molre validate) / --data-root ROOT (molre train).")
    q.add_argument("root", help="top folder of the export tree")
    q.add_argument("--out", required=True, help="manifest CSV path (the inventory and the policy are written next to it)")
    q.add_argument("--labels", default=None, help="CSV with accession (or study_uid) and finding-key columns, joined per study")
    q.add_argument("--inventory", default=None, help="inventory CSV path (default: OUT_STEM_inventory.csv)")
    q.add_argument("--policy", action="append", default=[], metavar="KEY=VALUE",
                   help="change the selection policy (repeatable): target_thickness_mm=5, min_slices=10, "
                   "min_extent_mm=80, prefer_original=true, unknown_kernel=accept|refuse, and the series check's "
                   "bone_kernel=refuse|warn, gantry_tilt=correct|refuse, oblique=resample|refuse, max_missing_slices=0, "
                   "allow_derived=false")
    q.add_argument("--kernels", default=None, help="kernel table CSV (default: the shipped data_manifests/ct_kernels.csv)")
    q.add_argument("--split", default="auto", help="train|val|test for every study, or auto (70/15/15 by patient)")
    q.set_defaults(func=_convert_pacs)

    p = subparsers.add_parser("gallery", help="phantom slice gallery: every finding, three windows, PNG/PDF/SVG")
    p.add_argument("--out", default="figures/phantom", help="output folder (default figures/phantom)")
    p.add_argument("--shape", type=_hwd, default=(32, 160, 160), help="H,W,D voxels (default 160,160,32)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--category", action="append", default=None, help="only this category (repeatable)")
    p.set_defaults(func=_gallery)


def _add_series_policy(p) -> None:
    p.add_argument("--series-policy", action="append", default=[], metavar="KEY=VALUE",
                   help="DICOM series check (repeatable): bone_kernel=refuse|warn, gantry_tilt=correct|refuse, "
                   "oblique=resample|refuse, max_missing_slices=0, allow_derived=false")


def series_policy(pairs: list[str]):
    """A SeriesPolicy from --series-policy KEY=VALUE pairs."""
    from molre_lib.data.dicom_series import SeriesPolicy

    return SeriesPolicy.from_pairs(pairs)


def _synth(args) -> int:
    from molre_lib.data.phantom import PhantomConfig
    from molre_lib.data.synth import synthesize

    if args.format == "pacs":
        from molre_lib.data.pacs_synth import write_export_tree

        root = write_export_tree(args.out, seed=args.seed)
        print(f"wrote a PACS export tree of 6 studies to {root} and its labels to {root.parent / 'labels.csv'}")
        return 0
    if args.n_scans is None:
        raise ValueError("molre synth: --n-scans is required with --format nifti or dicom")
    spacing = None if args.spacing is None else (args.spacing[2], args.spacing[0], args.spacing[1])
    cfg = PhantomConfig(slice_thickness_mm=args.slice_thickness, prevalence_scale=args.prevalence_scale)
    manifest = synthesize(args.out, args.n_scans, shape=args.shape, spacing=spacing, fmt=args.format,
                          seed=args.seed, label_noise=args.label_noise, splits=args.splits,
                          unknown_fraction=args.unknown_fraction, compression=args.dicom_compression,
                          workers=args.workers, cfg=cfg)
    print(f"wrote {args.n_scans} scans and {manifest}")
    return 0


def _validate(args) -> int:
    from molre_lib.data.manifest import format_problems, validate_manifest

    splits = tuple(s for s in args.require_splits.split(",") if s)
    problems = validate_manifest(args.manifest, args.root, required_splits=splits, check_files=not args.no_file_check,
                                 policy=series_policy(args.series_policy))
    for line in (format_problems(problems) if not args.every else map(str, problems)):
        print(line, file=sys.stdout)
    n_err = sum(p.level == "error" for p in problems)
    n_warn = len(problems) - n_err
    print(f"{args.manifest}: {'INVALID' if n_err else 'valid'} ({n_err} error(s), {n_warn} warning(s))")
    return 2 if n_err else 0


def _convert_rsna(args) -> int:
    from molre_lib.data.converters import convert_rsna_ich

    print(f"wrote {convert_rsna_ich(args.src, args.out, link=args.link, split=args.split)}")
    return 0


def _convert_cq500(args) -> int:
    from molre_lib.data.converters import convert_cq500

    skipped: list = []
    manifest = convert_cq500(args.src, args.out, series=args.series, split=args.split, skipped=skipped)
    for name, why in skipped:                                  # listed, never dropped silently
        print(f"skipped {name}: {why}")
    print(f"wrote {manifest}" + (f" ({len(skipped)} reads.csv name(s) skipped, listed above)" if skipped else ""))
    return 0


def _convert_pacs(args) -> int:
    import dataclasses

    from molre_lib.data.dicom_series import SeriesPolicy
    from molre_lib.data.pacs import convert_pacs, parse_policy

    sel, ser = parse_policy(args.policy)
    r = convert_pacs(args.root, args.out, labels=args.labels, inventory=args.inventory, selection=sel,
                     series_policy=ser, split=args.split, kernels=args.kernels)
    print(f"{r['studies']} studies under {r['root']}: {r['chosen']} with a chosen series, {len(r['refused'])} without")
    for study, why in r["refused"]:
        print(f"no acceptable series in study {study}: {why}")
    if r["unlabelled"]:
        print(f"warning: {len(r['unlabelled'])} studies have no row in --labels (their labels are unknown): "
              f"{', '.join(r['unlabelled'][:5])}")
    if r["unmatched_labels"]:
        print(f"warning: {len(r['unmatched_labels'])} --labels rows match no study: {', '.join(r['unmatched_labels'][:5])}")
    if r["non_dicom"]:
        print(f"{r['non_dicom']} non-DICOM file(s) ignored")
    print(f"wrote the inventory of every series to {r['inventory']} and the policy to {r['policy']}")
    if r["manifest"] is None:
        print("no study has an acceptable series; no manifest written (see the inventory's reason column)")
        return 2
    # series-check keys changed here must be given to every reader too, or they refuse what was chosen
    series_keys = {f.name for f in dataclasses.fields(SeriesPolicy)}
    flags = "".join(f" --series-policy {p.strip()}" for p in args.policy
                    if p.partition("=")[0].strip().replace("-", "_") in series_keys)
    print(f"wrote {r['manifest']}; its paths are relative to {r['root']}: molre validate {r['manifest']} "
          f"--root {r['root']}{flags}")
    if flags:
        print(f"its series were chosen with a changed series check: read it with{flags} (molre validate, preprocess "
              "and train; predict takes the run's own), or the defaults refuse those series")
    return 0


def _gallery(args) -> int:
    from molre_lib.plots.gallery import write_gallery
    from molre_lib.data.phantom import PhantomConfig

    paths = write_gallery(args.out, PhantomConfig(shape=args.shape), seed=args.seed, categories=args.category)
    for p in paths:
        print(p)
    return 0
