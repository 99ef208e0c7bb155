"""notebooks/00_labels.ipynb under papermill on synthetic phantom reports (truth as gold), tiny sizes."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

papermill = pytest.importorskip("papermill")

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_00_labels_writes_labels_agreement_figure_and_sample(tmp_path):
    (tmp_path / ".molre-root").write_text("")
    out, figures = tmp_path / "labels", tmp_path / "figures"
    papermill.execute_notebook(str(ROOT / "notebooks/00_labels.ipynb"), str(tmp_path / "00_labels.ipynb"),
                               parameters={"N_SYNTHETIC": 40, "N_BOOT": 20, "SAMPLE": 8, "OUT_DIR": str(out),
                                           "FIGURES_DIR": str(figures)},
                               kernel_name="molre", cwd=str(tmp_path), progress_bar=False)
    labels = pd.read_csv(out / "labels.csv")
    assert len(labels) == 40 and (out / "labels.evidence.csv").is_file()
    table = pd.read_csv(out / "agreement.csv")
    assert set(table["mode"]) == {"3-class", "u->pos", "u->neg"} and "all" in set(table["name"])
    assert len(pd.read_csv(out / "sample.csv")) == 8
    assert (figures / "label_agreement.png").is_file() and (out / "disagreements.csv").is_file()
