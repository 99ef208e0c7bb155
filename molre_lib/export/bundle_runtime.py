"""What a MONAI bundle exported from a run executes: its network and its inference loop.

``configs/inference.json`` builds :func:`load_network` (the frozen backbone from the registry, then the run's
adapters and head from ``models/model.pt`` with an explicit key check) and runs :func:`predict_files`: each input
(NIfTI file or DICOM series folder) is read and fitted to the training volume exactly as ``molre predict`` does
(``data.io.load_volume`` -> ``data.dataset.fit_volume``), and one CSV row of per-finding probabilities is written.

The network's input is that fitted volume in Hounsfield units, (B, 1, D, H, W) float32; the CT windows of the
training run are applied inside the network (``data.windowing.window_channels``, the function the dataset uses),
so ``metadata.json`` can state the input honestly as ``hounsfield``. Output: (B, F) sigmoid probabilities.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

RUN_FILE = "configs/molre_run.json"     # the run's config.json + adapter metadata, written by bundle.py
MODEL_FILE = "models/model.pt"          # adapters + routers + head: a plain state dict
BACKBONE_FILE = "models/backbone.pt"    # frozen backbone tensors, only with --include-backbone


class HUProbabilities(nn.Module):
    """A run's model behind the run's CT windows: (B, 1, D, H, W) HU -> (B, F) probabilities."""

    def __init__(self, model: nn.Module, windows: Sequence[Sequence[float]]) -> None:
        super().__init__()
        self.model = model
        self.windows = [tuple(float(v) for v in w) for w in windows]

    def forward(self, hu: torch.Tensor) -> torch.Tensor:
        from molre_lib.data.windowing import window_channels

        x = torch.stack([window_channels(h[0], self.windows) for h in hu])  # (B, C, D, H, W) in [0, 1]
        return torch.sigmoid(self.model(x).float())                        # (B, F)


def _check_and_load(model: nn.Module, state: dict[str, torch.Tensor], expected: set[str], path: Path) -> None:
    """Copy ``state`` into ``model`` after checking its keys equal ``expected`` and every shape matches."""
    params = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing:
        raise ValueError(f"{path}: missing tensor {missing[0]!r} ({len(missing)} missing) that the model expects")
    if unexpected:
        raise ValueError(f"{path}: unexpected tensor {unexpected[0]!r} ({len(unexpected)} unexpected): not "
                         "built from the same run configuration")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(params[key].shape):
            raise ValueError(f"{path}: shape mismatch for {key!r}: file {tuple(tensor.shape)}, model "
                             f"{tuple(params[key].shape)}")
    with torch.no_grad():
        for key, tensor in state.items():
            params[key].copy_(tensor)


def read_run_file(bundle_root: str | Path) -> dict[str, Any]:
    return json.loads((Path(bundle_root) / RUN_FILE).read_text())


def load_network(bundle_root: str | Path, weights: Optional[str] = None, device: str = "cpu") -> HUProbabilities:
    """The bundle's network: registry backbone (+ ``models/backbone.pt`` when shipped) + adapters + head.

    ``weights`` overrides the backbone weight file the run trained with (``--weights`` at training). Raises
    ``ValueError`` naming the file when a key or shape differs, or when the backbone found now is not the one the
    run was trained against (frozen-weight fingerprint).
    """
    from molre_lib.adapters import adapter_state_dict
    from molre_lib.engine.build import build_model
    from molre_lib.engine.checkpoint import frozen_fingerprint
    from molre_lib.engine.config import TrainConfig

    root = Path(bundle_root)
    run = read_run_file(root)
    cfg = TrainConfig.from_dict(run["config"]["train"])
    backbone = root / BACKBONE_FILE
    if backbone.is_file():
        cfg.pretrained = False  # the shipped tensors replace whatever the registry would load
    elif weights:
        cfg.weights = weights
    model = build_model(cfg, int(run["config"].get("n_classes", 75)))
    trained = adapter_state_dict(model, run["adapter"]["extra"])
    if backbone.is_file():
        frozen = {k for k in {**dict(model.named_parameters()), **dict(model.named_buffers())} if k not in trained}
        _check_and_load(model, torch.load(backbone, map_location="cpu", weights_only=True), frozen, backbone)
    path = root / MODEL_FILE
    _check_and_load(model, torch.load(path, map_location="cpu", weights_only=True), set(trained), path)
    saved, now = run["adapter"].get("frozen_fingerprint"), frozen_fingerprint(model)
    if saved is not None and abs(float(saved) - now) > 1e-6 * max(1.0, abs(now)):
        raise ValueError(f"{root}: the backbone weights found now differ from those the run was trained with "
                         f"(frozen-weight fingerprint {now} != {saved}); point `weights` (--weights PATH) or "
                         "MOLRE_CACHE_DIR at the same weights")
    return HUProbabilities(model, run["windows"]).to(device).eval()


def predict_files(network: HUProbabilities, inputs: str | Sequence[str], output_file: str | Path,
                  bundle_root: str | Path, min_slices: int = 10, min_extent_mm: float = 80.0) -> Path:
    """Probabilities for NIfTI files / DICOM series folders, as ``molre predict`` computes them, to a CSV.

    Each input passes ``molre predict``'s checks: the run's DICOM series policy (``series_policy``), Modality CT,
    ``min_slices`` / ``min_extent_mm``. Columns: ``molre predict``'s (``input``, ``series_uid``, ``status`` (ok |
    error), ``warning``, ``error``, ``series_number``, ``series_description``, ``kernel``), then one per finding.
    A folder with several series gives one row per series; an unreadable input gets a row with its error and the
    others are still predicted.
    """
    from dataclasses import replace

    import pandas as pd

    from molre_lib.data.dataset import PreprocessConfig, fit_volume
    from molre_lib.data.dicom_series import SeriesPolicy
    from molre_lib.data.io import VolumeReadError, check_extent, load_volume
    from molre_lib.engine.predict import INFO_COLUMNS, PredictChecks, _warnings, expand_series

    run = read_run_file(bundle_root)
    pre = PreprocessConfig.from_dict(run["preprocess"])
    policy = SeriesPolicy.from_pairs(pre.series_policy) if pre.series_policy else SeriesPolicy()
    policy = replace(policy, min_images=1)  # slices are counted by check_extent, as molre predict does
    checks = PredictChecks(min_slices=min_slices, min_extent_mm=min_extent_mm)
    keys = run["finding_keys"]
    items = expand_series([inputs] if isinstance(inputs, (str, Path)) else list(inputs))
    if not items:
        raise ValueError("no inputs: pass --inputs \"['scan.nii.gz', 'dicom_series_folder']\"")
    per_input = pd.Series([i for i, *_ in items]).value_counts().to_dict()
    dev = next(network.parameters()).device
    rows = []
    for i, path, uid, info in items:
        row = {"input": str(path), "series_uid": uid or "", "status": "ok", "warning": "", "error": "",
               "series_number": getattr(info, "series_number", ""),
               "series_description": getattr(info, "description", ""), "kernel": getattr(info, "kernel", "")}
        try:
            vol = load_volume(path, series_uid=uid, policy=policy)
            check_extent(vol, checks.min_slices, checks.min_extent_mm)
            row.update({k: vol.meta.get(k, row[k]) for k in ("series_uid", "series_number", "series_description",
                                                            "kernel")})
            row["warning"] = "; ".join(_warnings(vol.meta, checks, per_input[i]))
            hu = torch.from_numpy(fit_volume(vol, pre).astype("float32"))[None, None].to(dev)  # (1, 1, D, H, W)
            with torch.no_grad():
                row.update({k: float(p) for k, p in zip(keys, network(hu)[0].cpu().numpy())})
        except VolumeReadError as err:
            row.update(status="error", error=str(err))
        except Exception as err:  # noqa: BLE001 - any reader / decoder failure is this input's, as in molre predict
            row.update(status="error", error=f"{path}: cannot read as NIfTI / DICOM ({type(err).__name__}: {err})")
        rows.append(row)
    out = Path(output_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=[*INFO_COLUMNS, *keys]).to_csv(out, index=False)
    print(f"wrote {out} ({sum(r['status'] == 'ok' for r in rows)} of {len(rows)} inputs predicted)")
    return out
