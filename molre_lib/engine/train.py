"""The trainer: ``train(cfg, run_dir) -> run_dir``.

One run directory holds everything a run produced::

    config.json                 TrainConfig + library / package versions + git revision
    adapter.safetensors         adapters + routers + head (the whole model for adapter="full")
    train_log.csv               step, epoch, loss, lr, val_macro_auc, elapsed_s
    predictions_{val,test}.parquet   scan_id, split, prob_<finding> ..., label_<finding> ... (NaN = unknown)
    metrics.json                best step, val / test AUC summaries and per-finding AUCs
    checkpoints/last.pt         resumable state (see checkpoint.py)

Loss = masked focal loss summed over the known labels of the *global* batch / their count, so one
process, DDP over N processes and gradient accumulation all optimise the same objective.

Reading order: :func:`train` → :func:`_train` (the whole run in ten lines) → :class:`Trainer`, whose methods are
the named steps (``restore``, ``checkpoint``, ``fit`` → ``_backward`` / ``_optimizer_step`` / ``_advance`` /
``_validate`` / ``_log_step``) around one :class:`TrainState`. Model construction lives in ``build.py``.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from molre_lib.adapters import balance_loss
from molre_lib.common.config_keys import check_known_keys
from molre_lib.common.determinism import set_determinism
from molre_lib.stats.auroc import per_finding_auc
from . import distributed as D
from .build import apply_adapter, build_model, new_modules, seed_everything
from .checkpoint import (frozen_fingerprint, load_latest, load_trainable, rng_state, save_checkpoint, set_rng_state,
                         trainable_state)
from .config import TrainConfig
from .loaders import StepBatchSampler, autocast, build_datasets, make_loader, predict_dataset, series_warnings
from .losses import MaskedFocalLoss, pos_weights_from_labels
from .optim import lr_lambda, param_groups
from .run_lock import RunLock
from .preemption import Preempted, PreemptionGuard
from .run_files import (check_run_dir, finding_keys, open_train_log, write_metrics, write_predictions,
                        write_run_config)
from .tensorboard import TrainingBoard

__all__ = ["train", "TrainState", "Trainer", "NonFiniteLossError", "seed_everything"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the last good state was checkpointed before raising."""


@dataclass(slots=True)
class TrainState:
    """Where training stands, saved in every checkpoint as its ``state`` entry (a dict of these fields).

    ``slots`` makes a misspelt attribute an ``AttributeError`` and :meth:`from_dict` refuses unknown keys, so a
    typo can neither be written into a checkpoint nor read back from one silently.
    """

    step: int = 0                  # optimizer steps done
    epoch: int = 0
    step_in_epoch: int = 0         # loader position inside ``epoch``: a resume continues mid-epoch
    best_auc: float = -math.inf    # best validation macro AUC so far
    best_step: int = -1
    best_state: Optional[dict[str, torch.Tensor]] = None  # trainable tensors + buffers of the best step
    evals_since_best: int = 0      # for early stopping
    stopped_early: bool = False
    done: bool = False
    elapsed: float = 0.0           # training seconds over all resumes
    last_val_auc: Optional[float] = None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # not asdict: it would deep-copy the tensors

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainState":
        check_known_keys(cls, d)
        return cls(**d)


# ----------------------------------------------------------------------------- set-up helpers
def _amp(cfg: TrainConfig, device: torch.device) -> str:
    if cfg.amp != "auto":
        return cfg.amp
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "none"


def _no_buffer_sync() -> dict[str, bool]:
    """No per-forward buffer broadcast: input normalisation is constant, frozen encoder BatchNorm is in eval
    mode, and HeadNorm keeps its running statistics equal on every rank itself (the keyword was renamed in
    torch 2.10+)."""
    import inspect

    params = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}


