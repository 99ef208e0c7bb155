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
"""
from __future__ import annotations

import csv
import math
import random
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from . import distributed as D
from .checkpoint import frozen_fingerprint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .loaders import StepBatchSampler, autocast, build_datasets, make_loader, predict_dataset
from .losses import MaskedFocalLoss, pos_weights_from_labels
from molre_lib.stats.auroc import per_finding_auc
from .run_files import finding_keys, write_metrics, write_predictions, write_run_config
from .config import TrainConfig

LOG_FIELDS = ["step", "epoch", "loss", "lr", "val_macro_auc", "elapsed_s"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the last good state was checkpointed before raising."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(cfg: TrainConfig, num_classes: int = 75) -> nn.Module:
    """Backbone from the registry, then the adapter given by ``cfg.adapter`` (seeded: rebuilds are identical)."""
    from molre_lib.backbones import create_model, get_spec

    seed_everything(cfg.seed)
    spec = get_spec(cfg.backbone)
    extra = {"checkpoint": True} if (cfg.grad_checkpointing and spec.dims == 2) else {}
    model = create_model(cfg.backbone, num_classes=num_classes, weights=cfg.weights, pretrained=cfg.pretrained,
                         reduced=cfg.reduced, **extra)
    if cfg.grad_checkpointing and spec.dims == 3:
        setter = getattr(model.encoder, "set_grad_checkpointing", None)
        if setter is None:
            raise ValueError(f"backbone {cfg.backbone!r} does not support gradient checkpointing")
        setter(True)
    return apply_adapter(model, cfg, spec.target_modules)


def apply_adapter(model: nn.Module, cfg: TrainConfig, default_targets: Any = None) -> nn.Module:
    """Inject LoRA / MoLRE, or set up a linear probe / full fine-tuning, per ``cfg.adapter``."""
    from molre_lib.adapters import MoLREConfig, inject, mark_trainable

    targets = cfg.target_modules if cfg.target_modules is not None else default_targets
    alpha = cfg.lora_alpha if cfg.lora_alpha is not None else 2.0 * cfg.rank
    if cfg.adapter in ("lora", "molre"):
        if targets is None:
            raise ValueError("target_modules is not set and the model has no default adapter targets")
        common = dict(r=cfg.rank, alpha=alpha, dropout=cfg.adapter_dropout, target_modules=targets)
        acfg = (MoLREConfig(n_experts=1, **common) if cfg.adapter == "lora" else
                MoLREConfig(n_experts=cfg.n_experts, shared_a=cfg.shared_a, router=cfg.router, temperature=cfg.temperature,
                            top_k=cfg.top_k, balance_coef=cfg.balance_coef, **common))
        inject(model, acfg, trainable=_new_modules(model))
    elif cfg.adapter == "linear_probe":
        mark_trainable(model, _new_modules(model))
    else:  # full fine-tuning
        model.requires_grad_(True)
    return model


def _new_modules(model: nn.Module) -> tuple[str, ...]:
    """Top-level modules trained from scratch (slice aggregator, head): trainable with any adapter."""
    return tuple(getattr(model, "trainable_modules", ("head",)))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameters")
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_lambda(cfg: TrainConfig, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        if cfg.schedule == "constant":
            return 1.0
        frac = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
        return 0.5 * (1 + math.cos(math.pi * frac)) if cfg.schedule == "cosine" else 1.0 - frac
    return f


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


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What training changes: the trainable parameters and every buffer (the head norm's running statistics;
    BatchNorm statistics under full fine-tuning). Buffers are small, and without them a resumed run or the
    restored best step would predict with the running statistics of another step."""
    state = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
    state.update({n: b.detach().cpu().clone() for n, b in model.named_buffers()})
    return state


