"""Data-pipeline benchmark on realistic scans: 512 x 512 DICOM series, uncompressed and JPEG 2000.

Series are written by ``molre synth`` (``synthesize``: phantom heads, 512 x 512 x ``--depth`` slices) once into
``--data-dir`` (kept for reruns). Measured in this one run, one core unless said otherwise (torch threads = 1):

* cold, per stage: DICOM read + pixel decode, the rest of ``load_volume`` (sort, rescale to HU, reorient),
  ``fit_volume`` (resample to the input) — scans/s per core, for both transfer syntaxes;
* ``molre preprocess`` (``preprocess_manifest``) of the JPEG 2000 series with 1 and 2 worker processes into
  an empty cache: wall scans/s, the scaling ratio rate(N) / (N x rate(1)), and the workers' CPU seconds per scan
  (which shared, loaded cores do not distort); the machine load is recorded before and after each;
* cache layouts for a (32, 256, 256) volume: int16 .npy (np.load, memory-mapped) and zlib .npz, from the page
  cache and evicted from it (``posix_fadvise DONTNEED``: a read from disk);
* cached items per backbone input (HeadCTDataset with the cache: key + int16 read + CT windows as float32
  channels) in scans/s per core, the windowing share of it, and a DataLoader with 0 / 1 / 2 workers;
* the (32, 256, 256) acceptance ratio: cached item and cached int16 read vs cold decode + fit of the same
  JPEG 2000 series.

Writes benchmarks/results/data_pipeline.json (read by benchmarks/study_projection.py).

    python benchmarks/data_pipeline.py [--data-dir DIR] [--scans 8] [--depth 40]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "data_pipeline.json"
# (D, H, W) inputs of the study / registry backbones (2D: 32 slices of the backbone's slice size)
INPUTS = {"32x224x224": "biomedclip_vitb16", "32x256x256": "dinov3_vitb16", "32x448x448": "medsiglip_448",
          "32x518x518": "rad_dino", "96x96x96": "headct_vit3d", "128x128x128": "ctfm_segresenc",
          "160x224x224": "merlin_i3resnet"}


def load() -> float:
    return round(os.getloadavg()[0], 2)


def med(xs) -> float:
    return float(statistics.median(xs))


def series(data_dir: Path, n: int, depth: int) -> dict[str, Path]:
    from molre_lib.data.synth import synthesize

    out = {}
    for comp in ("none", "jpeg2000"):
        d = data_dir / f"dicom_{comp}_{depth}"
        if not (d / "manifest.csv").exists() or len(list((d / "scans").iterdir())) < n:
            t = time.perf_counter()
            synthesize(d, n, shape=(depth, 512, 512), fmt="dicom", seed=13, compression=comp,
                       workers=min(2, len(os.sched_getaffinity(0))), splits=(1.0, 0.0, 0.0))
            print(f"synthesized {n} {comp} series in {time.perf_counter() - t:.0f} s", flush=True)
        out[comp] = d / "manifest.csv"
    return out


def cold_stages(manifest: Path, shape=(32, 256, 256)) -> dict:
    """Per scan on one core: pixel decode, the rest of load_volume, fit_volume."""
    import pydicom

    from molre_lib.data.dataset import PreprocessConfig, fit_volume
    from molre_lib.data.io import load_volume

    scans = sorted((manifest.parent / "scans").iterdir())
    cfg = PreprocessConfig(shape=shape)
    fit_volume(load_volume(scans[0]), cfg)                                    # warm-up (imports)
    decode, load_s, fit_s = [], [], []
    for s in scans:
        t = time.perf_counter()
        for f in sorted(s.iterdir()):
            pydicom.dcmread(str(f)).pixel_array
        decode.append(time.perf_counter() - t)
        t = time.perf_counter()
        vol = load_volume(s)
        load_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        fit_volume(vol, cfg)
        fit_s.append(time.perf_counter() - t)
    d, lv, f = med(decode), med(load_s), med(fit_s)
    return {"scans": len(scans), "source_dhw": list(vol.hu.shape), "read_decode_s": d,
            "load_volume_rest_s": max(lv - d, 0.0), "load_volume_s": lv, "fit_s": f, "cold_s": lv + f,
            "cold_scans_per_s_per_core": 1.0 / (lv + f), "decode_share": d / (lv + f),
            "load_avg_1m": load()}


def fit_times(manifest: Path) -> dict[str, float]:
    """fit_volume seconds per backbone input, on one decoded volume (the source format does not matter)."""
    from molre_lib.data.dataset import PreprocessConfig, fit_volume
    from molre_lib.data.io import load_volume

    vol = load_volume(sorted((manifest.parent / "scans").iterdir())[0])
    out = {}
    for key in INPUTS:
        cfg = PreprocessConfig(shape=tuple(int(v) for v in key.split("x")))
        fit_volume(vol, cfg)
        out[key] = med([_timed(fit_volume, vol, cfg) for _ in range(3)])
    return out


def _timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def preprocess_scaling(manifest: Path, workers: list[int]) -> dict:
    from molre_lib.data.dataset import PreprocessConfig
    from molre_lib.data.preprocess import preprocess_manifest

    out = {}
    for n in workers:
        with tempfile.TemporaryDirectory() as cache:
            before, c0 = load(), resource.getrusage(resource.RUSAGE_CHILDREN)
            rep = preprocess_manifest(manifest, PreprocessConfig(shape=(32, 256, 256), cache_dir=cache),
                                      workers=n, progress=False)
            c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
            out[str(n)] = {"workers": n, "scans": rep.done, "failed": len(rep.failed), "wall_s": rep.seconds,
                           "scans_per_s": rep.scans_per_s, "worker_cpu_s_per_scan": cpu / max(rep.done, 1),
                           "load_avg_1m_before": before, "load_avg_1m_after": load()}
        print(f"preprocess {n} worker(s): {out[str(n)]['scans_per_s']:.3f} scans/s "
              f"(load {before} -> {out[str(n)]['load_avg_1m_after']})", flush=True)
    one = out[str(workers[0])]
    for n in workers[1:]:
        r = out[str(n)]
        r["scaling_vs_n_x_single"] = r["scans_per_s"] / (n * one["scans_per_s"])
        r["cpu_per_scan_vs_single"] = r["worker_cpu_s_per_scan"] / one["worker_cpu_s_per_scan"]
    return out


def _evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cache_layouts(fitted, repeats: int = 20) -> dict:
    """Read time of one fitted int16 volume per on-disk layout, page cache and evicted."""
    import numpy as np

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        npy, npz = Path(tmp) / "v.npy", Path(tmp) / "v.npz"
        np.save(npy, fitted)
        np.savez_compressed(npz, v=fitted)
        readers = {"npy_load": (npy, lambda: np.load(npy)),
                   "npy_mmap_full": (npy, lambda: np.array(np.load(npy, mmap_mode="r"))),
                   "npz_zlib": (npz, lambda: np.load(npz)["v"])}
        for name, (path, read) in readers.items():
            read()
            warm = med([_timed(read) for _ in range(repeats)])
            cold = []
            for _ in range(5):
                _evict(path)
                cold.append(_timed(read))
            out[name] = {"bytes": path.stat().st_size, "page_cache_ms": warm * 1e3, "evicted_ms": med(cold) * 1e3,
                         "page_cache_mb_per_s": fitted.nbytes / warm / 1e6}
    return out


def cached_items(manifest: Path, fits: dict[str, float], cold_j2k: dict) -> dict:
    """HeadCTDataset items read from the cache, per backbone input, on one core."""
    import numpy as np

    from molre_lib.backbones import get_spec
    from molre_lib.data.dataset import HeadCTDataset, PreprocessConfig
    from molre_lib.data.windowing import window_channels

    out = {}
    with tempfile.TemporaryDirectory() as cache:
        for key, backbone in INPUTS.items():
            spec = get_spec(backbone)
            shape = tuple(int(v) for v in key.split("x"))
            cfg = PreprocessConfig(shape=shape, windows=spec.windows, cache_dir=cache)
            ds = HeadCTDataset(manifest, None, None, cfg)
            for i in range(len(ds)):                                        # fill the cache
                ds[i]
            times = [min(_timed(ds.__getitem__, i) for _ in range(3)) for i in range(len(ds))]
            hu = ds.fitted(0)
            reads = med([_timed(ds.fitted, 0) for _ in range(10)])
            win = med([_timed(window_channels, hu, spec.windows) for _ in range(5)])
            item = med(times)
            cold = cold_j2k["load_volume_s"] + fits[key]
            out[key] = {"backbone": backbone, "channels": len(spec.windows), "int16_mb": hu.nbytes / 1e6,
                        "item_float32_mb": hu.size * len(spec.windows) * 4 / 1e6,
                        "cached_item_s": item, "cached_int16_read_s": reads, "windowing_s": win,
                        "cached_scans_per_s_per_core": 1.0 / item,
                        "cold_jpeg2000_s": cold, "cold_jpeg2000_scans_per_s_per_core": 1.0 / cold,
                        "cached_vs_cold_jpeg2000": cold / item}
            print(f"{key}: cached item {item * 1e3:.1f} ms (windows {win * 1e3:.1f} ms), cold J2K {cold:.2f} s",
                  flush=True)
    return out


def cpu_probe(manifests: dict[str, Path], repeats: int = 5) -> dict:
    """CPU seconds (``time.process_time``, which other processes on shared cores do not inflate) of a cached
    item per input and of a cold JPEG 2000 decode + fit, on one scan: the per-core rates of a quiet machine."""
    import numpy as np

    from molre_lib.backbones import get_spec
    from molre_lib.data.dataset import PreprocessConfig, fit_volume
    from molre_lib.data.io import load_volume
    from molre_lib.data.windowing import window_channels

    def cpu(fn, *args) -> float:
        t = time.process_time()
        fn(*args)
        return time.process_time() - t

    scan = sorted((manifests["jpeg2000"].parent / "scans").iterdir())[0]
    load_volume(scan)
    decode = min(cpu(load_volume, scan) for _ in range(2))
    vol = load_volume(scan)
    out = {"load_avg_1m": load(), "cold_jpeg2000_load_volume_cpu_s": decode}
    with tempfile.TemporaryDirectory() as tmp:
        for key, backbone in INPUTS.items():
            spec = get_spec(backbone)
            cfg = PreprocessConfig(shape=tuple(int(v) for v in key.split("x")))
            fit = min(cpu(fit_volume, vol, cfg) for _ in range(2))
            f = Path(tmp) / f"{key}.npy"
            np.save(f, fit_volume(vol, cfg))
            item = min(cpu(lambda: window_channels(np.load(f), spec.windows)) for _ in range(repeats))
            out[key] = {"cached_item_cpu_s": item, "cold_jpeg2000_cpu_s": decode + fit,
                        "cached_cpu_scans_per_s_per_core": 1.0 / item,
                        "cold_jpeg2000_cpu_scans_per_s_per_core": 1.0 / (decode + fit),
                        "cached_vs_cold_jpeg2000_cpu": (decode + fit) / item}
            print(f"cpu {key}: cached item {item * 1e3:.1f} ms CPU, cold J2K {decode + fit:.2f} s CPU", flush=True)
    return out


def loader_workers(manifest: Path, workers=(0, 1, 2)) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from molre_lib.data.dataset import HeadCTDataset, PreprocessConfig

    out = {}
    with tempfile.TemporaryDirectory() as cache:
        cfg = PreprocessConfig(shape=(32, 256, 256), cache_dir=cache)
        ds = HeadCTDataset(manifest, None, None, cfg)
        for i in range(len(ds)):
            ds[i]
        idx = list(range(len(ds))) * 4
        for n in workers:
            loader = DataLoader(torch.utils.data.Subset(ds, idx), batch_size=2, num_workers=n)
            t = time.perf_counter()
            for _ in loader:
                pass
            wall = time.perf_counter() - t
            out[str(n)] = {"scans_per_s": len(idx) / wall, "load_avg_1m": load()}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="where the synthesized series are kept (default: temp)")
    parser.add_argument("--scans", type=int, default=8, help="series per transfer syntax")
    parser.add_argument("--depth", type=int, default=40, help="slices per series (512 x 512 each)")
    parser.add_argument("--cpu-probe-only", action="store_true",
                        help="only the CPU-time probe, merged into the existing data_pipeline.json")
    args = parser.parse_args()
    if args.cpu_probe_only:
        import torch

        torch.set_num_threads(1)
        result = json.loads(RESULTS.read_text())
        result["cpu_probe"] = cpu_probe(series(Path(args.data_dir), args.scans, args.depth))
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        return 0
    import torch

    torch.set_num_threads(1)                                               # per core
    import monai.transforms  # noqa: F401  (import cost outside the timings)

    ncpu = len(os.sched_getaffinity(0))
    result = {"machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": ncpu,
                          "load_avg_1m_start": load()},
              "source": {"format": "DICOM series", "rows_cols": [512, 512], "slices": args.depth,
                         "scans_per_syntax": args.scans}}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data_dir) if args.data_dir else Path(tmp)
        manifests = series(data, args.scans, args.depth)
        result["cold"] = {c: cold_stages(m) for c, m in manifests.items()}
        for c, r in result["cold"].items():
            print(f"cold {c}: decode {r['read_decode_s']:.2f} s + rest {r['load_volume_rest_s']:.2f} s + fit "
                  f"{r['fit_s']:.2f} s per scan", flush=True)
        result["preprocess"] = preprocess_scaling(manifests["jpeg2000"], [1, 2] if ncpu >= 2 else [1])
        fits = fit_times(manifests["none"])
        result["per_input"] = cached_items(manifests["none"], fits, result["cold"]["jpeg2000"])
        from molre_lib.data.dataset import PreprocessConfig, VolumeCache

        with tempfile.TemporaryDirectory() as cache:
            scan = sorted((manifests["jpeg2000"].parent / "scans").iterdir())[0]
            fitted = VolumeCache(cache).get(scan, PreprocessConfig(shape=(32, 256, 256)))[0]
        result["cache_layouts_32x256x256"] = cache_layouts(fitted)
        result["dataloader_32x256x256"] = loader_workers(manifests["none"])
        result["cpu_probe"] = cpu_probe(manifests)
    p = result["per_input"]["32x256x256"]
    result["acceptance_32x256x256"] = {
        "cold_jpeg2000_decode_fit_s": p["cold_jpeg2000_s"], "cached_item_s": p["cached_item_s"],
        "cached_int16_read_s": p["cached_int16_read_s"], "cached_item_speedup": p["cached_vs_cold_jpeg2000"],
        "cached_read_speedup": p["cold_jpeg2000_s"] / p["cached_int16_read_s"]}
    result["machine"]["load_avg_1m_end"] = load()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    a = result["acceptance_32x256x256"]
    print(f"(32,256,256): cached item {a['cached_item_speedup']:.0f}x, cached int16 read "
          f"{a['cached_read_speedup']:.0f}x faster than cold JPEG 2000 decode + fit")
    if "2" in result["preprocess"]:
        print(f"preprocess 2 workers: {result['preprocess']['2']['scaling_vs_n_x_single']:.2f} x 2 x single-worker")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
