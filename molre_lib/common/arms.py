"""What names an arm of a sweep: the adapter, plus every grid key that varies within it.

Runs are paired by backbone, adapter and seed; any other grid key (``SHARED_A``, ``LORA_ALPHA``, ...) that
takes more than one value for one adapter splits it into arms. The runs table (``analysis.summary``) and
the tuning figures (``plots.tuning``) both label arms by this one rule, so it sits below both.
"""
from __future__ import annotations

import pandas as pd

FIXED_GRID_KEYS = ("BACKBONE", "ADAPTER", "SEED")  # what pairs runs; any other varied grid key makes an arm


def arm_labels(table: pd.DataFrame, grid: list[str]) -> pd.Series:
    """The adapter, plus ``KEY=value`` for each grid key (or sweep setting) that varies within that adapter
    (``table`` has ``adapter`` and the ``grid`` columns: a runs table, or a trials table given its ADAPTER)."""
    adapter = table["adapter"]
    if "ADAPTER" in table:  # a run that never wrote config.json still has its grid value
        adapter = adapter.fillna(table["ADAPTER"])
    adapter = adapter.fillna("").astype(str)
    arms = adapter.copy()
    for key in (k for k in grid if k not in FIXED_GRID_KEYS):
        varies = table[key].astype(str).groupby(adapter).transform("nunique") > 1
        arms = arms.where(~varies, arms + f" {key}=" + table[key].astype(str))
    return arms
