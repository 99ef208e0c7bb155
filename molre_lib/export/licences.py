"""What may be shipped with an export: the licence of each registry backbone's weights.

The backbone registry (``backbones/registry.py``) records where weights come from, not under which terms. This
table adds that, per registry name. ``redistribute`` is True only where the weights were made by this workbook
(the demo backbones, pretrained here on the phantom or bundled photographs): for every hub model the terms are
the hub model card's, read by a person, never by this code, so ``--include-backbone`` refuses them and the
receiver downloads the weights from the hub under those terms. A backbone missing here is refused as well.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class WeightLicence:
    """Licence of one backbone's weights."""

    spdx: Optional[str] = field(metadata={"help": "SPDX id / HF licence id, None when not recorded here"})
    name: str = field(metadata={"help": "the licence's name as its owner states it"})
    link: str = field(metadata={"help": "where to read the terms"})
    redistribute: bool = field(default=False, metadata={
        "help": "True only when this workbook made the weights and may ship them inside an export"})
    note: str = field(default="", metadata={"help": "one line for the model card"})


_WORKBOOK = WeightLicence("apache-2.0", "Apache License 2.0 (this workbook's licence)",
                          "https://www.apache.org/licenses/LICENSE-2.0", redistribute=True,
                          note="weights pretrained by this workbook (`molre pretrain-demo`) on the synthetic phantom")


def _hub(hub_id: str, name: str, spdx: Optional[str] = None) -> WeightLicence:
    return WeightLicence(spdx, name, f"https://huggingface.co/{hub_id}",
                         note=f"weights from {hub_id} under its model card's terms; not shipped in an export")


LICENCES: dict[str, WeightLicence] = {
    "phantom_vit": _WORKBOOK,
    "natural_vit": WeightLicence(
        None, "pretrained by this workbook on scikit-image's bundled sample photographs",
        "https://github.com/scikit-image/scikit-image/blob/main/skimage/data/README.txt",
        note="the sample photographs carry their own (mostly public-domain / CC) terms, listed in skimage/data/README.txt; "
             "not shipped in an export until someone has checked them"),
    "dinov3_vits16": _hub("timm/vit_small_patch16_dinov3.lvd1689m", "DINOv3 License"),
    "dinov3_vitb16": _hub("timm/vit_base_patch16_dinov3.lvd1689m", "DINOv3 License"),
    "medsiglip_448": _hub("google/medsiglip-448", "Health AI Developer Foundations terms of use"),
    "rad_dino": _hub("microsoft/rad-dino", "Microsoft Research License Agreement (MSRLA)"),
    "biomedclip_vitb16": _hub("microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224", "see the model card"),
    "ctfm_segresenc": _hub("project-lighter/ct_fm_feature_extractor", "see the model card"),
    "merlin_i3resnet": _hub("stanfordmimi/Merlin", "see the model card"),
    "medicalnet_resnet10": _hub("TencentMedicalNet/MedicalNet-Resnet10", "see the model card"),
    "headct_vit3d": WeightLicence(None, "see the FM-HeadCT repository", "https://github.com/NYUMedML/headCT_foundation",
                                  note="weights from the FM-HeadCT authors (local file); not shipped in an export"),
}

UNKNOWN = WeightLicence(None, "not recorded", "", note="licence not recorded in molre_lib.export.licences")


def licence_of(backbone: str) -> WeightLicence:
    """The licence entry of a registry name (``UNKNOWN``, never redistributable, when it has none)."""
    return LICENCES.get(backbone, UNKNOWN)
