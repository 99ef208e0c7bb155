"""The labeller's phrase lists: ``data_manifests/report_phrases.yaml`` read, checked and compiled to regexes.

One editable file holds every finding's match / ignore phrases, the ConText-style modifier triggers (negated,
uncertain, historical, acute / subacute / chronic), pseudo-triggers, scope terminators, section headers and the
whole-report statements that imply negatives, so a site adds its phrasing without code. Unknown keys and finding
keys that are not in ``findings.csv`` raise ``ValueError`` with one line naming the file and the key.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

from molre_lib.data.taxonomy import FINDING_KEYS

MODIFIERS = ("negated", "uncertain", "historical", "acute", "subacute", "chronic")
AGES = ("acute", "subacute", "chronic")
_TOP_KEYS = {"version", "spellings", "sections", "modifiers", "implied", "groups", "findings"}
_MOD_KEYS = set(MODIFIERS) | {"pseudo", "terminate"}
_FINDING_KEYS = {"match", "ignore", "acute", "age"}
_SECTION_KEYS = {"findings", "impression", "ignored"}
# Between the words of a phrase, one side or size word may stand ("acute left subdural", "blood in the right
# maxillary sinus"), so the phrase file need not list every laterality.
FILLER_WORDS = ("left", "right", "bilateral", "both", "small", "large", "tiny", "mild", "moderate", "marked",
                "severe", "minimal", "trace")
_FILLER = r"(?:(?:" + "|".join(FILLER_WORDS) + r")[\s\-]+)?"


@dataclass(frozen=True)
class Trigger:
    """A compiled modifier trigger: ``kind`` (a MODIFIERS name, 'pseudo' or 'terminate'), direction, the phrase."""

    kind: str
    direction: str            # "before" (trigger precedes the finding) | "after" | "none" (pseudo / terminate)
    phrase: str
    regex: re.Pattern


@dataclass(frozen=True)
class FindingRules:
    """One finding's compiled phrases and flags."""

    key: str
    match: re.Pattern | None          # every match phrase in one alternation, longest first (None: no phrases)
    ignore: re.Pattern | None
    acute: bool = False               # a historical mention is not this study's finding
    age: dict[str, str | None] = field(default_factory=dict)   # age -> finding key, or None (leave unlabelled)


@dataclass(frozen=True)
class Phrases:
    """Everything the labeller reads from the phrase file, compiled."""

    source: str
    findings: dict[str, FindingRules]
    triggers: list[Trigger]
    windows: dict[str, int]
    headers: dict[str, str]                              # header text (lower case) -> findings|impression|ignored
    header_regex: re.Pattern
    implied: list[tuple[str, re.Pattern, list[str]]]     # (phrase, regex, findings it negates)
    groups: dict[str, tuple[re.Pattern, list[str]]] = field(default_factory=dict)  # name -> (regex, members)


def compile_phrase(phrase: str, spellings: dict[str, str] | None = None) -> re.Pattern:
    """One phrase -> a case-insensitive regex (word boundaries, flexible spaces / hyphens, plural, ``*`` suffix,
    one optional FILLER_WORDS word between two words).

    >>> bool(compile_phrase("mass effect").search("Mild mass-effect."))
    True
    """
    phrase = str(phrase).strip()
    if phrase.startswith("re:"):
        return re.compile(phrase[3:].strip(), re.IGNORECASE)
    words = re.split(r"[\s\-]+", phrase.lower())
    parts = []
    for i, word in enumerate(words):
        star = word.endswith("*") and len(word) > 1
        body = re.escape(word[:-1] if star else word)
        for stem, variant in (spellings or {}).items():
            body = body.replace(re.escape(stem), variant)
        if star:
            body += r"\w*"
        elif i == len(words) - 1 and word[-1:].isalpha():
            body += r"(?:e?s)?"
        parts.append(body)
    pattern = (r"[\s\-]+" + _FILLER).join(parts)
    left = r"(?<!\w)" if re.match(r"\w", words[0]) else ""
    right = r"(?!\w)" if re.search(r"[\w*]$", words[-1]) else ""
    return re.compile(left + pattern + right, re.IGNORECASE)


def _alternation(phrases: list[str], spellings: dict[str, str]) -> re.Pattern | None:
    """One regex for many phrases; longer phrases first, so at one position the longest one wins."""
    if not phrases:
        return None
    ordered = sorted(set(phrases), key=lambda p: (-len(p), p))
    return re.compile("|".join(f"(?:{compile_phrase(p, spellings).pattern})" for p in ordered), re.IGNORECASE)


def _fail(source: str, where: str, what: str) -> None:
    raise ValueError(f"{source}: {where}: {what}")


def _phrase_list(source: str, where: str, value) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        _fail(source, where, "must be a list of phrases ([a, b, c])")
    if any(isinstance(v, bool) for v in value):
        _fail(source, where, 'a phrase YAML read as true / false: quote it ("no", "yes", "on", "off")')
    return [str(v) for v in value if str(v).strip()]


def _check_keys(source: str, where: str, got: dict, allowed: set[str]) -> None:
    if not isinstance(got, dict):
        _fail(source, where, f"must be a mapping with keys {sorted(allowed)}")
    unknown = sorted(set(got) - allowed)
    if unknown:
        _fail(source, where, f"unknown key(s) {unknown} (allowed: {sorted(allowed)})")


