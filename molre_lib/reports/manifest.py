"""Training labels from reports: a manifest whose 75 label columns come from ``molre label-reports`` output.

00_data's ``LABELS_FROM = "reports"`` calls :func:`manifest_from_reports`: every manifest row (``scan_id``) is
matched to a report (``report_id``), the report is labelled, uncertain labels are mapped for training
(``uncertain``: positive / negative / unknown) and findings the report does not mention become negative or unknown
(``unmentioned``). The rest of the manifest (paths, splits, metadata) is kept as it is. A scan without a report
(or a report without a scan) is an error naming it: nothing is silently dropped.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from molre_lib.common.files import atomic_write
from molre_lib.data.taxonomy import FINDING_KEYS

from .io import label_table, read_reports, sibling, summarise, write_outputs

UNCERTAIN_FOR_TRAINING = ("positive", "negative", "unknown")
UNMENTIONED_FOR_TRAINING = ("negative", "unknown")


def manifest_from_reports(manifest: str | Path, reports: str | Path, out: str | Path, uncertain: str = "positive",
                          unmentioned: str = "negative", id_column: str = "report_id",
                          text_column: str = "report") -> Path:
    """Write ``out`` (a manifest with report-derived labels) and ``<out>.labels.csv`` (+ evidence, summary)."""
    if uncertain not in UNCERTAIN_FOR_TRAINING:
        raise ValueError(f"uncertain must be one of {UNCERTAIN_FOR_TRAINING}, got {uncertain!r}")
    if unmentioned not in UNMENTIONED_FOR_TRAINING:
        raise ValueError(f"unmentioned must be one of {UNMENTIONED_FOR_TRAINING}, got {unmentioned!r}")
    manifest, reports = Path(manifest), Path(reports)
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    if "scan_id" not in frame.columns:
        raise ValueError(f"{manifest}: no column 'scan_id' to match the reports' {id_column!r} with")
    texts = read_reports(reports, id_column, text_column)
    ids = {rid for rid, _ in texts}
    missing = [(i, s) for i, s in enumerate(frame["scan_id"], start=1) if s not in ids]
    if missing:
        raise ValueError(f"{manifest}: row {missing[0][0]}, column 'scan_id': no report for {missing[0][1]!r} in "
                         f"{reports} ({len(missing)} scan(s) without a report)")
    extra = sorted(ids - set(frame["scan_id"]))
    if extra:
        raise ValueError(f"{reports}: report {extra[0]!r} has no scan in {manifest} ({len(extra)} such report(s))")
    keep = "keep" if uncertain == "unknown" else uncertain
    labels, evidence = label_table(texts, id_column, keep)
    write_outputs(sibling(out, "labels"), labels, evidence, summarise(labels))
    by_id = labels.set_index(id_column)
    for k in FINDING_KEYS:
        col = by_id[k].reindex(frame["scan_id"]).to_numpy(object)
        cells = []
        for v in col:
            if v is pd.NA or v is None:
                cells.append("0" if unmentioned == "negative" else "")
            elif int(v) == -1:
                cells.append("")                                   # uncertain == "unknown"
            else:
                cells.append(str(int(v)))
        frame[k] = cells
    atomic_write(out, frame.to_csv(index=False, lineterminator="\n"))
    return Path(out)
