"""Data benchmark: load -> HU -> 3 windows -> tensor, cold vs cached, for NIfTI and DICOM; phantom speed.

All ratios are measured side by side in this one run. Source volumes are phantom heads written
at 256 x 256 x 32 (H, W, D) as .nii.gz and as DICOM series; the pipeline is HeadCTDataset with
shape (32, 256, 256) and the default brain/subdural/bone windows. "cold" is the first epoch
with an empty cache (decode + fit + cache write), "cached" a later epoch reading the cache,
"no cache" an epoch without a cache. Files sit in the OS page cache in every case, so the ratio
measures decoding work, not disk speed. Writes benchmarks/results/data.json.

    python benchmarks/data.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "data.json"


def epoch(ds) -> float:
    t = time.perf_counter()
    for i in range(len(ds)):
        ds[i]["image"]
    return time.perf_counter() - t


def pipeline(manifest: Path, n: int, repeats: int) -> dict:
    from molre_lib.data.dataset import HeadCTDataset, PreprocessConfig

    cold, cached, nocache = [], [], []
    for r in range(repeats):
        with tempfile.TemporaryDirectory() as cache:
            cfg = PreprocessConfig(shape=(32, 256, 256), cache_dir=cache)
            ds = HeadCTDataset(manifest, None, None, cfg)
            cold.append(epoch(ds))
            cached.append(min(epoch(ds) for _ in range(2)))
        nocache.append(epoch(HeadCTDataset(manifest, None, None, PreprocessConfig(shape=(32, 256, 256)))))
    c, w, u = statistics.median(cold), statistics.median(cached), statistics.median(nocache)
    return {"volumes": n, "cold_s_per_volume": c / n, "cached_s_per_volume": w / n, "nocache_s_per_volume": u / n,
            "cold_volumes_per_s": n / c, "cached_volumes_per_s": n / w, "nocache_volumes_per_s": n / u,
            "cached_speedup_vs_cold": c / w, "cached_speedup_vs_nocache": u / w}


def phantom_speed(n: int, workers: int) -> dict:
    from molre_lib.data.phantom import PhantomConfig, make_subject
    from molre_lib.data.synth import synthesize

    cfg = PhantomConfig(shape=(24, 64, 64))
    make_subject(0, cfg)
    t = time.perf_counter()
    for i in range(n):
        make_subject(i, cfg)
    one = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as out:
        t0, c0 = time.perf_counter(), os.times()
        synthesize(out, 4 * n, shape=(24, 64, 64), seed=1, workers=workers)
        wall, c1 = time.perf_counter() - t0, os.times()
    cpu = (c1.user + c1.system + c1.children_user + c1.children_system) - (c0.user + c0.system + c0.children_user
                                                                          + c0.children_system)
    return {"shape_dhw": [24, 64, 64], "render_scans_per_s_1_process": n / one,
            "synth_nifti_scans": 4 * n, "synth_workers": workers, "synth_wall_s": wall,
            "synth_scans_per_s": 4 * n / wall, "synth_cpu_s": cpu,
            "synth_projected_1000_scans_wall_s": 1000 * wall / (4 * n)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer volumes and repeats")
    args = parser.parse_args()
    import torch  # noqa: F401  (import cost outside the timings)
    import monai.transforms  # noqa: F401

    from molre_lib.data.synth import synthesize

    n, repeats = (4, 1) if args.quick else (8, 3)
    workers = min(len(os.sched_getaffinity(0)), 8)
    result = {"machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                          "cpus": len(os.sched_getaffinity(0)), "load_avg_1m": os.getloadavg()[0]},
              "source_shape_hwd": [256, 256, 32]}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("nifti", "dicom"):
            manifest = synthesize(Path(tmp) / fmt, n, shape=(32, 256, 256), fmt=fmt, seed=5, workers=workers,
                                  splits=(1.0, 0.0, 0.0))
            result[fmt] = pipeline(manifest, n, repeats)
    result["phantom"] = phantom_speed(10 if args.quick else 50, workers)
    result["load_avg_1m_after"] = os.getloadavg()[0]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, default=float) + "\n")
    for fmt in ("nifti", "dicom"):
        r = result[fmt]
        print(f"{fmt:6s} cold {r['cold_volumes_per_s']:6.1f} vol/s | no cache {r['nocache_volumes_per_s']:6.1f} vol/s"
              f" | cached {r['cached_volumes_per_s']:6.1f} vol/s | cached/cold {r['cached_speedup_vs_cold']:5.1f}x")
    p = result["phantom"]
    print(f"phantom 64x64x24: {p['render_scans_per_s_1_process']:.1f} scans/s rendered (1 process); "
          f"synth {p['synth_scans_per_s']:.1f} scans/s with {workers} workers incl. NIfTI writing "
          f"-> 1000 scans ~ {p['synth_projected_1000_scans_wall_s']:.0f} s")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
