"""molre preprocess: fills the cache training reads (same keys), in worker processes, resumably; bad scans are
skipped with their reason; the CLI names user errors in one line with exit 2."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

from molre_lib.cli import main
from molre_lib.data.dataset import HeadCTDataset, PreprocessConfig, VolumeCache
from molre_lib.data.preprocess import REPORT_NAME, preprocess_manifest
from molre_lib.data.synth import synthesize


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pre")
    manifest = synthesize(root, 6, shape=(12, 32, 32), seed=4, workers=1)
    (root / "scans" / "phantom-00002.nii.gz").write_bytes(b"not a nifti file")         # one bad scan
    return root, manifest


def test_workers_fill_the_cache_training_reads_and_rerun_is_resumable(data, tmp_path):
    root, manifest = data
    cfg = PreprocessConfig(shape=(8, 24, 24), cache_dir=str(tmp_path / "cache"))
    rep = preprocess_manifest(manifest, cfg, workers=2, progress=False)
    assert (rep.total, rep.done, rep.cached) == (6, 5, 0)
    assert [b["scan_id"] for b in rep.failed] == ["phantom-00002"]
    assert "phantom-00002.nii.gz" in rep.failed[0]["reason"] and "NIfTI" in rep.failed[0]["reason"]
    saved = json.loads((tmp_path / "cache" / REPORT_NAME).read_text())
    assert saved["done"] == 5 and saved["failed"][0]["scan_id"] == "phantom-00002"
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 5

    # the dataset finds every good scan in the cache, and its items equal uncached preprocessing
    ds = HeadCTDataset(manifest, None, None, PreprocessConfig(shape=(8, 24, 24), cache_dir=cfg.cache_dir,
                                                              skip_bad=True))
    cache = VolumeCache(cfg.cache_dir)
    good = [i for i, s in enumerate(ds.scan_ids) if s != "phantom-00002"]
    assert all(cache.get(ds.paths[i], cfg)[1] for i in good)
    plain = HeadCTDataset(manifest, None, None, PreprocessConfig(shape=(8, 24, 24), skip_bad=True))
    assert torch.equal(ds[good[0]]["image"], plain[good[0]]["image"])

    # again: nothing to do; a touched (changed) scan and a deleted cache file are redone
    assert (lambda r: (r.done, r.cached, len(r.failed)))(preprocess_manifest(manifest, cfg, workers=2,
                                                                             progress=False)) == (0, 5, 1)
    path = ds.paths[good[0]]
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    os.remove(tmp_path / "cache" / f"{cache.key(ds.paths[good[1]], cfg)}.npy")
    rep = preprocess_manifest(manifest, cfg, workers=0, progress=False)
    assert (rep.done, rep.cached) == (2, 3)


def test_torn_cache_file_is_redone(data, tmp_path):
    root, manifest = data
    cfg = PreprocessConfig(shape=(8, 24, 24), cache_dir=str(tmp_path / "cache"))
    preprocess_manifest(manifest, cfg, workers=0, progress=False)
    f = sorted((tmp_path / "cache").glob("*.npy"))[0]
    f.write_bytes(f.read_bytes()[:200])                               # truncated: header intact, data missing
    rep = preprocess_manifest(manifest, cfg, workers=0, progress=False)
    assert (rep.done, rep.cached) == (1, 4)
    assert np.load(f).shape == (8, 24, 24)


def test_cli_backbone_shape_matches_training_and_user_errors(data, tmp_path, capsys):
    root, manifest = data
    cache_dir = tmp_path / "cache"
    assert main(["preprocess", str(manifest), "--cache-dir", str(cache_dir), "--backbone", "phantom_vit",
                 "--reduced", "--workers", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "skipped phantom-00002:" in out and "5 preprocessed" in out and "1 failed of 6" in out
    # training derives the same settings from the backbone, so it reads these files instead of decoding
    from molre_lib.backbones import get_spec
    from molre_lib.engine.config import TrainConfig
    from molre_lib.engine.loaders import preprocess_config

    pre = preprocess_config(TrainConfig(manifest=str(manifest), backbone="phantom_vit", reduced=True,
                                        cache_dir=str(cache_dir)), get_spec("phantom_vit"))
    good = root / "scans" / "phantom-00000.nii.gz"
    assert VolumeCache(cache_dir).get(good, pre)[1] is True

    assert main(["preprocess", str(manifest), "--cache-dir", str(cache_dir), "--shape", "8,24,24",
                 "--workers", "0", "--quiet"]) == 0
    assert "5 preprocessed" in capsys.readouterr().out
    assert main(["preprocess", str(manifest), "--cache-dir", str(cache_dir), "--shape", "8,24,24", "--quiet"]) == 0
    assert "0 preprocessed, 5 already cached" in capsys.readouterr().out

    assert main(["preprocess", str(tmp_path / "nope.csv"), "--cache-dir", str(cache_dir), "--shape", "8,24,24"]) == 2
    assert "nope.csv" in capsys.readouterr().err
    assert main(["preprocess", str(manifest), "--cache-dir", str(cache_dir), "--backbone", "no_such"]) == 2
    assert "no_such" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["preprocess", str(manifest), "--cache-dir", str(cache_dir), "--shape", "8,24"])
    assert exc.value.code == 2
    shutil.rmtree(cache_dir)
