"""Glue between a finished run directory and the analysis notebooks (02–04).

A run directory written by :func:`molre_lib.engine.train.train` holds everything needed to rebuild its
model and its data: ``open_run`` does that, so notebooks read files, never another notebook's memory.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from molre_lib.common.device import resolve_device


@dataclass
class OpenRun:
    run_dir: Path
    model: torch.nn.Module  # adapter loaded, eval mode, on ``device``
    cfg: Any  # TrainConfig
    device: torch.device
    _datasets: dict = field(default_factory=dict, repr=False)  # one preprocessed dataset per split

    @property
    def spec(self) -> Any:
        return self.model.spec

    def dataset(self, split: str, max_scans: Optional[int] = None, indices: Optional[Sequence[int]] = None) -> Dataset:
        """The run's preprocessed ``split``: all scans, the first ``max_scans``, or those at ``indices``."""
        from molre_lib.engine.loaders import build_datasets

        key = (split,)
        if key not in self._datasets:
            self._datasets[key] = build_datasets(self.cfg, self.spec, [split])[split]
        ds = self._datasets[key]
        if indices is not None:
            return Subset(ds, list(indices))
        return Subset(ds, range(min(max_scans, len(ds)))) if max_scans else ds

    def loader(self, split: str, max_scans: Optional[int] = None, indices: Optional[Sequence[int]] = None,
               batch_size: int = 4) -> DataLoader:
        return DataLoader(self.dataset(split, max_scans, indices), batch_size=batch_size, shuffle=False)


def open_run(run_dir: str | Path, device: str = "auto") -> OpenRun:
    """Rebuild a finished run's model (backbone + saved adapters/head) from its directory."""
    from molre_lib.engine.evaluate import load_run_model

    import dataclasses

    from .paths import resolve_path, workbook_root

    run_dir = Path(resolve_path(run_dir))  # relative: against the workbook root, as the notebooks' parameters
    for name in ("config.json", "adapter.safetensors"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir / name} not found: is {run_dir} a finished run of 01_train? "
                                    f"(relative paths are taken from the workbook root {workbook_root()})")
    dev = resolve_device(device)
    model, cfg = load_run_model(run_dir, device=str(dev))
    # a run trained with relative data paths (papermill from the root) opens the same from notebooks/
    fixed = {k: resolve_path(v) for k in ("manifest", "data_root", "cache_dir") if isinstance(v := getattr(cfg, k, None), str) and v}
    cfg = dataclasses.replace(cfg, **fixed) if fixed else cfg
    return OpenRun(run_dir, model, cfg, dev)


def positive_examples(dataset: Dataset, findings: Sequence[str], n_per_finding: int) -> "pd.DataFrame":
    """The first ``n_per_finding`` scans labelled positive for each finding -> (finding, index, scan_id).

    ``dataset`` is a run's split (``OpenRun.dataset``: a HeadCTDataset or a Subset of one); labels and scan ids
    come from its manifest rows, so no scan is loaded or preprocessed. Findings with no positive scan are
    reported (``.attrs["missing"]``); none at all is an error that says so.
    """
    import numpy as np
    import pandas as pd

    from molre_lib.data.taxonomy import FINDING_KEYS

    unknown = [f for f in findings if f not in FINDING_KEYS]
    if unknown:
        raise ValueError(f"unknown finding keys {unknown}; see data_manifests/findings.csv")
    labels, scan_ids = _manifest_labels(dataset)  # (N, 75), N
    rows = [{"finding": f, "index": int(i), "scan_id": scan_ids[int(i)]}
            for f in findings for i in np.flatnonzero(labels[:, FINDING_KEYS.index(f)] == 1)[:n_per_finding]]
    table = pd.DataFrame(rows, columns=["finding", "index", "scan_id"])
    missing = [f for f in findings if f not in set(table["finding"])]
    if table.empty:
        raise ValueError(f"no scan of this split is positive for any of {list(findings)}: "
                         "choose other FINDINGS or another SPLIT")
    table.attrs["missing"] = missing
    return table


def _manifest_labels(dataset: Dataset) -> tuple[Any, list[str]]:
    """(labels (N, 75), scan ids) of a HeadCTDataset or a Subset of one, from its manifest rows."""
    base, index = dataset, None
    if isinstance(dataset, Subset):
        base, index = dataset.dataset, list(dataset.indices)
    if not (hasattr(base, "labels") and hasattr(base, "scan_ids")):
        raise TypeError(f"positive_examples needs a run's dataset (HeadCTDataset or a Subset of one), "
                        f"not {type(base).__name__}")
    index = list(range(len(base.scan_ids))) if index is None else index
    return base.labels[index], [base.scan_ids[i] for i in index]
