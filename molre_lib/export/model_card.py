"""The model card every export writes: ``README.md`` with Hugging Face front matter, then the card's text.

Front matter (YAML, as ``huggingface_hub.ModelCard`` reads it): ``license`` (the backbone weights' licence, or
``other`` with ``license_name`` / ``license_link``), ``base_model`` (the backbone's hub repository, when it has
one), ``library_name`` (``peft`` / ``monai``), ``tags`` and a ``model-index`` with one ROC AUC per finding of
the reported split plus the macro AUC. The text: backbone and licence, adapter configuration and added
parameters, training data from the manifest, macro / category / per-finding AUCs with their CIs, confidence
regimes, limitations and "research use only - not for clinical use".
"""
from __future__ import annotations

import math
from typing import Any, Optional

import yaml

from molre_lib.adapters.io import describe_adapter

from .run_info import RunInfo

RESEARCH_ONLY = "Research use only — not for clinical use."


def _fmt(v: Any, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def _ci(row: dict[str, Any]) -> str:
    lo, hi = row.get("ci_low"), row.get("ci_high")
    return "—" if lo is None or hi is None else f"[{_fmt(lo)}, {_fmt(hi)}]"


def adapter_text(info: RunInfo) -> str:
    kind = info.cfg.adapter
    if kind in ("lora", "molre"):
        return describe_adapter(info.molre_config, info.cfg.backbone)
    return {"linear_probe": "linear probe (frozen backbone, trained head)",
            "full": "full fine-tuning (every weight trained)"}[kind] + f" on {info.cfg.backbone}"


def front_matter(info: RunInfo, library_name: str) -> dict[str, Any]:
    """The card's YAML metadata (Hugging Face model-card fields)."""
    from molre_lib.backbones import get_spec

    spec = get_spec(info.cfg.backbone)
    lic = info.licence
    meta: dict[str, Any] = {}
    if lic.spdx:
        meta["license"] = lic.spdx
    else:
        meta.update({"license": "other", "license_name": lic.name, "license_link": lic.link or "see the card"})
    if spec.hub_id:
        meta["base_model"] = spec.hub_id
    meta["library_name"] = library_name
    meta["pipeline_tag"] = "image-classification"
    meta["tags"] = ["medical", "radiology", "ct", "head-ct", "multi-label-classification", info.cfg.adapter,
                    "research-only"] + (["synthetic-data"] if info.manifest.get("synthetic") else [])
    split = info.eval_split
    if split:
        doc = info.metrics[split]
        dataset = "synthetic head-CT phantom" if info.manifest.get("synthetic") else "head-CT manifest"
        metrics = [{"type": "roc_auc", "name": "macro ROC AUC", "value": round(float(doc["summary"]["macro_auc"]["value"]), 4)}] \
            if doc["summary"].get("macro_auc", {}).get("value") is not None else []
        metrics += [{"type": "roc_auc", "name": f"ROC AUC {r['finding']}", "value": round(float(r["auc"]), 4)}
                    for r in doc["per_finding"] if r.get("auc") is not None]
        meta["model-index"] = [{"name": info.name, "results": [{
            "task": {"type": "image-classification", "name": "multi-label head-CT finding classification"},
            "dataset": {"name": dataset, "type": "head-ct", "split": split},
            "metrics": metrics}]}]
    return meta


def _data_section(info: RunInfo) -> list[str]:
    m = info.manifest
    if not m.get("available"):
        return [f"The training manifest ({m.get('path') or 'not recorded'}) was not found at export time; its "
                "counts are not stated here."]
    lines = [f"Manifest `{m['path']}`; labels: {m['label_source']}.", "",
             "| split | scans | patients | known labels |", "|---|---:|---:|---:|"]
    for split, s in m["splits"].items():
        known = "n/a" if s["known_label_fraction"] is None else f"{100 * s['known_label_fraction']:.1f}%"
        lines.append(f"| {split} | {s['scans']} | {s['patients']} | {known} |")
    lines += ["", f"Splits used: train `{info.cfg.train_split}`, validation `{info.cfg.val_split or 'none'}`, "
                  f"test `{info.cfg.test_split or 'none'}`; {m['n_findings']} finding columns."]
    return lines


def _eval_section(info: RunInfo) -> list[str]:
    split = info.eval_split
    if split is None:
        return ["metrics.json holds no evaluation of a test or validation split."]
    doc = info.metrics[split]
    boot = doc.get("bootstrap") or 0
    lines = [f"On the `{split}` split ({doc['n_scans']} scans); 95% CIs from {boot} bootstrap replicates over scans"
             + (" (none were drawn: run `molre evaluate RUN --bootstrap 1000` before exporting for CIs)." if not boot else "."),
             "", "| metric | value | 95% CI | findings |", "|---|---:|---|---:|"]
    for name, s in doc["summary"].items():
        lines.append(f"| {name} | {_fmt(s['value'])} | {_ci(s)} | {s.get('n_findings', '')} |")
    lines += ["", f"Pooled expected calibration error: {_fmt(doc.get('ece'))}.", "",
              "| finding | category | AUC | 95% CI | positives | negatives | ECE |", "|---|---|---:|---|---:|---:|---:|"]
    for r in doc["per_finding"]:
        auc = _fmt(r.get("auc")) if r.get("auc") is not None else f"n/a ({r.get('reason') or 'undefined'})"
        lines.append(f"| {r['finding']} | {r.get('category', '')} | {auc} | {_ci(r)} | {r.get('n_pos', '')} | "
                     f"{r.get('n_neg', '')} | {_fmt(r.get('ece'))} |")
    return lines


def _regime_section(info: RunInfo) -> list[str]:
    lines = []
    g = info.regimes
    if g and g["n_pos"]:
        lo, hi = g["band"]
        lines.append(f"Known positives of the `{g['split']}` split by predicted probability: {g['confident']} confident "
                     f"(> {hi}), {g['borderline']} borderline ({lo}–{hi}), {g['low']} low (< {lo}) of {g['n_pos']}.")
    for c in info.comparisons:
        frac = "n/a" if c["frac_moved_up"] is None else f"{100 * c['frac_moved_up']:.1f}%"
        lines.append(f"Against run `{c['against']}` (`{c['file']}`): mean delta AUC {c['mean_delta_auc']:+.4f}; "
                     f"{c['moved_up']} positives moved from borderline to confident, {c['moved_down']} the other way, "
                     f"of {c['n_pos']} ({frac} up).")
    return lines or ["No confidence-regime summary: the run has no predictions file for the reported split."]


def model_card(info: RunInfo, library_name: str, how_to_use: str, files: dict[str, str],
               backbone_included: bool = False) -> str:
    """The whole README.md: front matter, then the card (``files``: name -> what it is; ``how_to_use``: Markdown)."""
    from molre_lib.backbones import get_spec

    spec = get_spec(info.cfg.backbone)
    cfg, lic = info.cfg, info.licence
    params = info.config.get("params") or {}
    meta = yaml.safe_dump(front_matter(info, library_name), sort_keys=False, allow_unicode=True)
    weights = ("included in this export (the licence allows it)" if backbone_included else
               "not needed: the run trained on a random-initialised backbone, which the receiver rebuilds from the "
               "registry with the run's seed (checked by its frozen-weight fingerprint)" if not cfg.pretrained else
               f"not included: the receiver builds the backbone from the registry, with weights from "
               f"{spec.hub_id or 'the local file / cache used at training'} ({lic.note or lic.name})")
    lines = [f"---\n{meta}---", "", f"# {info.name}: {adapter_text(info)}", "", f"**{RESEARCH_ONLY}** This model was "
             "trained with the MoLRE head-CT workbook for research on parameter-efficient adaptation. It has not been "
             "validated for, and must not be used in, diagnosis, triage or any patient care.", "",
             "## Model", "",
             f"- Backbone: `{cfg.backbone}` ({spec.family}; {spec.description or spec.source}), "
             f"{'reduced test build, ' if cfg.reduced else ''}{'pretrained weights' if cfg.pretrained else 'random initialisation (pretrained=False)'}.",
             f"- Backbone licence: {lic.name}" + (f" (<{lic.link}>)" if lic.link else "") + f". Weights {weights}.",
             f"- Adaptation: {adapter_text(info)}; {len(info.adapter_meta.get('adapted', []))} adapted layers; "
             f"trained modules besides the adapters: {', '.join(info.adapter_meta.get('extra', []))}.",
             ]
    mc = info.molre_config
    if mc:
        lines.append("- Adapter configuration: " + ", ".join(f"{k}={mc[k]}" for k in (
            "r", "n_experts", "alpha", "scaling_rule", "shared_a", "router", "temperature", "top_k", "balance_coef",
            "dropout") if k in mc) + ".")
    if params:
        lines.append(f"- Parameters: backbone {params.get('backbone', 0):,} (frozen), adapters {params.get('adapters', 0):,}, "
                     f"routers {params.get('routers', 0):,}, head {params.get('head', 0):,}; added "
                     f"{_fmt(params.get('pct_added'), 3)}% of the backbone, trainable {params.get('trainable', 0):,}.")
    windows = cfg.windows or [list(w) for w in spec.windows]
    lines += [f"- Input: a head CT (NIfTI file or DICOM series folder) in Hounsfield units, fitted ({cfg.fit}) to "
              f"{cfg.volume_shape or 'the backbone default'} voxels (D, H, W)"
              + (f" at spacing {cfg.spacing} mm" if cfg.spacing else "") + f", CT windows (level, width) {windows}.",
              f"- Output: {info.n_classes} independent probabilities (sigmoid), one per finding of the workbook's taxonomy.",
              "", "## Files", ""]
    lines += [f"- `{name}`: {what}" for name, what in files.items()]
    lines += ["", "## How to use", "", how_to_use.strip(), "", "## Training data", ""] + _data_section(info)
    lines += ["", f"Training: {cfg.epochs} epoch(s) / {info.metrics.get('steps', '?')} steps, best validation step "
                  f"{info.metrics.get('best_step', '?')} (val macro AUC {_fmt(info.metrics.get('best_val_macro_auc'))}), "
                  f"lr {cfg.lr:g}, batch {cfg.batch_size}, seed {cfg.seed}.", "", "## Evaluation", ""]
    lines += _eval_section(info) + ["", "## Confidence regimes", ""] + _regime_section(info)
    lines += ["", "## Limitations", "",
              "- " + ("Trained and evaluated on a synthetic phantom: the numbers say nothing about real head CT."
                      if info.manifest.get("synthetic") else
                      "Evaluated on one data set's test split; performance on other scanners, protocols and "
                      "populations is unknown."),
              "- AUCs of findings with few positives are unstable (see the CIs and counts); undefined AUCs are marked n/a.",
              "- Probabilities are not calibrated for any clinical operating point.",
              "- The backbone's own licence and intended-use terms apply to every use of this adapter.",
              f"- {RESEARCH_ONLY}", "", "## Provenance", "",
              f"molre_lib {info.config.get('versions', {}).get('molre_lib', '?')}, git revision "
              f"`{info.config.get('git_revision')}`, packages: "
              + ", ".join(f"{k} {v}" for k, v in (info.config.get("versions") or {}).items() if v and k != "molre_lib") + "."]
    return "\n".join(lines) + "\n"


def check_card(text: str) -> Optional[dict[str, Any]]:
    """Parse the front matter with ``huggingface_hub.ModelCard`` (when installed); returns its metadata dict."""
    try:
        from huggingface_hub import ModelCard
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return None
    return ModelCard(text, ignore_metadata_errors=False).data.to_dict()
