"""compare states how many scans each run had and how many are shared, refuses a small overlap unless told,
and records the counts in its CSVs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from molre_lib.cli import main
from molre_lib.engine.evaluate import compare_runs
from molre_lib.engine.run_files import write_predictions


def _run(folder, scan_ids, seed):
    rng = np.random.default_rng(0)
    labels = (rng.random((60, 4)) < 0.4).astype(np.float32)         # the same labels for the same scan in both runs
    idx = [int(s[4:]) for s in scan_ids]
    probs = np.clip(labels[idx] * 0.3 + np.random.default_rng(seed).random((len(idx), 4)) * 0.7, 0, 1)
    folder.mkdir(parents=True)
    write_predictions(folder / "predictions_test.parquet",
                      {"scan_id": scan_ids, "labels": labels[idx], "mask": np.ones_like(labels[idx]), "probs": probs},
                      "test", [f"f{j}" for j in range(4)])
    return folder


@pytest.fixture
def runs(tmp_path):
    ids = [f"scan{i:02d}" for i in range(60)]
    return _run(tmp_path / "a", ids, 1), _run(tmp_path / "b", ids[:30], 2)


def test_partial_overlap_is_refused_with_the_counts(runs, capsys):
    a, b = runs
    with pytest.raises(ValueError) as info:
        compare_runs(a, b)
    assert str(info.value) == ("a has 60 test scans and b 30; only 30 are shared (50% of the larger, below "
                               "--min-shared 0.9): their AUCs would be on other scans than the runs report; compare "
                               "on the shared scans with --min-shared 0.50")
    assert main(["compare", str(a), str(b)]) == 2
    assert capsys.readouterr().err.startswith("molre compare: error: a has 60 test scans and b 30; only 30 are shared")


def test_told_to_compare_the_subset_it_says_so_and_records_the_counts(runs, capsys):
    a, b = runs
    assert main(["compare", str(a), str(b), "--min-shared", "0.5"]) == 0
    assert "b vs a on 30 shared scans (a has 60, b has 30)" in capsys.readouterr().out
    for name in ("compare_per_finding.csv", "compare_categories.csv"):
        table = pd.read_csv(b / "compare_a" / name)
        assert (table["n_scans_a"] == 60).all() and (table["n_scans_b"] == 30).all() and (table["n_shared"] == 30).all()
