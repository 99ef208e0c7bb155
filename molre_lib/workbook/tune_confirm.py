"""Confirming an arm's best trials over extra seeds before its configuration is chosen (``tune.confirm_top``,
``tune.confirm_seeds``).

A tuning trial is one training run at one seed. In the phantom study the best single trial of 7 of 8 arms was the
largest learning rate, and several of those arms then collapsed on half their final seeds (validation AUC 0.55
where the trial had 0.68): one seed rewards a configuration that is good on average *or* lucky. With
``confirm_top: k`` and ``confirm_seeds: [s1, s2, ...]`` the k best complete trials of an arm are each re-run at
every confirmation seed (train + val only, like the trials), and the arm's choice is the candidate with the best
**mean** validation AUC over its trial seed and its confirmation seeds (ties: the better single trial, then the
earlier one). Every arm pays the same k x len(seeds) extra runs, so the budget stays equal across arms.

A confirmation run is an ordinary ``01_train`` run under ``tune/<arm>/trial<NNN>_seed<S>/`` (its lock and
checkpoint: a killed one resumes). Its result is read from its ``metrics.json`` (a finished Optuna trial cannot
take new attributes). Confirmation starts once the arm's trials are all told (none running), so the top k are
settled. Who runs which confirmation is decided under the tuning claim (``tune/claims/<arm>_trial<NNN>_seed<S>.json``
names the process or SLURM task that took it), so two SLURM tasks never run one twice, and one whose owner is
gone is taken over and resumed.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .tune import Arm, TuneConfig, read_objective, trial_run, tune_config, tune_dir
from .tune_owner import owner_gone

CLAIMS_DIR = "claims"


@dataclass
class Confirmation:
    """Trial ``trial`` (with its search-space ``params``) re-run at ``seed``."""

    trial: int
    seed: int
    params: dict[str, Any]

    @property
    def label(self) -> str:
        return f"trial{self.trial:03d}_seed{self.seed}"


def trials_over(tcfg: TuneConfig, trials: list[Any]) -> bool:
    """The arm's trials are over: its budget of complete trials, or its failures (some may still be told)."""
    states = [t.state.name for t in trials]
    done = states.count("COMPLETE")
    return done > 0 and (done >= tcfg.n_trials or states.count("FAIL") >= (tcfg.max_failed or tcfg.n_trials))


def trials_settled(tcfg: TuneConfig, trials: list[Any]) -> bool:
    """The arm's trials are over and none is running: its top trials cannot change any more."""
    return trials_over(tcfg, trials) and all(t.state.name != "RUNNING" for t in trials)


def candidates(tcfg: TuneConfig, trials: list[Any]) -> list[Any]:
    """The ``confirm_top`` best complete trials (val AUC, ties to the earlier trial); [] until they are settled."""
    if not tcfg.confirm_top or not trials_settled(tcfg, trials):
        return []
    done = [t for t in trials if t.state.name == "COMPLETE"]
    return sorted(done, key=lambda t: (-t.value, t.number))[:tcfg.confirm_top]


def confirmations(cfg: Any, arm: Arm, trials: list[Any]) -> list[Confirmation]:
    """Every confirmation run the arm needs (finished or not), best candidate first."""
    tcfg = tune_config(cfg)
    return [Confirmation(t.number, seed, dict(t.params)) for t in candidates(tcfg, trials) for seed in tcfg.confirm_seeds]


def confirmation_run(cfg: Any, arm: Arm, c: Confirmation) -> Any:
    return trial_run(cfg, arm, c.trial, c.params, seed=c.seed)


def confirmed_results(cfg: Any, arm: Arm, trials: list[Any]) -> dict[int, dict[int, tuple[float, int | None]]]:
    """Candidate trial number -> {seed: (val AUC, training steps)} of its finished confirmation runs, each
    ``metrics.json`` read once (NaN where a finished run has no validation AUC)."""
    out: dict[int, dict[int, tuple[float, int | None]]] = {}
    for c in confirmations(cfg, arm, trials):
        run = confirmation_run(cfg, arm, c)
        if run.finished:
            value, facts = read_objective(run.run_dir)
            steps = facts.get("steps") if isinstance(facts.get("steps"), int) else None
            out.setdefault(c.trial, {})[c.seed] = (math.nan if value is None else value, steps)
    return out


def choose(tcfg: TuneConfig, trials: list[Any], results: dict[int, dict[int, tuple[float, int | None]]]
           ) -> tuple[Any, dict[int, dict[int, float]]] | None:
    """(the chosen trial, candidate -> {seed: val AUC} including its trial seed) once every confirmation run
    finished (``results``: :func:`confirmed_results`); None while any is missing. The choice: best mean over
    seeds (NaN counts as worst), then the better single trial, then the earlier."""
    tops = candidates(tcfg, trials)
    if not tops or any(len(results.get(t.number, {})) < len(tcfg.confirm_seeds) for t in tops):
        return None
    seeds = {t.number: {tcfg.trial_seed: t.value, **{s: v for s, (v, _) in results[t.number].items()}} for t in tops}

    def rank(t: Any) -> tuple[float, float, int]:
        mean = mean_of(seeds[t.number])
        return (-mean if not math.isnan(mean) else math.inf, -t.value, t.number)

    return min(tops, key=rank), seeds


def mean_of(values: dict[int, float]) -> float:
    return sum(values.values()) / len(values) if values else math.nan


# ---------------------------------------------------------------------------------------------- who runs which


def claim_file(cfg: Any, arm: Arm, c: Confirmation) -> Path:
    return tune_dir(cfg) / CLAIMS_DIR / f"{arm.name}_{c.label}.json"


def claim_confirmation(cfg: Any, arm: Arm, trials: list[Any], me: dict[str, Any],
                       live_jobs: set[str] | None = None, exclude: set[str] = frozenset()) -> Confirmation | None:
    """The confirmation run the process ``me`` (``tune_owner.owner_here``) runs next: its own unfinished one
    (it was requeued), else one nobody holds or whose owner is gone (resumed); None when none is left to take
    (``exclude``: labels this process already saw fail). Call it under the tuning claim (one decider at a time)."""
    from .sweep_checks import in_use

    todo = [c for c in confirmations(cfg, arm, trials)
            if c.label not in exclude and not confirmation_run(cfg, arm, c).finished]
    owners = {c.label: _owner(claim_file(cfg, arm, c)) for c in todo}
    mine = next((c for c in todo if _same(owners[c.label], me)), None)
    if mine is None:
        mine = next((c for c in todo if owners[c.label] is None or (
            owner_gone(owners[c.label], live_jobs) and in_use(confirmation_run(cfg, arm, c)) is None)), None)
    if mine is not None:
        path = claim_file(cfg, arm, mine)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(me))
        tmp.replace(path)
    return mine


def _same(owner: dict[str, Any] | None, me: dict[str, Any]) -> bool:
    """A SLURM task is itself across requeues (its host and pid change); a local process is its pid on its host."""
    if not owner:
        return False
    return owner.get("job") == me["job"] if me.get("job") else owner == me


def _owner(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
