"""Is phantom_vit a real feature extractor? Linear probe on frozen features, pretrained vs random init.

Both copies of phantom_vit (the cached label-free pretraining from ``molre pretrain-demo``, and a randomly
initialised one) embed every axial slice of held-out phantom scans; a scan is described by the mean and max of
its slice features; one logistic regression per finding (scikit-learn, identical settings for both) is fitted on
train scans and scored on test scans. Macro AUC over findings with >= ``--min-pos`` positives in both splits.
Writes benchmarks/results/phantom_vit_probe.json.

    python benchmarks/phantom_vit_probe.py [--n-train 240 --n-test 160] [--pretrain]   # --pretrain: build the cache first
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def scan_features(model, vols: list[np.ndarray], batch: int = 4, stride: int = 1) -> np.ndarray:
    """(N, 2F): mean and max over (every ``stride``-th) slice of the frozen encoder's slice features."""
    out = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(vols), batch):
            x = torch.from_numpy(np.stack(vols[i:i + batch]))[:, :, ::stride]  # (b, C, D', H, W)
            f = model.slice_features(x)  # (b, D, F)
            out.append(torch.cat([f.mean(1), f.amax(1)], dim=1).numpy())
    return np.concatenate(out)


def probe_auc(train_x, train_y, test_x, test_y, keys, min_pos: int) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    tr, te = scaler.transform(train_x), scaler.transform(test_x)
    aucs = {}
    for j, key in enumerate(keys):
        ytr, yte = train_y[:, j], test_y[:, j]
        if min(ytr.sum(), (1 - ytr).sum(), yte.sum(), (1 - yte).sum()) < min_pos:
            continue
        clf = LogisticRegression(C=0.1, max_iter=3000).fit(tr, ytr)
        aucs[key] = float(roc_auc_score(yte, clf.decision_function(te)))
    return aucs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-train", type=int, default=300)
    ap.add_argument("--n-test", type=int, default=150)
    ap.add_argument("--slice-stride", type=int, default=2, help="use every k-th slice (cost)")
    ap.add_argument("--min-pos", type=int, default=5)
    ap.add_argument("--pretrain", action="store_true", help="run the demo pretraining first (refreshes the cache)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "phantom_vit_probe.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)

    from molre_lib.backbones import create_model, find_local_weights, get_spec
    from molre_lib.backbones.phantom_pretrain import pretrain_phantom_vit
    from molre_lib.data.taxonomy import FINDING_KEYS

    if args.pretrain or find_local_weights(get_spec("phantom_vit")) is None:
        pretrain_phantom_vit()
    t0 = time.time()
    seeds = list(range(args.n_train + args.n_test))  # disjoint from the pretraining seeds (900000+)
    import multiprocessing as mp

    with mp.get_context("fork").Pool(2) as pool:
        rendered = pool.map(_render_with_labels, seeds)
    vols = [v for v, _ in rendered]
    labels = np.stack([y for _, y in rendered])  # (N, 75) true labels, used by the probe only
    t_data = time.time() - t0

    results = {}
    torch.manual_seed(0)
    models = {"pretrained": create_model("phantom_vit", pretrained=True), "random_init": create_model("phantom_vit")}
    ntr = args.n_train
    for name, model in models.items():
        feats = scan_features(model, vols, stride=args.slice_stride)
        results[name] = probe_auc(feats[:ntr], labels[:ntr], feats[ntr:], labels[ntr:], FINDING_KEYS, args.min_pos)
    common = sorted(set(results["pretrained"]) & set(results["random_init"]))
    macro = {k: float(np.mean([results[k][f] for f in common])) for k in results}
    wins = sum(results["pretrained"][f] > results["random_init"][f] for f in common)
    cache = find_local_weights(get_spec("phantom_vit"))
    meta = json.loads((cache / "config.json").read_text()) if cache else {}
    out = {
        "macro_auc_pretrained": macro["pretrained"], "macro_auc_random_init": macro["random_init"],
        "margin": macro["pretrained"] - macro["random_init"], "findings_scored": len(common),
        "findings_pretrained_better": wins, "n_train_scans": ntr, "n_test_scans": args.n_test,
        "min_positives": args.min_pos, "slice_stride": args.slice_stride, "per_finding": {f: {k: results[k][f] for k in results} for f in common},
        "probe": "StandardScaler + LogisticRegression(C=0.1) per finding on [mean, max] of slice features",
        "pretraining": {k: meta.get(k) for k in ("pretrain", "steps_done", "seconds_total", "objectives")},
        "seconds_data": round(t_data, 1), "seconds_total": round(time.time() - t0, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"macro AUC over {len(common)} findings: pretrained {macro['pretrained']:.3f} | random init "
          f"{macro['random_init']:.3f} | margin {out['margin']:+.3f} | pretrained better on {wins}/{len(common)}")
    print(f"wrote {args.out}")
    return 0


def _render_with_labels(seed: int) -> tuple[np.ndarray, np.ndarray]:
    from molre_lib.backbones.phantom_pretrain import apply_windows
    from molre_lib.data.phantom import make_subject

    sub = make_subject(seed)
    return apply_windows(sub.hu), sub.label_vector()[0]  # (C, D, H, W), (75,)


if __name__ == "__main__":
    raise SystemExit(main())
