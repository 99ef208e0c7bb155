"""The labeller against the phantom's truth: synthetic reports -> labels -> agreement (what ``molre demo`` prints).

Only the labels and the report text of each synthetic subject are drawn (no image), so ``n`` = 600 reports take a
few seconds. Per finding: n, gold positives, sensitivity, specificity, PPV, F1 and Cohen's kappa, with uncertain
(hedged) mentions counted positive (the phantom hedges only true positives) and as negative.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from molre_lib.common.files import atomic_write
from molre_lib.data.phantom_labels import sample_labels
from molre_lib.data.phantom_reports import write_report
from molre_lib.data.taxonomy import FINDING_KEYS

from .agreement import agreement_table, to_label_frame
from .io import label_table

COLUMNS = ["level", "name", "category", "mode", "n", "positives", "sensitivity", "specificity", "ppv", "f1", "kappa"]


def synthetic_reports(n: int, seed: int = 0, prevalence_scale: float = 1.0
                      ) -> tuple[list[tuple[str, str]], pd.DataFrame]:
    """``n`` (id, report text) pairs and their true labels (DataFrame id x 75, 0 / 1)."""
    reports, truth = [], []
    for i in range(n):
        rng = np.random.default_rng([seed, i, 7])
        labels = sample_labels(rng, float(rng.uniform(18, 95)), prevalence_scale)
        reports.append((f"synthetic-{i:05d}", write_report(labels, np.random.default_rng([seed, i, 23]))))
        truth.append(labels)
    gold = pd.DataFrame(truth, index=pd.Index([r for r, _ in reports], name="report_id"))[FINDING_KEYS]
    return reports, gold.astype(object)


def phantom_report_agreement(n: int = 600, seed: int = 0, prevalence_scale: float = 2.5,
                             out: str | Path | None = None, n_boot: int = 200) -> pd.DataFrame:
    """Label ``n`` synthetic reports and compare with the truth; write the table to ``out`` (CSV) if given."""
    reports, gold = synthetic_reports(n, seed, prevalence_scale)
    labels, _ = label_table(reports)
    pred = to_label_frame(labels)
    table = agreement_table(pred, gold, n_boot=n_boot, seed=seed)
    table = table[table["mode"] != "3-class"]
    if out is not None:
        atomic_write(out, table.to_csv(index=False, lineterminator="\n", float_format="%.4f"))
    return table


def summary_lines(table: pd.DataFrame) -> list[str]:
    """Pooled rows (categories, all) as printable lines, plus the findings with the lowest F1."""
    lines = []
    for mode in ("u->pos", "u->neg"):
        t = table[table["mode"] == mode]
        pooled = t[t["level"] != "finding"]
        cells = ", ".join(f"{r.name} F1 {r.f1:.3f} κ {r.kappa:.3f}" for r in pooled.itertuples())
        lines.append(f"  uncertain as {'positive' if mode == 'u->pos' else 'negative'}: {cells}")
    per = table[(table["mode"] == "u->pos") & (table["level"] == "finding") & (table["positives"] > 0)]
    worst = per.nsmallest(3, "f1")
    lines.append("  lowest F1 (uncertain as positive): "
                 + ", ".join(f"{r.name} {r.f1:.3f} (n+={r.positives})" for r in worst.itertuples()))
    return lines
