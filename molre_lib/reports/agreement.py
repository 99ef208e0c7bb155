"""Agreement of labeller output with a hand-labelled subset, and which reports to hand-label.

Per finding and per category (cells pooled over the category's findings), three views of the same labels:

* ``3-class``: positive (1) / uncertain (-1) / negative or not mentioned (0 or empty): Cohen's kappa and accuracy;
* ``u->pos`` and ``u->neg``: uncertain collapsed to positive or to negative, then binary sensitivity,
  specificity, PPV, F1 and Cohen's kappa.

A label that is not mentioned counts as negative, the convention of CheXpert-style evaluations (a report that does not
mention a finding is read as "not present"). Confidence intervals are percentile bootstraps over reports (a report's
75 labels are resampled together, so category rows respect their correlation). Point estimates equal
scikit-learn's ``cohen_kappa_score`` / ``precision_recall_fscore_support`` (tested).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from molre_lib.data.taxonomy import CATEGORIES, CATEGORY_OF, FINDING_KEYS

from .io import read_table

MODES = ("3-class", "u->pos", "u->neg")
METRICS = ("sensitivity", "specificity", "ppv", "f1", "kappa", "accuracy")
_VALUES = {"1": 1, "0": 0, "-1": -1, "": None}


def read_label_file(path: str | Path, id_column: str = "report_id", what: str = "labels") -> pd.DataFrame:
    """A labels CSV (id + any finding columns, values 1 / 0 / -1 / empty) -> DataFrame of object values."""
    path = Path(path)
    header, rows = read_table(path, f"{what} file")
    if id_column not in header:
        raise ValueError(f"{path}: row 0 (header): no column {id_column!r} (columns: {', '.join(header[:6])}...); "
                         "name the id column with --id-column")
    for j, name in enumerate(header):
        if name != id_column and name not in FINDING_KEYS:
            raise ValueError(f"{path}: row 0 (header), column {j + 1} {name!r} is not a finding key of findings.csv "
                             f"(allowed: {id_column} and the 75 keys); rename or remove it")
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise ValueError(f"{path}: row 0 (header), column {dup!r} appears twice")
    keys = [h for h in header if h != id_column]
    if not keys:
        raise ValueError(f"{path}: row 0 (header): no finding columns (expected some of the 75 keys of findings.csv)")
    data, seen = [], {}
    i_id = header.index(id_column)
    for i, cells in rows:
        rid = cells[i_id].strip()
        if not rid:
            raise ValueError(f"{path}: row {i}, column {id_column!r}: empty report id")
        if rid in seen:
            raise ValueError(f"{path}: row {i}, column {id_column!r}: duplicate id {rid!r} (first on row {seen[rid]})")
        seen[rid] = i
        row = {id_column: rid}
        for name, cell in zip(header, cells):
            if name == id_column:
                continue
            value = cell.strip()
            if value not in _VALUES:
                raise ValueError(f"{path}: row {i}, column {name!r}: value {cell!r} (allowed: 1, 0, -1 or empty)")
            row[name] = _VALUES[value]
        data.append(row)
    if not data:
        raise ValueError(f"{path}: no rows (only a header row)")
    return pd.DataFrame(data, columns=[id_column, *keys]).set_index(id_column)


def to_label_frame(labels: pd.DataFrame, id_column: str = "report_id") -> pd.DataFrame:
    """``label_table``'s output (id column + nullable Int64 columns) -> id-indexed object frame, None = blank."""
    frame = labels.set_index(id_column)
    return frame.astype(object).where(frame.notna(), None)


