"""``molre export RUN --format monai-bundle``: a MONAI bundle that ``python -m monai.bundle run`` executes.

Layout (MONAI Bundle Specification)::

    configs/metadata.json     schema-checked metadata: HU input, 75 finding probabilities, versions, metrics
    configs/inference.json    builds the network (bundle_runtime.load_network) and runs bundle_runtime.predict_files
    configs/molre_run.json    the run's config.json, adapter metadata, preprocessing and finding keys
    models/model.pt           adapters + routers + head (a state dict; the frozen backbone is not in it)
    models/backbone.pt        the frozen backbone tensors, only with --include-backbone where the licence allows
    docs/README.md            the model card
    LICENSE                   the licence of what the bundle ships, and of the backbone it needs

Running it needs molre_lib installed (the backbone classes, the CT reader); the backbone's weights come from where
the run took them (its ``weights`` path, or the hub cache) unless the bundle ships them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .bundle_runtime import BACKBONE_FILE, MODEL_FILE, RUN_FILE
from .meta_schema import SCHEMA_FILE
from .run_info import ExportError, RunInfo

SCHEMA_RAW_URL = ("https://raw.githubusercontent.com/Project-MONAI/MONAI/45c7983910874f1f2b8a637defe84af83eace648/"
                  "monai/bundle/meta_schema.json")
BUNDLE_VERSION = "0.1.0"
FIT_HU_RANGE = [-1024, 32767]  # data.dataset.fit_volume clips the fitted HU to this range


def _network_data_format(info: RunInfo, shape: list[int], keys: list[str]) -> dict[str, Any]:
    from molre_lib.data.taxonomy import FINDINGS

    names = {f.key: f"{f.name} ({f.category})" for f in FINDINGS}
    return {
        "inputs": {"image": {
            "type": "image", "format": "hounsfield", "modality": "CT", "num_channels": 1, "spatial_shape": shape,
            "dtype": "float32", "value_range": FIT_HU_RANGE, "is_patch_data": False,
            "channel_def": {"0": f"head CT in Hounsfield units, fitted ({info.cfg.fit}) to (D, H, W) = {tuple(shape)}"
                                 " by configs/inference.json's reader"}}},
        "outputs": {"pred": {
            "type": "probabilities", "format": "classes", "num_channels": len(keys), "spatial_shape": [],
            "dtype": "float32", "value_range": [0, 1], "is_patch_data": False,
            "channel_def": {str(i): (f"{k}: {names[k]}" if k in names else k) for i, k in enumerate(keys)}}},
    }


def metadata(info: RunInfo, shape: list[int], keys: list[str]) -> dict[str, Any]:
    """configs/metadata.json (MONAI's keys; see meta_schema.py for the schema it is checked against)."""
    import monai
    import numpy as np

    from .model_card import RESEARCH_ONLY, adapter_text

    versions = info.config.get("versions") or {}
    required = {k: versions[k] for k in ("molre_lib", "timm", "nibabel", "pydicom", "safetensors") if versions.get(k)}
    required.setdefault("molre_lib", __import__("molre_lib").__version__)
    split = info.eval_split
    evals = {}
    if split:
        for name, s in info.metrics[split]["summary"].items():
            if s.get("value") is not None:
                evals[f"{split}_{name}"] = s["value"]
    m = info.manifest
    source = (f"{m['label_source']}; manifest {m['path']} with "
              + ", ".join(f"{s['scans']} {k} scans" for k, s in m["splits"].items())) if m.get("available") else \
        f"manifest {m.get('path')} (not found at export time)"
    return {
        "schema": SCHEMA_RAW_URL,
        "version": BUNDLE_VERSION,
        "changelog": {BUNDLE_VERSION: f"exported from run {info.name} by molre export"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": required,
        "name": f"MoLRE head-CT: {info.name}",
        "task": f"Multi-label classification of {len(keys)} head-CT findings",
        "description": f"{adapter_text(info)}: per-finding probabilities for a head CT (NIfTI file or DICOM series). "
                       "The frozen backbone is built from the molre_lib registry; models/model.pt holds the adapters "
                       "and the head only.",
        "authors": "MoLRE head-CT workbook (molre export)",
        "copyright": "see LICENSE",
        "data_source": source,
        "data_type": "nifti / dicom",
        "image_classes": "one channel: CT in Hounsfield units (windows applied inside the network)",
        "pred_classes": f"{len(keys)} independent sigmoid probabilities, one per finding (channel_def)",
        "eval_metrics": evals,
        "intended_use": f"{RESEARCH_ONLY} Research on parameter-efficient adaptation of foundation models to head CT.",
        "references": ["Hu et al. 2021, LoRA: Low-Rank Adaptation of Large Language Models (arXiv 2106.09685)"]
        + [s for s in (_spec_source(info),) if s],
        "network_data_format": _network_data_format(info, shape, keys),
    }


def _spec_source(info: RunInfo) -> str:
    from molre_lib.backbones import get_spec

    return get_spec(info.cfg.backbone).source


def inference_config() -> dict[str, Any]:
    """configs/inference.json: ``--inputs`` (a path or a list of paths) and ``--output_file`` are the overrides."""
    return {
        "imports": ["$import torch", "$from molre_lib.export import bundle_runtime"],
        "bundle_root": ".",
        "device": "$'cuda' if torch.cuda.is_available() else 'cpu'",
        "weights": None,
        "inputs": [],
        "output_file": "$@bundle_root + '/eval/probabilities.csv'",
        "min_slices": 10,
        "min_extent_mm": 80.0,
        "network_def": {"_target_": "molre_lib.export.bundle_runtime.load_network", "bundle_root": "@bundle_root",
                        "weights": "@weights"},
        "network": "$@network_def.to(@device)",
        "run": ["$bundle_runtime.predict_files(@network, @inputs, @output_file, @bundle_root, "
                "@min_slices, @min_extent_mm)"],
    }


HOW_TO_USE = """\
Needs `pip install molre_lib` (the workbook) and MONAI. From the bundle's folder's parent:

```text
python -m monai.bundle run --config_file BUNDLE/configs/inference.json --meta_file BUNDLE/configs/metadata.json \\
    --bundle_root BUNDLE --inputs "['scan.nii.gz', 'dicom_series_folder']" --output_file probabilities.csv
python -m monai.bundle verify_net_in_out network_def --meta_file BUNDLE/configs/metadata.json \\
    --config_file BUNDLE/configs/inference.json --bundle_root BUNDLE
```

`--weights PATH` points at the backbone's weight file when it is not where the run found it. Each input (each series of
a folder that holds several) gets a row with `molre predict`'s columns (input, series_uid, status, warning, error,
series_number, series_description, kernel), then one probability per finding; unreadable inputs get their error."""


def write_bundle(info: RunInfo, out: Path, include_backbone: bool) -> dict[str, str]:
    """Write the bundle into ``out``; returns {relative path: what it is} (listed in the card)."""
    from molre_lib.backbones import get_spec
    from molre_lib.engine.evaluate import load_run_model
    from molre_lib.engine.loaders import preprocess_config
    from molre_lib.engine.run_files import finding_keys
    from molre_lib.adapters import adapter_state_dict

    from .model_card import model_card

    if include_backbone and not info.licence.redistribute:
        raise ExportError(f"--include-backbone: the weights of {info.cfg.backbone} ({info.licence.name}) are not "
                          f"recorded as redistributable ({info.licence.note or 'molre_lib/export/licences.py'}); "
                          "export without --include-backbone: the receiver loads them as the run did")
    try:
        model, cfg = load_run_model(info.run_dir, "cpu")
    except (ValueError, FileNotFoundError) as err:
        raise ExportError(str(err).splitlines()[0]) from None
    pre = preprocess_config(cfg, get_spec(cfg.backbone))
    keys = finding_keys(info.n_classes)
    trained = {k: v.contiguous().clone() for k, v in adapter_state_dict(model, info.adapter_meta["extra"]).items()}
    for sub in ("configs", "models", "docs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    torch.save(trained, out / MODEL_FILE)
    files = {MODEL_FILE: f"adapters, routers and head ({len(trained)} tensors, "
                         f"{sum(v.numel() for v in trained.values()):,} values); not the backbone"}
    if include_backbone:
        frozen = {k: v.detach().contiguous().clone() for k, v in {**dict(model.named_parameters()),
                                                                  **dict(model.named_buffers())}.items()
                  if k not in trained}
        torch.save(frozen, out / BACKBONE_FILE)
        files[BACKBONE_FILE] = f"the frozen backbone ({len(frozen)} tensors; {info.licence.name})"
    shape = list(pre.shape)
    run = {"config": info.config, "adapter": info.adapter_meta, "finding_keys": keys, "windows": [list(w) for w in pre.windows],
           "preprocess": {"shape": shape, "spacing": list(pre.spacing) if pre.spacing else None, "fit": pre.fit,
                          "windows": [list(w) for w in pre.windows],
                          "series_policy": list(pre.series_policy) if pre.series_policy else None}}
    (out / RUN_FILE).write_text(json.dumps(run, indent=2))
    (out / "configs" / "metadata.json").write_text(json.dumps(metadata(info, shape, keys), indent=2))
    (out / "configs" / "inference.json").write_text(json.dumps(inference_config(), indent=2))
    files.update({"configs/metadata.json": "MONAI bundle metadata (checked against MONAI's schema)",
                  "configs/inference.json": "builds the network and predicts files (`python -m monai.bundle run`)",
                  RUN_FILE: "the run's configuration, adapter metadata, preprocessing and finding keys",
                  "docs/README.md": "this model card", "LICENSE": "licence terms"})
    (out / "LICENSE").write_text(licence_text(info, include_backbone))
    (out / "docs" / "README.md").write_text(model_card(info, "monai", HOW_TO_USE, files, include_backbone))
    return files


def licence_text(info: RunInfo, backbone_included: bool) -> str:
    lic = info.licence
    return (f"Adapter and head weights, configs and docs of this export: Apache License 2.0 "
            f"(https://www.apache.org/licenses/LICENSE-2.0), as the MoLRE workbook that trained them.\n\n"
            f"They are trained on top of the backbone {info.cfg.backbone}, whose weights are under: {lic.name}"
            + (f" ({lic.link})" if lic.link else "") + ". "
            + ("Those weights are included in models/backbone.pt under that licence.\n" if backbone_included else
               "Those weights are NOT included; obtain them under their own terms.\n")
            + "\nResearch use only - not for clinical use.\n")
