"""Rule-based head-CT report labeller: mention -> age / historical -> negation / uncertainty -> sections -> taxonomy.

The CheXpert-labeler recipe (find mentions, classify each as uncertain or negated, aggregate to 1 / 0 / -1 / blank)
with ConText-style triggers and scopes (Harkema et al. 2009), all phrases read from ``report_phrases.yaml``:

1. Sections: FINDINGS and IMPRESSION (and text before any header) are read; CLINICAL HISTORY, INDICATION,
   COMPARISON, TECHNIQUE ... are not ("evaluate for hemorrhage" is a question, not a finding).
2. Mentions: each finding's match phrases; where mentions overlap the longest wins; a mention inside one of the
   finding's ignore phrases does not count.
3. Age: an acute / subacute / chronic word just before (or after) the mention re-maps it where the phrase file
   says so (a chronic lacunar infarct is ``chronic_lacunes``; a chronic subdural is ``chronic_subdural_hematoma``);
   a prior / old acute finding is not this study's finding (rule ``historical``, left unlabelled) unless it is
   negated too ("the previously seen hematoma has resolved" is 0: absent now).
4. Negation and uncertainty: the nearest trigger whose scope covers the mention decides (0 or -1), else 1.
5. A finding's mentions: IMPRESSION wins over FINDINGS; within a section positive > uncertain > negative.
   A group phrase ("extra-axial collection", "herniation") names several findings: negated, it negates each.
6. Whole-report statements ("no acute intracranial abnormality") fill negatives the report does not set otherwise;
   a negated parent negates its unset subtypes; a positive (uncertain) subtype makes its parent positive
   (uncertain): ``subdural_hematoma`` and ``intracranial_hemorrhage`` follow the taxonomy's ``PARENTS``.

Every decision is an evidence row (report id, finding, value, section, span, sentence, rule, trigger).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from molre_lib.data.taxonomy import FINDING_KEYS, PARENTS

from .phrases import AGES, Phrases, load_phrases
from .text import Span, clauses, sentences, split_sections

VALUES = (1, 0, -1)
_RANK = {1: 3, -1: 2, 0: 1}                      # positive > uncertain > negative within one section
_SECTION_RANK = {"impression": 2, "findings": 1}
EVIDENCE_COLUMNS = ["report_id", "finding", "value", "section", "start", "end", "mention", "sentence", "rule",
                    "trigger", "used"]


@dataclass
class Mention:
    """One finding mention in one sentence and what the rules made of it (value None: not this study's finding)."""

    key: str
    value: int | None
    start: int
    end: int
    text: str
    sentence: Span
    rule: str
    trigger: str = ""
    used: bool = False


@dataclass
class ReportLabels:
    """The labels of one report (finding key -> 1 / 0 / -1 / None) and the evidence behind them."""

    labels: dict[str, int | None]
    evidence: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class _Hit:
    kind: str
    direction: str
    start: int
    end: int
    text: str


def _descendants() -> dict[str, list[str]]:
    """Parent -> every finding under it; a parent whose children all sit under another parent sits under it too."""
    out = {p: list(c) for p, c in PARENTS.items()}
    for p, kids in PARENTS.items():
        for q, other in PARENTS.items():
            if q != p and set(other) <= set(kids) and q not in out[p]:
                out[p].append(q)
    return out


DESCENDANTS = _descendants()
# Parents whose descendants include other parents are resolved last (subdural before intracranial hemorrhage).
_PARENT_ORDER = sorted(DESCENDANTS, key=lambda p: sum(q in DESCENDANTS for q in DESCENDANTS[p]))


class Labeller:
    """Labels report text with one compiled phrase file (``Labeller()`` uses the packaged one)."""

    def __init__(self, phrases: Phrases | None = None):
        self.phrases = phrases or load_phrases()
        groups: dict[tuple[str, str], list[str]] = {}
        for t in self.phrases.triggers:
            groups.setdefault((t.kind, t.direction), []).append(t.regex.pattern)
        self._triggers = [(k, d, re.compile("|".join(f"(?:{p})" for p in sorted(ps, key=len, reverse=True)),
                                            re.IGNORECASE)) for (k, d), ps in groups.items()]

    # --- one clause -------------------------------------------------------------------------------------------
    def _targets(self, text: str) -> list[tuple[int, int, str]]:
        cands = []
        every = [(k, r.match, r.ignore) for k, r in self.phrases.findings.items()]
        every += [(k, rx, None) for k, (rx, _) in self.phrases.groups.items()]
        for key, match, ignore in every:
            if match is None:
                continue
            ignored = [m.span() for m in ignore.finditer(text)] if ignore is not None else []
            for m in match.finditer(text):
                if not any(a <= m.start() and m.end() <= b for a, b in ignored):
                    cands.append((m.start(), m.end(), key))
        kept: list[tuple[int, int, str]] = []
        for s, e, key in sorted(cands, key=lambda c: (-(c[1] - c[0]), c[0])):
            if all(e <= ks or s >= ke or (s, e) == (ks, ke) for ks, ke, _ in kept):
                kept.append((s, e, key))
        return sorted(kept)

    def _hits(self, text: str, targets: list[tuple[int, int, str]]) -> list[_Hit]:
        masked = list(text)
        for s, e, _ in targets:                       # a trigger never reaches into a finding's own words
            masked[s:e] = "#" * (e - s)
        masked = "".join(masked)
        cands = [_Hit(k, d, m.start(), m.end(), text[m.start():m.end()])
                 for k, d, rx in self._triggers for m in rx.finditer(masked) if m.end() > m.start()]
        kept: list[_Hit] = []
        for h in sorted(cands, key=lambda h: (-(h.end - h.start), h.start)):
            if all(h.end <= k.start or h.start >= k.end or (h.start, h.end) == (k.start, k.end) for k in kept):
                kept.append(h)                        # one phrase listed before and after ("versus") keeps both
        return sorted(kept, key=lambda h: h.start)

    def _in_scope(self, hit: _Hit, s: int, e: int, text: str, hits: list[_Hit], targets) -> int | None:
        """Distance in words from the trigger to the mention if the mention is in the trigger's scope, else None."""
        if hit.direction == "before" and hit.end <= s:
            gap = text[hit.end:s]
            lo, hi = hit.end, s
        elif hit.direction == "after" and hit.start >= e:
            gap = text[e:hit.start]
            lo, hi = e, hit.start
        else:
            return None
        words = len(re.findall(r"[\w#]+", gap))
        if words > self.phrases.windows[hit.kind]:
            return None
        if any(h.kind == "terminate" and lo <= h.start and h.end <= hi for h in hits):
            return None
        if hit.kind in ("historical",) + AGES:
            if "," in gap or any(lo <= ts and te <= hi for ts, te, _ in targets):
                return None                               # an age / prior word qualifies the next noun phrase only
        return words

    def _clause(self, clause: Span) -> list[Mention]:
        text = clause.text
        targets = self._targets(text)
        if not targets:
            return []
        hits = [h for h in self._hits(text, targets) if h.kind != "pseudo"]
        out = []
        for s, e, key in targets:
            near: dict[str, tuple[int, _Hit]] = {}
            for h in hits:
                if h.kind == "terminate":
                    continue
                d = self._in_scope(h, s, e, text, hits, targets)
                if d is not None and (h.kind not in near or d < near[h.kind][0]):
                    near[h.kind] = (d, h)
            out.extend(self._decide(key, s, e, clause, near))
        return out

    def _decide(self, key: str, s: int, e: int, clause: Span, near: dict) -> list[Mention]:
        mk = lambda k, v, rule, trig="": Mention(k, v, clause.start + s, clause.start + e, clause.text[s:e],  # noqa
                                                 clause, rule, trig)
        if key in self.phrases.groups:                # "no extra-axial collection": each member is negated
            polar = [(near[p][0], p) for p in ("negated", "uncertain") if p in near]
            if polar and min(polar)[1] == "negated":
                trig = near["negated"][1].text
                return [mk(k, 0, f"negated (group {key})", trig) for k in self.phrases.groups[key][1]]
            return [mk(key, None, "group mention: names no single finding", "")]
        rules = self.phrases.findings[key]
        ages = [a for a in AGES if a in near]
        same = lambda a, b: (near[a][1].start, near[a][1].end) == (near[b][1].start, near[b][1].end)  # noqa: E731
        if "acute" in ages and "chronic" in ages and same("acute", "chronic"):
            pass                                                  # "acute on chronic": both
        elif len(ages) > 1:
            ages = [min(ages, key=lambda a: near[a][0])]
        keys = []
        for a in ages:
            if a in rules.age:
                if rules.age[a] is None:
                    return [mk(key, None, f"{a}: not this finding", near[a][1].text)]
                keys.append((rules.age[a], f"{a} -> {rules.age[a]}", near[a][1].text))
            elif a == "chronic" and rules.acute:
                return [mk(key, None, "historical (chronic)", near[a][1].text)]
        if not keys:
            keys = [(key, "mention", "")]
        out = []
        for k, how, trig in keys:
            if "historical" in near and self.phrases.findings[k].acute and "negated" not in near:
                out.append(mk(k, None, "historical", near["historical"][1].text))
                continue
            polar = [(near[p][0], p) for p in ("negated", "uncertain") if p in near]
            if polar:
                _, p = min(polar)
                value = 0 if p == "negated" else -1
                rule = p if how == "mention" else f"{how}; {p}"
                trig = near[p][1].text if how == "mention" else f"{trig}; {near[p][1].text}"
            else:
                value, rule = 1, ("positive" if how == "mention" else f"{how}; positive")
            out.append(mk(k, value, rule, trig))
        return out

    # --- one report -------------------------------------------------------------------------------------------
    def label(self, text: str, report_id: str = "") -> ReportLabels:
        """Labels and evidence of one report's text."""
        mentions: list[Mention] = []
        implied: list[tuple[str, Span, str]] = []
        for section in split_sections(text, self.phrases):
            if section.section == "ignored":
                continue
            for sent in sentences(section):
                for phrase, rx, negative in self.phrases.implied:
                    if rx.search(sent.text):
                        implied.extend((k, sent, phrase) for k in negative)
                for clause in clauses(sent):
                    mentions.extend(self._clause(clause))
        return self.aggregate(mentions, implied, report_id)

    def aggregate(self, mentions: list[Mention], implied: list[tuple[str, Span, str]], report_id: str = ""
                  ) -> ReportLabels:
        """Mentions -> labels: IMPRESSION wins, positive > uncertain > negative, implied negatives, parents.

        Public so another mention finder (benchmarks/report_labeller_libraries.py: medspaCy's ConText) can be
        compared with the same aggregation."""
        labels: dict[str, int | None] = {k: None for k in FINDING_KEYS}
        chosen: dict[str, Mention] = {}
        for m in mentions:
            if m.value is None or m.key not in labels:
                continue
            best = chosen.get(m.key)
            score = (_SECTION_RANK.get(m.sentence.section, 0), _RANK[m.value])
            if best is None or score > (_SECTION_RANK.get(best.sentence.section, 0), _RANK[best.value]):
                chosen[m.key] = m
        for k, m in chosen.items():
            labels[k] = m.value
            m.used = True
        evidence = [self._row(report_id, m.key, m.value, m.sentence, m.start, m.end, m.text, m.rule, m.trigger,
                              m.used) for m in mentions]
        for key, sent, phrase in implied:
            if labels[key] is None:
                labels[key] = 0
                evidence.append(self._row(report_id, key, 0, sent, sent.start, sent.end, sent.text, "implied",
                                          phrase, True))
        for parent in _PARENT_ORDER:                   # a negated parent negates its unset subtypes
            if labels[parent] == 0:
                for child in DESCENDANTS[parent]:
                    if labels[child] is None:
                        labels[child] = 0
                        evidence.append(self._row(report_id, child, 0, None, None, None, "", "parent negated",
                                                  parent, True))
        for parent in _PARENT_ORDER:                   # a present (uncertain) subtype makes its parent so
            kids = [labels[c] for c in DESCENDANTS[parent]]
            new = 1 if 1 in kids else (-1 if -1 in kids and labels[parent] in (None, 0) else None)
            if new is not None and labels[parent] != new and labels[parent] != 1:
                labels[parent] = new
                child = next(c for c in DESCENDANTS[parent] if labels[c] == new)
                evidence.append(self._row(report_id, parent, new, None, None, None, "", "from subtype", child, True))
        return ReportLabels(labels, evidence)

    @staticmethod
    def _row(report_id, key, value, sent: Span | None, start, end, text, rule, trigger, used) -> dict:
        return {"report_id": report_id, "finding": key, "value": "" if value is None else value,
                "section": sent.section if sent is not None else "", "start": "" if start is None else start,
                "end": "" if end is None else end, "mention": text, "sentence": sent.text if sent is not None else "",
                "rule": rule, "trigger": trigger, "used": int(bool(used))}


_DEFAULT: list[Labeller] = []


def label_report(text: str, report_id: str = "", phrases: Phrases | None = None) -> ReportLabels:
    """Label one report with the packaged (or given) phrase file. See ``Labeller``.

    >>> label_report("IMPRESSION: No hemorrhage, mass effect, or midline shift.").labels["midline_shift"]
    0
    """
    if phrases is not None:
        return Labeller(phrases).label(text, report_id)
    if not _DEFAULT:
        _DEFAULT.append(Labeller())
    return _DEFAULT[0].label(text, report_id)
