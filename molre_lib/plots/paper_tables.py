"""The paper's tables, one per question, built from the workbook's result tables.

- :func:`main_table` — across backbones (05_summary): family, size, added parameters and mean AUC of each
  method, ΔAUC against the reference with its paired-bootstrap CI. Input: ``analysis.summary.paper_table``.
- :func:`category_table` — per taxonomy category (03_per_finding_auc): mean AUC of both runs, ΔAUC with its
  paired-bootstrap CI, findings significantly better under each run (DeLong, Holm).
- :func:`findings_table` — the top-k findings by DeLong p (03): AUCs, ΔAUC with its DeLong CI, p and Holm p.
- :func:`auc_summary_table` — macro, micro and category mean AUROC of each run with CIs (03's ``summary.tex``).
- :func:`per_finding_table` — every finding's AUROC [CI] per run (03's ``per_finding_auc.tex``).

Findings are named as in ``findings.csv``; a finding with fewer than ``min_positives`` test positives
(``plots.MIN_POSITIVES``) prints no CI, as the forest plots draw no interval for it.

Each returns a :class:`~molre_lib.plots.latex.PaperTable` (``save_paper_table`` writes ``.tex`` + ``.csv``).
Method names follow the paper (LoRA, MoLRE, MoLRE (shared A)); see :func:`method_name`.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from molre_lib.plots.latex import MINUS, Column, PaperTable
from molre_lib.plots.style import MIN_POSITIVES

METHOD_NAMES = {"lora": "LoRA", "molre": "MoLRE", "linear_probe": "Linear probe", "full": "Full fine-tuning"}


def method_name(arm: str, shared_a: bool | None = None) -> str:
    """Paper name of an arm: ``lora`` -> LoRA, ``molre SHARED_A=True`` -> MoLRE (shared A).

    An arm is the adapter plus ``KEY=value`` settings (``analysis.summary``); separate A (``SHARED_A=False``)
    is MoLRE's default and adds nothing to the name; other settings are named in parentheses.
    ``shared_a`` describes a bare adapter name from a run's config.
    """
    adapter, *settings = str(arm).split()
    base = METHOD_NAMES.get(adapter.lower(), adapter)
    extra = []
    if shared_a:
        settings = [*settings, "SHARED_A=True"]
    for setting in settings:
        key, _, value = setting.partition("=")
        if key.upper() == "SHARED_A":
            if value.lower() in ("true", "1"):
                extra.append("shared A")
            continue
        extra.append(f"{key.lower().replace('_', ' ')} {value}")
    return f"{base} ({', '.join(dict.fromkeys(extra))})" if extra else base


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(text).lower()).strip("_")


def _bold_max(data: pd.DataFrame, keys: Sequence[str]) -> set[tuple[int, str]]:
    """(row, key) of the largest value among ``keys`` in each row (ties all bold; rounding to 3 decimals)."""
    bold = set()
    values = data[list(keys)].to_numpy(dtype=float).round(3)
    for i, row in enumerate(values):
        if np.isfinite(row).sum() < 2:
            continue
        bold |= {(i, k) for k, v in zip(keys, row) if v == np.nanmax(row)}
    return bold


def _count(n: float) -> str:
    return f"{int(n):,}"


def _stacked(name: str) -> str:
    """A method name as a header: a parenthesised variant goes on a second line ("MoLRE\\n(shared A)")."""
    return name.replace(" (", "\n(", 1)


def _delta_header(b: str, a: str) -> str:
    return f"{b} {MINUS} {a}" if len(b) + len(a) < 16 else f"{b}\n{MINUS} {a}"


def _main_notes(data: pd.DataFrame, ref_name: str, n_boot: int | None, seed_cols: Sequence[str]) -> list[str]:
    seeds = sorted({int(v) for c in seed_cols for v in data[c].dropna()})
    seeds_text = (f"{seeds[0]} seed{'s' if seeds[0] != 1 else ''}" if len(seeds) == 1
                  else f"{seeds[0]}–{seeds[-1]} seeds per backbone" if seeds else "the seeds")
    scans = sorted({int(v) for v in data.get("n_test_scans", pd.Series(dtype=float)).dropna()})
    scans_text = (f"n = {_count(scans[0])} test scans" if len(scans) == 1
                  else f"n = {_count(scans[0])}–{_count(scans[-1])} test scans" if scans else "the test scans")
    boot = f"{_count(n_boot)} resamples of the test scans" if n_boot else "test scans resampled"
    return [f"AUC: test macro AUROC (mean over the findings), {scans_text}, mean over {seeds_text}.",
            f"ΔAUC: method {MINUS} {ref_name} on the same scans and seeds, with a paired bootstrap 95% CI "
            f"({boot}).",
            "Added: trainable parameters added to the frozen backbone, % of its parameters."]


def main_table(summary: pd.DataFrame, reference: str = "lora", n_boot: int | None = None,
               caption: str | None = None, label: str = "tab:main") -> PaperTable:
    """The paper's main table across backbones, from ``analysis.summary.paper_table``.

    One compared arm (LoRA vs MoLRE): one row per backbone with Backbone, Family, Params (M), Added (%) and AUC
    of each method and ΔAUC [95% CI]; bold marks the best AUC of the row. Several arms (e.g. MoLRE with separate
    and shared A): one row per backbone and method (the reference first), so the table stays printable; bold
    marks the best AUC of each backbone.
    """
    if summary.empty:
        raise ValueError("main_table: the summary has no row (no backbone with a finished reference and arm)")
    arms = list(dict.fromkeys(summary["arm"]))
    ref_name = method_name(reference)
    caption = caption or (f"Test macro AUROC of {', '.join([ref_name, *map(method_name, arms)])} across backbones.")
    if len(arms) > 1:
        return _main_table_long(summary, reference, arms, n_boot, caption, label)
    arm, s, r = arms[0], _slug(arms[0]), _slug(reference)
    data = pd.DataFrame({
        "backbone": summary["backbone"], "family": summary["family"], "params_m": summary["params_M"],
        f"added_pct_{r}": summary["added_pct_reference"], f"added_pct_{s}": summary["added_pct_arm"],
        f"auc_{r}": summary["auc_reference"], f"auc_{s}": summary["auc_arm"],
        f"delta_auc_{s}": summary["delta_auc"], f"delta_ci_low_{s}": summary["delta_ci_low"],
        f"delta_ci_high_{s}": summary["delta_ci_high"], "n_seeds": summary["n_seeds"],
        "n_test_scans": summary.get("n_test_scans", np.nan)}).reset_index(drop=True)
    names = [(r, ref_name), (s, method_name(arm))]
    columns = [Column("backbone", "Backbone", "text"), Column("family", "Family", "text"),
               Column("params_m", "Params (M)", digits=1)]
    columns += [Column(f"added_pct_{k}", _stacked(n), digits=2, group="Added (%)") for k, n in names]
    columns += [Column(f"auc_{k}", _stacked(n), digits=3, group="AUC") for k, n in names]
    columns.append(Column(f"delta_auc_{s}", _delta_header(method_name(arm), ref_name), "ci", group="ΔAUC [95% CI]",
                          keys=(f"delta_auc_{s}", f"delta_ci_low_{s}", f"delta_ci_high_{s}")))
    notes = _main_notes(data, ref_name, n_boot, ["n_seeds"]) + ["Bold: best AUC in the row."]
    return PaperTable(data, columns, caption, label, notes, bold=_bold_max(data, [f"auc_{r}", f"auc_{s}"]))


def _main_table_long(summary: pd.DataFrame, reference: str, arms: list[str], n_boot: int | None, caption: str,
                     label: str) -> PaperTable:
    ref_name = method_name(reference)
    rows, bold, space = [], set(), set()
    for backbone, group in summary.groupby("backbone", sort=False):
        first = group.iloc[0]
        block = [{"backbone": backbone, "family": first["family"], "params_m": first["params_M"], "arm": reference,
                  "method": ref_name, "added_pct": first["added_pct_reference"], "auc": first["auc_reference"],
                  "n_test_scans": first.get("n_test_scans", np.nan)}]
        for arm in arms:
            for _, row in group[group["arm"] == arm].iterrows():
                block.append({"backbone": "", "family": "", "params_m": np.nan, "arm": arm, "method": method_name(arm),
                              "added_pct": row["added_pct_arm"], "auc": row["auc_arm"], "delta_auc": row["delta_auc"],
                              "delta_ci_low": row["delta_ci_low"], "delta_ci_high": row["delta_ci_high"],
                              "n_seeds": row["n_seeds"], "n_test_scans": row.get("n_test_scans", np.nan)})
        aucs = np.array([b["auc"] for b in block], dtype=float).round(3)
        if np.isfinite(aucs).sum() > 1:
            bold |= {(len(rows) + i, "auc") for i, v in enumerate(aucs) if v == np.nanmax(aucs)}
        if rows:
            space.add(len(rows))
        rows += block
    data = pd.DataFrame(rows)
    data["backbone_key"] = data["backbone"].replace("", np.nan).ffill()  # machine-readable: every row names it
    columns = [Column("backbone", "Backbone", "text"), Column("family", "Family", "text"),
               Column("params_m", "Params (M)", digits=1, missing=""), Column("method", "Method", "text"),
               Column("added_pct", "Added (%)", digits=2), Column("auc", "AUC", digits=3),
               Column("delta_auc", f"ΔAUC vs {ref_name} [95% CI]", "ci",
                      keys=("delta_auc", "delta_ci_low", "delta_ci_high"))]
    notes = _main_notes(data, ref_name, n_boot, ["n_seeds"]) + ["Bold: best AUC of each backbone."]
    return PaperTable(data, columns, caption, label, notes, bold=bold, space_before=space)


def category_table(deltas: pd.DataFrame, name_a: str, name_b: str, significance: pd.DataFrame | None = None,
                   n_scans: int | None = None, n_boot: int | None = None, caption: str | None = None,
                   label: str = "tab:categories", alpha: float = 0.05) -> PaperTable:
    """One row per category (and "all"): findings, mean AUC of A and B, ΔAUC (B − A) [95% CI], and with
    ``significance`` (``compare_runs(...).attrs["categories"]``) positives and significant findings (Holm).

    ``deltas``: ``analysis.summary.paired_category_delta`` (category, n_findings, auc_a, auc_b, delta_auc,
    ci_low, ci_high).
    """
    data = deltas.copy()
    if significance is not None:
        keep = [c for c in ("category", "n_pos", "b_better_holm", "a_better_holm") if c in significance]
        data = data.merge(significance[keep], on="category", how="left")
    data.insert(1, "category_name", [c.capitalize() if c != "all" else "All findings" for c in data["category"]])
    columns = [Column("category_name", "Category", "text"), Column("n_findings", "Findings", "int")]
    if "n_pos" in data:
        columns.append(Column("n_pos", "Positives", "int"))
    columns += [Column("auc_a", _stacked(name_a), group="AUC"), Column("auc_b", _stacked(name_b), group="AUC"),
                Column("delta_auc", _delta_header(name_b, name_a), "ci", group="ΔAUC [95% CI]",
                       keys=("delta_auc", "ci_low", "ci_high"))]
    if "b_better_holm" in data:
        columns += [Column("b_better_holm", _stacked(name_b), "int", group=f"Better (Holm p < {alpha:g})"),
                    Column("a_better_holm", _stacked(name_a), "int", group=f"Better (Holm p < {alpha:g})")]
    scans = f"n = {_count(n_scans)} test scans" if n_scans else "the test scans"
    boot = f"{_count(n_boot)} resamples of the scans" if n_boot else "scans resampled"
    notes = [f"AUC: mean test AUROC of the category's findings with both classes present, {scans}.",
             f"ΔAUC: {name_b} {MINUS} {name_a}, paired bootstrap 95% CI ({boot})."]
    if "b_better_holm" in data:
        notes.append(f"Better: findings with a significantly higher AUC under that method (paired DeLong test, "
                     f"Holm-adjusted p < {alpha} over all findings tested).")
    notes.append("Bold: best AUC in the row.")
    midrule = {i for i, c in enumerate(data["category"]) if c == "all"}
    caption = caption or f"Per-category test AUROC: {name_b} vs {name_a}."
    return PaperTable(data, columns, caption, label, notes, bold=_bold_max(data, ["auc_a", "auc_b"]),
                      midrule_before=midrule)


def findings_table(compare: pd.DataFrame, name_a: str, name_b: str, top: int = 10, n_scans: int | None = None,
                   caption: str | None = None, label: str = "tab:findings",
                   min_positives: int = MIN_POSITIVES) -> PaperTable:
    """The ``top`` findings with the smallest DeLong p (``engine.evaluate.compare_runs`` output): positives,
    AUC of A and B, ΔAUC (B − A) [95% CI], p and Holm-adjusted p."""
    from molre_lib.data.taxonomy import FINDINGS

    names = {f.key: f.name for f in FINDINGS}
    tested = compare[compare["p"].notna()].sort_values(["p", "finding"])
    data = tested.head(top).reset_index(drop=True)
    rare = data["n_pos"].to_numpy(dtype=float) < min_positives
    data.loc[rare, ["ci_low", "ci_high"]] = np.nan  # the forest plots' rule: no interval from so few positives
    data.insert(1, "finding_name", [names.get(k, k) for k in data["finding"]])
    data.insert(2, "category_name", [str(c).capitalize() for c in data.get("category", [""] * len(data))])
    columns = [Column("finding_name", "Finding", "text"), Column("category_name", "Category", "text"),
               Column("n_pos", "Positives", "int"),
               Column("auc_a", _stacked(name_a), group="AUC"), Column("auc_b", _stacked(name_b), group="AUC"),
               Column("delta_auc", "ΔAUC [95% CI]", "ci", keys=("delta_auc", "ci_low", "ci_high")),
               Column("p", "p", "p"), Column("p_holm", "p\n(Holm)", "p")]
    scans = f"n = {_count(n_scans)} test scans" if n_scans else "the test scans"
    notes = [f"Paired DeLong test per finding on the same {scans}; ΔAUC = {name_b} {MINUS} {name_a} with its DeLong "
             f"95% CI; p (Holm): adjusted over the {int(compare['p'].notna().sum())} findings with at least two "
             "positives and two negatives.", "Bold: best AUC in the row."]
    if rare.any():
        notes.insert(1, _rare_note(min_positives))
    caption = caption or f"The {len(data)} findings with the smallest DeLong p: {name_b} vs {name_a}."
    return PaperTable(data, columns, caption, label, notes, bold=_bold_max(data, ["auc_a", "auc_b"]),
                      size="\\footnotesize", tabcolsep="3pt")


def _rare_note(min_positives: int) -> str:
    return (f"No CI for findings with fewer than {min_positives} test positives: a bootstrap over so few scans "
            "cannot estimate one.")


def auc_summary_table(summary: pd.DataFrame, methods: dict[str, str], n_scans: int | None = None,
                      n_boot: int | None = None, caption: str | None = None, label: str = "tab:auc_summary") -> PaperTable:
    """Macro, micro and per-category mean AUROC of each run (03's ``summary.tex``), one row per metric.

    Args:
        summary: long table with columns run, metric (``macro_auc``, ``micro_auc``, ``category:<name>``), value,
            ci_low, ci_high, n_findings (03 concatenates ``evaluate_run(...)["summary"]`` of its runs).
        methods: run name -> method name (``analysis.summary.method_names``), in column order.
    """
    _need(summary, ["run", "metric", "value", "ci_low", "ci_high", "n_findings"], "AUC summary")
    metrics = list(dict.fromkeys(summary["metric"]))
    data = pd.DataFrame({"metric": metrics})
    data["metric_name"] = [{"macro_auc": "Macro AUC", "micro_auc": "Micro AUC"}.get(m, m.split(":", 1)[-1].capitalize())
                           for m in metrics]
    first = summary[summary["run"] == next(iter(methods))].set_index("metric")
    data["n_findings"] = [first["n_findings"].get(m, np.nan) for m in metrics]
    columns = [Column("metric_name", "Metric", "text"), Column("n_findings", "Findings", "int")]
    for run, name in methods.items():
        part = summary[summary["run"] == run].set_index("metric").reindex(metrics)
        r = _slug(run)
        for key in ("value", "ci_low", "ci_high"):
            data[f"{key}_{r}"] = part[key].to_numpy(dtype=float)
        columns.append(Column(f"value_{r}", _stacked(name), "ci", group="AUC [95% CI]", point_signed=False,
                              keys=(f"value_{r}", f"ci_low_{r}", f"ci_high_{r}")))
    scans = f"n = {_count(n_scans)} test scans" if n_scans else "the test scans"
    boot = f"{_count(n_boot)} resamples" if n_boot else "resampled"
    notes = [f"Macro: mean of the per-finding AUROCs with both classes present; micro: all (scan, finding) pairs "
             f"pooled; category rows: mean over the category's findings. {scans}; 95% CI from a bootstrap over scans "
             f"({boot}). Findings: findings with an AUC."]
    caption = caption or f"Test AUROC summary: {', '.join(methods.values())}."
    midrule = {2} if len(metrics) > 2 else set()
    return PaperTable(data, columns, caption, label, notes, midrule_before=midrule)


def per_finding_table(per_finding: dict[str, pd.DataFrame], methods: dict[str, str],
                      min_positives: int = MIN_POSITIVES, n_scans: int | None = None, caption: str | None = None,
                      label: str = "tab:per_finding_auc") -> PaperTable:
    """Per-finding AUROC [95% CI] of each run side by side (03's ``per_finding_auc.tex``), taxonomy order.

    Args:
        per_finding: run name -> ``evaluate_run(...)["per_finding"]`` (finding, auc, ci_low, ci_high, n_pos).
        methods: run name -> method name, in column order.
        min_positives: findings with fewer test positives print the AUC without a CI (the rule of the forest
            plots, ``plots.MIN_POSITIVES``).
    """
    from molre_lib.data.taxonomy import CATEGORY_OF
    from molre_lib.plots.names import finding_name

    first = per_finding[next(iter(methods))].set_index("finding")
    keys = list(first.index)
    data = pd.DataFrame({"finding": keys, "finding_name": [finding_name(k) for k in keys],
                         "category_name": [CATEGORY_OF.get(k, "").capitalize() for k in keys],
                         "n_pos": first["n_pos"].to_numpy(dtype=float)})
    rare = data["n_pos"].to_numpy() < min_positives
    columns = [Column("finding_name", "Finding", "text"), Column("category_name", "Category", "text"),
               Column("n_pos", "Positives", "int")]
    for run, name in methods.items():
        part = per_finding[run].set_index("finding").reindex(keys)
        r = _slug(run)
        data[f"auc_{r}"] = part["auc"].to_numpy(dtype=float)
        data[f"ci_low_{r}"] = np.where(rare, np.nan, part["ci_low"].to_numpy(dtype=float))
        data[f"ci_high_{r}"] = np.where(rare, np.nan, part["ci_high"].to_numpy(dtype=float))
        columns.append(Column(f"auc_{r}", _stacked(name), "ci", group="AUC [95% CI]", point_signed=False,
                              keys=(f"auc_{r}", f"ci_low_{r}", f"ci_high_{r}")))
    space = {i for i in range(1, len(data)) if data["category_name"].iloc[i] != data["category_name"].iloc[i - 1]}
    scans = f"n = {_count(n_scans)} test scans" if n_scans else "the test scans"
    notes = [f"Test AUROC per finding, {scans}; 95% CI from a bootstrap over scans.", _rare_note(min_positives),
             "--: no AUC (no positive or no negative scan)."]
    caption = caption or f"Per-finding test AUROC: {', '.join(methods.values())}."
    middle = min(space, key=lambda i: abs(i - len(data) / 2)) if space else None  # 75 rows: two floats
    return PaperTable(data, columns, caption, label, notes, space_before=space, size="\\scriptsize",
                      tabcolsep="3pt", split_before={middle} if middle and len(data) > 40 else set())


def _need(df: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise KeyError(f"{what}: missing column(s) {missing}; has {list(df.columns)}")