def _label_stats(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    for mask_attr in ("label_mask", "mask"):  # toy datasets / HeadCTDataset
        if hasattr(ds, "labels") and hasattr(ds, mask_attr):
            return np.asarray(ds.labels), np.asarray(getattr(ds, mask_attr))
    items = [ds[i] for i in range(len(ds))]  # type: ignore[arg-type]
    return (np.stack([np.asarray(it["labels"]) for it in items]), np.stack([np.asarray(it["label_mask"]) for it in items]))


def _prepare_model(cfg: TrainConfig, model: Optional[nn.Module], n_classes: int, info: D.DistInfo) -> nn.Module:
    """The adapted model on this rank's device (built from ``cfg`` unless one is given)."""
    if model is None:
        model = build_model(cfg, n_classes)
    else:
        seed_everything(cfg.seed)
        apply_adapter(model, cfg, getattr(getattr(model, "spec", None), "target_modules", None))
    model.to(info.device)
    if info.enabled and info.device.type == "cuda" and cfg.adapter == "full" and hasattr(model, "encoder"):
        # BatchNorm trains under full fine-tuning: batch statistics over all GPUs, as on one device.
        # (The head norm syncs itself; SyncBatchNorm needs GPU tensors, so gloo/CPU keeps per-rank statistics.)
        model.encoder = nn.SyncBatchNorm.convert_sync_batchnorm(model.encoder)
    return model


def _wrap_ddp(cfg: TrainConfig, model: nn.Module, info: D.DistInfo) -> nn.Module:
    if not info.enabled:
        return model
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[info.device.index] if info.device.type == "cuda" else None,
        # full fine-tuning may hold parameters a forward never uses (e.g. unused pooling/norm layers)
        find_unused_parameters=(cfg.adapter == "full" or (cfg.adapter == "molre" and cfg.top_k is not None)),
        **_no_buffer_sync())


def _say_series_warnings(cfg: TrainConfig, datasets: dict[str, Dataset], show: int = 10) -> None:
    """Print what the loaders correct or tolerate (a gantry tilt resampled, a bone kernel read with
    ``bone_kernel=warn``, ...) before the first step, at most ``show`` lines."""
    lines = series_warnings(datasets)
    for line in lines[:show]:
        print(f"molre train: {line}", file=sys.stderr)
    if len(lines) > show:
        root = f" --root {cfg.data_root}" if cfg.data_root else ""
        print(f"molre train: ... and {len(lines) - show} more scan warning(s); molre validate {cfg.manifest}{root} "
              "lists every one", file=sys.stderr)


# ----------------------------------------------------------------------------- the run
def train(cfg: TrainConfig, run_dir: str | Path, resume: bool = False, *, model: Optional[nn.Module] = None,
          datasets: Optional[dict[str, Dataset]] = None, callbacks: Sequence[Callable[[dict], None]] = (),
          restart: bool = False) -> Path:
    """Train per ``cfg`` into ``run_dir`` and return it; ``resume=True`` continues from its checkpoint
    (``last.pt``, else ``prev.pt`` with a warning), ``restart=True`` clears the run's files and starts over.

    ``model`` (un-adapted, with ``.head``) and ``datasets`` ({split: dataset}) replace what ``cfg`` would
    build (notebooks, tests); ``callbacks`` get a dict (step, epoch, loss, lr, val_macro_auc) after each step.
    The run folder is locked (``<run_dir>/.lock``, see run_lock.py) for the whole training: a second trainer
    of the same folder stops with an error naming this process.
    """
    info = D.setup(cfg.device)
    lock = RunLock(run_dir) if info.is_main else None
    try:
        if lock is not None:
            lock.acquire()
        return _train(cfg, Path(run_dir), resume, model, datasets, callbacks, info, restart)
    finally:
        if lock is not None:
            lock.release()
        D.teardown(info)


def _train(cfg: TrainConfig, run_dir: Path, resume: bool, model: Optional[nn.Module],
           datasets: Optional[dict[str, Dataset]], callbacks: Sequence[Callable[[dict], None]], info: D.DistInfo,
           restart: bool = False) -> Path:
    resume = check_run_dir(cfg, run_dir, resume, restart)
    set_determinism(cfg.threads, cfg.deterministic)  # before any tensor work: config.json records what is in effect
    D.barrier(info)  # every rank has checked the run dir before rank 0 writes into it
    if datasets is None:
        from molre_lib.backbones import get_spec

        splits = [s for s in (cfg.train_split, cfg.val_split, cfg.test_split) if s]
        datasets = build_datasets(cfg, get_spec(cfg.backbone), splits)
        if info.is_main:
            _say_series_warnings(cfg, datasets)
    trainer = Trainer(cfg, run_dir, info, datasets, model)
    if resume:
        trainer.restore()
    elif info.is_main:
        write_run_config(run_dir, cfg, info, trainer.core, trainer.n_classes)
    with PreemptionGuard() as guard:  # SIGUSR1/2, SIGTERM: checkpoint after the step, raise Preempted
        trainer.fit(callbacks, resume, guard)
    if trainer.state.best_state is not None:
        load_trainable(trainer.core, trainer.state.best_state)
    _finish(cfg, run_dir, trainer.core, datasets, info, trainer.amp, trainer.keys, trainer.state)
    return run_dir


