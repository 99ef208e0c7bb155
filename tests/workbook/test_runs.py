"""workbook.runs.positive_examples reads labels from the manifest rows: no scan is loaded or preprocessed."""
from __future__ import annotations

import pandas as pd
import pytest
from torch.utils.data import Subset

from molre_lib.data.dataset import HeadCTDataset
from molre_lib.data.taxonomy import FINDING_KEYS
from molre_lib.workbook.runs import positive_examples


@pytest.fixture
def dataset(tmp_path):
    """Six manifest rows whose volume files do not exist: loading any scan would raise."""
    a, b = FINDING_KEYS[0], FINDING_KEYS[5]
    df = pd.DataFrame({"scan_id": [f"s{i}" for i in range(6)], "patient_id": [f"p{i}" for i in range(6)],
                       "path": [f"missing/s{i}.nii.gz" for i in range(6)], "split": "test",
                       a: ["1", "0", "1", "1", "", "0"], b: ["0", "0", "0", "0", "0", "0"]})
    ds = HeadCTDataset(df, root=tmp_path)
    with pytest.raises(Exception):
        ds[0]
    return ds, a, b


def test_first_positives_per_finding_without_loading_scans(dataset):
    ds, a, b = dataset
    table = positive_examples(ds, [a, b], n_per_finding=2)
    assert table.to_dict("records") == [{"finding": a, "index": 0, "scan_id": "s0"},
                                        {"finding": a, "index": 2, "scan_id": "s2"}]
    assert table.attrs["missing"] == [b]


def test_subset_indices_are_positions_in_the_subset(dataset):
    ds, a, _ = dataset
    table = positive_examples(Subset(ds, [1, 3, 5]), [a], n_per_finding=5)
    assert table.to_dict("records") == [{"finding": a, "index": 1, "scan_id": "s3"}]


def test_errors(dataset):
    ds, _, b = dataset
    with pytest.raises(ValueError, match="no scan of this split is positive"):
        positive_examples(ds, [b], 1)
    with pytest.raises(ValueError, match="unknown finding keys"):
        positive_examples(ds, ["not_a_finding"], 1)
