"""Validation AUC per epoch of the tuned study's runs at each training length: the curves behind "where is the
plateau?" (docs/explanation/phantom-study.md).

Reads the files ``benchmarks/phantom_tuned_length.py`` wrote (each: one backbone's final runs at the study's
length and retrained for ``longer_epochs``) and draws, per backbone and arm, the mean and range over seeds of the
validation macro AUC after each epoch at every length (the study's own runs once, however many files share them).
An arm is drawn only where every length has it, over the seeds every length has, so the lengths compare the same
runs.

    python benchmarks/phantom_length_figure.py benchmarks/results/phantom_tuned_length_phantom_vit.json \\
        benchmarks/results/phantom_tuned_length_phantom_vit_e16.json ... [--out figures/phantom_tuned/length_curves]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

# phantom_tuned_length's arm names -> the paper names every tuning figure uses (molre_lib.plots.paper_tables)
PAPER_NAMES = {"LoRA": "LoRA", "MoLRE shared A": "MoLRE (shared A)", "MoLRE separate A_e": "MoLRE",
               "linear probe": "Linear probe"}


def length_curves(results: list[dict]) -> dict:
    """``{backbone: {arm: {epochs_trained: {epochs, mean, min, max, n_seeds}}}}`` from phantom_tuned_length
    results, restricted per backbone and arm to the seeds every length has and to arms every length has."""
    runs: dict = {}  # backbone -> arm -> length -> seed -> curve
    for res in results:
        if len(res["study_epochs"]) != 1:
            raise ValueError(f"{res.get('sweep_dir')}: runs of several lengths {res['study_epochs']} in one study")
        study = res["study_epochs"][0]
        for arm, a in res["arms"].items():
            by_length = runs.setdefault(res["backbone"], {}).setdefault(PAPER_NAMES.get(arm, arm), {})
            for s in a["seeds"]:
                by_length.setdefault(study, {})[s["seed"]] = [p["val_macro_auc"] for p in s["study_curve"]]
                by_length.setdefault(res["longer_epochs"], {})[s["seed"]] = [p["val_macro_auc"] for p in s["longer_curve"]]
    out: dict = {}
    for backbone, arms in runs.items():
        lengths = set().union(*(set(b) for b in arms.values()))
        for arm, by_length in arms.items():
            if set(by_length) != lengths:
                continue
            seeds = sorted(set.intersection(*(set(v) for v in by_length.values())))
            if not seeds:
                continue
            for n, per_seed in sorted(by_length.items()):
                table = np.array([per_seed[s] for s in seeds])  # seeds x epochs
                out.setdefault(backbone, {}).setdefault(arm, {})[n] = {
                    "epochs": list(range(1, table.shape[1] + 1)), "mean": table.mean(0).round(4).tolist(),
                    "min": table.min(0).tolist(), "max": table.max(0).tolist(), "n_seeds": len(seeds)}
    return out


def main(argv: list[str] | None = None) -> int:
    from molre_lib.plots.style import paper_style, save_figure
    from molre_lib.plots.tuning import plot_training_lengths

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path, help="phantom_tuned_length.py result files")
    ap.add_argument("--out", type=Path, default=Path("figures/phantom_tuned/length_curves"),
                    help="the figure's path without suffix (.png, .pdf, .svg are written)")
    args = ap.parse_args(argv)
    results = []
    for f in args.files:
        try:
            results.append(json.loads(f.read_text()))
        except (OSError, json.JSONDecodeError) as err:
            print(f"error: {f}: {err} (expected a file written by benchmarks/phantom_tuned_length.py)", file=sys.stderr)
            return 2
        if not {"backbone", "arms", "study_epochs", "longer_epochs"} <= set(results[-1]):
            print(f"error: {f}: not a phantom_tuned_length.py result (no backbone / arms / study_epochs / "
                  f"longer_epochs)", file=sys.stderr)
            return 2
    try:
        curves = length_curves(results)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not curves:
        print("error: no arm has every training length at a common seed: nothing to compare", file=sys.stderr)
        return 2
    with paper_style():
        paths = save_figure(plot_training_lengths(curves), args.out.parent, args.out.name)
    for backbone, arms in curves.items():
        for arm, by_length in arms.items():
            ends = ", ".join(f"{n} epochs {c['mean'][-1]:.3f}" for n, c in by_length.items())
            print(f"{backbone:12s} {arm:18s} ({next(iter(by_length.values()))['n_seeds']} seeds): {ends}")
    print(f"wrote {', '.join(map(str, paths))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