class Trainer:
    """One run's model, optimisation objects and :class:`TrainState`; each method is one step of training.

    ``core`` is the adapted model, ``model`` the same wrapped in DDP when there are several processes.
    """

    def __init__(self, cfg: TrainConfig, run_dir: Path, info: D.DistInfo, datasets: dict[str, Dataset],
                 model: Optional[nn.Module]) -> None:
        self.cfg, self.run_dir, self.info, self.datasets = cfg, run_dir, info, datasets
        self.ckpt_path = run_dir / "checkpoints" / "last.pt"
        self.train_ds = datasets[cfg.train_split]
        self.n_classes = int(np.asarray(self.train_ds[0]["labels"]).shape[-1])
        self.keys = finding_keys(self.n_classes)
        self.core = _prepare_model(cfg, model, self.n_classes, info)
        self.amp = _amp(cfg, info.device)
        self.steps_per_epoch = StepBatchSampler(len(self.train_ds), cfg.batch_size, cfg.grad_accum, info,  # type: ignore[arg-type]
                                                cfg.seed, 0).steps_per_epoch
        if self.steps_per_epoch == 0:
            raise ValueError(f"batch_size={cfg.batch_size} exceeds the {len(self.train_ds)} training scans")  # type: ignore[arg-type]
        self.total = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        pos_weight = None
        if cfg.pos_weight == "balanced":
            pos_weight = torch.from_numpy(pos_weights_from_labels(*_label_stats(self.train_ds), cfg.pos_weight_max))
        self.loss_fn = MaskedFocalLoss(cfg.focal_alpha, cfg.focal_gamma, pos_weight, reduction="sum").to(info.device)
        self.opt = torch.optim.AdamW(param_groups(self.core, cfg.weight_decay), lr=cfg.lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(cfg, self.total))
        self.scaler = torch.amp.GradScaler(info.device.type, enabled=(self.amp == "fp16"))
        self.trainable = [p for p in self.core.parameters() if p.requires_grad]
        self.fingerprint = frozen_fingerprint(self.core)
        self.model = _wrap_ddp(cfg, self.core, info)
        self.state = TrainState()
        self._log_fh, self._log = None, None  # train_log.csv (file, csv writer) on rank 0, opened by fit()
        self.tb = TrainingBoard(run_dir, cfg, enabled=cfg.tensorboard and info.is_main)  # opened by fit()
        self.grad_norm: Optional[torch.Tensor] = None  # of the last step, before clipping (TensorBoard)

    # ------------------------------------------------------------------ checkpoints
    def restore(self) -> None:
        """Weights, optimizer, scheduler, scaler, state and this rank's RNG from ``checkpoints/last.pt`` (or
        ``prev.pt``, with a warning naming the damaged ``last.pt``)."""
        ck, path = load_latest(self.ckpt_path.parent, warn=lambda m: print(m, file=sys.stderr))
        if abs(ck["frozen_fingerprint"] - self.fingerprint) > 1e-6 * max(1.0, abs(self.fingerprint)):
            raise ValueError(f"{path}: the rebuilt backbone differs from the one this run trained against "
                             f"(frozen-weight fingerprint {self.fingerprint} != {ck['frozen_fingerprint']})")
        load_trainable(self.core, ck["trainable"])
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        self.scaler.load_state_dict(ck["scaler"])
        self.state = TrainState.from_dict(ck["state"])
        set_rng_state(ck["rng"][self.info.rank if self.info.rank < len(ck["rng"]) else 0])

    def checkpoint(self, rng: Optional[dict] = None) -> None:
        """Save everything a resume needs (every rank's RNG state; rank 0 writes)."""
        rngs = D.all_gather_objects(rng or rng_state(), self.info)
        if self.info.is_main:
            save_checkpoint(self.ckpt_path, {
                "trainable": trainable_state(self.core), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "scaler": self.scaler.state_dict(), "rng": rngs,
                "state": self.state.to_dict(), "frozen_fingerprint": self.fingerprint, "config": self.cfg.to_dict()})
        D.barrier(self.info)

    def _stop_on_signal(self, guard: PreemptionGuard) -> None:
        """A scheduler signal came (time limit, preemption, requeue): save this step and stop; resume continues."""
        self.checkpoint()
        if self._log_fh is not None:
            self._log_fh.close()
        self.tb.close(self.state.step)
        if self.info.is_main:
            guard.record(self.run_dir, self.state.step)
        raise Preempted(f"stopped by {guard.signal_name} after step {self.state.step}; {self.ckpt_path} holds it "
                        "and a resume continues from there")

    # ------------------------------------------------------------------ the loop
    def fit(self, callbacks: Sequence[Callable[[dict], None]] = (), resume: bool = False,
            guard: Optional[PreemptionGuard] = None) -> None:
        """Optimizer steps until ``total``, early stopping or a non-finite loss; logs, evaluates, checkpoints."""
        from tqdm.auto import tqdm

        cfg, st = self.cfg, self.state
        if self.info.is_main:
            self._log_fh, self._log = open_train_log(self.run_dir, st.step if resume else None)
        self.tb.open(st.step if resume else None)
        if not resume:
            self.checkpoint()  # step 0: a NaN on the first step still leaves a good checkpoint
        t0 = time.perf_counter() - st.elapsed
        bar = tqdm(total=self.total, initial=st.step, desc=f"train {cfg.adapter}", disable=not self.info.is_main)
        self.model.train()
        while st.step < self.total and not st.done:
            for micro, rng_before in self._epoch_batches():
                loss_value = self._backward(micro, rng_before)
                lr = self._optimizer_step()
                epoch_end, val_auc = self._advance()
                st.elapsed = time.perf_counter() - t0
                self._log_step(bar, loss_value, lr, val_auc, epoch_end)
                if st.step >= self.total or st.stopped_early:
                    st.done = True
                if st.done or (cfg.checkpoint_every and st.step % cfg.checkpoint_every == 0) or \
                        (not cfg.checkpoint_every and val_auc is not None):
                    self.checkpoint()
                for cb in callbacks:
                    cb({"step": st.step, "epoch": st.epoch, "loss": loss_value, "lr": lr, "val_macro_auc": val_auc})
                if not st.done and guard is not None and guard.should_stop(self.info):
                    self._stop_on_signal(guard)
                if st.done:
                    break
        bar.close()
        if self._log_fh is not None:
            self._log_fh.close()
        self.tb.close(st.step, st.best_auc if st.best_step >= 0 else None)

    def _epoch_batches(self) -> Iterator[tuple[list[dict], dict]]:
        """The rest of the current epoch: (grad_accum micro-batches, RNG state before drawing them) per step."""
        cfg, st = self.cfg, self.state
        sampler = StepBatchSampler(len(self.train_ds), cfg.batch_size, cfg.grad_accum, self.info, cfg.seed,  # type: ignore[arg-type]
                                   st.epoch, st.step_in_epoch)
        if hasattr(self.train_ds, "epoch"):
            self.train_ds.epoch = st.epoch  # SeededAugment: augmentation keyed by (seed, epoch, index)
        it = iter(make_loader(self.train_ds, sampler, cfg.num_workers, cfg.seed, st.epoch,
                              self.info.device.type == "cuda"))
        for _ in range(len(sampler) // cfg.grad_accum):
            rng_before = rng_state()
            yield [next(it) for _ in range(cfg.grad_accum)], rng_before

    def _backward(self, micro: list[dict], rng_before: dict) -> float:
        """Forward + backward of one optimizer step's micro-batches; the global-batch loss (a non-finite one
        checkpoints the state before the step and raises :class:`NonFiniteLossError`)."""
        cfg, info, dev = self.cfg, self.info, self.info.device
        n_known = D.all_reduce_sum(sum(b["label_mask"].sum() for b in micro).to(dev, torch.float64), info)
        norm = (n_known / info.world_size).clamp_min(1.0 / info.world_size).float()
        focal_sum = torch.zeros((), device=dev, dtype=torch.float64)
        for i, b in enumerate(micro):
            sync = i == len(micro) - 1 or not info.enabled
            with (self.model.no_sync() if not sync else torch.enable_grad()):  # type: ignore[operator]
                with autocast(dev, self.amp):
                    logits = self.model(b["image"].to(dev, non_blocking=True))  # (b, F)
                focal = self.loss_fn(logits, b["labels"].to(dev), b["label_mask"].to(dev))
                loss = focal / norm + balance_loss(self.core) / cfg.grad_accum
                self.scaler.scale(loss).backward()
            focal_sum += focal.detach().double()
        loss_value = float(D.all_reduce_sum(focal_sum, info) / n_known.clamp_min(1.0))
        if not math.isfinite(loss_value):
            self.opt.zero_grad(set_to_none=True)
            self.checkpoint(rng_before)  # weights, optimizer and loader position are still those of the last step
            raise NonFiniteLossError(
                f"non-finite loss ({loss_value}) at step {self.state.step + 1} (epoch {self.state.epoch}); training "
                f"stopped. Last good state (step {self.state.step}) saved to {self.ckpt_path}. Check the inputs of "
                "that step, lower lr, or use amp=bf16 instead of fp16.")
        return loss_value

    def _optimizer_step(self) -> float:
        """Clip, step, schedule; returns the learning rate the step used."""
        if self.cfg.max_grad_norm > 0 or self.tb.enabled:
            self.scaler.unscale_(self.opt)
            # max_grad_norm 0 with TensorBoard on: the norm is measured, grads are scaled by exactly 1
            self.grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.max_grad_norm or math.inf)
        self.scaler.step(self.opt)
        self.scaler.update()
        lr = self.opt.param_groups[0]["lr"]
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return lr

    def _advance(self) -> tuple[bool, Optional[float]]:
        """Count the step; validate when due. Returns (the step ended an epoch, validation macro AUC or None)."""
        cfg, st = self.cfg, self.state
        st.step += 1
        st.step_in_epoch += 1
        epoch_end = st.step_in_epoch >= self.steps_per_epoch
        if epoch_end:
            st.epoch += 1
            st.step_in_epoch = 0
        due = st.step >= self.total or (cfg.eval_every and st.step % cfg.eval_every == 0) or \
            (not cfg.eval_every and epoch_end)
        return epoch_end, (self._validate() if cfg.val_split and due else None)

    def _validate(self) -> float:
        """Validation macro AUC; keeps the best step's weights and counts evaluations for early stopping."""
        cfg, st = self.cfg, self.state
        with self.tb.routing(self.core) as routing:  # gate entropy / expert usage of MoLRE layers, or None
            out = predict_dataset(self.core, self.datasets[cfg.val_split], self.info,
                                  max(1, cfg.batch_size // max(1, cfg.grad_accum)), self.amp, cfg.num_workers)
        auc = per_finding_auc(out["labels"], out["probs"], out["mask"])
        self.tb.validation(st.step, auc, self.keys, routing.summary() if routing is not None else None)
        val_auc = float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan")
        st.last_val_auc = val_auc
        if val_auc > st.best_auc:
            st.best_auc, st.best_step, st.best_state = val_auc, st.step, trainable_state(self.core)
            st.evals_since_best = 0
        else:
            st.evals_since_best += 1
            if cfg.early_stopping and st.evals_since_best >= cfg.early_stopping:
                st.stopped_early = True
        return val_auc

    def _log_step(self, bar: Any, loss_value: float, lr: float, val_auc: Optional[float], epoch_end: bool) -> None:
        st = self.state
        self.tb.step(st.step, loss_value, lr, self.grad_norm)
        if self._log is not None:
            self._log.writerow({"step": st.step, "epoch": st.epoch - (1 if epoch_end else 0), "loss": f"{loss_value:.6g}",
                                "lr": f"{lr:.6g}", "val_macro_auc": "" if val_auc is None else f"{val_auc:.6f}",
                                "elapsed_s": f"{st.elapsed:.4f}"})
            self._log_fh.flush()  # a killed run keeps every logged step (resume keeps rows up to its checkpoint)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}", val_auc="-" if st.last_val_auc is None else f"{st.last_val_auc:.3f}")


def _finish(cfg: TrainConfig, run_dir: Path, core: nn.Module, datasets: dict[str, Dataset],
            info: D.DistInfo, amp: str, keys: list[str], st: TrainState) -> None:
    """Predictions of the selected (best-val) weights, metrics.json and adapter.safetensors."""
    from molre_lib.adapters import save_adapter

    results = {}
    for split in (cfg.val_split, cfg.test_split):
        if split and split in datasets:
            out = predict_dataset(core, datasets[split], info, max(1, cfg.batch_size // cfg.grad_accum), amp,
                                  cfg.num_workers, progress=f"predict {split}")
            results[split] = out
            if info.is_main:
                write_predictions(run_dir / f"predictions_{split}.parquet", out, split, keys)
    if info.is_main:
        extra = tuple(n for n, _ in core.named_children()) if cfg.adapter == "full" else new_modules(core)
        save_adapter(core, run_dir / "adapter.safetensors", extra=extra,
                     metadata={"adapter_kind": cfg.adapter, "backbone": cfg.backbone,
                               "frozen_fingerprint": repr(frozen_fingerprint(core))})
        write_metrics(run_dir / "metrics.json", results, keys, cfg.eval_bootstrap, cfg.seed, {
            "steps": st.step, "best_step": st.best_step,
            "best_val_macro_auc": None if st.best_step < 0 else st.best_auc,
            "stopped_early": st.stopped_early, "train_seconds": round(st.elapsed, 2)})
    D.barrier(info)
