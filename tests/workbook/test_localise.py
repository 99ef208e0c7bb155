"""Localisation files of runs: summaries at three levels, paired rows against the first model, the JSON the demo
prints, and `molre localise` user errors (exit 2, one line)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from molre_lib.cli import main
from molre_lib.workbook import localise as wl


def _scores() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for s in range(12):
        for f, cat in (("intraparenchymal_hemorrhage", "acute"), ("cerebral_atrophy", "chronic")):
            for method in ("gradcam", "occlusion"):
                for model, lift in (("lora", 0.0), ("molre", 0.1)):
                    e = float(np.clip(rng.normal(0.3 + lift, 0.05), 0, 1))
                    rows.append({"model": model, "method": method, "scan_id": f"s{s}", "finding": f, "category": cat,
                                 "hit": float(e > 0.3), "hit_chance": 0.2, "energy": e, "share": 0.05,
                                 "auroc": 0.6 + e / 4, "mask_voxels": 10, "probability": 0.5})
    return pd.DataFrame(rows)


def test_summaries_files_and_overview(tmp_path):
    scores = _scores()
    settings = wl.LocalisationSettings(bootstrap=100)
    summary, paired = wl.summarise_scores(scores, settings)
    assert set(summary["level"]) == {"all", "category", "finding"}
    top = summary[(summary.level == "all") & (summary.model == "molre") & (summary.method == "gradcam")].iloc[0]
    ref = scores[(scores.model == "molre") & (scores.method == "gradcam")]
    assert top["energy"] == np.float64(ref["energy"].mean()) and top["n_scans"] == 12 and top["n_pairs"] == 24
    all_pairs = paired[(paired.level == "all") & (paired.method == "gradcam")].iloc[0]
    assert all_pairs["reference"] == "lora" and all_pairs["other"] == "molre" and all_pairs["d_energy_lo"] > 0
    result = wl.Localisation(scores, summary, paired, settings, ["lora", "molre"])
    out = wl.write_localisation(result, tmp_path / "out")
    for name in (wl.SCORES, wl.SUMMARY, wl.PAIRED, wl.OVERVIEW):
        assert (out / name).is_file()
    doc = json.loads((out / wl.OVERVIEW).read_text())
    assert doc["n_scans"] == 12 and len(doc["overall"]) == 4 and len(doc["paired"]) == 2
    lines = wl.overview_lines(doc)
    assert len(lines) == 1 + 4 + 2 and "molre - lora" in lines[-1] and "margin 10 mm" in lines[0]


def test_cli_missing_run_is_a_user_error(tmp_path, capsys):
    code = main(["localise", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "config.json not found" in err and "\n" not in err
    assert main(["localise", str(tmp_path), "--out", str(tmp_path / "o"), "--max-scans", "0"]) == 2
