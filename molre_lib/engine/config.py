"""TrainConfig: everything a training run depends on, saved as ``config.json`` in the run directory.

Every field carries help text; the ``molre train`` CLI generates one flag per field from it.
Unknown keys raise naming the key (as nanoGPT's configurator does).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from molre_lib.adapters.config import ROUTERS, SCALING_RULES  # the one list of each (workbook.params reads them here)
from molre_lib.common.config_keys import check_known_keys

ADAPTERS = ("lora", "molre", "linear_probe", "full")
SCHEDULES = ("cosine", "linear", "constant")
AMP = ("auto", "none", "bf16", "fp16")
POS_WEIGHTS = ("none", "balanced")


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (see ``molre train --help``)."""

    # data
    manifest: str = field(default="", metadata={"help": "Manifest CSV (molre_lib.data.manifest format)."})
    data_root: Optional[str] = field(default=None, metadata={"help": "Root for relative paths in the manifest (default: its folder)."})
    train_split: str = field(default="train", metadata={"help": "Manifest split used for training."})
    val_split: str = field(default="val", metadata={"help": "Split for evaluation during training / early stopping ('' = none)."})
    test_split: str = field(default="test", metadata={"help": "Split predicted at the end ('' = none)."})
    volume_shape: Optional[list[int]] = field(default=None, metadata={"help": "Resampled volume (D, H, W); default: the backbone's input."})
    windows: Optional[list[list[float]]] = field(default=None, metadata={"help": "CT windows [[level, width], ...]; default: the backbone's."})
    spacing: Optional[list[float]] = field(default=None, metadata={"help": "Resample to (dz, dy, dx) mm before fitting (default: keep the grid)."})
    fit: str = field(default="resize", metadata={"help": "Fit to volume_shape: 'resize' or 'pad_crop' (with spacing)."})
    cache_dir: Optional[str] = field(default=None, metadata={"help": "On-disk cache of preprocessed volumes (default: none)."})
    memory_cache_gb: float = field(default=2.0, metadata={"help": "Keep preprocessed volumes in memory up to this size (GB)."})
    augment: bool = field(default=False, metadata={"help": "Random augmentation of training volumes."})
    series_policy: Optional[list[str]] = field(default=None, metadata={
        "help": "DICOM series check as KEY=VALUE (e.g. bone_kernel=warn max_missing_slices=1 gantry_tilt=refuse); "
                "default: bone kernels refused, gantry tilt and obliquity corrected, no missing slice "
                "(docs/how-to/pacs-export.md)."})
    # model
    backbone: str = field(default="phantom_vit", metadata={"help": "Backbone registry name (molre backbones list)."})
    reduced: bool = field(default=False, metadata={"help": "Use the backbone's reduced (tiny) configuration, for tests."})
    image_size: Optional[list[int]] = field(default=None, metadata={
        "help": "Encoder input (H, W) of a 2D backbone, a multiple of its patch size: slices are resized to it "
                "(default: the backbone's input size). A ViT's cost follows its patch count."})
    weights: Optional[str] = field(default=None, metadata={"help": "Local weight file for the backbone (default: the registry's)."})
    pretrained: bool = field(default=True, metadata={"help": "Load pretrained backbone weights (False: random init, for tests)."})
    adapter: str = field(default="molre", metadata={"help": f"Adaptation: one of {ADAPTERS}."})
    rank: int = field(default=8, metadata={"help": "Rank r of each low-rank expert."})
    n_experts: int = field(default=4, metadata={"help": "Experts per MoLRE layer (LoRA uses 1)."})
    shared_a: bool = field(default=False, metadata={"help": "MoLRE experts share one down-projection A (fewer parameters)."})
    lora_alpha: Optional[float] = field(default=None, metadata={"help": "Adapter scaling numerator alpha (default 2 * rank)."})
    scaling: str = field(default="lora", metadata={"help": "Adapter scale from alpha and rank: 'lora' (alpha / rank) or "
                                                           "'rslora' (alpha / sqrt(rank)); docs/explanation/scaling.md."})
    adapter_dropout: float = field(default=0.0, metadata={"help": "Dropout on the adapter input."})
    router: str = field(default="token", metadata={"help": f"MoLRE router: one of {ROUTERS}."})
    temperature: float = field(default=1.0, metadata={"help": "Router softmax temperature."})
    top_k: Optional[int] = field(default=None, metadata={"help": "Keep the top-k experts per token (default: dense routing)."})
    balance_coef: float = field(default=0.0, metadata={"help": "Weight of the router load-balancing loss (0 = off)."})
    target_modules: Optional[list[str]] = field(default=None, metadata={"help": "Modules to adapt (default: the backbone's)."})
    grad_checkpointing: bool = field(default=False, metadata={"help": "Recompute encoder activations in backward to save memory."})
    # optimisation
    lr: float = field(default=1e-3, metadata={"help": "Peak learning rate (AdamW)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not applied to biases and norms)."})
    schedule: str = field(default="cosine", metadata={"help": f"LR schedule after warm-up: one of {SCHEDULES}."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps."})
    epochs: int = field(default=10, metadata={"help": "Training epochs (ignored when max_steps > 0)."})
    max_steps: int = field(default=0, metadata={"help": "Optimizer steps in total (0 = epochs x steps per epoch)."})
    batch_size: int = field(default=8, metadata={"help": "Global batch per optimizer step (over GPUs and accumulation)."})
    grad_accum: int = field(default=1, metadata={"help": "Micro-batches accumulated per optimizer step."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 = off)."})
    amp: str = field(default="auto", metadata={"help": f"Mixed precision: one of {AMP} ('auto' = bf16 on a GPU that has it)."})
    focal_alpha: float = field(default=0.25, metadata={"help": "Focal loss alpha for positives (< 0 disables)."})
    focal_gamma: float = field(default=2.0, metadata={"help": "Focal loss gamma."})
    pos_weight: str = field(default="none", metadata={"help": "Per-finding positive weight: 'none' or 'balanced' (n_neg/n_pos)."})
    pos_weight_max: float = field(default=10.0, metadata={"help": "Upper clip of the balanced positive weight."})
    # run control
    seed: int = field(default=0, metadata={"help": "Seed of model init, data order, dropout and bootstrap."})
    threads: int = field(default=0, metadata={"help": "torch intra-op threads (0 = torch's default, one per core). The "
                                                   "result depends on it on CPU: pin it to rerun a run bit for bit."})
    deterministic: bool = field(default=True, metadata={"help": "torch.use_deterministic_algorithms (warn-only) and "
                                                                "no cuDNN autotuning: reruns reproduce on one machine."})
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    eval_every: int = field(default=0, metadata={"help": "Evaluate on val every N steps (0 = at the end of each epoch)."})
    early_stopping: int = field(default=0, metadata={"help": "Stop after N evaluations without val macro-AUC gain (0 = off)."})
    checkpoint_every: int = field(default=0, metadata={"help": "Checkpoint every N steps (0 = at every evaluation)."})
    eval_bootstrap: int = field(default=0, metadata={"help": "Bootstrap replicates for the CIs in metrics.json (0 = none)."})
    tensorboard: bool = field(default=True, metadata={"help": "Write live TensorBoard curves to <run_dir>/tensorboard "
                                                             "(rank 0): loss, lr, grad norm, val AUCs, MoLRE routing."})
    device: str = field(default="auto", metadata={"help": "'auto', 'cpu', 'cuda' or 'cuda:N'."})

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"TrainConfig.{name}={getattr(self, name)!r}: {why}")

        for name, allowed in (("adapter", ADAPTERS), ("schedule", SCHEDULES), ("amp", AMP), ("pos_weight", POS_WEIGHTS)):
            if getattr(self, name) not in allowed:
                raise bad(name, f"must be one of {allowed}")
        for name in ("rank", "n_experts", "batch_size", "grad_accum"):
            if int(getattr(self, name)) < 1:
                raise bad(name, "must be >= 1")
        for name in ("threads", "epochs", "max_steps", "warmup_steps", "eval_every", "early_stopping", "checkpoint_every",
                     "eval_bootstrap", "num_workers"):
            if int(getattr(self, name)) < 0:
                raise bad(name, "must be >= 0")
        if self.epochs == 0 and self.max_steps == 0:
            raise bad("epochs", "epochs and max_steps are both 0: nothing to train")
        if self.batch_size % self.grad_accum:
            raise bad("batch_size", f"must be divisible by grad_accum={self.grad_accum}")
        if self.lr <= 0:
            raise bad("lr", "must be > 0")
        if self.scaling not in SCALING_RULES:
            raise bad("scaling", "must be " + " or ".join(repr(r) for r in SCALING_RULES))
        if self.lora_alpha is not None and not self.lora_alpha > 0:
            raise bad("lora_alpha", "must be > 0 (or None: 2 * rank)")
        if self.router not in ROUTERS:
            raise bad("router", "must be " + " or ".join(repr(r) for r in ROUTERS))
        if self.fit not in ("resize", "pad_crop"):
            raise bad("fit", "must be 'resize' or 'pad_crop'")
        if self.spacing is not None and len(self.spacing) != 3:
            raise bad("spacing", "must be [dz, dy, dx]")
        if self.volume_shape is not None and len(self.volume_shape) != 3:
            raise bad("volume_shape", "must be [D, H, W]")
        if self.image_size is not None and (len(self.image_size) != 2 or min(int(v) for v in self.image_size) < 1):
            raise bad("image_size", "must be [H, W], two positive integers")
        if self.series_policy:
            from molre_lib.data.dicom_series import SeriesPolicy

            try:
                SeriesPolicy.from_pairs(self.series_policy)
            except ValueError as err:
                raise bad("series_policy", str(err)) from None

    @property
    def alpha(self) -> float:
        """The adapter's alpha: ``lora_alpha``, or 2 * rank when it is None."""
        return float(self.lora_alpha) if self.lora_alpha is not None else 2.0 * self.rank

    def effective_step(self) -> Optional[float]:
        """``lr * s / E`` of one expert (``molre_lib.adapters.effective_step``); None without a low-rank adapter."""
        from molre_lib.adapters.config import effective_step

        if self.adapter not in ("lora", "molre"):
            return None
        return effective_step(self.lr, self.alpha, self.rank, self.n_experts if self.adapter == "molre" else 1,
                              self.scaling)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        check_known_keys(cls, data)
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        """From a JSON or YAML file; a run's ``config.json`` (with its ``train`` section) works too."""
        path = Path(path)
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of TrainConfig fields, got {type(data).__name__}")
        data = data.get("train", data)
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: {err}") from None

    def diff(self, other: "TrainConfig", ignore: tuple[str, ...] = ("num_workers", "device")) -> list[str]:
        a, b = self.to_dict(), other.to_dict()
        return [k for k in a if k not in ignore and a[k] != b[k]]
