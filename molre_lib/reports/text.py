"""Report text -> sections -> sentences -> clauses, each with its character span in the original report.

Sections follow the headers of the phrase file (``FINDINGS:``, ``IMPRESSION:``, ...; text may follow the header on
the same line, and a header may follow a full stop in a one-line report). Text before the first header counts as
findings. Sentences end at ``.``/``!``/``?`` followed by white space (not after ``vs.``, ``e.g.``, ``Dr.`` or a
list number), at a line break or at a numbered-list item; clauses end at ``;``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .phrases import Phrases

_ABBREV = {"vs", "e.g", "i.e", "eg", "ie", "dr", "approx", "fig", "no", "st", "mr", "mrs", "ms", "cf", "incl", "etc"}
_SENT_END = re.compile(r"(?<=[.!?])\s+|\n+|(?<=\s)(?=\(?\d{1,2}[.)]\s+[A-Za-z])")


@dataclass(frozen=True)
class Span:
    """A piece of the report: its text, start / end offsets in the whole report, and its section."""

    text: str
    start: int
    end: int
    section: str


def split_sections(text: str, phrases: Phrases) -> list[Span]:
    """The report's sections in order, headers left out; kind is findings | impression | ignored."""
    spans, kind, pos = [], "findings", 0
    for m in phrases.header_regex.finditer(text):
        if m.start() > pos or (m.start() == pos and pos > 0):
            spans.append(Span(text[pos:m.start()], pos, m.start(), kind))
        kind = phrases.headers[re.sub(r"\s+", " ", m.group(1).lower())]
        pos = m.end()
    spans.append(Span(text[pos:], pos, len(text), kind))
    return [s for s in spans if s.text.strip()]


def _sentence_breaks(section: Span) -> list[int]:
    breaks = []
    for m in _SENT_END.finditer(section.text):
        before = section.text[:m.start()].rstrip()
        word = re.search(r"([A-Za-z.]+)\.$", before)
        if word and word.group(1).lower().rstrip(".") in _ABBREV and "\n" not in m.group(0):
            continue
        if re.search(r"(?:^|\s)\(?\d{1,2}[.)]$", before) and "\n" not in m.group(0):
            continue                                      # "1. " starts an item; the break is before the number
        breaks.append(m.end())
    return breaks


def sentences(section: Span) -> list[Span]:
    """Sentences of one section, stripped, with offsets into the whole report."""
    out, pos = [], 0
    for b in _sentence_breaks(section) + [len(section.text)]:
        piece = section.text[pos:b]
        lead = len(piece) - len(piece.lstrip())
        piece = piece.strip()
        if piece:
            start = section.start + pos + lead
            out.append(Span(piece, start, start + len(piece), section.section))
        pos = b
    return out


def clauses(sentence: Span) -> list[Span]:
    """A sentence cut at semicolons (a trigger's scope never crosses one)."""
    out, pos = [], 0
    for m in list(re.finditer(r";", sentence.text)) + [None]:
        end = m.start() if m is not None else len(sentence.text)
        piece = sentence.text[pos:end]
        if piece.strip():
            out.append(Span(piece, sentence.start + pos, sentence.start + end, sentence.section))
        pos = end + 1
    return out
