"""Head-CT dataset: manifest rows -> preprocessed (C, D, H, W) windows + 75 labels with a mask.

Pipeline per scan: ``load_volume`` (HU, (D, H, W)) -> optional resampling to a target spacing
-> fit to ``shape`` (MONAI ``Resize`` or ``ResizeWithPadOrCrop``) -> integer HU, stored in a
persistent on-disk cache keyed by the file's (name, size, mtime) and the fitting settings ->
CT windows stacked as channels in [0, 1] -> optional slice sampling for 2D backbones ->
light MONAI augmentation when training.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from molre_lib.common.config_keys import check_known_keys
from molre_lib.common.files import atomic_write
from .io import Volume, VolumeReadError, file_signature, load_volume
from .manifest import labels_and_mask, read_manifest
from .windowing import HEAD_CT_WINDOWS, window_channels

CACHE_VERSION = 1


@dataclass
class PreprocessConfig:
    """How a volume becomes a model input (B, C, D, H, W)."""

    shape: tuple[int, int, int] = field(default=(32, 256, 256), metadata={"help": "output (D, H, W) voxels"})
    spacing: tuple[float, float, float] | None = field(
        default=None, metadata={"help": "resample to this (dz, dy, dx) mm before fitting; None keeps the grid"})
    fit: str = field(default="resize", metadata={
        "help": "resize: scale the whole volume to shape; pad_crop: centre pad/crop (use with spacing)"})
    windows: tuple[tuple[float, float], ...] = field(
        default=HEAD_CT_WINDOWS, metadata={"help": "(level, width) HU windows, one channel each"})
    n_slices: int | None = field(default=None, metadata={
        "help": "keep N axial slices spread evenly over the volume (2D backbones); None keeps all D"})
    cache_dir: str | None = field(default=None, metadata={"help": "persistent cache of fitted volumes; None = off"})
    augment: bool = field(default=False, metadata={"help": "light augmentation (only when training=True)"})
    skip_bad: bool = field(default=False, metadata={
        "help": "unreadable scans are recorded in .skipped (and skip_log) and replaced by the next good scan"})
    skip_log: str | None = field(default=None, metadata={"help": "JSON-lines file that skipped scans are appended to"})
    series_policy: tuple[str, ...] | None = field(default=None, metadata={
        "help": "DICOM series check as KEY=VALUE pairs (bone_kernel=warn, gantry_tilt=refuse, max_missing_slices=1, "
                "...; molre_lib.data.dicom_series.SeriesPolicy); None: its defaults"})

    def __post_init__(self):
        if self.fit not in ("resize", "pad_crop"):
            raise ValueError(f"fit must be 'resize' or 'pad_crop', got {self.fit!r}")
        self.shape = tuple(int(s) for s in self.shape)  # type: ignore[assignment]
        self.windows = tuple((float(l), float(w)) for l, w in self.windows)  # type: ignore[assignment]
        if self.series_policy is not None:
            self.series_policy = tuple(self.series_policy)  # type: ignore[assignment]
            self.policy()                                   # a bad key or value fails here, not at the first scan

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessConfig":
        check_known_keys(cls, d)
        return cls(**d)

    def fit_key(self) -> dict:
        """The settings that change the cached (fitted) volume."""
        key = {"shape": list(self.shape), "spacing": self.spacing, "fit": self.fit, "v": CACHE_VERSION}
        if self.series_policy:                      # (keys without a policy are unchanged)
            key["series_policy"] = sorted(self.series_policy)
        return key

    def policy(self):
        """The :class:`~molre_lib.data.dicom_series.SeriesPolicy` scans are read with (a single image never passes)."""
        from dataclasses import replace

        from .dicom_series import SeriesPolicy

        policy = SeriesPolicy.from_pairs(self.series_policy)
        return replace(policy, min_images=max(policy.min_images, 2))


# ----------------------------------------------------------------------------- transforms
def load_scan(path: Path, series_uid: str | None = None, policy=None) -> Volume:
    """A manifest row's volume as training, evaluation and preprocessing read it: the row's ``series_uid`` picks
    the series of a flat folder, and the loaders' series check (``policy``, default
    ``PreprocessConfig().policy()``) refuses a single image as well as scouts, dose reports, reformats and bone
    kernels (:func:`molre_lib.data.dicom_series.check_series`)."""
    return load_volume(path, series_uid=series_uid or None, policy=policy or PreprocessConfig().policy())


def fit_volume(vol: Volume, cfg: PreprocessConfig) -> np.ndarray:
    """HU (D, H, W) resampled / resized / padded to ``cfg.shape``, rounded to int16."""
    import torch

    from .resize import pad_or_crop

    x = torch.from_numpy(np.ascontiguousarray(vol.hu, np.float32))[None]          # (1, D, H, W)
    if cfg.spacing is not None:
        size = [max(1, int(round(n * s / t))) for n, s, t in zip(x.shape[1:], vol.spacing, cfg.spacing)]
        x = _resize(x, size)
    if cfg.fit == "resize":
        x = _resize(x, list(cfg.shape))
    else:
        x = pad_or_crop(x, cfg.shape, value=-1024.0)
    return np.clip(np.rint(np.asarray(x[0])), -1024, 32767).astype(np.int16)


def _resize(x, size: list[int]):
    """Area averaging when every side shrinks, else trilinear (MONAI's Resize arithmetic, without MONAI)."""
    from .resize import resize

    shrink = all(s <= n for s, n in zip(size, x.shape[1:]))
    return resize(x, size, "area" if shrink else "trilinear")


def slice_indices(depth: int, n: int | None) -> np.ndarray:
    """N slice indices spread evenly over ``depth`` (all when n is None or >= depth)."""
    if n is None or n >= depth:
        return np.arange(depth)
    return np.linspace(0, depth - 1, n).round().astype(int)


def preprocess_volume(vol: Volume, cfg: PreprocessConfig) -> np.ndarray:
    """Volume -> (C, D', H, W) float32 windows (no cache, no augmentation)."""
    fitted = fit_volume(vol, cfg)
    return window_channels(fitted[slice_indices(fitted.shape[0], cfg.n_slices)], cfg.windows)


def augmenter(seed: int = 0):
    """Light training augmentation on (C, D, H, W): small in-plane rotation/scale/shift, L-R flip, noise."""
    from monai.transforms import Compose, RandAffine, RandFlip, RandGaussianNoise

    aug = Compose([
        RandAffine(prob=0.5, rotate_range=(np.pi / 18, 0, 0), scale_range=(0, 0.05, 0.05),
                   translate_range=(0, 3, 3), padding_mode="zeros", mode="bilinear"),
        RandFlip(prob=0.5, spatial_axis=2),
        RandGaussianNoise(prob=0.3, std=0.015),
    ])
    aug.set_random_state(seed)
    return aug


# ----------------------------------------------------------------------------- cache
def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:                  # a file object, so np.save does not append ".npy" to the name
        np.save(fh, array)


class VolumeCache:
    """Fitted int16 HU volumes on disk, keyed by file signature (name, size, mtime) and fit settings."""

    def __init__(self, cache_dir: str | Path):
        self.dir = Path(cache_dir)
        self.dir.mkdir(parents=True, exist_ok=True)

    def key(self, path: Path, cfg: PreprocessConfig, series_uid: str | None = None) -> str:
        doc = {"path": str(Path(path).resolve()), "files": file_signature(path), **cfg.fit_key()}
        if series_uid:                              # one series of a flat folder (keys without one are unchanged)
            doc["series_uid"] = series_uid
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]

    def get(self, path: Path, cfg: PreprocessConfig, series_uid: str | None = None,
            warnings: list | None = None) -> tuple[np.ndarray, bool]:
        """(fitted volume, was_cached); a decoded scan's series warnings (a gantry tilt corrected, ...) are
        appended to ``warnings`` when given."""
        f = self.dir / f"{self.key(path, cfg, series_uid)}.npy"
        if f.exists():
            try:
                return np.load(f), True
            except (ValueError, OSError):          # a torn or corrupt cache file is rebuilt
                pass
        vol = load_scan(path, series_uid, cfg.policy())
        if warnings is not None:
            warnings.extend(vol.meta.get("series_warnings", []))
        fitted = fit_volume(vol, cfg)
        atomic_write(f, lambda tmp: _save_npy(tmp, fitted))
        return fitted, False


