"""TensorBoard curves of a training run, read back with TensorBoard's own event reader (not file existence)."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1]))
from engine_toys import ToyModel, toy_config, toy_datasets  # noqa: E402

pytest.importorskip("tensorboard")


def _events(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    ea.Reload()
    return ea


def test_molre_run_writes_loss_lr_grad_norm_val_auc_routing_and_hparams(tmp_path):
    from molre_lib.engine.train import seed_everything, train

    seed_everything(0)
    run = train(toy_config(adapter="molre", n_experts=3, epochs=2, eval_every=0, checkpoint_every=0), tmp_path / "r",
                model=ToyModel(), datasets=toy_datasets())
    ea = _events(run)
    tags = set(ea.Tags()["scalars"])
    log = pd.read_csv(run / "train_log.csv")
    loss = ea.Scalars("train/loss")
    assert [e.step for e in loss] == list(log["step"]) == list(range(1, 9))
    np.testing.assert_allclose([e.value for e in loss], log["loss"], rtol=1e-5)
    np.testing.assert_allclose([e.value for e in ea.Scalars("train/lr")], log["lr"], rtol=1e-5)
    norms = [e.value for e in ea.Scalars("train/grad_norm")]
    assert len(norms) == 8 and all(math.isfinite(v) and v > 0 for v in norms)
    val = log.dropna(subset=["val_macro_auc"])
    auc = ea.Scalars("val/macro_auc")
    assert [e.step for e in auc] == list(val["step"])  # end of each epoch
    np.testing.assert_allclose([e.value for e in auc], val["val_macro_auc"], atol=1e-6)
    assert ea.Scalars("val/best_macro_auc")[-1].value == pytest.approx(val["val_macro_auc"].max(), abs=1e-6)
    for layer in ("encoder.qkv", "encoder.proj"):
        ent = ea.Scalars(f"routing/{layer}/gate_entropy")
        assert [e.step for e in ent] == list(val["step"])
        assert all(0 <= e.value <= math.log(3) + 1e-6 for e in ent)
        usage = np.array([[e.value for e in ea.Scalars(f"routing/{layer}/expert_{k}")] for k in range(3)])  # (E, evals)
        np.testing.assert_allclose(usage.sum(0), 1.0, atol=1e-5)
    assert "routing/encoder.qkv/expert_3" not in tags and "routing/mean_gate_entropy" in tags
    # hparams: the run's config, in the same event file, with the metrics the HPARAMS tab shows
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = ea.PluginTagToContent("hparams")
    start = [plugin_data_pb2.HParamsPluginData.FromString(v).session_start_info for v in content.values()
             if plugin_data_pb2.HParamsPluginData.FromString(v).HasField("session_start_info")]
    assert start and start[0].hparams["adapter"].string_value == "molre"
    assert start[0].hparams["rank"].number_value == 2


def test_lora_run_has_no_routing_and_tensorboard_can_be_switched_off(tmp_path):
    from molre_lib.engine.train import seed_everything, train

    seed_everything(0)
    run = train(toy_config(adapter="lora", epochs=1, eval_every=0, checkpoint_every=0, max_grad_norm=0.0),
                tmp_path / "lora", model=ToyModel(), datasets=toy_datasets())
    tags = set(_events(run).Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "val/macro_auc"} <= tags  # the norm is measured unclipped
    assert not any(t.startswith("routing/") for t in tags)
    seed_everything(0)
    off = train(toy_config(adapter="lora", epochs=1, eval_every=0, checkpoint_every=0, tensorboard=False),
                tmp_path / "off", model=ToyModel(), datasets=toy_datasets())
    assert not (off / "tensorboard").exists()


def test_a_sweeps_runs_line_up_in_one_hparams_view(tmp_path):
    """TensorBoard's own HPARAMS backend, pointed at the folder above two runs (as `tensorboard --logdir` a sweep),
    lists one session group per run with that run's hyperparameters and its best validation AUC."""
    from google.protobuf import json_format
    from tensorboard import context as tb_context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, get_experiment, list_session_groups

    from molre_lib.engine.train import seed_everything, train

    sweep = tmp_path / "sweep"
    arms = {"lora_r2": dict(adapter="lora", rank=2), "molre_r4": dict(adapter="molre", rank=4, n_experts=2)}
    best = {}
    for name, over in arms.items():
        seed_everything(0)
        run = train(toy_config(epochs=1, eval_every=0, checkpoint_every=0, **over), sweep / name, model=ToyModel(),
                    datasets=toy_datasets())
        best[name] = _events(run).Scalars("val/best_macro_auc")[-1].value
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(sweep))
    mux.Reload()
    tb = base_plugin.TBContext(logdir=str(sweep), multiplexer=mux,
                               data_provider=data_provider.MultiplexerDataProvider(mux, str(sweep)))
    ctx, request = backend_context.Context(tb), tb_context.RequestContext()
    experiment = get_experiment.Handler(request, ctx, "", api_pb2.GetExperimentRequest()).run()
    assert {"adapter", "rank", "n_experts", "lr"} <= {h.name for h in experiment.hparam_infos}
    assert [m.name.tag for m in experiment.metric_infos] == ["val/best_macro_auc", "val/macro_auc"]
    query = {"startIndex": 0, "sliceSize": 10, "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"],
             "colParams": [{"hparam": h, "includeInResult": True} for h in ("adapter", "rank")]
             + [{"metric": {"tag": "val/best_macro_auc"}, "includeInResult": True}]}
    groups = list_session_groups.Handler(request, ctx, "", json_format.ParseDict(
        query, api_pb2.ListSessionGroupsRequest())).run().session_groups
    got = {g.name.split("/")[0]: g for g in groups}
    assert set(got) == set(arms)
    for name, over in arms.items():
        assert got[name].hparams["adapter"].string_value == over["adapter"]
        assert got[name].hparams["rank"].number_value == over["rank"]
        metric = {m.name.tag: m.value for m in got[name].metric_values}
        assert metric["val/best_macro_auc"] == pytest.approx(best[name], abs=1e-6)


