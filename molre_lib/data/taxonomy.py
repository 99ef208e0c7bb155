"""The 75 head-CT findings in six categories, loaded from ``data_manifests/findings.csv``.

The CSV is the single source of truth for finding order: label vectors, manifests, model heads
and reports all use ``FINDING_KEYS`` order. The package reads it through
``molre_lib/resources/findings.csv`` (a symlink to the repository file, so an editable install
and a built wheel both see the same data).
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from importlib import resources

CATEGORIES: list[str] = ["hemorrhage", "infarction", "trauma", "mass", "structural", "chronic"]

# Parent findings whose label is the union of their children (derived, never sampled on their own).
PARENTS: dict[str, list[str]] = {
    "subdural_hematoma": [
        "acute_subdural_hematoma", "subacute_subdural_hematoma", "chronic_subdural_hematoma"],
}


@dataclass(frozen=True)
class Finding:
    """One finding: stable snake_case ``key``, display ``name``, ``category`` and a one-line description."""

    key: str
    name: str
    category: str
    description: str


def _read_findings() -> list[Finding]:
    text = resources.files("molre_lib").joinpath("resources/findings.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    findings, seen = [], set()
    for i, row in enumerate(rows, start=1):
        f = Finding(row["key"].strip(), row["name"].strip(), row["category"].strip(), row["description"].strip())
        if f.category not in CATEGORIES:
            raise ValueError(f"findings.csv row {i}: unknown category {f.category!r} (allowed: {CATEGORIES})")
        if f.key in seen:
            raise ValueError(f"findings.csv row {i}: duplicate key {f.key!r}")
        seen.add(f.key)
        findings.append(f)
    return findings


FINDINGS: list[Finding] = _read_findings()
FINDING_KEYS: list[str] = [f.key for f in FINDINGS]
CATEGORY_OF: dict[str, str] = {f.key: f.category for f in FINDINGS}
INDEX_OF: dict[str, int] = {k: i for i, k in enumerate(FINDING_KEYS)}
# "Any intracranial hemorrhage" is the union of every other hemorrhage-category finding.
PARENTS["intracranial_hemorrhage"] = [
    k for k in FINDING_KEYS if CATEGORY_OF[k] == "hemorrhage" and k not in ("intracranial_hemorrhage",)
    and k not in PARENTS]


def keys_in(category: str) -> list[str]:
    """Finding keys of one category, in taxonomy order."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r} (allowed: {CATEGORIES})")
    return [f.key for f in FINDINGS if f.category == category]


def category_index() -> list[int]:
    """Category index (into ``CATEGORIES``) of every finding, in taxonomy order."""
    return [CATEGORIES.index(f.category) for f in FINDINGS]
