"""A hospital-style PACS export (molre_lib.data.pacs_synth: scouts, bone kernels, thin series, sagittal MPR, dose
SC and SR, GE and Siemens names, a flat study, files without extension, two studies of one patient, a 20 deg
gantry tilt, a 25 deg oblique series, a missing slice): ``molre convert pacs`` picks the axial soft-tissue series
of every study, and every bad series is refused (or flagged) with its reason by validate, the manifest reader,
the datasets behind preprocess / train / evaluate, and predict. The tilted and oblique series' corrected
geometry is checked against the phantom they were sampled from."""
from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest

from molre_lib.cli import main
from molre_lib.data.dataset import HeadCTDataset, PreprocessConfig, load_scan
from molre_lib.data.dicom_series import SeriesPolicy, kernel_class
from molre_lib.data.io import VolumeReadError, load_volume
from molre_lib.data.manifest import ManifestError, read_manifest
from molre_lib.data.pacs_synth import phantom_volume, write_export_tree

# kind of bad series -> (study accession, series key in expected.json, what the reason says)
BAD = {
    "scout": ("ACC1001", "scout", 'series 1 "Scout" (kernel STANDARD): a localizer (ImageType ORIGINAL\\PRIMARY\\LOCALIZER)'),
    "bone_ge": ("ACC1001", "bone", "bone-kernel reconstruction 'BONE', not soft tissue"),
    "bone_siemens": ("ACC2001", "bone", 'series 3 "Head 5.0 H70h" (kernel H70h): bone-kernel reconstruction'),
    "reformat": ("ACC1001", "reformat", 'series 5 "SAG MPR" (kernel STANDARD): a derived reformat'),
    "dose_screen": ("ACC1001", "dose", 'series 900 "Dose Report": SOP class Secondary Capture Image Storage'),
    "dose_sr": ("ACC1002", "dose_sr", "SOP class X-Ray Radiation Dose SR Storage, not CT Image Storage"),
    "gap": ("ACC5001", "soft", "1 slice(s) missing near z = 18.5 mm (tolerance 0)"),
    "flat_folder": ("ACC2001", None, 'holds 4 DICOM series'),
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    out = tmp_path_factory.mktemp("pacs")
    root = write_export_tree(out)
    return root, json.loads((out / "expected.json").read_text()), out


@pytest.fixture(scope="module")
def converted(tree):
    root, expected, out = tree
    assert main(["convert", "pacs", str(root), "--out", str(out / "m" / "manifest.csv"),
                 "--labels", str(out / "labels.csv")]) == 0
    manifest = out / "m" / "manifest.csv"
    inventory = list(csv.DictReader(open(out / "m" / "manifest_inventory.csv")))
    return manifest, inventory


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from molre_lib.data.synth import synthesize

    tmp = tmp_path_factory.mktemp("pacs_run")
    manifest = synthesize(tmp / "data", 8, shape=(12, 32, 32), seed=0, workers=1, splits=(0.5, 0.25, 0.25))
    assert main(["train", "--run-dir", str(tmp / "run"), "--manifest", str(manifest), "--backbone", "phantom_vit",
                 "--reduced", "--no-pretrained", "--volume-shape", "12", "32", "32", "--max-steps", "1",
                 "--batch-size", "2", "--adapter", "lora", "--rank", "2", "--device", "cpu", "--eval-bootstrap", "0"]) == 0
    return tmp / "run", manifest


def _path(root, expected, acc, key):
    study = expected[acc]
    if key is None:                                                   # the flat study folder itself
        return root / study["series"]["soft"]["folder"]
    return root / study["series"][key]["folder"]


def _series_uid(root, folder, number):
    from molre_lib.data.dicom_series import series_of

    return next(u for u, s in series_of(sorted(p for p in folder.iterdir() if p.is_file())).items()
                if s.series_number == str(number))


def test_convert_picks_the_axial_soft_tissue_series_of_every_study(tree, converted):
    root, expected, out = tree
    manifest, inventory = converted
    df = read_manifest(manifest, root=root, required_splits=())     # valid, every path and series_uid checks out
    assert list(df["scan_id"]) == ["ACC1001", "ACC1002", "ACC2001", "ACC3001", "ACC4001"]
    assert list(df["patient_id"]) == ["PAT001", "PAT001", "PAT002", "PAT003", "PAT004"]   # two studies, one patient
    for _, row in df.iterrows():
        assert row["meta_series_number"] == str(expected[row["scan_id"]]["expected"]) == "2"
        assert row["meta_kernel"] in ("STANDARD", "H30s")
    flat = df.set_index("scan_id").loc["ACC2001"]
    assert flat["path"] == "PAT002/ACC2001_CT_HEAD" and flat["series_uid"] == _series_uid(root, root / flat["path"], 2)
    assert df.set_index("scan_id").loc["ACC1001", "intracranial_hemorrhage"] == "1"        # labels by accession
    assert df.set_index("scan_id").loc["ACC3001", "calvarial_fracture"] == "1"
    decisions = {(r["accession"], r["series_number"]): (r["decision"], r["reason"]) for r in inventory}
    assert len(inventory) == sum(len(s["series"]) for s in expected.values()) == 27    # every series listed
    assert decisions[("ACC1001", "4")] == ("acceptable", "ranked below series 2 (thickness nearer the target: 5 mm vs 2.5 mm)")
    for kind, (acc, key, why) in BAD.items():
        if key is not None:
            number = str(expected[acc]["series"][key]["series_number"])
            assert decisions[(acc, number)][0] == "refused" and why.split(": ", 1)[-1] in decisions[(acc, number)][1], kind
    assert decisions[("ACC3001", "2")][0] == "chosen" and "gantry tilt 20.0 deg corrected" in decisions[("ACC3001", "2")][1]
    assert decisions[("ACC4001", "2")][0] == "chosen" and "oblique slices (25.0 deg) resampled" in decisions[("ACC4001", "2")][1]


@pytest.mark.parametrize("change, acc, number", [("target_thickness_mm=2.5", "ACC1001", "4"),
                                                 ("max_missing_slices=1", "ACC5001", "2"),
                                                 ("bone_kernel=warn", "ACC1001", "2")])
def test_policy_changes_the_choice(tree, change, acc, number, capsys):
    root, _, out = tree
    m = out / f"p_{change.split('=')[0]}" / "m.csv"
    assert main(["convert", "pacs", str(root), "--out", str(m), "--policy", change]) == 0
    printed = capsys.readouterr().out                   # a changed series check is to be given to every reader
    assert (f"--root {root} --series-policy {change}\n" in printed) == ("thickness" not in change)
    rows = {r["accession"]: r for r in csv.DictReader(open(m.parent / "m_inventory.csv")) if r["decision"] == "chosen"}
    assert rows[acc]["series_number"] == number
    assert json.loads((m.parent / "m_policy.json").read_text())["selection" if "thickness" in change else "series"][
        change.split("=")[0]] in (2.5, 1, "warn")


def test_policy_refusing_tilt_lists_the_study(tree, capsys):
    root, _, out = tree
    assert main(["convert", "pacs", str(root), "--out", str(out / "t" / "m.csv"), "--policy", "gantry_tilt=refuse"]) == 0
    printed = capsys.readouterr().out
    assert 'series 2 "Head 5.0 H30s" (kernel H30s): gantry tilt 20.0 deg (sheared stack)' in printed
    assert "no acceptable series in study ACC5001 (PAT005): " in printed and "1 slice(s) missing near z = 18.5 mm" in printed
    assert main(["convert", "pacs", str(root), "--out", str(out / "t" / "m.csv"), "--policy", "tilt=refuse"]) == 2


@pytest.mark.parametrize("kind", sorted(BAD))
def test_every_reader_refuses_the_bad_series_with_its_reason(tree, kind, tmp_path, capsys):
    root, expected, _ = tree
    acc, key, why = BAD[kind]
    path = _path(root, expected, acc, key)
    flat = key is not None and expected[acc]["layout"] == "flat"          # one series of a flat folder: by series_uid
    uid = _series_uid(root, path, expected[acc]["series"][key]["series_number"]) if flat else ""
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"scan_id,patient_id,split,path,series_uid\ns1,P1,train,{path.relative_to(root).as_posix()},{uid}\n")
    assert main(["validate", str(manifest), "--root", str(root), "--require-splits", ""]) == 2     # molre validate
    assert why in capsys.readouterr().out
    with pytest.raises(ManifestError, match=None) as err:                                      # train / evaluate
        read_manifest(manifest, root=root, required_splits=())
    assert why in str(err.value)
    with pytest.raises(VolumeReadError) as err:                                                # their loader
        load_scan(path, uid)
    assert why in str(err.value) and "Traceback" not in str(err.value)
    ds = HeadCTDataset(manifest, root, None, PreprocessConfig(shape=(8, 16, 16), skip_bad=True))  # preprocess / skip_bad
    with pytest.raises(VolumeReadError, match="every scan of the dataset failed"):
        ds[0]
    assert why in ds.skipped[0][2]


