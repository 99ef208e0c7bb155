"""What 05_summary reports for a tuned sweep: per arm the chosen hyperparameters, effective step and trials used;
per comparison the seed-level statistics; and the tuning figures. One call, so the notebook cells stay thin and
the phantom study's report script (benchmarks/phantom_study.py) reads the same numbers."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd

from .tune import SELECTED_FILE, TUNE_DIR, read_selected, read_trials

REPORT_FILES = {"arms": "tuned_arms.csv", "comparisons": "seed_comparisons.csv", "per_seed": "seed_deltas.csv"}


@dataclass
class TunedComparison:
    """A tuned sweep's answer: tables (see molre_lib.analysis.seeds) and the trials they came from."""

    arms: pd.DataFrame          # one row per arm: n_trials, best trial / val AUC, param_*, effective_step, seeds, AUCs
    comparisons: pd.DataFrame   # one row per comparison: mean Δ, hierarchical CI, sign-flip p, P(A > B)
    per_seed: pd.DataFrame      # one row per comparison x seed
    trials: pd.DataFrame        # tune/trials.csv

    def figures(self) -> dict:
        """name -> figure: optimisation history, slice plots, seed-level comparison (when seeds are paired)."""
        from molre_lib.plots.tuning import plot_optimisation_history, plot_seed_comparison, plot_slices

        figs = {"tuning_history": plot_optimisation_history(self.trials, "Tuning on the validation split"),
                "tuning_slices": plot_slices(self.trials)}
        if not self.per_seed.empty:
            figs["seed_comparison"] = plot_seed_comparison(self.per_seed)
        return figs

    def save(self, sweep_dir: str | Path) -> list[Path]:
        out = Path(sweep_dir) / TUNE_DIR
        paths = []
        for name, file in REPORT_FILES.items():
            getattr(self, name).to_csv(out / file, index=False)
            paths.append(out / file)
        return paths


def tuned_comparison(sweep_dir: str | Path, runs: pd.DataFrame, split: str = "test", n_boot: int = 2000,
                     seed: int = 0, reference: Optional[str] = "lora") -> Optional[TunedComparison]:
    """The tuned comparison of ``sweep_dir`` (its ``collect_runs`` table ``runs``); None for a sweep without a
    ``tune:`` section (no ``tune/selected.csv``). Every arm is compared with ``reference`` within its backbone
    when that arm exists there, otherwise every pair of arms."""
    from molre_lib.analysis.seeds import arm_summary, seed_comparisons

    if not (Path(sweep_dir) / TUNE_DIR / SELECTED_FILE).is_file():
        return None
    comparisons, per_seed = seed_comparisons(runs, split, n_boot, seed, baseline=reference)
    return TunedComparison(arm_summary(read_selected(sweep_dir), runs, split), comparisons, per_seed,
                           read_trials(sweep_dir))