def parse_phrases(data: dict, source: str = "report_phrases.yaml") -> Phrases:
    """Check and compile the phrase file's content; ``ValueError`` (one line, naming ``source``) on a problem."""
    _check_keys(source, "top level", data, _TOP_KEYS)
    spellings = data.get("spellings") or {}
    _check_keys(source, "spellings", spellings, set(spellings))
    comp = lambda p: compile_phrase(p, spellings)  # noqa: E731

    sections = data.get("sections") or {}
    _check_keys(source, "sections", sections, _SECTION_KEYS)
    headers = {}
    for kind in ("findings", "impression", "ignored"):
        for h in _phrase_list(source, f"sections.{kind}", sections.get(kind)):
            headers[h.lower()] = kind
    names = sorted(headers, key=len, reverse=True)
    header_regex = re.compile(
        r"(?:^|(?<=\n)|(?<=[.!?] )|(?<=[.!?]  ))[ \t]*(?:\d+[.)]\s*)?(" + "|".join(re.escape(h).replace(r"\ ", r"[ \t]+")
                                                                        for h in names)
        + r")[ \t]*(?::|[ \t]-[ \t]|\n|$)", re.IGNORECASE)

    mods = data.get("modifiers") or {}
    _check_keys(source, "modifiers", mods, _MOD_KEYS)
    triggers, windows = [], {}
    for kind in MODIFIERS:
        spec = mods.get(kind) or {}
        _check_keys(source, f"modifiers.{kind}", spec, {"before", "after", "window"})
        windows[kind] = int(spec.get("window", 8))
        for direction in ("before", "after"):
            for p in _phrase_list(source, f"modifiers.{kind}.{direction}", spec.get(direction)):
                triggers.append(Trigger(kind, direction, p, comp(p)))
    for kind in ("pseudo", "terminate"):
        for p in _phrase_list(source, f"modifiers.{kind}", mods.get(kind)):
            triggers.append(Trigger(kind, "none", p, comp(p)))

    implied = []
    for i, item in enumerate(data.get("implied") or [], start=1):
        _check_keys(source, f"implied item {i}", item, {"match", "negative"})
        negative = _phrase_list(source, f"implied item {i}.negative", item.get("negative"))
        for key in negative:
            if key not in FINDING_KEYS:
                _fail(source, f"implied item {i}.negative", f"{key!r} is not a finding key of findings.csv")
        for p in _phrase_list(source, f"implied item {i}.match", item.get("match")):
            implied.append((p, comp(p), negative))

    groups = {}
    for name, item in (data.get("groups") or {}).items():
        _check_keys(source, f"groups.{name}", item, {"match", "members"})
        members = _phrase_list(source, f"groups.{name}.members", item.get("members"))
        for key in members:
            if key not in FINDING_KEYS:
                _fail(source, f"groups.{name}.members", f"{key!r} is not a finding key of findings.csv")
        rx = _alternation(_phrase_list(source, f"groups.{name}.match", item.get("match")), spellings)
        if rx is not None and members:
            groups[f"group:{name}"] = (rx, members)

    found = data.get("findings") or {}
    if not isinstance(found, dict):
        _fail(source, "findings", "must be a mapping finding key -> {match, ignore, acute, age}")
    rules = {}
    for key, spec in found.items():
        if key not in FINDING_KEYS:
            _fail(source, f"findings.{key}", "not a finding key of findings.csv (check the spelling)")
        spec = spec or {}
        _check_keys(source, f"findings.{key}", spec, _FINDING_KEYS)
        age = spec.get("age") or {}
        _check_keys(source, f"findings.{key}.age", age, set(AGES))
        for a, target in age.items():
            if target not in (None, "none") and target not in FINDING_KEYS:
                _fail(source, f"findings.{key}.age.{a}", f"{target!r} is not a finding key (or 'none')")
        rules[key] = FindingRules(
            key=key,
            match=_alternation(_phrase_list(source, f"findings.{key}.match", spec.get("match")), spellings),
            ignore=_alternation(_phrase_list(source, f"findings.{key}.ignore", spec.get("ignore")), spellings),
            acute=bool(spec.get("acute", False)),
            age={a: (None if t in (None, "none") else t) for a, t in age.items()})
    missing = [k for k in FINDING_KEYS if k not in rules]
    if missing:
        _fail(source, "findings", f"{len(missing)} finding key(s) of findings.csv missing, e.g. {missing[:3]} "
                                  "(list each key, with an empty match list if it is never labelled from text)")
    return Phrases(source, rules, triggers, windows, headers, header_regex, implied, groups)


def load_phrases(path: str | Path | None = None) -> Phrases:
    """The packaged phrase file (``path=None``) or a site's own copy; cached per path."""
    return _load(str(path) if path is not None else None)


@lru_cache(maxsize=8)
def _load(path: str | None) -> Phrases:
    if path is None:
        text = resources.files("molre_lib").joinpath("resources/report_phrases.yaml").read_text(encoding="utf-8")
        source = "data_manifests/report_phrases.yaml"
    else:
        source = path
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not UTF-8 text (byte {err.start}); save the phrase file as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "YAML"
        raise ValueError(f"{source}: {where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    return parse_phrases(data or {}, source)
