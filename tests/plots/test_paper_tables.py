"""Publication tables: paper method names, one-cell CIs, bold best values, machine-named CSV, and LaTeX that
compiles with the real engine (pdflatex from texlive-latex-base + booktabs from texlive-latex-recommended)."""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from molre_lib import plots
from molre_lib.data.taxonomy import CATEGORIES, CATEGORY_OF, FINDING_KEYS
from molre_lib.stats.delong import paired_delong


def _summary(arms=("molre",), backbones=(("dinov3_vitb16", "general-2D", 85.6), ("phantom_vit", "demo", 1.8))):
    """Rows as analysis.summary.paper_table returns them."""
    rows = []
    for i, (backbone, family, params) in enumerate(backbones):
        for j, arm in enumerate(arms):
            delta = [0.0123, -0.0104][i] + 0.01 * j
            rows.append(dict(backbone=backbone, family=family, params_M=params, reference="lora", arm=arm,
                             added_pct_reference=0.516, added_pct_arm=0.473 + j, trainable_pct_reference=0.6,
                             trainable_pct_arm=0.6, auc_reference=0.70, auc_arm=0.70 + delta, n_test_scans=60,
                             n_seeds=3, delta_auc=delta, delta_ci_low=delta - 0.0163, delta_ci_high=delta + 0.0147))
    return pd.DataFrame(rows)


def _comparison():
    rng = np.random.default_rng(0)
    y = (rng.random((150, 75)) < 0.2).astype(float)
    a, b = y * 0.5 + rng.random(y.shape), y * 0.7 + rng.random(y.shape)
    df = paired_delong(y, a, b, finding_keys=FINDING_KEYS)
    df.insert(1, "category", [CATEGORY_OF[k] for k in df["finding"]])
    return df


def _categories():
    rows = [dict(category=c, n_findings=10, auc_a=0.70, auc_b=0.72, delta_auc=0.02, ci_low=-0.01, ci_high=0.05)
            for c in [*CATEGORIES, "all"]]
    return pd.DataFrame(rows)


def test_method_names_follow_the_paper():
    assert plots.method_name("lora") == "LoRA"
    assert plots.method_name("molre") == "MoLRE"
    assert plots.method_name("molre SHARED_A=True") == "MoLRE (shared A)"
    assert plots.method_name("molre SHARED_A=False") == "MoLRE"  # separate A is MoLRE's default
    assert plots.method_name("molre", shared_a=True) == "MoLRE (shared A)"
    assert plots.method_name("molre RANK=2") == "MoLRE (rank 2)"


def test_main_table_has_human_headers_one_cell_ci_and_bold_best(tmp_path):
    table = plots.main_table(_summary(), n_boot=1000)
    shown = table.display_frame()
    assert list(shown.columns) == ["Backbone", "Family", "Params (M)", "Added (%): LoRA", "Added (%): MoLRE",
                                   "AUC: LoRA", "AUC: MoLRE", "ΔAUC [95% CI]: MoLRE − LoRA"]
    assert shown.loc[0, "ΔAUC [95% CI]: MoLRE − LoRA"] == "+0.012 [−0.004, 0.027]"
    assert shown.loc[1, "ΔAUC [95% CI]: MoLRE − LoRA"] == "−0.010 [−0.027, 0.004]"
    assert table.bold == {(0, "auc_molre"), (1, "auc_lora")}
    csv_path, tex_path = plots.save_paper_table(table, tmp_path, "main")
    csv = pd.read_csv(csv_path)  # machine names, full precision
    assert {"backbone", "params_m", "auc_lora", "auc_molre", "delta_auc_molre", "delta_ci_low_molre"} <= set(csv)
    assert csv.loc[0, "delta_auc_molre"] == pytest.approx(0.0123)
    tex = tex_path.read_text()
    assert "\\toprule" in tex and "\\caption{" in tex and "\\label{tab:main}" in tex
    assert "\\textbf{0} & \\textbf{.712}" in tex  # bold best, split at the decimal point for alignment
    assert "n = 60 test scans, mean over 3 seeds" in tex and "1,000 resamples" in tex
    body = "\n".join(line for line in tex.splitlines() if not line.startswith("%"))
    assert "_" not in body.replace("\\_", "")  # machine names never leak unescaped


def test_main_table_with_several_arms_has_one_row_per_method():
    table = plots.main_table(_summary(arms=("molre SHARED_A=False", "molre SHARED_A=True")))
    shown = table.display_frame()
    assert list(shown["Method"]) == ["LoRA", "MoLRE", "MoLRE (shared A)"] * 2
    assert list(shown["Backbone"]) == ["dinov3_vitb16", "", "", "phantom_vit", "", ""]
    assert list(table.data["backbone_key"]) == ["dinov3_vitb16"] * 3 + ["phantom_vit"] * 3
    assert shown.loc[0, "ΔAUC vs LoRA [95% CI]"] == "–"
    assert table.bold == {(2, "auc"), (3, "auc"), (5, "auc")}  # best of each backbone; phantom_vit: a tie at 0.700


