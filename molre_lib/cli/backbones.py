"""``molre backbones`` (the registry table, with whether weights are on this machine) and
``molre pretrain-demo`` (builds the demo backbone phantom_vit and caches it)."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("backbones", help="list the backbone registry and whether weights are found locally")
    p.add_argument("--family", choices=["general-2D", "medical-2D", "ct-3D", "demo"], help="only this family")
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    p.set_defaults(func=_backbones)

    q = subparsers.add_parser("pretrain-demo", help="pretrain a demo backbone (label-free) and cache it: phantom_vit on "
                                                    "phantom CT slices, natural_vit on bundled photographs")
    q.add_argument("--backbone", choices=["phantom_vit", "natural_vit"], default="phantom_vit",
                   help="which demo backbone (default phantom_vit)")
    q.add_argument("--force", action="store_true", help="rebuild even if the cache exists")
    q.add_argument("--steps", type=int, help="optimiser steps (default from PretrainConfig)")
    q.add_argument("--max-seconds", type=float,
                   help="training time budget in seconds (default: none; with one the weights depend on the machine's speed)")
    q.add_argument("--subjects", type=int, help="phantom scans to draw slices from (phantom_vit only)")
    q.add_argument("--out", help="cache folder (default $MOLRE_CACHE_DIR/<backbone>)")
    q.set_defaults(func=_pretrain_demo)


def _fmt_size(size: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in size)


def _rows() -> list[dict]:
    from molre_lib.backbones import find_local_weights, list_backbones

    rows = []
    for spec in list_backbones():
        found = find_local_weights(spec)
        rows.append({
            "name": spec.name, "family": spec.family, "dims": spec.dims, "params_M": round(spec.n_params / 1e6, 2),
            "published_M": None if spec.published_params is None else round(spec.published_params / 1e6, 1),
            "input": ("slice " if spec.dims == 2 else "volume ") + _fmt_size(spec.input_size),
            "in_chans": spec.in_chans, "feature_dim": spec.feature_dim, "hub_id": spec.hub_id or "-",
            "weights": str(found) if found else "not found",
        })
    return rows


def _backbones(args: argparse.Namespace) -> int:
    import json

    rows = [r for r in _rows() if args.family is None or r["family"] == args.family]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    cols = ["name", "family", "dims", "params_M", "published_M", "input", "in_chans", "feature_dim", "weights", "hub_id"]
    table = [[("-" if r[c] is None else str(r[c])) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    print("  ".join("-" * w for w in widths))
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths)))
    from molre_lib.backbones import weights_dir

    print(f"\nweights are looked for in: weights=..., the Hugging Face cache (offline), {weights_dir()}/<name>/")
    return 0


def _pretrain_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from molre_lib.backbones import cache_dir, find_local_weights, get_spec

    name = args.backbone
    out = Path(args.out) if args.out else cache_dir() / name
    existing = (out if (out / "model.safetensors").is_file() else None) if args.out else find_local_weights(get_spec(name))
    if existing is not None and not args.force:
        print(f"{name} is already cached at {existing} (use --force to rebuild)")
        return 0
    kw = {}
    if args.steps is not None:
        kw["steps"] = args.steps
    if args.max_seconds is not None:
        kw["max_seconds"] = args.max_seconds
    if name == "natural_vit":
        if args.subjects is not None:
            raise SystemExit("error: --subjects applies to phantom_vit only (natural_vit learns from bundled photographs)")
        from molre_lib.backbones.natural_vit import NaturalPretrainConfig, pretrain_natural_vit

        pretrain_natural_vit(NaturalPretrainConfig(**kw), out)
        return 0
    from molre_lib.backbones.phantom_pretrain import PretrainConfig, pretrain_phantom_vit

    if args.subjects is not None:
        kw["n_subjects"] = args.subjects
    pretrain_phantom_vit(PretrainConfig(**kw), out)
    return 0