def align(labels: pd.DataFrame, gold: pd.DataFrame, labels_path: str = "labels", gold_path: str = "gold"
          ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The labeller's rows for the gold ids, same column order; a gold id or column the labels lack is an error."""
    missing = [rid for rid in gold.index if rid not in labels.index]
    if missing:
        row = list(gold.index).index(missing[0]) + 1
        raise ValueError(f"{gold_path}: row {row}, column {gold.index.name or 'id'!r}: id {missing[0]!r} is not in "
                         f"{labels_path} ({len(missing)} gold id(s) missing); label those reports first")
    cols = [c for c in gold.columns if c not in labels.columns]
    if cols:
        raise ValueError(f"{gold_path}: row 0 (header), column {cols[0]!r} is not in {labels_path}")
    return labels.loc[gold.index, list(gold.columns)], gold


def _classes(frame: pd.DataFrame, mode: str) -> np.ndarray:
    """(n, F) int classes: 3-class 0 = negative / unmentioned, 1 = positive, 2 = uncertain; binary 0 / 1."""
    v = frame.map(lambda x: 0 if x is None or (isinstance(x, float) and np.isnan(x)) else int(x)).to_numpy(int)
    if mode == "3-class":
        return np.where(v == -1, 2, v)
    return np.where(v == -1, 1 if mode == "u->pos" else 0, v)


def _confusions(g: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    """Per-report confusion counts (n, k, k) summed over the given columns; [true, predicted]."""
    out = np.zeros((g.shape[0], k, k), np.int64)
    for a in range(k):
        for b in range(k):
            out[:, a, b] = ((g == a) & (p == b)).sum(axis=1)
    return out


def _metrics(m: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics of confusion matrices (..., k, k)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        total = m.sum(axis=(-2, -1)).astype(float)
        po = np.trace(m, axis1=-2, axis2=-1) / total
        pe = (m.sum(axis=-1) * m.sum(axis=-2)).sum(axis=-1) / total ** 2
        out = {"kappa": np.where(pe < 1, (po - pe) / (1 - pe), np.nan), "accuracy": po}
        if m.shape[-1] == 2:
            tn, fp, fn, tp = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
            out.update(sensitivity=tp / (tp + fn), specificity=tn / (tn + fp), ppv=tp / (tp + fp),
                       f1=2 * tp / (2 * tp + fp + fn))
    return out


def agreement_table(labels: pd.DataFrame, gold: pd.DataFrame, n_boot: int = 1000, seed: int = 0,
                    ci: float = 0.95) -> pd.DataFrame:
    """One row per (level, name, mode): n, positives, prevalence and each metric with its bootstrap CI.

    ``level`` is finding, category or all; ``positives`` counts gold positives (under the mode's collapse).
    """
    n = len(gold)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n)) if n_boot > 0 else None
    alpha = (1 - ci) / 2
    groups = [("finding", k, [k]) for k in gold.columns]
    for c in CATEGORIES:
        keys = [k for k in gold.columns if CATEGORY_OF[k] == c]
        if keys:
            groups.append(("category", c, keys))
    groups.append(("all", "all", list(gold.columns)))
    rows = []
    for mode in MODES:
        k = 3 if mode == "3-class" else 2
        g_all, p_all = _classes(gold, mode), _classes(labels, mode)
        for level, name, keys in groups:
            cols = [list(gold.columns).index(c) for c in keys]
            per = _confusions(g_all[:, cols], p_all[:, cols], k)          # (n, k, k)
            point = _metrics(per.sum(0))
            cells = n * len(cols)
            pos = int((g_all[:, cols] >= 1).sum())
            row = {"level": level, "name": name, "category": CATEGORY_OF.get(name, name if level == "category" else ""),
                   "mode": mode, "n": cells, "positives": pos, "prevalence": pos / cells}
            boots = {}
            if idx is not None:
                sums = np.concatenate([per[idx[s:s + 200]].sum(1) for s in range(0, n_boot, 200)])
                boots = _metrics(sums)
            for metric in METRICS:
                if metric not in point:
                    continue
                row[metric] = float(point[metric])
                if metric in boots and np.isfinite(boots[metric]).any():
                    lo, hi = np.nanquantile(boots[metric], [alpha, 1 - alpha])
                    row[f"{metric}_lo"], row[f"{metric}_hi"] = float(lo), float(hi)
                else:
                    row[f"{metric}_lo"] = row[f"{metric}_hi"] = float("nan")
            rows.append(row)
    cols = ["level", "name", "category", "mode", "n", "positives", "prevalence"]
    cols += [c for m in METRICS for c in (m, f"{m}_lo", f"{m}_hi")]
    return pd.DataFrame(rows).reindex(columns=cols)


def disagreements(labels: pd.DataFrame, gold: pd.DataFrame, evidence: pd.DataFrame | None = None,
                  id_column: str = "report_id") -> pd.DataFrame:
    """Every (report, finding) where labeller and gold differ (empty = not mentioned), with the deciding sentence."""
    show = lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(int(v))  # noqa: E731
    why: dict[tuple[str, str], str] = {}
    if evidence is not None and len(evidence):
        used = evidence[evidence["used"].astype(str) == "1"]
        for rid, key, rule, sent in zip(used["report_id"].astype(str), used["finding"], used["rule"], used["sentence"]):
            why.setdefault((rid, key), f"{rule}: {sent}" if isinstance(sent, str) and sent else str(rule))
    rows = []
    for rid in gold.index:
        for key in gold.columns:
            a, b = show(labels.at[rid, key]), show(gold.at[rid, key])
            if a != b:
                rows.append({id_column: rid, "finding": key, "category": CATEGORY_OF[key], "labeller": a, "gold": b,
                             "evidence": why.get((str(rid), key), "")})
    return pd.DataFrame(rows, columns=[id_column, "finding", "category", "labeller", "gold", "evidence"])


def sample_for_labelling(labels: pd.DataFrame, n: int, seed: int = 0, per_finding: int | None = None
                         ) -> pd.DataFrame:
    """Pick ``n`` reports to hand-label so that rare findings are represented.

    Rarest finding first, up to ``per_finding`` (default ``max(1, n // (2 * findings with a positive))``) reports the
    labeller calls positive or uncertain for it are drawn at random; the rest of ``n`` is filled at random from the
    remaining reports (so normal reports and the labeller's negatives are checked too). Returns id and reason.
    """
    if n < 1:
        raise ValueError(f"--sample must be at least 1, got {n}")
    if n > len(labels):
        raise ValueError(f"--sample {n}: only {len(labels)} reports in the labels file")
    rng = np.random.default_rng(seed)
    flagged = {k: [rid for rid, v in labels[k].items() if v in (1, -1)] for k in labels.columns}
    present = sorted((k for k in flagged if flagged[k]), key=lambda k: (len(flagged[k]), FINDING_KEYS.index(k)))
    per = per_finding or max(1, n // (2 * max(1, len(present))))
    chosen: dict[str, str] = {}
    for k in present:
        pool = [r for r in flagged[k] if r not in chosen]
        for rid in rng.permutation(pool)[:per] if pool else []:
            if len(chosen) < n:
                chosen[str(rid)] = f"labeller positive/uncertain for {k} ({len(flagged[k])} in all)"
    rest = [r for r in labels.index if r not in chosen]
    for rid in rng.permutation(rest)[: n - len(chosen)]:
        chosen[str(rid)] = "random fill"
    return pd.DataFrame({labels.index.name or "report_id": list(chosen), "reason": list(chosen.values())})
