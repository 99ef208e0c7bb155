"""Dataset items follow the batch contract; the persistent cache returns identical tensors; bad scans are named."""
import json
import os

import numpy as np
import pytest
import torch

from molre_lib.data.dataset import HeadCTDataset, PreprocessConfig, VolumeCache, preprocess_volume, slice_indices
from molre_lib.data.io import VolumeReadError, load_volume
from molre_lib.data.synth import synthesize


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("dsd")
    return root, synthesize(root, 10, shape=(12, 32, 32), seed=3, workers=1)


def test_item_contract_and_windows(data):
    root, manifest = data
    cfg = PreprocessConfig(shape=(8, 24, 24))
    ds = HeadCTDataset(manifest, None, "train", cfg)
    item = ds[0]
    assert item["image"].shape == (3, 8, 24, 24) and item["image"].dtype == torch.float32
    assert item["labels"].shape == item["label_mask"].shape == (75,) and isinstance(item["scan_id"], str)
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    # bone window (600/2800) sees air as 0 and the skull as bright; brain window saturates bone
    img = item["image"]
    assert float(img[2].max()) > 0.5 and float(img[0][img[2] > 0.7].min()) == 1.0
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, 8, 24, 24) and len(batch["scan_id"]) == 2


def test_slice_sampling_spacing_and_pad_crop(data):
    root, manifest = data
    assert slice_indices(12, 4).tolist() == [0, 4, 7, 11] and slice_indices(12, None).tolist() == list(range(12))
    vol = load_volume(root / "scans" / "phantom-00000.nii.gz")
    out = preprocess_volume(vol, PreprocessConfig(shape=(8, 32, 32), n_slices=4))
    assert out.shape == (3, 4, 32, 32)
    cfg = PreprocessConfig(shape=(20, 48, 48), spacing=(10.0, 5.0, 5.0), fit="pad_crop")
    padded = preprocess_volume(vol, cfg)
    assert padded.shape == (3, 20, 48, 48)
    assert float(padded[0, 0].max()) == 0.0                            # padded slices are air
    with pytest.raises(ValueError, match="fit must be"):
        PreprocessConfig(fit="stretch")
    with pytest.raises(ValueError, match="Unknown PreprocessConfig key: 'shap'"):
        PreprocessConfig.from_dict({"shap": (1, 2, 3)})


def test_cache_hit_returns_identical_tensors_and_invalidates_on_change(data, tmp_path):
    root, manifest = data
    cfg = PreprocessConfig(shape=(8, 24, 24), cache_dir=str(tmp_path / "cache"))
    cold = [HeadCTDataset(manifest, None, None, cfg)[i]["image"] for i in range(3)]
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 3
    ds = HeadCTDataset(manifest, None, None, cfg)
    warm = [ds[i]["image"] for i in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(cold, warm))
    no_cache = HeadCTDataset(manifest, None, None, PreprocessConfig(shape=(8, 24, 24)))[0]["image"]
    assert torch.equal(no_cache, cold[0])
    cache = VolumeCache(tmp_path / "cache")
    path = ds.paths[0]
    assert cache.get(path, cfg)[1] is True
    assert cache.get(path, PreprocessConfig(shape=(8, 16, 16), cache_dir=str(tmp_path / "cache")))[1] is False
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))      # touched file -> new key
    assert cache.get(path, cfg)[1] is False


def test_corrupt_scan_named_or_skipped(data, tmp_path):
    root, manifest = data
    import shutil

    bad_root = tmp_path / "copy"
    shutil.copytree(root, bad_root)
    ds = HeadCTDataset(bad_root / "manifest.csv", None, None, PreprocessConfig(shape=(8, 24, 24)))
    victim = ds.paths[1]
    victim.write_bytes(victim.read_bytes()[:200])                    # corrupted after the manifest was checked
    with pytest.raises(VolumeReadError, match=victim.name):
        ds[1]
    from molre_lib.data.manifest import ManifestError

    with pytest.raises(ManifestError, match=victim.name):            # a fresh dataset rejects it up front
        HeadCTDataset(bad_root / "manifest.csv", None, None, PreprocessConfig(shape=(8, 24, 24)))
    log = tmp_path / "skipped.jsonl"
    ds = HeadCTDataset(bad_root / "manifest.csv", None, None,
                       PreprocessConfig(shape=(8, 24, 24), skip_bad=True, skip_log=str(log)))
    item = ds[1]
    assert item["scan_id"] == ds.scan_ids[2]                         # replaced by the next good scan
    assert ds.skipped and ds.skipped[0][0] == ds.scan_ids[1] and victim.name in ds.skipped[0][1]
    assert json.loads(log.read_text().splitlines()[0])["scan_id"] == ds.scan_ids[1]


def test_training_augmentation_changes_images_within_range(data):
    root, manifest = data
    ds = HeadCTDataset(manifest, None, "train", PreprocessConfig(shape=(8, 24, 24), augment=True), training=True)
    a = [ds[0]["image"] for _ in range(4)]
    assert any(not torch.equal(a[0], b) for b in a[1:])
    assert all(type(x) is torch.Tensor and 0 <= float(x.min()) and float(x.max()) <= 1 for x in a)
    plain = HeadCTDataset(manifest, None, "train", PreprocessConfig(shape=(8, 24, 24), augment=True))
    assert torch.equal(plain[0]["image"], plain[0]["image"])          # no augmentation outside training
    np.testing.assert_array_equal(plain.labels, ds.labels)
