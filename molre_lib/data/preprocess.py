"""Fill the volume cache once, in parallel: ``molre preprocess`` and :func:`preprocess_manifest`.

Decoding a clinical series (512 x 512 slices, often JPEG 2000) costs seconds of one core per scan, while a GPU
trains on a cached (D, H, W) int16 volume in milliseconds. Training, evaluation, prediction and the notebooks
read fitted volumes from :class:`~molre_lib.data.dataset.VolumeCache` (same keys: file signature + fit settings),
so preprocessing every scan of a manifest once, with one process per core, keeps the GPU fed from the first
epoch on.

Resumable: a scan whose cache file exists (right shape and dtype) is not decoded again; a changed source file
(name, size or mtime) has a new key and is redone. Unreadable scans are skipped, listed with their reason and
written to ``<cache_dir>/preprocess_report.json`` with the summary.
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from molre_lib.common.files import atomic_write
from .dataset import PreprocessConfig, VolumeCache
from .io import VolumeReadError
from .manifest import absolute_path_message, read_manifest

REPORT_NAME = "preprocess_report.json"


@dataclass
class PreprocessReport:
    """What one ``preprocess_manifest`` call did."""

    cache_dir: str = field(metadata={"help": "the cache folder"})
    shape: list[int] = field(metadata={"help": "fitted (D, H, W)"})
    workers: int = field(metadata={"help": "worker processes used"})
    total: int = field(default=0, metadata={"help": "scans in the manifest"})
    done: int = field(default=0, metadata={"help": "scans decoded and written by this call"})
    cached: int = field(default=0, metadata={"help": "scans already in the cache (skipped)"})
    failed: list[dict] = field(default_factory=list, metadata={"help": "{scan_id, path, reason} per skipped bad scan"})
    warnings: list[dict] = field(default_factory=list, metadata={
        "help": "{scan_id, path, warning} per correction of a decoded scan (gantry tilt resampled, bone kernel read "
                "with bone_kernel=warn, missing slice interpolated)"})
    seconds: float = field(default=0.0, metadata={"help": "wall time of the decoding phase"})
    worker_seconds: float = field(default=0.0, metadata={"help": "sum of per-scan times inside the workers"})

    @property
    def scans_per_s(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        rate = f" in {self.seconds:.1f} s ({self.scans_per_s:.2f} scans/s, {self.workers} workers)" if self.done else ""
        return (f"{self.cache_dir}: {self.done} preprocessed{rate}, {self.cached} already cached, "
                f"{len(self.failed)} failed of {self.total} scans at {tuple(self.shape)}")


def is_cached(file: Path, cfg: PreprocessConfig) -> bool:
    """True when ``file`` is a complete int16 volume of ``cfg.shape`` (reads the .npy header only)."""
    try:
        arr = np.load(file, mmap_mode="r")
    except (OSError, ValueError):                       # missing, torn or not an .npy
        return False
    return arr.dtype == np.int16 and tuple(arr.shape) == tuple(cfg.shape)


def _init_worker() -> None:
    # One process per core: intra-op threads in every worker would oversubscribe the cores.
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def _fit_one(job: tuple[int, str, PreprocessConfig, str]) -> tuple[int, str | None, float, list[str]]:
    """Worker: decode + fit + write one scan; (index, failure reason or None, seconds, series warnings)."""
    i, path, cfg, series_uid = job
    t = time.perf_counter()
    warnings: list[str] = []
    try:
        VolumeCache(cfg.cache_dir).get(Path(path), cfg, series_uid, warnings)  # type: ignore[arg-type]
    except VolumeReadError as err:
        return i, str(err), time.perf_counter() - t, []
    except Exception as err:  # noqa: BLE001 - a bad scan must not stop the others; its reason is reported
        return i, f"{path}: cannot preprocess ({type(err).__name__}: {err})", time.perf_counter() - t, []
    return i, None, time.perf_counter() - t, warnings


def preprocess_manifest(manifest: str | Path, cfg: PreprocessConfig, root: str | Path | None = None,
                        workers: int = 1, progress: bool = True) -> PreprocessReport:
    """Decode, resample and fit every scan of ``manifest`` into ``cfg.cache_dir``; returns the report.

    ``workers`` processes (1 = one worker process, 0 = in this process). Raises ``ManifestError`` for an
    unreadable manifest; bad scans are reported, not raised.
    """
    if not cfg.cache_dir:
        raise ValueError("PreprocessConfig.cache_dir is required to preprocess a manifest")
    df = read_manifest(manifest, root, required_splits=(), check_files=False)
    base = Path(root).resolve() if root is not None else Path(df.attrs.get("root", "."))
    cache = VolumeCache(cfg.cache_dir)
    report = PreprocessReport(cache_dir=str(cache.dir), shape=list(cfg.shape), workers=workers, total=len(df))
    todo: list[tuple[int, str, PreprocessConfig, str]] = []
    ids = list(df["scan_id"])
    paths = [base / p for p in df["path"]]
    series = list(df["series_uid"]) if "series_uid" in df.columns else [""] * len(df)
    for i, path in enumerate(paths):
        if os.path.isabs(df["path"][i]):                              # as validate and train refuse it
            report.failed.append({"scan_id": ids[i], "path": str(path), "reason": absolute_path_message(df["path"][i])})
            continue
        try:
            key = cache.key(path, cfg, series[i])
        except OSError as err:                                         # missing file / folder
            report.failed.append({"scan_id": ids[i], "path": str(path), "reason": f"{path}: {err.strerror or err}"})
            continue
        if is_cached(cache.dir / f"{key}.npy", cfg):
            report.cached += 1
        else:
            todo.append((i, str(path), cfg, series[i]))
    t0 = time.perf_counter()
    for i, reason, seconds, warnings in _run(todo, workers, progress):
        report.worker_seconds += seconds
        report.warnings += [{"scan_id": ids[i], "path": str(paths[i]), "warning": w} for w in warnings]
        if reason is None:
            report.done += 1
        else:
            report.failed.append({"scan_id": ids[i], "path": str(paths[i]), "reason": reason})
    report.seconds = time.perf_counter() - t0
    report.failed.sort(key=lambda r: r["scan_id"])
    report.warnings.sort(key=lambda r: r["scan_id"])
    atomic_write(cache.dir / REPORT_NAME, json.dumps({**asdict(report), "scans_per_s": report.scans_per_s},
                                                      indent=2) + "\n")
    return report


def _run(jobs: list, workers: int, progress: bool):
    """Yield worker results as they finish, with a tqdm bar (scans/s and ETA)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), unit="scan", desc="preprocess", disable=not progress or not jobs, smoothing=0.1)
    try:
        if workers <= 0:
            for job in jobs:
                yield _fit_one(job)
                bar.update()
            return
        # at most a few jobs in flight per worker: memory stays bounded and Ctrl-C stops quickly
        with ProcessPoolExecutor(workers, initializer=_init_worker) as pool:
            pending, it = set(), iter(jobs)
            for job in it:
                pending.add(pool.submit(_fit_one, job))
                if len(pending) >= 2 * workers:
                    break
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    yield fut.result()
                    bar.update()
                    nxt = next(it, None)
                    if nxt is not None:
                        pending.add(pool.submit(_fit_one, nxt))
    finally:
        bar.close()
