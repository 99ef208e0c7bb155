"""Report labelling commands: ``molre label-reports`` and ``molre label-agreement``."""
from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "label-reports", help="label free-text head-CT reports with the 75 findings (1 / 0 / -1 / empty) + evidence",
        description="One output row per report: the id and the 75 finding keys of findings.csv, each 1 (present), "
                    "0 (explicitly absent), -1 (uncertain) or empty (not mentioned). Writes LABELS.csv, "
                    "LABELS.evidence.csv (why each label was set) and LABELS.summary.csv (per finding counts).")
    p.add_argument("reports", help="CSV (UTF-8, comma-separated) with an id column and a report text column")
    p.add_argument("--out", required=True, help="labels CSV to write; evidence and summary go beside it")
    p.add_argument("--id-column", default="report_id", help="column with the report id (default report_id)")
    p.add_argument("--text-column", default="report", help="column with the report text (default report)")
    p.add_argument("--uncertain", choices=("keep", "positive", "negative"), default="keep",
                   help="uncertain mentions: keep -1 (default), or count them positive / negative for training")
    p.add_argument("--phrases", default=None,
                   help="a site's own phrase file (default: the packaged data_manifests/report_phrases.yaml)")
    p.add_argument("--quiet", action="store_true", help="do not print the per-finding summary")
    p.set_defaults(func=_label_reports)

    p = subparsers.add_parser(
        "label-agreement", help="agreement of report labels with hand labels (per finding / category, bootstrap CIs)"
                                ", or --sample N reports to hand-label",
        description="Compares LABELS.csv (molre label-reports) with GOLD.csv (same id column, any of the 75 finding "
                    "columns, values 1 / 0 / -1 / empty): n, prevalence, sensitivity, specificity, PPV, F1 and "
                    "Cohen's kappa with bootstrap CIs, 3-class and with uncertain collapsed to positive / negative; "
                    "a disagreement table for adjudication and a figure. With --sample N (no GOLD): picks N "
                    "reports to hand-label, stratified so rare findings are represented.")
    p.add_argument("labels", help="labels CSV written by molre label-reports")
    p.add_argument("gold", nargs="?", default=None, help="hand labels CSV (omit with --sample)")
    p.add_argument("--out", default=None,
                   help="output folder (default LABELS.agreement/ beside the labels); with --sample: the sample CSV "
                        "(default LABELS.sample.csv)")
    p.add_argument("--id-column", default="report_id")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of reports (default 1000; 0 = none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample", type=int, default=None, metavar="N",
                   help="write N report ids to hand-label (rare findings first, then random), instead of agreement")
    p.set_defaults(func=_label_agreement)


def _label_reports(args) -> int:
    from molre_lib.reports.io import label_table, read_reports, summarise, write_outputs
    from molre_lib.reports.labeller import Labeller
    from molre_lib.reports.phrases import load_phrases

    labeller = Labeller(load_phrases(args.phrases))
    reports = read_reports(args.reports, args.id_column, args.text_column)
    labels, evidence = label_table(reports, args.id_column, args.uncertain, labeller)
    summary = summarise(labels)
    paths = write_outputs(args.out, labels, evidence, summary)
    if not args.quiet:
        shown = summary[summary["mentioned"] > 0]
        print(f"{len(labels)} reports; {len(shown)} of 75 findings mentioned "
              f"(uncertain: {args.uncertain})")
        if len(shown):
            print(shown.to_string(index=False))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _label_agreement(args) -> int:
    from molre_lib.reports.agreement import read_label_file

    labels = read_label_file(args.labels, args.id_column, "labels")
    if args.sample is not None:
        return _sample(args, labels)
    if args.gold is None:
        raise ValueError("label-agreement: give GOLD.csv (hand labels) or --sample N")
    return _agreement(args, labels)


def _sample(args, labels) -> int:
    from molre_lib.common.files import atomic_write
    from molre_lib.reports.agreement import sample_for_labelling

    if args.gold is not None:
        raise ValueError("label-agreement: --sample picks reports to hand-label and takes no GOLD.csv")
    sample = sample_for_labelling(labels, args.sample, args.seed)
    out = Path(args.out) if args.out else Path(args.labels).with_name(Path(args.labels).stem + ".sample.csv")
    atomic_write(out, sample.to_csv(index=False, lineterminator="\n"))
    rare = int((sample["reason"] != "random fill").sum())
    print(f"{len(sample)} reports to hand-label ({rare} chosen for a rare finding, {len(sample) - rare} at random): "
          f"wrote {out}")
    return 0


def _agreement(args, labels) -> int:
    import pandas as pd

    from molre_lib.common.files import atomic_write
    from molre_lib.plots.labels import plot_label_agreement
    from molre_lib.plots.style import paper_style, save_figure
    from molre_lib.reports.agreement import agreement_table, align, disagreements, read_label_file
    from molre_lib.reports.io import sibling

    gold = read_label_file(args.gold, args.id_column, "gold")
    pred, gold = align(labels, gold, args.labels, args.gold)
    table = agreement_table(pred, gold, n_boot=args.n_boot, seed=args.seed)
    ev_path = sibling(args.labels, "evidence")
    evidence = pd.read_csv(ev_path, dtype=str, keep_default_na=False) if ev_path.is_file() else None
    dis = disagreements(pred, gold, evidence, args.id_column)
    out = Path(args.out) if args.out else Path(args.labels).with_name(Path(args.labels).stem + ".agreement")
    with paper_style():
        fig = plot_label_agreement(table)
        figs = save_figure(fig, out, "label_agreement")
    import matplotlib.pyplot as plt
    plt.close(fig)
    atomic_write(out / "agreement.csv", table.to_csv(index=False, lineterminator="\n", float_format="%.4f"))
    atomic_write(out / "disagreements.csv", dis.to_csv(index=False, lineterminator="\n"))
    summary = table[table["level"] != "finding"][["name", "mode", "n", "positives", "sensitivity", "specificity",
                                                   "ppv", "f1", "kappa", "accuracy"]]
    print(f"{len(gold)} reports x {gold.shape[1]} findings; {len(dis)} disagreeing labels")
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {out / 'agreement.csv'}, {out / 'disagreements.csv'}, {figs[0].parent / 'label_agreement'}.{{pdf,svg,png}}")
    return 0