def test_phantom_run_logs_per_category_auc_as_its_metrics_json_states_them(tmp_path):
    """A run on the 75 findings (tiny phantom, MoLRE): val/auc_<category> at the best step equals metrics.json's
    validation category AUC (the same weights), and every category with a defined AUC gets a curve."""
    from molre_lib.cli import main
    from molre_lib.data.synth import synthesize

    manifest = synthesize(tmp_path / "data", 24, shape=(4, 32, 32), seed=0, workers=1, splits=(0.5, 0.25, 0.25))
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), "--manifest", str(manifest), "--backbone", "phantom_vit", "--reduced",
                 "--no-pretrained", "--volume-shape", "4", "32", "32", "--epochs", "2", "--batch-size", "4",
                 "--lr", "1e-2", "--device", "cpu", "--adapter", "molre", "--rank", "2", "--n-experts", "2"]) == 0
    import json

    metrics = json.loads((run / "metrics.json").read_text())
    want = {k.split(":", 1)[1]: s["value"] for k, s in metrics["val"]["summary"].items()
            if k.startswith("category:") and s["value"] is not None}
    ea = _events(run)
    tags = set(ea.Tags()["scalars"])
    assert want and {f"val/auc_{c}" for c in want} <= tags
    for cat, value in want.items():
        at_best = [e.value for e in ea.Scalars(f"val/auc_{cat}") if e.step == metrics["best_step"]]
        assert at_best == [pytest.approx(value, abs=1e-6)], cat
    assert any(t.startswith("routing/encoder.blocks.0.attn.qkv/expert_") for t in tags)


def test_routing_stats_agree_with_the_full_routing_log():
    """The constant-memory summary equals entropy / usage computed from every recorded gate."""
    from molre_lib.adapters import MoLREConfig, gate_entropy, inject, routing_log
    from molre_lib.adapters.telemetry import routing_stats

    torch.manual_seed(0)
    model = ToyModel()
    inject(model, MoLREConfig(r=2, n_experts=4, target_modules=["qkv", "proj"]), trainable=("head",))
    for layer in model.modules():
        if getattr(layer, "router", None) is not None:
            torch.nn.init.normal_(layer.router.gate.weight, std=2.0)  # non-uniform gates
    x = [torch.randn(3, 2, 4, 8, 8) for _ in range(2)]
    with torch.no_grad(), routing_stats(model) as stats:
        for xb in x:
            model(xb)
    with torch.no_grad(), routing_log(model) as log:
        for xb in x:
            model(xb)
    summary = stats.summary()
    assert set(summary) == set(log.layers) == {"encoder.qkv", "encoder.proj"}
    for name in log.layers:
        g = log.concat(name).reshape(-1, 4)
        assert summary[name]["n"] == g.shape[0]
        assert summary[name]["gate_entropy"] == pytest.approx(float(gate_entropy(g).mean()), rel=1e-5)
        np.testing.assert_allclose(summary[name]["expert_usage"], g.mean(0).numpy(), rtol=1e-5)


def test_category_aucs_are_the_mean_per_taxonomy_category():
    from molre_lib.data.taxonomy import CATEGORY_OF, FINDING_KEYS
    from molre_lib.engine.tensorboard import category_aucs

    rng = np.random.default_rng(0)
    auc = rng.uniform(0.4, 0.9, len(FINDING_KEYS))
    auc[:5] = np.nan  # undefined AUCs are left out of their category's mean
    got = category_aucs(auc, FINDING_KEYS)
    ref = pd.DataFrame({"cat": [CATEGORY_OF[k] for k in FINDING_KEYS], "auc": auc}).groupby("cat")["auc"].mean()
    assert got == pytest.approx(ref.to_dict())
    assert category_aucs(auc[:3], ["finding_0", "finding_1", "finding_2"]) == {}
