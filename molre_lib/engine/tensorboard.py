"""Live training curves in TensorBoard: ``<run_dir>/tensorboard/``, written by rank 0 only.

The trainer calls four methods; nothing else in the engine knows TensorBoard exists::

    tb = TrainingBoard(run_dir, cfg, enabled=cfg.tensorboard and info.is_main)
    tb.open(resume_step)               # purge_step on resume: re-done steps replace the killed attempt's
    tb.step(step, loss, lr, grad_norm)  # every optimizer step
    tb.validation(step, auc, keys, routing)   # every evaluation (routing: RoutingStats.summary() or None)
    tb.close(best_val_macro_auc)

Scalar tags (``tensorboard --logdir runs/`` shows every run below it; the HPARAMS tab compares a sweep's runs):

- ``train/loss`` (masked focal loss of the global batch), ``train/lr``, ``train/grad_norm`` (total L2 norm of
  the trainable parameters' gradients before clipping);
- ``val/macro_auc``, ``val/auc_<category>`` (mean AUC of the findings of one taxonomy category with a defined
  AUC), ``val/best_macro_auc`` (at the end);
- MoLRE only, over the validation pass: ``routing/<layer>/gate_entropy`` (nats; log E is uniform routing),
  ``routing/<layer>/expert_<e>`` (mean gate of expert e: its usage), ``routing/mean_gate_entropy``.
  Under DDP the routing summary is rank 0's share of the validation scans.

``hparams`` (the run's TrainConfig, with ``val/best_macro_auc`` and ``val/macro_auc`` as its metrics) are written
into the same event file, so a sweep's runs line up in one HPARAMS table without extra folders.
Cost per step: ``benchmarks/tensorboard_overhead.py`` (the same run with TensorBoard on and off; writes
benchmarks/results/tensorboard_overhead.json).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

TB_DIR = "tensorboard"
HPARAM_METRICS = ("val/best_macro_auc", "val/macro_auc")


def _hparam_value(v: Any) -> Any:
    """TensorBoard hparams take bool / int / float / str: None and lists become their text."""
    if isinstance(v, bool) or isinstance(v, (int, float, str)):
        return v
    return str(v)


def category_aucs(auc: np.ndarray, keys: Sequence[str]) -> dict[str, float]:
    """Mean AUC per taxonomy category over the findings with a defined AUC ({} for non-taxonomy keys)."""
    from molre_lib.stats.auroc import default_categories

    cats = default_categories(keys)
    if not cats:
        return {}
    out: dict[str, list[float]] = {}
    for k, a in zip(keys, np.asarray(auc, float)):
        if math.isfinite(a):
            out.setdefault(cats[k], []).append(float(a))
    return {c: float(np.mean(v)) for c, v in out.items()}


class TrainingBoard:
    """The run's SummaryWriter and what the trainer logs into it; every method is a no-op when disabled."""

    def __init__(self, run_dir: str | Path, cfg: Any, enabled: bool) -> None:
        self.dir = Path(run_dir) / TB_DIR
        self.cfg, self.enabled = cfg, bool(enabled)
        self.writer = None

    def open(self, resume_step: Optional[int] = None) -> None:
        """Start the writer; after a resume from ``resume_step``, later steps of the killed attempt are purged."""
        if not self.enabled or self.writer is not None:
            return
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.writer = SummaryWriter(str(self.dir), purge_step=None if resume_step is None else resume_step + 1)
        hp = {k: _hparam_value(v) for k, v in self.cfg.to_dict().items()}
        exp, ssi, sei = hparams(hp, {m: 0.0 for m in HPARAM_METRICS})
        fw = self.writer._get_file_writer()
        for summary in (exp, ssi):
            fw.add_summary(summary)
        self._session_end = sei

    @contextmanager
    def routing(self, model: Any) -> Iterator[Any]:
        """``RoutingStats`` of the model's routed layers while the block runs; None when disabled or not MoLRE."""
        from molre_lib.adapters import adapter_layers
        from molre_lib.adapters.telemetry import routing_stats

        if self.writer is None or not any(m.router is not None for m in adapter_layers(model)):
            yield None
            return
        with routing_stats(model) as stats:
            yield stats

    def step(self, step: int, loss: float, lr: float, grad_norm: Optional[float]) -> None:
        if self.writer is None:
            return
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/lr", lr, step)
        if grad_norm is not None:
            self.writer.add_scalar("train/grad_norm", float(grad_norm), step)

    def validation(self, step: int, auc: np.ndarray, keys: Sequence[str],
                   routing: Optional[dict[str, dict[str, Any]]] = None) -> None:
        """Macro and per-category AUC of one evaluation; routing = ``RoutingStats.summary()`` for MoLRE."""
        if self.writer is None:
            return
        auc = np.asarray(auc, float)
        macro = float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan")
        self.writer.add_scalar("val/macro_auc", macro, step)
        for cat, value in category_aucs(auc, keys).items():
            self.writer.add_scalar(f"val/auc_{cat}", value, step)
        if routing:
            for layer, s in routing.items():
                self.writer.add_scalar(f"routing/{layer}/gate_entropy", s["gate_entropy"], step)
                for e, u in enumerate(s["expert_usage"]):
                    self.writer.add_scalar(f"routing/{layer}/expert_{e}", u, step)
            self.writer.add_scalar("routing/mean_gate_entropy",
                                   float(np.mean([s["gate_entropy"] for s in routing.values()])), step)
        self.writer.flush()  # an evaluation is rare and the curve is what a user watches: show it now

    def close(self, step: int, best_val_macro_auc: Optional[float] = None) -> None:
        if self.writer is None:
            return
        if best_val_macro_auc is not None and math.isfinite(best_val_macro_auc):
            self.writer.add_scalar("val/best_macro_auc", best_val_macro_auc, step)
        self.writer._get_file_writer().add_summary(self._session_end)
        self.writer.close()
        self.writer = None


def tensorboard_command(run_or_sweep_dir: str | Path) -> str:
    """The command that shows a run's (or a sweep folder's runs') curves."""
    return f"tensorboard --logdir {run_or_sweep_dir}"
