"""What a reader sees instead of a machine key: finding names from ``findings.csv``, method names from the paper.

CSV files keep the keys (``intracranial_hemorrhage_fluid_level``, ``phantom_vit_molre_seed0``); figures, LaTeX and
HTML tables show :func:`finding_name` ("Hematocrit (fluid-blood) level") and :func:`~molre_lib.plots.paper_tables.
method_name` ("MoLRE"). A figure row label is at most :data:`FIGURE_NAME_CHARS` characters: a longer name loses its
parenthetical aside there ("Descending transtentorial herniation"); tables print the full name.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

FIGURE_NAME_CHARS = 32  # 7-pt row labels of a two-panel, 7-in-wide figure stay under ~1.9 in


def _names() -> dict[str, str]:
    from molre_lib.data.taxonomy import FINDINGS

    return {f.key: f.name for f in FINDINGS}


def finding_name(key: str, short: bool = False) -> str:
    """The taxonomy's name of a finding key (the key itself when the taxonomy does not know it).

    ``short=True``: the figure label (a name over :data:`FIGURE_NAME_CHARS` characters drops its "(...)" aside).
    """
    name = _names().get(str(key), str(key))
    if short and len(name) > FIGURE_NAME_CHARS:
        name = re.sub(r"\s*\([^)]*\)", "", name).strip() or name
    return name


def finding_names(keys: Iterable[str], short: bool = False) -> list[str]:
    """:func:`finding_name` of each key, in order."""
    return [finding_name(k, short) for k in keys]
