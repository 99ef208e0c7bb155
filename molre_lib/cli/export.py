"""``molre export RUN --format monai-bundle|peft --out DIR [--include-backbone]``: a finished run for others."""
from __future__ import annotations

import argparse


FORMATS = ("monai-bundle", "peft")  # molre_lib.export.FORMATS's keys (not imported here: `molre --help` stays fast)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="Write a finished run as a MONAI bundle or a PEFT adapter folder, each with a model card.",
        description="Write a finished run as a MONAI bundle (python -m monai.bundle run) or, for a LoRA run, a PEFT "
                    "adapter folder (PeftModel.from_pretrained); both get a README.md model card with Hugging Face "
                    "front matter. Research use only.")
    p.add_argument("run", help="Finished run folder (config.json, adapter.safetensors, metrics.json).")
    p.add_argument("--format", required=True, choices=FORMATS, dest="fmt",
                   help="monai-bundle: configs/ + models/model.pt (adapters + head) + docs/README.md + LICENSE; "
                        "peft: adapter_config.json + adapter_model.safetensors + README.md (LoRA runs only).")
    p.add_argument("--out", required=True, help="New or empty output folder.")
    p.add_argument("--include-backbone", action="store_true",
                   help="monai-bundle: also ship the frozen backbone weights (models/backbone.pt), only where their "
                        "licence allows it (molre_lib/export/licences.py); otherwise the receiver loads them as the "
                        "run did.")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from molre_lib.export import check_card, export_run

    files = export_run(args.run, args.fmt, args.out, include_backbone=args.include_backbone)
    out = Path(args.out)
    card = out / ("docs/README.md" if args.fmt == "monai-bundle" else "README.md")
    check_card(card.read_text())  # the front matter parses as a Hugging Face model card
    print(f"wrote {args.fmt} export of {args.run} to {out}:")
    for name, what in files.items():
        print(f"  {name:28s} {what}")
    if args.fmt == "monai-bundle":
        print(f"run it: python -m monai.bundle run --config_file {out}/configs/inference.json --meta_file "
              f"{out}/configs/metadata.json --bundle_root {out} --inputs \"['scan.nii.gz']\" --output_file probs.csv")
    else:
        print(f"load it: PeftModel.from_pretrained(molre_lib.export.peft_base_model('{out}'), '{out}')")
    return 0
