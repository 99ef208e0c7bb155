"""Are the demo backbones real feature extractors? Linear probe on frozen features vs random init.

Three encoders of one architecture embed every 2nd axial slice of held-out phantom scans: phantom_vit (the
cached label-free pretraining on phantom CT from ``molre pretrain-demo``), natural_vit (the same objective on
bundled natural photographs, ``molre pretrain-demo --backbone natural_vit``) and a randomly initialised copy.
One logistic regression per finding (scikit-learn, identical settings for all three) is fitted on train scans and
scored on test scans, at two levels:
scan (features: mean and max over slices; label: the scan has the finding) and slice (features: the slice's;
label: the finding's mask touches the slice). True phantom labels are read here only, never in pretraining.
Macro AUC over findings with enough positives in both splits. Writes benchmarks/results/phantom_vit_probe.json.

    python benchmarks/phantom_vit_probe.py [--n-train 240 --n-test 120] [--pretrain]  # --pretrain: rebuild caches
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def slice_features(model, vols: list[np.ndarray], batch: int = 4, stride: int = 1) -> np.ndarray:
    """(N, D', F): the frozen encoder's features of every ``stride``-th slice."""
    out = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(vols), batch):
            x = torch.from_numpy(np.stack(vols[i:i + batch]))[:, :, ::stride]  # (b, C, D', H, W)
            out.append(model.slice_features(x).numpy())  # (b, D', F)
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
    ap.add_argument("--n-train", type=int, default=240)
    ap.add_argument("--n-test", type=int, default=120)
    ap.add_argument("--slice-stride", type=int, default=2, help="use every k-th slice (cost)")
    ap.add_argument("--min-pos", type=int, default=5)
    ap.add_argument("--pretrain", action="store_true", help="run the demo pretraining first (refreshes the cache)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "phantom_vit_probe.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)

    from molre_lib.backbones import create_model, find_local_weights, get_spec
    from molre_lib.backbones.phantom_pretrain import pretrain_phantom_vit
    from molre_lib.data.taxonomy import FINDING_KEYS

    from molre_lib.backbones.natural_vit import pretrain_natural_vit

    if args.pretrain or find_local_weights(get_spec("phantom_vit")) is None:
        pretrain_phantom_vit()
    if args.pretrain or find_local_weights(get_spec("natural_vit")) is None:
        pretrain_natural_vit()
    t0 = time.time()
    seeds = list(range(args.n_train + args.n_test))  # disjoint from the pretraining seeds (900000+)
    import multiprocessing as mp

    with mp.get_context("fork").Pool(2) as pool:
        rendered = pool.map(_render_with_labels, seeds)
    vols = [r[0] for r in rendered]
    labels = np.stack([r[1] for r in rendered])  # (N, 75) true labels, used by the probe only
    slice_labels = np.stack([r[2] for r in rendered])[:, ::args.slice_stride]  # (N, D', 75) finding on the slice
    t_data = time.time() - t0

    results: dict[str, dict[str, dict[str, float]]] = {"scan": {}, "slice": {}}
    torch.manual_seed(0)
    models = {"pretrained": create_model("phantom_vit", pretrained=True), "random_init": create_model("phantom_vit")}
    models["natural_vit"] = create_model("natural_vit", pretrained=True)  # after: the random copy stays as before
    ntr = args.n_train
    for name, model in models.items():
        f = slice_features(model, vols, stride=args.slice_stride)  # (N, D', F)
        scan = np.concatenate([f.mean(1), f.max(1)], axis=1)  # (N, 2F)
        results["scan"][name] = probe_auc(scan[:ntr], labels[:ntr], scan[ntr:], labels[ntr:], FINDING_KEYS,
                                          args.min_pos)
        # slice level: does this slice contain the finding (split by scan, so no scan is on both sides)
        fs, ys = f.reshape(-1, f.shape[-1]), slice_labels.reshape(-1, slice_labels.shape[-1])
        cut = ntr * f.shape[1]
        results["slice"][name] = probe_auc(fs[:cut], ys[:cut], fs[cut:], ys[cut:], FINDING_KEYS, 2 * args.min_pos)
    summary = {}
    for level, res in results.items():
        common = sorted(set.intersection(*(set(r) for r in res.values())))
        macro = {k: float(np.mean([res[k][f] for f in common])) for k in res}
        summary[level] = {
            "macro_auc_pretrained": macro["pretrained"], "macro_auc_natural_vit": macro["natural_vit"],
            "macro_auc_random_init": macro["random_init"],
            "margin": macro["pretrained"] - macro["random_init"],
            "margin_natural_vit": macro["natural_vit"] - macro["random_init"], "findings_scored": len(common),
            "findings_pretrained_better": int(sum(res["pretrained"][f] > res["random_init"][f] for f in common)),
            "findings_natural_vit_better": int(sum(res["natural_vit"][f] > res["random_init"][f] for f in common)),
            "per_finding": {f: {k: res[k][f] for k in res} for f in common},
        }
    metas = {}
    for name in ("phantom_vit", "natural_vit"):
        cache = find_local_weights(get_spec(name))
        metas[name] = json.loads((cache / "config.json").read_text()) if cache else {}
    out = {
        "scan_level": summary["scan"], "slice_level": summary["slice"], "n_train_scans": ntr,
        "n_test_scans": args.n_test, "min_positives": args.min_pos, "slice_stride": args.slice_stride,
        "probe": "StandardScaler + LogisticRegression(C=0.1) per finding; scan level on [mean, max] of slice "
                 "features, slice level on each slice's features",
        "pretraining": {name: {k: meta.get(k) for k in ("pretrain", "steps_done", "seconds_total", "objectives")}
                        for name, meta in metas.items()},
        "seconds_data": round(t_data, 1), "seconds_total": round(time.time() - t0, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    for level, r in summary.items():
        print(f"{level}-level macro AUC over {r['findings_scored']} findings: phantom_vit "
              f"{r['macro_auc_pretrained']:.3f} | natural_vit {r['macro_auc_natural_vit']:.3f} | random init "
              f"{r['macro_auc_random_init']:.3f} | margins {r['margin']:+.3f} / {r['margin_natural_vit']:+.3f} | "
              f"better than random on {r['findings_pretrained_better']} / {r['findings_natural_vit_better']} of "
              f"{r['findings_scored']}")
    print(f"wrote {args.out}")
    return 0


def _render_with_labels(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from molre_lib.data.windowing import window_channels
    from molre_lib.data.phantom import make_subject
    from molre_lib.data.taxonomy import FINDING_KEYS

    sub = make_subject(seed)
    on_slice = np.zeros((sub.hu.shape[0], len(FINDING_KEYS)), np.float32)  # (D, 75)
    for j, key in enumerate(FINDING_KEYS):
        if key in sub.masks:
            on_slice[:, j] = sub.masks[key].any(axis=(1, 2))
    return window_channels(sub.hu), sub.label_vector()[0], on_slice  # (C, D, H, W), (75,), (D, 75)


if __name__ == "__main__":
    raise SystemExit(main())