# ----------------------------------------------------------------------------- dataset
class HeadCTDataset:
    """Items: {"image": (C, D, H, W) float32 tensor, "labels": (75,), "label_mask": (75,), "scan_id": str}."""

    def __init__(self, manifest, root=None, split: str | None = None, cfg: PreprocessConfig | None = None,
                 training: bool = False):
        import pandas as pd

        self.cfg = cfg or PreprocessConfig()
        # with skip_bad, unreadable files are recorded when loaded instead of rejecting the whole manifest
        df = manifest if isinstance(manifest, pd.DataFrame) else read_manifest(
            manifest, root, required_splits=(), check_files=not self.cfg.skip_bad, policy=self.cfg.policy())
        if split is not None:
            df = df[df["split"] == split].reset_index(drop=True)
        self.df = df
        self.root = Path(root).resolve() if root is not None else Path(df.attrs.get("root", "."))
        self.labels, self.mask = labels_and_mask(df)
        self.paths = [self.root / p for p in df["path"]]
        self.series = list(df["series_uid"]) if "series_uid" in df.columns else [""] * len(df)
        self.scan_ids = list(df["scan_id"])
        self.training = training
        self.cache = VolumeCache(self.cfg.cache_dir) if self.cfg.cache_dir else None
        self.skipped: list[tuple[str, str, str]] = []
        self._aug = augmenter() if (training and self.cfg.augment) else None

    def __len__(self) -> int:
        return len(self.df)

    def fitted(self, i: int) -> np.ndarray:
        """Fitted int16 HU (D, H, W) of item i (from the cache when there is one)."""
        path = self.paths[i]
        try:
            if self.cache is not None:
                return self.cache.get(path, self.cfg, self.series[i])[0]
            return fit_volume(load_scan(path, self.series[i], self.cfg.policy()), self.cfg)
        except VolumeReadError:
            raise
        except Exception as err:  # noqa: BLE001 - name the scan whatever failed
            raise VolumeReadError(f"{path}: cannot preprocess ({type(err).__name__}: {err})") from err

    def __getitem__(self, i: int) -> dict:
        import torch

        for j in range(len(self)):
            k = (i + j) % len(self)
            try:
                hu = self.fitted(k)
                break
            except VolumeReadError as err:
                if not self.cfg.skip_bad:
                    raise
                self._record_skip(k, str(err))
        else:
            raise VolumeReadError(f"every scan of the dataset failed to load; first: {self.skipped[0]}")
        image = window_channels(hu[slice_indices(hu.shape[0], self.cfg.n_slices)], self.cfg.windows)
        x = torch.from_numpy(image)                                                  # (C, D, H, W)
        if self._aug is not None:
            x = self._aug(x)
            x = (x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)).float().clamp_(0, 1)
        return {"image": x, "labels": torch.from_numpy(self.labels[k]), "label_mask": torch.from_numpy(self.mask[k]),
                "scan_id": self.scan_ids[k]}

    def _record_skip(self, k: int, reason: str) -> None:
        entry = (self.scan_ids[k], str(self.paths[k]), reason)
        if entry not in self.skipped:
            self.skipped.append(entry)
            if self.cfg.skip_log:
                with open(self.cfg.skip_log, "a") as f:
                    f.write(json.dumps({"scan_id": entry[0], "path": entry[1], "reason": entry[2]}) + "\n")


def unwrap_dataset(dataset, needs: tuple[str, ...] = ("cfg", "root", "fitted")):
    """The HeadCTDataset inside Subset / cache / augmentation wrappers: the first object, following ``.dataset`` or
    ``.base``, that has every attribute in ``needs``."""
    base = dataset
    while not all(hasattr(base, a) for a in needs):
        nxt = getattr(base, "dataset", None) or getattr(base, "base", None)
        if nxt is None:
            raise TypeError(f"cannot find the HeadCTDataset inside {type(dataset).__name__}")
        base = nxt
    return base