def _load_trainable(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    with torch.no_grad():
        for n, t in state.items():
            tensors[n].copy_(t)


def _label_stats(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    for mask_attr in ("label_mask", "mask"):  # toy datasets / HeadCTDataset
        if hasattr(ds, "labels") and hasattr(ds, mask_attr):
            return np.asarray(ds.labels), np.asarray(getattr(ds, mask_attr))
    items = [ds[i] for i in range(len(ds))]  # type: ignore[arg-type]
    return (np.stack([np.asarray(it["labels"]) for it in items]), np.stack([np.asarray(it["label_mask"]) for it in items]))


def _open_log(run_dir: Path, keep_up_to: Optional[int]) -> Any:
    """train_log.csv for appending; on resume rows after the checkpoint's step are dropped (re-done)."""
    path = run_dir / "train_log.csv"
    rows = []
    if keep_up_to is not None and path.exists():
        with open(path, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= keep_up_to]
    fh = open(path, "w", newline="")
    writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    fh.flush()
    return fh, writer


def train(cfg: TrainConfig, run_dir: str | Path, resume: bool = False, *, model: Optional[nn.Module] = None,
          datasets: Optional[dict[str, Dataset]] = None, callbacks: Sequence[Callable[[dict], None]] = ()) -> Path:
    """Train per ``cfg`` into ``run_dir`` and return it; ``resume=True`` continues from its checkpoint.

    ``model`` (un-adapted, with ``.head``) and ``datasets`` ({split: dataset}) replace what ``cfg`` would
    build (notebooks, tests); ``callbacks`` get a dict (step, epoch, loss, lr, val_macro_auc) after each step.
    """
    info = D.setup(cfg.device)
    try:
        return _train(cfg, Path(run_dir), resume, model, datasets, callbacks, info)
    finally:
        D.teardown(info)


def _train(cfg: TrainConfig, run_dir: Path, resume: bool, model: Optional[nn.Module],
           datasets: Optional[dict[str, Dataset]], callbacks: Sequence[Callable[[dict], None]], info: D.DistInfo) -> Path:
    from tqdm.auto import tqdm

    from molre_lib.adapters import balance_loss

    ckpt_path = run_dir / "checkpoints" / "last.pt"
    if resume:
        if not ckpt_path.exists():
            raise FileNotFoundError(f"cannot resume: no checkpoint at {ckpt_path}")
        saved = TrainConfig.load(run_dir / "config.json")
        changed = saved.diff(cfg)
        if changed:
            raise ValueError(f"cannot resume {run_dir}: config differs from config.json in {changed}")
    elif ckpt_path.exists() or (run_dir / "config.json").exists():
        raise FileExistsError(f"{run_dir} already holds a run; resume it (--resume) or choose another run dir")
    D.barrier(info)  # every rank has checked the run dir before rank 0 writes into it
    splits = [s for s in (cfg.train_split, cfg.val_split, cfg.test_split) if s]
    if datasets is None:
        from molre_lib.backbones import get_spec

        datasets = build_datasets(cfg, get_spec(cfg.backbone), splits)
    train_ds = datasets[cfg.train_split]
    n_classes = int(np.asarray(train_ds[0]["labels"]).shape[-1])
    keys = finding_keys(n_classes)
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
    core = model
    amp = _amp(cfg, info.device)
    sampler0 = StepBatchSampler(len(train_ds), cfg.batch_size, cfg.grad_accum, info, cfg.seed, 0)  # type: ignore[arg-type]
    steps_per_epoch = sampler0.steps_per_epoch
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size={cfg.batch_size} exceeds the {len(train_ds)} training scans")  # type: ignore[arg-type]
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    pos_weight = None
    if cfg.pos_weight == "balanced":
        pos_weight = torch.from_numpy(pos_weights_from_labels(*_label_stats(train_ds), cfg.pos_weight_max))
    loss_fn = MaskedFocalLoss(cfg.focal_alpha, cfg.focal_gamma, pos_weight, reduction="sum").to(info.device)
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, total))
    scaler = torch.amp.GradScaler(info.device.type, enabled=(amp == "fp16"))
    trainable = [p for p in model.parameters() if p.requires_grad]
    fingerprint = frozen_fingerprint(model)
    if info.enabled:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None,
            # full fine-tuning may hold parameters a forward never uses (e.g. unused pooling/norm layers)
            find_unused_parameters=(cfg.adapter == "full" or (cfg.adapter == "molre" and cfg.top_k is not None)),
            **_no_buffer_sync())

    st: dict[str, Any] = {"step": 0, "epoch": 0, "step_in_epoch": 0, "best_auc": -math.inf, "best_step": -1,
                          "best_state": None, "evals_since_best": 0, "stopped_early": False, "done": False,
                          "elapsed": 0.0, "last_val_auc": None}
    if resume:
        ck = load_checkpoint(ckpt_path)
        if abs(ck["frozen_fingerprint"] - fingerprint) > 1e-6 * max(1.0, abs(fingerprint)):
            raise ValueError(f"{ckpt_path}: the rebuilt backbone differs from the one this run trained against "
                             f"(frozen-weight fingerprint {fingerprint} != {ck['frozen_fingerprint']})")
        _load_trainable(core, ck["trainable"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        st.update(ck["state"])
        set_rng_state(ck["rng"][info.rank if info.rank < len(ck["rng"]) else 0])
    elif info.is_main:
        write_run_config(run_dir, cfg, info, core, n_classes)

    def checkpoint(rng: Optional[dict] = None) -> None:
        rngs = D.all_gather_objects(rng or rng_state(), info)
        if info.is_main:
            save_checkpoint(ckpt_path, {
                "trainable": _trainable_state(core), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict(), "rng": rngs, "state": st, "frozen_fingerprint": fingerprint,
                "config": cfg.to_dict()})
        D.barrier(info)

    def evaluate() -> float:
        out = predict_dataset(core, datasets[cfg.val_split], info, max(1, cfg.batch_size // max(1, cfg.grad_accum)),
                              amp, cfg.num_workers)
        auc = per_finding_auc(out["labels"], out["probs"], out["mask"])
        return float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan")

    log_fh, log = _open_log(run_dir, st["step"] if resume else None) if info.is_main else (None, None)
    if not resume:
        checkpoint()  # step 0: a NaN on the first step still leaves a good checkpoint
    t0 = time.perf_counter() - st["elapsed"]
    bar = tqdm(total=total, initial=st["step"], desc=f"train {cfg.adapter}", disable=not info.is_main)
    model.train()
    while st["step"] < total and not st["done"]:
        sampler = StepBatchSampler(len(train_ds), cfg.batch_size, cfg.grad_accum, info, cfg.seed, st["epoch"],  # type: ignore[arg-type]
                                   st["step_in_epoch"])
        if hasattr(train_ds, "epoch"):
            train_ds.epoch = st["epoch"]  # SeededAugment: augmentation keyed by (seed, epoch, index)
        it = iter(make_loader(train_ds, sampler, cfg.num_workers, cfg.seed, st["epoch"], info.device.type == "cuda"))
        for _ in range(len(sampler) // cfg.grad_accum):
            rng_before = rng_state()
            micro = [next(it) for _ in range(cfg.grad_accum)]
            n_known = D.all_reduce_sum(sum(b["label_mask"].sum() for b in micro).to(info.device, torch.float64), info)
            norm = (n_known / info.world_size).clamp_min(1.0 / info.world_size).float()
            focal_sum = torch.zeros((), device=info.device, dtype=torch.float64)
            for i, b in enumerate(micro):
                sync = i == len(micro) - 1 or not info.enabled
                with (model.no_sync() if not sync else torch.enable_grad()):  # type: ignore[operator]
                    with autocast(info.device, amp):
                        logits = model(b["image"].to(info.device, non_blocking=True))  # (b, F)
                    focal = loss_fn(logits, b["labels"].to(info.device), b["label_mask"].to(info.device))
                    loss = focal / norm + balance_loss(core) / cfg.grad_accum
                    scaler.scale(loss).backward()
                focal_sum += focal.detach().double()
            loss_value = float(D.all_reduce_sum(focal_sum, info) / n_known.clamp_min(1.0))
            if not math.isfinite(loss_value):
                opt.zero_grad(set_to_none=True)
                checkpoint(rng_before)  # weights, optimizer and loader position are still those of the last step
                raise NonFiniteLossError(
                    f"non-finite loss ({loss_value}) at step {st['step'] + 1} (epoch {st['epoch']}); training "
                    f"stopped. Last good state (step {st['step']}) saved to {ckpt_path}. Check the inputs of that "
                    "step, lower lr, or use amp=bf16 instead of fp16.")
            if cfg.max_grad_norm > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
            scaler.step(opt)
            scaler.update()
            lr = opt.param_groups[0]["lr"]
            sched.step()
            opt.zero_grad(set_to_none=True)
            st["step"] += 1
            st["step_in_epoch"] += 1
            epoch_end = st["step_in_epoch"] >= steps_per_epoch
            if epoch_end:
                st["epoch"] += 1
                st["step_in_epoch"] = 0
            last = st["step"] >= total
            val_auc = None
            if cfg.val_split and (last or (cfg.eval_every and st["step"] % cfg.eval_every == 0)
                                  or (not cfg.eval_every and epoch_end)):
                val_auc = evaluate()
                st["last_val_auc"] = val_auc
                if val_auc > st["best_auc"]:
                    st.update(best_auc=val_auc, best_step=st["step"], best_state=_trainable_state(core),
                              evals_since_best=0)
                else:
                    st["evals_since_best"] += 1
                    if cfg.early_stopping and st["evals_since_best"] >= cfg.early_stopping:
                        st["stopped_early"] = True
            st["elapsed"] = time.perf_counter() - t0
            if log is not None:
                log.writerow({"step": st["step"], "epoch": st["epoch"] - (1 if epoch_end else 0), "loss": f"{loss_value:.6g}",
                              "lr": f"{lr:.6g}", "val_macro_auc": "" if val_auc is None else f"{val_auc:.6f}",
                              "elapsed_s": f"{st['elapsed']:.4f}"})
                log_fh.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", val_auc="-" if st["last_val_auc"] is None else f"{st['last_val_auc']:.3f}")
            if last or st["stopped_early"]:
                st["done"] = True
            if st["done"] or (cfg.checkpoint_every and st["step"] % cfg.checkpoint_every == 0) or \
                    (not cfg.checkpoint_every and val_auc is not None):
                checkpoint()
            for cb in callbacks:
                cb({"step": st["step"], "epoch": st["epoch"], "loss": loss_value, "lr": lr, "val_macro_auc": val_auc})
            if st["done"]:
                break
    bar.close()
    if log_fh is not None:
        log_fh.close()
    if st["best_state"] is not None:
        _load_trainable(core, st["best_state"])
    _finish(cfg, run_dir, core, datasets, info, amp, keys, st)
    return run_dir


def _finish(cfg: TrainConfig, run_dir: Path, core: nn.Module, datasets: dict[str, Dataset],
            info: D.DistInfo, amp: str, keys: list[str], st: dict[str, Any]) -> None:
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
        extra = tuple(n for n, _ in core.named_children()) if cfg.adapter == "full" else _new_modules(core)
        save_adapter(core, run_dir / "adapter.safetensors", extra=extra,
                     metadata={"adapter_kind": cfg.adapter, "backbone": cfg.backbone,
                               "frozen_fingerprint": repr(frozen_fingerprint(core))})
        write_metrics(run_dir / "metrics.json", results, keys, cfg.eval_bootstrap, cfg.seed, {
            "steps": st["step"], "best_step": st["best_step"],
            "best_val_macro_auc": None if st["best_step"] < 0 else st["best_auc"],
            "stopped_early": st["stopped_early"], "train_seconds": round(st["elapsed"], 2)})
    D.barrier(info)
