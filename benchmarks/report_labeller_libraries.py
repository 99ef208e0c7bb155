"""Own rules vs medspaCy (ConText + sectionizer) vs spaCy + negspacy for the report labeller (issue 23 item 3).

All three find the same mentions (the phrase file's literal match phrases as target / entity-ruler rules) and share
the labeller's aggregation (IMPRESSION wins, implied negatives, taxonomy parents); what differs is the layer the
libraries offer: sentence splitting, negation / uncertainty / historical context and sections. Scored on the
sentences of tests/reports/test_labeller.py (share of the checked labels that are right) and on the 50 hand-written
reports (accuracy over mentioned labels, macro F1 with uncertain as negative).

The libraries run in a throwaway venv so the project's is not touched (medspaCy 1.3.1 pins spaCy < 3.8):

    python3.11 -m venv /tmp/venv-medspacy && /tmp/venv-medspacy/bin/pip install medspacy==1.3.1 negspacy
    .venv/bin/python benchmarks/report_labeller_libraries.py --venv /tmp/venv-medspacy

Writes benchmarks/results/report_labeller_libraries.json.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# --- the library side: runs inside the throwaway venv (no molre_lib import there) ---------------------------------
LIBRARY_CODE = r'''
import json, sys, time, resource
job = json.load(open(sys.argv[1]))
out = {}
import spacy, medspacy
from medspacy.ner import TargetRule
out["versions"] = {"spacy": spacy.__version__, "medspacy": medspacy.__version__}
def rules():
    return [TargetRule(p, key, pattern=[{"LOWER": w} for w in p.split()]) for key, ps in job["phrases"].items()
            for p in ps]
def run(nlp, kind):
    t0 = resource.getrusage(resource.RUSAGE_SELF).ru_utime
    res = []
    for text in job["texts"]:
        doc = nlp(text)
        ms = []
        for ent in doc.ents:
            if kind == "medspacy":
                neg, unc, hist = ent._.is_negated, ent._.is_uncertain, ent._.is_historical
                sec = ent._.section_category
            else:
                neg, unc, hist, sec = ent._.negex, False, False, None
            ms.append({"key": ent.label_, "start": ent.start_char, "end": ent.end_char, "negated": bool(neg),
                       "uncertain": bool(unc), "historical": bool(hist), "section": sec,
                       "sentence": ent.sent.text})
        res.append(ms)
    return res, resource.getrusage(resource.RUSAGE_SELF).ru_utime - t0
nlp = medspacy.load(medspacy_enable=["medspacy_pyrush", "medspacy_target_matcher", "medspacy_context",
                                     "medspacy_sectionizer"])
nlp.get_pipe("medspacy_target_matcher").add(rules())
out["medspacy"], out["medspacy_cpu_s"] = run(nlp, "medspacy")
from negspacy.negation import Negex  # noqa: F401  (registers the "negex" factory)
from negspacy.termsets import termset
nlp2 = spacy.blank("en")
nlp2.add_pipe("sentencizer")
ruler = nlp2.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER"})
ruler.add_patterns([{"label": key, "pattern": p} for key, ps in job["phrases"].items() for p in ps])
nlp2.add_pipe("negex", config={"neg_termset": termset("en_clinical").get_patterns()})
out["negspacy"], out["negspacy_cpu_s"] = run(nlp2, "negspacy")
json.dump(out, open(sys.argv[2], "w"))
'''


def _load_test_cases():
    spec = importlib.util.spec_from_file_location("tl", ROOT / "tests/reports/test_labeller.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    groups = ["NEGATION", "UNCERTAINTY", "RESOLVED_PRIOR", "ACUTE_CHRONIC", "PARENTS_FOLLOW", "SYNONYMS", "SECTIONS",
              "HEADERS_SAME_LINE_AND_CASE"]
    cases = []
    for g in groups:
        for case in getattr(mod, g):
            text, expect, *rest = case
            cases.append((g, text, expect, rest[0] if rest else []))
    return cases


def _section(category) -> str:
    if category is None:
        return "findings"
    c = str(category).lower()
    if "impression" in c or "observation_and_plan" in c or "diagnos" in c:
        return "impression"
    if c in ("imaging", "findings", "labs_and_studies", "physical_exam", "problem_list"):
        return "findings"
    return "ignored"


def _labels_from_library(labeller, text: str, mentions: list[dict], use_sections: bool):
    from molre_lib.reports.labeller import Mention
    from molre_lib.reports.text import Span, sentences, split_sections

    found = []
    for m in mentions:
        section = _section(m["section"]) if use_sections else "findings"
        if section == "ignored":
            continue
        value = 0 if m["negated"] else (-1 if m["uncertain"] else 1)
        if m["historical"] and labeller.phrases.findings[m["key"]].acute and not m["negated"]:
            value = None
        sent = Span(m["sentence"], m["start"], m["end"], section)
        found.append(Mention(m["key"], value, m["start"], m["end"], text[m["start"]:m["end"]], sent, "library"))
    implied = []
    for sec in split_sections(text, labeller.phrases):                # the same implied negatives for all
        if sec.section != "ignored":
            for sent in sentences(sec):
                for phrase, rx, negative in labeller.phrases.implied:
                    if rx.search(sent.text):
                        implied.extend((k, sent, phrase) for k in negative)
    return labeller.aggregate(found, implied).labels


def _score(cases, labels_per_case):
    ok = total = 0
    per_group: dict[str, list[int]] = {}
    for (group, _, expect, absent), labels in zip(cases, labels_per_case):
        for k, v in list(expect.items()) + [(k, None) for k in absent]:
            hit = int(labels[k] == v)
            ok += hit
            total += 1
            per_group.setdefault(group, [0, 0])
            per_group[group][0] += hit
            per_group[group][1] += 1
    return {"correct": ok, "checked": total, "share": round(ok / total, 4),
            "per_group": {g: round(a / b, 3) for g, (a, b) in per_group.items()}}


def _score_reports(labels_list, gold):
    import numpy as np

    from molre_lib.reports.agreement import agreement_table

    import pandas as pd
    pred = pd.DataFrame([{k: lab[k] for k in gold.columns} for lab in labels_list], index=gold.index)
    a = pred.to_numpy(object)
    g = gold.to_numpy(object)
    norm = np.vectorize(lambda x: None if x is None or (isinstance(x, float) and np.isnan(x)) else int(x),
                        otypes=[object])
    a, g = norm(a), norm(g)
    mentioned = (a != None) | (g != None)  # noqa: E711
    t = agreement_table(pred.astype(object).where(pred.notna(), None), gold, n_boot=0)
    per = t[(t["level"] == "finding") & (t["mode"] == "u->neg") & (t["positives"] > 0)]
    overall = t[(t["level"] == "all") & (t["mode"] == "3-class")].iloc[0]
    return {"accuracy_mentioned": round(float((a == g)[mentioned].mean()), 4),
            "macro_f1_u_neg": round(float(per["f1"].mean()), 4), "kappa_3class_pooled": round(float(overall["kappa"]), 4)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--venv", default="/tmp/venv-medspacy", help="throwaway venv with medspacy==1.3.1 and negspacy")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/report_labeller_libraries.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from molre_lib.reports.agreement import read_label_file
    from molre_lib.reports.io import read_reports
    from molre_lib.reports.labeller import Labeller

    labeller = Labeller()
    cases = _load_test_cases()
    reports = read_reports(ROOT / "tests/reports/fixtures/handwritten_reports.csv")
    gold = read_label_file(ROOT / "tests/reports/fixtures/handwritten_gold.csv")
    texts = [c[1] for c in cases] + [t for _, t in reports]
    import yaml
    raw = yaml.safe_load((ROOT / "data_manifests/report_phrases.yaml").read_text(encoding="utf-8"))
    phrases = {k: sorted({str(p).lower() for p in (v.get("match") or []) if not str(p).startswith("re:")})
               for k, v in raw["findings"].items()}

    t0 = resource.getrusage(resource.RUSAGE_SELF).ru_utime
    own = [labeller.label(t).labels for t in texts]
    own_cpu = resource.getrusage(resource.RUSAGE_SELF).ru_utime - t0
    result = {"own_rules": {"sentences": _score(cases, own[:len(cases)]),
                            "reports_50": _score_reports(own[len(cases):], gold),
                            "cpu_s_per_100_texts": round(100 * own_cpu / len(texts), 3)}}
    with tempfile.TemporaryDirectory() as tmp:
        job, res = Path(tmp) / "job.json", Path(tmp) / "res.json"
        job.write_text(json.dumps({"phrases": phrases, "texts": texts}))
        (Path(tmp) / "lib.py").write_text(LIBRARY_CODE)
        t = time.time()
        proc = subprocess.run([f"{args.venv}/bin/python", str(Path(tmp) / "lib.py"), str(job), str(res)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        lib = json.loads(res.read_text())
        result["library_wall_s_under_load"] = round(time.time() - t, 1)
    result["versions"] = lib["versions"]
    for name, sections in (("medspacy", True), ("negspacy", False)):
        labs = [_labels_from_library(labeller, t, m, sections) for t, m in zip(texts, lib[name])]
        result[name] = {"sentences": _score(cases, labs[:len(cases)]),
                        "reports_50": _score_reports(labs[len(cases):], gold),
                        "cpu_s_per_100_texts": round(100 * lib[f"{name}_cpu_s"] / len(texts), 3)}
    result["note"] = ("same targets and aggregation; the libraries supply sentence splitting and context (medspaCy "
                      "ConText defaults + sectionizer; negspacy en_clinical, no sections). Own rules add ages "
                      "(chronic lacune, acute/chronic subdural), groups and filler words, which the libraries lack. "
                      "CPU times measured while other jobs shared the 2 cores.")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for name in ("own_rules", "medspacy", "negspacy"):
        r = result[name]
        print(f"{name:10s} sentences {r['sentences']['share']:.3f} ({r['sentences']['correct']}/"
              f"{r['sentences']['checked']})  50 reports: accuracy {r['reports_50']['accuracy_mentioned']:.3f} "
              f"macro F1 {r['reports_50']['macro_f1_u_neg']:.3f}  CPU {r['cpu_s_per_100_texts']} s/100 texts")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