def test_findings_table_ranks_by_delong_p():
    cmp = _comparison()
    table = plots.findings_table(cmp, "LoRA", "MoLRE", top=5, n_scans=150)
    assert len(table.data) == 5
    assert list(table.data["p"]) == sorted(cmp["p"].dropna())[:5]
    shown = table.display_frame()
    assert {"Finding", "Category", "Positives", "p", "p (Holm)"} <= set(shown.columns)
    assert shown["Finding"].iloc[0][0].isupper()  # the taxonomy's display name, not the key
    assert all(p == "<0.001" or p.startswith("0.") for p in shown["p"])


@pytest.fixture(scope="module")
def pdflatex():
    exe = shutil.which("pdflatex")
    if exe is None:
        pytest.fail("pdflatex not found: install texlive-latex-base and texlive-latex-recommended (.ci/run does)")
    return exe


def _compile(pdflatex, tmp_path, tables: dict) -> str:
    for name, table in tables.items():
        plots.save_paper_table(table, tmp_path, name)
    body = "\n".join(f"\\input{{{name}}}" for name in tables)
    # a one-column paper's text width (6.5 in); every table must fit it
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs}\n"
                                      "\\usepackage[margin=1in]{geometry}\n\\begin{document}\n"
                                      f"{body}\n\\end{{document}}\n")
    run = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:]
    log = (tmp_path / "doc.log").read_text(errors="replace")
    assert "LaTeX Error" not in log and "Undefined control sequence" not in log
    assert "Overfull \\hbox" not in log, "a table is wider than the 6.5 in text width"
    text = subprocess.run(["pdftotext", "-layout", "doc.pdf", "-"], cwd=tmp_path, capture_output=True,
                          text=True, check=True).stdout
    return text


def test_every_table_compiles_with_pdflatex(pdflatex, tmp_path):
    cmp = _comparison()
    significance = pd.DataFrame([dict(category=c, n_pos=90, b_better_holm=2, a_better_holm=0)
                                 for c in [*CATEGORIES, "all"]])
    tables = {"main": plots.main_table(_summary(), n_boot=1000),
              "main_arms": plots.main_table(_summary(arms=("molre SHARED_A=False", "molre SHARED_A=True"))),
              "categories": plots.category_table(_categories(), "LoRA", "MoLRE (shared A)", significance, n_scans=150),
              "findings": plots.findings_table(cmp, "LoRA", "MoLRE", top=10, n_scans=150)}
    text = _compile(pdflatex, tmp_path, tables)
    for needle in ("Table 1:", "Table 4:", "Params (M)", "Added (%)", "MoLRE (shared A)", "95% CI", "(Holm)",
                   "All findings", "Hemorrhage"):
        assert needle in text, needle
    # the one-cell CI, typeset with math minus signs
    assert "+0.012 [−0.004, 0.027]" in text.replace("\u2212", "−")


def _runs_03():
    """03's inputs for its two runs: evaluate_run's per-finding tables and summaries (60 scans, rare findings)."""
    from molre_lib.stats.auroc import auc_report

    rng = np.random.default_rng(4)
    y = (rng.random((60, 75)) < rng.uniform(0.01, 0.25, 75)).astype(float)
    reports = {run: auc_report(y, y * shift + rng.random(y.shape), n_boot=50, finding_keys=FINDING_KEYS)
               for run, shift in (("phantom_vit_lora_seed0", 0.3), ("phantom_vit_molre_seed0", 0.4))}
    summary = pd.concat({run: r["summary"].set_index("metric") for run, r in reports.items()},
                        names=["run", "metric"]).reset_index()
    methods = {"phantom_vit_lora_seed0": "LoRA", "phantom_vit_molre_seed0": "MoLRE"}
    return {run: r["per_finding"] for run, r in reports.items()}, summary, methods


def test_03_summary_and_per_finding_tables_are_paper_tables(pdflatex, tmp_path):
    per_finding, summary, methods = _runs_03()
    tables = {"summary": plots.auc_summary_table(summary, methods, n_scans=60, n_boot=50),
              "per_finding_auc": plots.per_finding_table(per_finding, methods, n_scans=60)}
    shown = tables["per_finding_auc"].display_frame()
    lora = per_finding["phantom_vit_lora_seed0"].set_index("finding")
    assert shown["Finding"].iloc[0] == "Intracranial hemorrhage (any)"  # findings.csv names, taxonomy order
    for row, key in zip(shown.itertuples(), FINDING_KEYS):
        cell = row[4]  # AUC [95% CI]: LoRA
        if np.isnan(lora.loc[key, "auc"]):
            assert cell == "–"
        elif lora.loc[key, "n_pos"] < plots.MIN_POSITIVES:
            assert "[" not in cell  # rare: the AUC alone
        else:
            assert cell.startswith(f"{lora.loc[key, 'auc']:.3f} [")  # unsigned AUC, its CI in the cell
    assert list(tables["summary"].display_frame()["Metric"][:3]) == ["Macro AUC", "Micro AUC", "Hemorrhage"]
    text = " ".join(_compile(pdflatex, tmp_path, tables).split())  # pdftotext breaks lines at the column edge
    for name in tables:
        tex = (tmp_path / f"{name}.tex").read_text()
        assert "\\toprule" in tex and "ci\\_low" not in tex and "seed0" not in tex
        assert not re.search(r"\d{2,}\.000", tex)  # counts are integers ("70", not "70.000")
    assert "Hematocrit (fluid-blood) level" in text and "No CI for findings with fewer than 5" in text
    assert "Float too large" not in (tmp_path / "doc.log").read_text(errors="replace")  # 75 rows fit a page