def test_flat_folder_is_caught_before_any_training_step(tree, run, tmp_path, capsys):
    root, expected, _ = tree
    run_dir, _ = run
    manifest = tmp_path / "m.csv"
    rows = [f"s{i},P{i},{split},PAT002/ACC2001_CT_HEAD" for i, split in enumerate(("train", "val", "test"))]
    manifest.write_text("scan_id,patient_id,split,path\n" + "\n".join(rows) + "\n")
    rc = main(["train", "--run-dir", str(tmp_path / "r"), "--manifest", str(manifest), "--data-root", str(root),
               "--backbone", "phantom_vit", "--reduced", "--no-pretrained", "--max-steps", "1", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "holds 4 DICOM series" in err
    assert 'series 2 "Head 5.0 H30s" (kernel H30s, 32 image(s))' in err and 'series 3 "Head 5.0 H70h" (kernel H70h' in err
    assert not (tmp_path / "r" / "train_log.csv").exists()
    # --resume with a changed config says what to do
    assert main(["train", "--run-dir", str(run_dir), "--resume", "--max-steps", "2"]) == 2
    assert "start it over with --restart" in capsys.readouterr().err


def test_converted_manifest_is_read_by_every_loader(tree, converted, tmp_path):
    from molre_lib.data.preprocess import preprocess_manifest

    root, _, _ = tree
    manifest, _ = converted
    ds = HeadCTDataset(manifest, root, None, PreprocessConfig(shape=(8, 16, 16)))
    assert [tuple(ds[i]["image"].shape) for i in range(len(ds))] == [(3, 8, 16, 16)] * 5
    report = preprocess_manifest(manifest, PreprocessConfig(shape=(8, 16, 16), cache_dir=str(tmp_path / "c")),
                                 root=root, workers=0, progress=False)
    assert (report.done, report.failed) == (5, [])


def test_predict_names_series_and_refuses_each_bad_one(tree, run, tmp_path, capsys):
    root, expected, _ = tree
    run_dir, _ = run
    study = root / "PAT001" / "ACC1001_CT_HEAD"
    out = tmp_path / "p.csv"
    inputs = [root / "PAT002" / "ACC2001_CT_HEAD", _path(root, expected, "ACC5001", "soft"),
              _path(root, expected, "ACC1002", "dose_sr"), _path(root, expected, "ACC3001", "soft"), study]
    assert main(["predict", str(run_dir), *map(str, inputs), "--out", str(out), "--device", "cpu"]) == 2
    df = pd.read_csv(out, keep_default_na=False, dtype=str)
    flat = df[df["input"] == str(inputs[0])].set_index("series_number")
    assert sorted(flat.index) == ["1", "2", "3", "900"] and flat.loc["2", "status"] == "ok"
    assert flat.loc["2", "series_description"] == "Head 5.0 H30s" and flat.loc["2", "kernel"] == "H30s"
    assert "a localizer" in flat.loc["1", "error"] and "bone-kernel reconstruction 'H70h'" in flat.loc["3", "error"]
    assert "SOP class Secondary Capture Image Storage" in flat.loc["900", "error"]
    rest = df[df["input"] != str(inputs[0])].reset_index(drop=True)
    assert "1 slice(s) missing near z = 18.5 mm" in rest.loc[0, "error"]
    assert "X-Ray Radiation Dose SR Storage" in rest.loc[1, "error"] and "AttributeError" not in rest.loc[1, "error"]
    assert rest.loc[2, "status"] == "ok" and "gantry tilt 20.0 deg corrected" in rest.loc[2, "warning"]
    assert rest.loc[3, "error"].startswith(f"{study} holds no files, only 6 subfolder(s): SE001_Scout, SE002_HEAD_STD_5mm")
    err = capsys.readouterr().err                          # with --out, the terminal says what was corrected too
    assert f"molre predict: warning: {inputs[3]}: gantry tilt 20.0 deg corrected by resampling onto an axial grid" in err
    assert "molre predict: 6 of 8 row(s) (one per series of 5 input(s)) failed" in err


def test_training_says_what_the_loaders_corrected(tree, converted, tmp_path, capsys):
    root, expected, _ = tree
    manifest, _ = converted                            # train split: the tilted and the oblique study
    assert main(["train", "--run-dir", str(tmp_path / "r"), "--manifest", str(manifest), "--data-root", str(root),
                 "--backbone", "phantom_vit", "--reduced", "--no-pretrained", "--volume-shape", "8", "16", "16",
                 "--max-steps", "1", "--batch-size", "2", "--device", "cpu", "--eval-bootstrap", "0",
                 "--series-policy", "gantry_tilt=correct", "--series-policy", "bone_kernel=warn"]) == 0
    err = capsys.readouterr().err
    assert "molre train: warning: row 4 (line 5), column 'path': " in err
    assert "SE002_Head_50_H30s: gantry tilt 20.0 deg corrected by resampling onto an axial grid" in err
    assert "SE002_HEAD_STD_5mm: oblique slices (25.0 deg) resampled onto an axial grid" in err
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["train"]["series_policy"] == ["gantry_tilt=correct", "bone_kernel=warn"]   # a repeated flag adds up
    # predict reads with the run's own series policy unless told otherwise
    bone, out = _path(root, expected, "ACC1001", "bone"), tmp_path / "p.csv"
    assert main(["predict", str(tmp_path / "r"), str(bone), "--out", str(out), "--device", "cpu"]) == 0
    row = pd.read_csv(out, keep_default_na=False, dtype=str).iloc[0]
    assert row["status"] == "ok" and row["warning"] == "bone-kernel reconstruction 'BONE', not soft tissue"
    assert main(["predict", str(tmp_path / "r"), str(bone), "--out", str(out), "--device", "cpu",
                 "--series-policy", "bone_kernel=refuse"]) == 2


def test_validate_without_root_says_to_pass_it(converted, capsys):
    manifest, _ = converted                            # paths relative to the export root, not the manifest's folder
    assert main(["validate", str(manifest), "--require-splits", ""]) == 2
    assert (f"error: column 'path': none of the 5 path(s) exists under {manifest.parent}; if they are relative to "
            "another folder, pass it (molre validate --root FOLDER") in capsys.readouterr().out


def test_preprocess_reads_with_the_series_policy_and_says_what_it_corrected(tree, tmp_path, capsys):
    from molre_lib.backbones import get_spec
    from molre_lib.data.dataset import VolumeCache
    from molre_lib.engine.config import TrainConfig
    from molre_lib.engine.loaders import preprocess_config

    root, expected, _ = tree
    bone, tilted = _path(root, expected, "ACC1001", "bone"), _path(root, expected, "ACC3001", "soft")
    manifest, cache = tmp_path / "m.csv", tmp_path / "cache"
    manifest.write_text("scan_id,patient_id,split,path\n" f"s1,P1,train,{bone.relative_to(root).as_posix()}\n"
                        f"s2,P2,train,{tilted.relative_to(root).as_posix()}\ns3,P3,train,{tilted}\n")
    args = ["preprocess", str(manifest), "--root", str(root), "--cache-dir", str(cache), "--shape", "8,16,16",
            "--workers", "0", "--quiet"]
    assert main([*args, "--series-policy", "bone_kernel=warn"]) == 0
    out = capsys.readouterr().out
    assert f"warning: s1: {bone}: bone-kernel reconstruction 'BONE', not soft tissue" in out
    assert f"warning: s2: {tilted}: gantry tilt 20.0 deg corrected by resampling onto an axial grid" in out
    assert f"skipped s3: path '{tilted}' is absolute; write paths relative to one root folder" in out   # as train says
    assert "2 preprocessed" in out and "1 failed of 3" in out
    # a run with the same series_policy reads these files instead of decoding again
    pre = preprocess_config(TrainConfig(manifest=str(manifest), data_root=str(root), volume_shape=[8, 16, 16],
                                        series_policy=["bone_kernel=warn"], cache_dir=str(cache)), get_spec("phantom_vit"))
    assert VolumeCache(cache).get(bone, pre)[1] is True
    manifest.write_text(f"scan_id,patient_id,split,path\ns3,P3,train,{tilted}\n")
    assert main(args) == 2                                                       # nothing usable: not exit 0
    assert "every scan of" in capsys.readouterr().err


def _vertex(hu, origin, spacing):
    """(z, mean y) mm of the top-most slice holding tissue: where the vertex lands."""
    tissue = hu > -300
    d = int(np.nonzero(tissue.any((1, 2)))[0].max())
    rows = np.nonzero(tissue[d].any(1))[0]
    return origin[2] + d * spacing[0], origin[1] + rows.mean() * spacing[1]


def _phantom_on_grid(vol, hu, spacing, origin):
    """The phantom (``hu`` on its own grid) resampled onto ``vol``'s voxel grid (LPS from its RAS affine)."""
    from scipy.ndimage import map_coordinates

    a = vol.meta["affine_ras"]
    grid_origin = np.array([-a[0, 3], -a[1, 3], a[2, 3]])
    d, h, w = np.meshgrid(*map(np.arange, vol.hu.shape), indexing="ij")
    lps = grid_origin[:, None] + np.stack([w.ravel() * vol.spacing[2], h.ravel() * vol.spacing[1], d.ravel() * vol.spacing[0]])
    return map_coordinates(hu, [(lps[2] - origin[2]) / spacing[0], (lps[1] - origin[1]) / spacing[1],
                                (lps[0] - origin[0]) / spacing[2]], order=1, cval=-1024.0).reshape(vol.hu.shape)


def _shift_errors(hu, ref, reach=2):
    """{(slices, rows): mean |HU difference|} of ``hu`` against ``ref`` moved by that many slices and rows, over
    the head inside both (away from the edges the move wraps)."""
    from scipy.ndimage import binary_erosion

    out = {}
    for dz in range(-reach, reach + 1):
        for dy in range(-reach, reach + 1):
            moved = np.roll(ref, (dz, dy), (0, 1))
            inside = binary_erosion((hu > -900) & (moved > -900))
            inside[:reach], inside[-reach:], inside[:, :reach], inside[:, -reach:] = False, False, False, False
            out[(dz, dy)] = float(np.abs(hu[inside] - moved[inside]).mean())
    return out


@pytest.mark.parametrize("acc", ["ACC3001", "ACC4001"])                 # 20 deg gantry tilt, 25 deg oblique
def test_tilted_and_oblique_series_land_where_the_phantom_is(tree, acc):
    from scipy.ndimage import binary_erosion

    root, expected, _ = tree
    study = expected[acc]
    hu, spacing, origin = phantom_volume(study["seed"])
    folder = root / study["series"]["soft"]["folder"]
    vol = load_volume(folder)
    a = vol.meta["affine_ras"]
    assert np.allclose(a[:3, :3], np.diag([-spacing[2], -spacing[1], 5.0]), atol=1e-3)   # axis-aligned grid
    grid_origin = np.array([-a[0, 3], -a[1, 3], a[2, 3]])                                 # LPS of voxel (0, 0, 0)
    z, y = _vertex(vol.hu, grid_origin, vol.spacing)
    z_ref, y_ref = _vertex(hu, origin, spacing)
    assert abs(z - z_ref) <= 5.0 and abs(y - y_ref) <= spacing[1]       # within one slice and one pixel
    # voxel by voxel, where the acquisition covered the head: the phantom resampled onto the same grid
    ref = _phantom_on_grid(vol, hu, spacing, origin)
    both = binary_erosion((vol.hu > -900) & (ref > -900))             # inside the head and the acquired slab
    diff = np.abs(vol.hu[both] - ref[both])                            # (two linear interpolations of 7 mm voxels)
    assert both.sum() > 5000 and np.corrcoef(vol.hu[both], ref[both])[0, 1] > 0.9 and np.median(diff) < 20
    # every structure on the right slice and row: of the volume moved by up to 2 slices (head to foot) and 2 rows
    # (front to back), the unmoved one matches the phantom best; one slice or row off adds half the error or more
    err = _shift_errors(vol.hu, ref)
    assert min(err, key=err.get) == (0, 0) and min(e for k, e in err.items() if k != (0, 0)) > 1.5 * err[(0, 0)]
    # read as an orthogonal stack (no correction: what the loaders did before), the vertex is off by > 2 slices
    raw = load_volume(folder, policy=SeriesPolicy(max_angle_deg=89.0))
    ra = raw.meta["affine_ras"]
    z_raw, y_raw = _vertex(raw.hu, np.array([-ra[0, 3], -ra[1, 3], ra[2, 3]]), raw.spacing)
    assert abs(z_raw - z_ref) > 10.0 or abs(y_raw - y_ref) > 10.0
    raw_err = _shift_errors(raw.hu, _phantom_on_grid(raw, hu, spacing, origin))       # no shift fixes a shear
    assert min(raw_err.values()) > 2 * err[(0, 0)]
    with pytest.raises(VolumeReadError, match="gantry tilt 20.0 deg|oblique axial slices"):
        load_volume(folder, policy=SeriesPolicy(gantry_tilt="refuse", oblique="refuse"))


@pytest.mark.parametrize("kernel, cls", [("H30s", "soft"), ("H70h", "bone"), ("J40s", "soft"), ("J70h", "bone"),
                                         ("Hr38\\3", "soft"), ("Hr60", "bone"), ("Br64", "bone"), ("Br40", "soft"),
                                         ("STANDARD", "soft"), ("SOFT", "soft"), ("BONE", "bone"), ("BONEPLUS", "bone"),
                                         ("LUNG", "lung"), ("EDGE", "bone"), ("DETAIL", "bone"), ("UB", "soft"),
                                         ("UC", "soft"), ("YB", "bone"), ("YC", "bone"), ("D", "bone"),
                                         ("FC23", "soft"), ("FC30", "bone"), ("FC52", "lung"), ("SHARP", "unknown")])
def test_kernel_table_knows_the_vendors(kernel, cls):
    assert kernel_class(kernel) == cls


def test_a_tolerated_missing_slice_is_interpolated_in_place_not_spread(tree):
    root, expected, _ = tree
    study = expected["ACC5001"]
    hu, _, _ = phantom_volume(study["seed"])
    ref = np.clip(np.rint(hu), -1024, 3071)
    vol = load_volume(root / study["series"]["soft"]["folder"], policy=SeriesPolicy(max_missing_slices=1))
    assert vol.hu.shape == ref.shape and vol.spacing[0] == pytest.approx(5.0)      # 31 files, 32 slice positions
    assert vol.meta["series_warnings"] == ["1 slice(s) missing near z = 18.5 mm (interpolated)"]
    gap = 16                                                                     # the slice the export lost
    keep = np.arange(32) != gap
    np.testing.assert_array_equal(vol.hu[keep], ref[keep])                     # every other slice where it was
    np.testing.assert_allclose(vol.hu[gap], (ref[gap - 1] + ref[gap + 1]) / 2, atol=0.5)


def test_series_policy_reaches_the_training_loaders(tree, tmp_path):
    from molre_lib.engine.config import TrainConfig
    from molre_lib.engine.loaders import preprocess_config

    root, expected, _ = tree
    path = _path(root, expected, "ACC1001", "bone")
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"scan_id,patient_id,split,path\ns1,P1,train,{path.relative_to(root).as_posix()}\n")
    with pytest.raises(ValueError, match="TrainConfig.series_policy.*KEY one of"):
        TrainConfig(series_policy=["bone=warn"])
    from molre_lib.backbones import get_spec

    cfg = TrainConfig(manifest=str(manifest), data_root=str(root), series_policy=["bone_kernel=warn"],
                      volume_shape=[8, 16, 16])
    pre = preprocess_config(cfg, get_spec("phantom_vit"))
    ds = HeadCTDataset(manifest, root, None, pre)                                # warned, not refused
    assert ds[0]["image"].shape == (3, 8, 16, 16)
    assert any("bone-kernel reconstruction 'BONE'" in w for w in ds.df.attrs["warnings"])
    with pytest.raises(ManifestError, match="bone-kernel reconstruction 'BONE'"):
        HeadCTDataset(manifest, root, None, PreprocessConfig(shape=(8, 16, 16)))


def test_cq500_converter_on_an_export_tree_picks_soft_tissue_and_lists_what_it_skips(tree, tmp_path, capsys):
    import shutil

    root, expected, _ = tree
    src = tmp_path / "src"
    shutil.copytree(root, src)
    fields = ["name", "Category", *(f"R1:{k}" for k in ("ICH", "IPH", "IVH", "SDH", "EDH", "SAH", "CalvarialFracture",
                                                         "MassEffect", "MidlineShift", "Fracture"))]
    names = sorted({s["patient_id"] for s in expected.values()}) + ["PAT999"]
    (src / "reads.csv").write_text(",".join(fields) + "\n" + "".join(f"{n},B" + ",0" * 10 + "\n" for n in names))
    manifest = tmp_path / "m.csv"
    assert main(["convert", "cq500", str(src), "--out", str(manifest), "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert 'skipped PAT005: no acceptable series: series 1 "Scout" (kernel STANDARD): a localizer' in out
    assert "1 slice(s) missing near z = 18.5 mm (tolerance 0)" in out and "skipped PAT999: no folder named PAT999" in out
    df = read_manifest(manifest, required_splits=())                    # the flat folder's series by series_uid
    assert list(df["scan_id"]) == ["PAT001", "PAT002", "PAT003", "PAT004"]
    assert list(df["meta_series"]) == ["SE002_HEAD_STD_5mm", "ACC2001_CT_HEAD", "SE002_Head_50_H30s", "SE002_HEAD_STD_5mm"]
    flat = df.set_index("scan_id").loc["PAT002"]
    assert flat["series_uid"] == _series_uid(src, src / "PAT002" / "ACC2001_CT_HEAD", 2)


def test_labels_join_by_study_uid_and_unmatched_rows_are_listed(tree, tmp_path, capsys):
    root, expected, _ = tree
    uid = expected["ACC1002"]["study_uid"]
    labels = tmp_path / "labels.csv"
    labels.write_text(f"study_uid,intracranial_hemorrhage\n{uid},1\n1.2.3.nope,0\n")
    assert main(["convert", "pacs", str(root), "--out", str(tmp_path / "m.csv"), "--labels", str(labels)]) == 0
    out = capsys.readouterr().out
    assert "warning: 4 studies have no row in --labels (their labels are unknown): ACC1001, ACC2001, ACC3001, ACC4001" in out
    assert "warning: 1 --labels rows match no study: 1.2.3.nope" in out
    df = read_manifest(tmp_path / "m.csv", root=root, required_splits=()).set_index("scan_id")
    assert df.loc["ACC1002", "intracranial_hemorrhage"] == "1" and df.loc["ACC1001", "intracranial_hemorrhage"] == ""


def test_a_study_folder_with_a_readme_beside_its_series_folders_lists_them(tree, run, tmp_path, capsys):
    import shutil

    root, _, _ = tree
    run_dir, _ = run
    study = tmp_path / "study"
    shutil.copytree(root / "PAT001" / "ACC1001_CT_HEAD", study)
    (study / "README.TXT").write_text("exported by PACS\n")                  # what CD / PACS exports put there
    why = (f"{study} holds no DICOM files (1 other file(s): README.TXT), only 6 subfolder(s): SE001_Scout, "
           "SE002_HEAD_STD_5mm")
    manifest = tmp_path / "m.csv"
    manifest.write_text("scan_id,patient_id,split,path\ns1,P1,train,study\n")
    assert main(["validate", str(manifest), "--require-splits", ""]) == 2
    assert why in capsys.readouterr().out                                    # not a pydicom InvalidDicomError
    with pytest.raises(VolumeReadError, match="holds no DICOM files"):
        load_volume(study)
    assert main(["predict", str(run_dir), str(study), "--out", str(tmp_path / "p.csv"), "--device", "cpu"]) == 2
    assert f"molre predict: error: {why}" in capsys.readouterr().err


def test_a_label_other_than_1_0_or_empty_is_refused_when_converting(tree, tmp_path, capsys):
    root, _, _ = tree
    labels = tmp_path / "labels.csv"
    labels.write_text("accession,intracranial_hemorrhage\nACC1001,1\nACC1002,yes\n")
    assert main(["convert", "pacs", str(root), "--out", str(tmp_path / "m.csv"), "--labels", str(labels)]) == 2
    assert (f"{labels}: row 2 (line 3), column 'intracranial_hemorrhage': label must be 1, 0 or empty, got 'yes'"
            in capsys.readouterr().err)                  # not a manifest that validate refuses afterwards
    assert not (tmp_path / "m.csv").exists()
